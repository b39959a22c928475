//! Validation of each provider `type`'s own keys, one file per type.

pub(crate) mod bagid;
pub(crate) mod bigbucks;
pub(crate) mod bigid;
pub(crate) mod fortanix;
pub(crate) mod http;
pub(crate) mod oauth2;
pub(crate) mod static_value;
pub(crate) mod token_endpoint;
pub(crate) mod token_exchange;

pub(crate) use super::values::{http_url, one_of, require_secret, OneOf};
