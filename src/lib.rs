//! tollgate: an authenticating reverse proxy.

pub mod secret;
