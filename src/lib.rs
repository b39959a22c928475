//! tollgate: an authenticating reverse proxy.

pub mod config;
pub mod secret;
pub mod tls;
