//! The validated internal model: everything the gateway runs from. Built only by
//! [`super::parse`], so every value here has already been checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

use crate::secret::Secret;

#[derive(Debug)]
pub struct Config {
    pub server: Server,
    pub providers: Vec<ProviderSpec>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub threads: usize,
}

#[derive(Debug)]
pub struct ProviderSpec {
    pub name: String,
    pub settings: ProviderSettings,
    pub refresh: RefreshPolicy,
    /// Whole-request deadline for one call to the provider.
    pub timeout: Duration,
    pub tls: TlsSettings,
}

#[derive(Debug)]
pub enum ProviderSettings {
    OAuth2(OAuth2Settings),
    BigId(BigIdSettings),
}

impl ProviderSettings {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderSettings::OAuth2(_) => "oauth2",
            ProviderSettings::BigId(_) => "bigid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh this long before the token expires (capped at half the token's lifetime).
    pub before_expiry: Duration,
    /// Lifetime assumed when the provider says nothing and the token is not a JWT.
    pub default_ttl: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            before_expiry: Duration::from_secs(60),
            default_ttl: Duration::from_secs(300),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug)]
pub struct OAuth2Settings {
    pub token_url: Url,
    pub grant: OAuth2Grant,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
}

#[derive(Debug)]
pub enum OAuth2Grant {
    ClientCredentials,
    Password { username: String, password: Secret },
    RefreshToken { refresh_token: Secret },
}

/// RFC 6749 §2.3.1: client credentials in a Basic header, or in the form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

#[derive(Debug)]
pub struct BigIdSettings {
    pub base_url: Url,
    pub login: BigIdLogin,
}

#[derive(Debug)]
pub enum BigIdLogin {
    /// Exchanged for a system token at `POST /api/v1/refresh-access-token`.
    UserToken(Secret),
    /// A user session from `POST /api/v1/sessions`.
    Password { username: String, password: Secret },
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Lower-case host name without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    pub strip_prefix: bool,
    pub backends: Vec<Backend>,
    pub credential: Option<Credential>,
    pub on_upstream_status: Vec<u16>,
    /// Send the client's Host header upstream instead of the backend's authority.
    pub preserve_host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host:port` as written to the Host header (port omitted when it is the default).
    pub authority: String,
    /// Path of the upstream URL without a trailing slash ("" for the root).
    pub base_path: String,
    pub tls_settings: TlsSettings,
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub provider: String,
    pub header: HeaderName,
    pub format: TokenFormat,
}

/// A header value template with exactly one `{token}`, split around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFormat {
    pub prefix: String,
    pub suffix: String,
}

impl TokenFormat {
    pub fn render(&self, token: &str) -> String {
        let mut value = String::with_capacity(self.prefix.len() + token.len() + self.suffix.len());
        value.push_str(&self.prefix);
        value.push_str(token);
        value.push_str(&self.suffix);
        value
    }
}
