//! tollgate: an authenticating reverse proxy.

pub mod config;
pub mod demo;
pub mod metrics;
pub mod providers;
pub mod secret;
pub mod tls;
pub mod tokens;
