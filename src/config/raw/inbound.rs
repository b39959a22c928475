//! A route's `inbound:` section as written. Every struct rejects unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{DurationText, RawTls};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    pub client_cert: Option<RawClientCert>,
    pub jwt: Option<RawJwt>,
    pub authorize: Option<RawAuthorize>,
    pub api_keys: Option<RawApiKeys>,
    pub identity_headers: Option<BTreeMap<String, String>>,
    pub forward_caller_credential: Option<bool>,
}

/// `client_cert: {}`: no keys yet; the certificate chain is checked by the listener's
/// `client_ca_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCert {}

/// Where the caller's credential is read: `{ header: Authorization, scheme: Bearer }`,
/// `{ header: X-Auth }` or `{ cookie: session }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenSource {
    pub header: Option<String>,
    pub scheme: Option<String>,
    pub cookie: Option<String>,
}

/// One string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawOneOrMany {
    One(String),
    Many(Vec<String>),
}

impl RawOneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            RawOneOrMany::One(one) => vec![one],
            RawOneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub from: Option<RawTokenSource>,
    pub algorithms: Option<Vec<String>>,
    pub secret: Option<Secret>,
    pub public_key_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<DurationText>,
    pub jwks_min_refetch: Option<DurationText>,
    pub jwks_timeout: Option<DurationText>,
    pub jwks_tls: Option<RawTls>,
    pub issuer: Option<RawOneOrMany>,
    pub audience: Option<RawOneOrMany>,
    pub leeway: Option<DurationText>,
    pub required_claims: Option<BTreeMap<String, serde_json::Value>>,
    pub required_scopes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorize {
    pub url: String,
    pub from: Option<RawTokenSource>,
    pub action: Option<String>,
    pub action_by_method: Option<BTreeMap<String, String>>,
    pub resource: String,
    pub scope: String,
    #[serde(rename = "org_id")]
    pub org_id: Option<i64>,
    pub cache_ttl: Option<DurationText>,
    pub fail_open: Option<bool>,
    pub identity_from_me: Option<bool>,
    pub timeout: Option<DurationText>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    pub header: Option<String>,
    pub keys: Vec<Secret>,
}
