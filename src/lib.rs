//! tollgate: an authenticating reverse proxy.

pub mod demo;
pub mod secret;
