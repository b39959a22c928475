//! The YAML as written, before validation. Every struct rejects unknown keys.

mod inbound;
mod mcp;

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use inbound::*;
pub use mcp::*;

use crate::secret::Secret;

/// A duration written with a unit (`30s`, `5m`, `1h 30m`); bare numbers are refused so a
/// reader never has to guess the unit.
#[derive(Debug, Clone, Copy)]
pub struct DurationText(pub Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(DurationText)
            .map_err(|error| {
                serde::de::Error::custom(format!(
                    "invalid duration `{text}` ({error}): write a number and a unit, like 30s or 5m"
                ))
            })
    }
}

/// A byte size: a whole number of bytes, or text with a unit (`512KiB`, `10MiB`, `1MB`).
#[derive(Debug, Clone, Copy)]
pub struct SizeText(pub u64);

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(SizeText(bytes)),
            Written::Text(text) => parse_size(&text).map(SizeText).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size `{text}`: write bytes, or a number and a unit (B, KB, KiB, MB, MiB, GB, GiB)"
                ))
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A value written either alone or as a list (`resource: https://a` or `resource: [..]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Each entry an address, or a [`RawListener`] mapping: typed one by one.
    pub listen: Option<Vec<serde_yaml_ng::Value>>,
    pub admin: Option<String>,
    pub threads: Option<usize>,
    pub drain_timeout: Option<DurationText>,
    pub upstream_pool_size: Option<usize>,
    pub paths: Option<RawPaths>,
    pub headers_with_underscores: Option<RawUnderscoreHeaders>,
    pub admin_token: Option<Secret>,
    pub store: Option<RawStore>,
    pub mcp: Option<RawMcpServer>,
}

/// `server.store`: fleet mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// May hold a password, so it is a secret.
    pub url: Secret,
    pub key_prefix: Option<String>,
    pub encryption_key: Secret,
    pub lease: Option<DurationText>,
    pub timeout: Option<DurationText>,
}

/// A listener written as a mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    pub tls: Option<RawListenerTls>,
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub merge_slashes: Option<bool>,
    pub escaped_slashes: Option<RawEscapedSlashes>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawEscapedSlashes {
    Reject,
    Keep,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawUnderscoreHeaders {
    Drop,
    Reject,
    Allow,
}

/// Keys every provider accepts besides its own.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProviderCommon {
    pub refresh: Option<RawRefresh>,
    pub timeout: Option<DurationText>,
    pub tls: Option<RawTls>,
    pub per_caller: Option<RawPerCaller>,
}

pub const PROVIDER_COMMON_KEYS: [&str; 4] = ["refresh", "timeout", "tls", "per_caller"];

/// The cache of a provider that mints a token per caller.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPerCaller {
    pub max_entries: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    pub before_expiry: Option<DurationText>,
    pub default_ttl: Option<DurationText>,
    pub min_backoff: Option<DurationText>,
    pub max_backoff: Option<DurationText>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawGrant {
    ClientCredentials,
    Password,
    RefreshToken,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawClientAuth {
    Basic,
    Post,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub token_url: String,
    pub grant: Option<RawGrant>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: Option<RawClientAuth>,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    pub resource: Option<OneOrMany>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub refresh_token: Option<Secret>,
}

/// `type: token_exchange`: RFC 8693 at an OAuth 2.0 token endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenExchange {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: Option<RawClientAuth>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub audience: Option<OneOrMany>,
    pub resource: Option<OneOrMany>,
    pub scopes: Option<Vec<String>>,
    pub actor_token: Option<Secret>,
    pub actor_token_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBigId {
    pub base_url: String,
    pub user_token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub strip_prefix: Option<bool>,
    pub upstream: RawUpstream,
    pub credential: Option<RawCredential>,
    pub on_upstream_status: Option<Vec<u16>>,
    pub preserve_host: Option<bool>,
    pub timeouts: Option<RawTimeouts>,
    pub max_request_body: Option<SizeText>,
    pub inbound: Option<RawInbound>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<DurationText>,
    pub read: Option<DurationText>,
    pub write: Option<DurationText>,
    pub idle: Option<DurationText>,
    pub total: Option<DurationText>,
    pub upgraded_idle: Option<DurationText>,
    pub upgraded_total: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path_prefix: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub urls: Option<Vec<String>>,
    pub tls: Option<RawTls>,
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub provider: String,
    pub header: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    pub username: String,
    pub password: Secret,
}

/// DSM's body login methods, tagged by `method` as in the DSM API.
#[derive(Debug, Deserialize)]
#[serde(tag = "method", deny_unknown_fields)]
pub enum RawFortanixBody {
    #[serde(rename = "password")]
    Password { email: String, password: Secret },
    #[serde(rename = "auth-by-app-name")]
    AppName {
        acct_id: String,
        name: String,
        password: Secret,
    },
    #[serde(rename = "ldap-basic-auth")]
    Ldap {
        idp_id: String,
        email: String,
        password: Secret,
        acct_id: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFortanix {
    pub base_url: String,
    pub basic: Option<RawBasic>,
    pub body: Option<RawFortanixBody>,
    pub terminate_on_shutdown: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBigBucks {
    pub base_url: String,
    pub username: String,
    pub password: Secret,
    pub recaptcha: Option<Secret>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawBagIdFlow {
    Federated,
    B2bSecret,
    Attestation,
    Guest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttestor {
    pub url: Option<String>,
    pub command: Option<Vec<String>>,
    pub timeout: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBagId {
    pub base_url: String,
    pub flow: RawBagIdFlow,
    pub app_key: Option<Secret>,
    pub b2b_secret: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub federated_token: Option<Secret>,
    pub federated_token_file: Option<String>,
    pub attestor: Option<RawAttestor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    pub value: Option<Secret>,
    pub basic: Option<RawBasic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpRequest {
    pub method: Option<String>,
    pub url: String,
    pub headers: Option<std::collections::BTreeMap<String, Secret>>,
    pub json: Option<serde_json::Value>,
    pub form: Option<std::collections::BTreeMap<String, Secret>>,
    pub body: Option<Secret>,
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawExpiryFormat {
    Seconds,
    Epoch,
    Rfc3339,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpiry {
    pub pointer: String,
    pub format: Option<RawExpiryFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpLogin {
    pub login: RawHttpRequest,
    pub token_pointer: String,
    pub expiry: Option<RawExpiry>,
    pub refresh_request: Option<RawHttpRequest>,
    pub refresh_token_pointer: Option<String>,
}
