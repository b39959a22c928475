//! tollgate: an authenticating reverse proxy.

pub mod admin;
pub mod app;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod generation;
pub mod inbound;
pub mod keys;
pub mod logging;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod providers;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod routing;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod tokens;
