//! A route's validated `inbound:` section: what the inbound checks are built from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;
use url::Url;

use super::TlsSettings;
use crate::keys::PublicKey;
use crate::secret::Secret;

/// A route's validated `inbound:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundSettings {
    /// A verified client certificate (mTLS listener) is required.
    pub client_cert: bool,
    pub jwt: Option<JwtSettings>,
    pub authorize: Option<AuthorizeSettings>,
    pub api_keys: Option<ApiKeySettings>,
    /// Set for the upstream on success; client-supplied copies are always removed.
    pub identity_headers: Vec<IdentityHeaderSetting>,
    /// Keep the caller's credential header on the forwarded request (default: removed).
    pub forward_caller_credential: bool,
}

/// Where a caller's credential is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header; with a scheme (`Bearer`), the value must start with it.
    Header {
        name: HeaderName,
        scheme: Option<String>,
    },
    /// A cookie of the `Cookie` header.
    Cookie { name: String },
}

impl TokenSource {
    /// The request header the credential travels in.
    pub fn header_name(&self) -> HeaderName {
        match self {
            TokenSource::Header { name, .. } => name.clone(),
            TokenSource::Cookie { .. } => http::header::COOKIE,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    pub from: TokenSource,
    /// Never empty; `none` cannot be written.
    pub algorithms: Vec<Algorithm>,
    pub key: JwtKeySettings,
    /// Accepted `iss` values; empty: not checked.
    pub issuer: Vec<String>,
    /// Accepted `aud` values (one must match, and `aud` is then required); empty: `aud` is
    /// not checked (set it whenever the issuer serves more than this upstream).
    pub audience: Vec<String>,
    pub leeway: Duration,
    /// (claim name or JSON pointer, exact value).
    pub required_claims: Vec<(String, serde_json::Value)>,
    pub required_scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwtKeySettings {
    /// HMAC secret for HS256/384/512.
    Secret(Secret),
    /// A PEM public key (SPKI, PKCS#1 RSA or a certificate), read and parsed at load time.
    PublicKeyPem {
        path: PathBuf,
        key: PublicKey,
    },
    Jwks(JwksSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwksSettings {
    pub url: Url,
    /// How long a fetched key set is used before it is fetched again.
    pub refresh: Duration,
    /// An unknown `kid` (or a failed fetch) refetches at most this often.
    pub min_refetch: Duration,
    pub timeout: Duration,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizeSettings {
    /// API base (`.../api/v1`): `POST {url}/user/authorize`, `GET {url}/me`.
    pub url: Url,
    pub from: TokenSource,
    pub action: AuthorizeAction,
    pub resource: String,
    pub scope: String,
    /// Sent as `orgID` when set.
    pub org_id: Option<i64>,
    pub cache_ttl: Duration,
    /// The authorization server being unreachable lets the request pass (default: 503).
    pub fail_open: bool,
    /// Identity headers come from `GET {url}/me`.
    pub identity_from_me: bool,
    pub timeout: Duration,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeAction {
    Fixed(String),
    /// A method not in the map is refused (403).
    ByMethod(Vec<(Method, String)>),
}

/// API keys, kept only as SHA-256 hashes.
#[derive(Clone, PartialEq)]
pub struct ApiKeySettings {
    pub header: HeaderName,
    pub key_hashes: Vec<[u8; 32]>,
}

impl fmt::Debug for ApiKeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeySettings")
            .field("header", &self.header)
            .field("keys", &self.key_hashes.len())
            .finish()
    }
}

/// One identity header: its name, and what it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaderSetting {
    pub header: HeaderName,
    pub source: IdentitySource,
}

/// Where an identity header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A JWT claim or `/me` field: a top-level name (`sub`) or a JSON pointer
    /// (`/profile/email`).
    Field(String),
    /// `client_cert.subject`: the client certificate's subject, RFC 4514.
    ClientCertSubject,
    /// `client_cert.sans`: its subject alternative names, `DNS:...,URI:...`.
    ClientCertSans,
}

impl IdentitySource {
    /// Read from the verified client certificate rather than a JWT or `/me`.
    pub fn is_client_cert(&self) -> bool {
        !matches!(self, IdentitySource::Field(_))
    }
}
