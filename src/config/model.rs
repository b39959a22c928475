//! The validated internal model: everything the gateway runs from. Built only by
//! [`super::parse`], so every value here has already been checked.

mod inbound;
mod mcp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

pub use crate::canonical::{EscapedSlashes, PathPolicy};
use crate::secret::Secret;
pub use inbound::*;
pub use mcp::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub providers: Vec<ProviderSpec>,
    pub routes: Vec<Route>,
    /// Tools on the MCP listener (`server.mcp`), declared and imported.
    pub mcp: McpSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: Vec<Listener>,
    pub admin: SocketAddr,
    pub threads: usize,
    /// How long requests in flight may run on after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// Idle upstream connections kept for reuse, over all upstreams.
    pub upstream_pool_size: usize,
    /// How request paths are made canonical before routing.
    pub paths: PathPolicy,
    pub headers_with_underscores: UnderscoreHeaders,
    /// When set, `/status` answers only a bearer of this token.
    pub admin_token: Option<Secret>,
    /// Fleet mode: the store every replica shares tokens through.
    pub store: Option<StoreSettings>,
    /// The MCP endpoint; none when no tools are configured and `server.mcp` is absent.
    pub mcp: Option<McpListener>,
}

/// `server.store`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub endpoint: StoreEndpoint,
    pub key_prefix: String,
    /// 32 bytes: the ChaCha20-Poly1305 key of stored values, and the HMAC key of store
    /// keys and fingerprints.
    pub encryption_key: Secret,
    /// How long one replica may hold a login lease.
    pub lease: Duration,
    /// Longest wait for one store operation; past it the replica logs in by itself.
    pub timeout: Duration,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEndpoint {
    /// `redis://`, `rediss://` (TLS), `valkey://`, `valkeys://`: the URL as written (it may
    /// hold a password).
    Direct(Secret),
    /// `redis+sentinel://` or `rediss+sentinel://`: the master a set of Sentinels names.
    Sentinel(SentinelEndpoint),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SentinelEndpoint {
    pub sentinels: Vec<(String, u16)>,
    pub service: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS to the master (`rediss+sentinel://`).
    pub tls: bool,
}

impl Server {
    /// Whether only this machine can reach the admin listener.
    pub fn admin_is_loopback(&self) -> bool {
        self.admin.ip().is_loopback()
    }
}

/// One proxy listener (`server.listen[i]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    /// TLS termination; without it the listener speaks plain HTTP.
    pub tls: Option<ListenerTls>,
    /// HTTP/2 as well as HTTP/1.1: by ALPN on a TLS listener, by prior knowledge (h2c) on
    /// a plain one.
    pub http2: bool,
}

impl Listener {
    /// A plain HTTP/1.1 listener on `address`.
    pub fn plain(address: SocketAddr) -> Listener {
        Listener {
            address,
            tls: None,
            http2: false,
        }
    }

    /// Whether it asks for client certificates (mTLS).
    pub fn mtls(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_file.is_some())
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.address)?;
        let mut traits = Vec::new();
        if self.tls.is_some() {
            traits.push(if self.mtls() { "mtls" } else { "tls" });
        }
        if self.http2 {
            traits.push(if self.tls.is_some() { "h2" } else { "h2c" });
        }
        if !traits.is_empty() {
            write!(f, " ({})", traits.join(", "))?;
        }
        Ok(())
    }
}

/// The files a TLS listener serves from; re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM: the certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs client certificates must chain to; set, a client certificate is
    /// required (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// `server.headers_with_underscores`: CGI, WSGI, PHP and Rack upstreams read
/// `X_Auth_Subject` as `X-Auth-Subject`, so such a header could stand in for one the
/// gateway sets or strips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnderscoreHeaders {
    #[default]
    Drop,
    Reject,
    Allow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub name: String,
    /// A digest of its type and settings, secrets included: the same identity means the
    /// same credentials, so replicas may share its token (fleet mode), and a rotated secret
    /// never reuses an old one.
    pub identity: [u8; 32],
    pub settings: ProviderSettings,
    pub refresh: RefreshPolicy,
    /// Whole-request deadline for one call to the provider.
    pub timeout: Duration,
    pub tls: TlsSettings,
    /// What `${env:...}` and `${file:...}` references in its settings expanded to, in any
    /// key: never echoed in error text.
    pub reference_values: Vec<Secret>,
    /// Set for a provider that mints a token per caller (see
    /// [`ProviderSettings::is_per_caller`]): the bound of its cache.
    pub per_caller: Option<PerCallerSettings>,
}

/// The cache of a provider that mints a token per caller, from the caller's verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerCallerSettings {
    /// Callers whose minted token is kept, at most.
    pub max_entries: u64,
}

impl Default for PerCallerSettings {
    fn default() -> Self {
        PerCallerSettings {
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSettings {
    OAuth2(OAuth2Settings),
    BigId(BigIdSettings),
    Fortanix(FortanixSettings),
    BigBucks(BigBucksSettings),
    BagId(BagIdSettings),
    Static(StaticSettings),
    Http(HttpLoginSettings),
    TokenExchange(TokenExchangeSettings),
}

impl ProviderSettings {
    /// Whether the provider mints a token per caller, from the token the route's inbound
    /// check verified, rather than holding one token for every request.
    pub fn is_per_caller(&self) -> bool {
        match self {
            ProviderSettings::TokenExchange(_) => true,
            ProviderSettings::BagId(settings) => matches!(
                settings.flow,
                BagIdFlow::Federated {
                    token: FederatedToken::FromCaller,
                    ..
                }
            ),
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ProviderSettings::OAuth2(_) => "oauth2",
            ProviderSettings::BigId(_) => "bigid",
            ProviderSettings::Fortanix(_) => "fortanix",
            ProviderSettings::BigBucks(_) => "bigbucks",
            ProviderSettings::BagId(_) => "bagid",
            ProviderSettings::Static(_) => "static",
            ProviderSettings::Http(_) => "http",
            ProviderSettings::TokenExchange(_) => "token_exchange",
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

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Settings {
    pub client: TokenClient,
    pub grant: OAuth2Grant,
    pub scopes: Vec<String>,
    /// A non-standard parameter some servers (Auth0, say) read for the audience.
    pub audience: Option<String>,
    /// RFC 8707 resource indicators, sent as `resource` parameters, one each.
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OAuth2Grant {
    ClientCredentials,
    Password { username: String, password: Secret },
    RefreshToken { refresh_token: Secret },
}

/// `type: token_exchange`: RFC 8693 token exchange at an OAuth 2.0 token endpoint. The
/// subject token is the caller's, as the route's inbound check verified it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenExchangeSettings {
    pub client: TokenClient,
    /// The type of the caller's token (RFC 8693 section 3), sent as `subject_token_type`.
    pub subject_token_type: String,
    pub requested_token_type: Option<String>,
    /// Logical names of the target services, each sent as an `audience` parameter.
    pub audiences: Vec<String>,
    /// RFC 8707 resource indicators, each sent as a `resource` parameter.
    pub resources: Vec<String>,
    pub scopes: Vec<String>,
    /// The gateway's own token, for delegation (RFC 8693 section 1.1): `actor_token` and
    /// its `actor_token_type`.
    pub actor: Option<ActorToken>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActorToken {
    pub token: Secret,
    pub token_type: String,
}

/// RFC 8693 section 3: the token type of an access token issued by the server.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An OAuth 2.0 token endpoint and the client that authenticates at it (`oauth2` and
/// `token_exchange` alike).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenClient {
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
}

/// RFC 6749 §2.3.1: client credentials in a Basic header, or in the form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BigIdSettings {
    pub base_url: Url,
    pub login: BigIdLogin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BigIdLogin {
    /// Exchanged for a system token at `POST /api/v1/refresh-access-token`.
    UserToken(Secret),
    /// A user session from `POST /api/v1/sessions`.
    Password { username: String, password: Secret },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FortanixSettings {
    pub base_url: Url,
    pub login: FortanixLogin,
    /// End the session (`POST /sys/v1/session/terminate`) when tollgate shuts down.
    pub terminate_on_shutdown: bool,
}

/// How DSM is asked for a session: HTTP Basic, or one of its body methods.
#[derive(Debug, Clone, PartialEq)]
pub enum FortanixLogin {
    /// A user email and password, or an app id and app secret.
    Basic {
        username: String,
        password: Secret,
    },
    Password {
        email: String,
        password: Secret,
    },
    AppName {
        acct_id: String,
        name: String,
        password: Secret,
    },
    Ldap {
        idp_id: String,
        email: String,
        password: Secret,
        acct_id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct BigBucksSettings {
    /// The API base, `.../api/v1`; the login is `POST {base_url}/signin`.
    pub base_url: Url,
    pub username: String,
    pub password: Secret,
    pub recaptcha: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BagIdSettings {
    pub base_url: Url,
    pub flow: BagIdFlow,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BagIdFlow {
    Federated {
        app_key: Secret,
        token: FederatedToken,
    },
    B2bSecret {
        app_key: Secret,
        b2b_secret: Secret,
        username: String,
        password: Secret,
    },
    Attestation {
        attestor: Attestor,
    },
    Guest {
        attestor: Attestor,
    },
}

impl BagIdFlow {
    pub fn name(&self) -> &'static str {
        match self {
            BagIdFlow::Federated { .. } => "federated",
            BagIdFlow::B2bSecret { .. } => "b2b_secret",
            BagIdFlow::Attestation { .. } => "attestation",
            BagIdFlow::Guest { .. } => "guest",
        }
    }
}

/// The host app's trusted JWT for BagID's federated login.
#[derive(Debug, Clone, PartialEq)]
pub enum FederatedToken {
    Value(Secret),
    /// Read at every login, so a rotated (projected) token is picked up.
    File(PathBuf),
    /// `federated_token: from_caller`: the token the route's inbound check verified, one
    /// BagID session per caller.
    FromCaller,
}

/// Produces the `attestationObject` for a BagID nonce.
#[derive(Debug, Clone, PartialEq)]
pub enum Attestor {
    /// `POST {url}` with `{"nonce": ...}`, answered by `{"attestationObject": ...}`.
    Http { url: Url, timeout: Duration },
    /// Runs the program with the nonce as its last argument; stdout is the object.
    Command {
        program: String,
        args: Vec<String>,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticSettings {
    pub value: Secret,
}

/// A declarative login for any JSON API.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLoginSettings {
    pub login: HttpRequestTemplate,
    /// JSON pointer to the token in the reply; "" when the reply is the token as a JSON string.
    pub token_pointer: String,
    pub expiry: Option<ExpiryField>,
    pub refresh: Option<HttpRefresh>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRefresh {
    /// May use `{refresh_token}` in its URL, headers and body.
    pub request: HttpRequestTemplate,
    /// JSON pointer to the value that `{refresh_token}` stands for, in the last reply.
    pub refresh_token_pointer: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequestTemplate {
    pub method: http::Method,
    pub url: Secret,
    pub headers: Vec<(HeaderName, Secret)>,
    pub body: Option<HttpBody>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpBody {
    /// Serialized JSON text.
    Json(Secret),
    Form(Vec<(String, Secret)>),
    Raw {
        content_type: String,
        text: Secret,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryField {
    pub pointer: String,
    pub format: ExpiryFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryFormat {
    /// Seconds from now (`expires_in`).
    Seconds,
    /// Unix time in seconds.
    Epoch,
    /// An RFC 3339 timestamp.
    Rfc3339,
}

#[derive(Debug, Clone, PartialEq)]
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
    pub timeouts: UpstreamTimeouts,
    /// Larger request bodies are refused with 413.
    pub max_request_body: u64,
    /// Checks of the caller before anything is forwarded (ingress mode).
    pub inbound: Option<InboundSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP connect, and the TLS handshake after it.
    pub connect: Duration,
    /// Waiting for each read from the upstream (the response header, then body chunks).
    pub read: Duration,
    pub write: Duration,
    /// How long an unused pooled connection is kept.
    pub idle: Duration,
    /// Deadline for the whole exchange with the upstream, from the request's arrival to
    /// the last byte of the response, retries included.
    pub total: Duration,
    /// For an upgrade request (WebSocket), in place of `read`: how long the upgraded
    /// connection may be silent, in either direction, before it is closed.
    pub upgraded_idle: Duration,
    /// For an upgrade request (WebSocket), in place of `total`: how long the upgraded
    /// connection may live.
    pub upgraded_total: Duration,
}

impl UpstreamTimeouts {
    /// `(read, total)` for a request: the upgraded ones for an upgrade request.
    pub fn read_and_total(&self, upgrade: bool) -> (Duration, Duration) {
        if upgrade {
            (self.upgraded_idle, self.upgraded_total)
        } else {
            (self.read, self.total)
        }
    }
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(300),
            upgraded_idle: Duration::from_secs(600),
            upgraded_total: Duration::from_secs(24 * 3600),
        }
    }
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
    /// HTTP/2 to the upstream: by ALPN over TLS, by prior knowledge (h2c) over plain TCP.
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub provider: String,
    pub header: HeaderName,
    pub format: TokenFormat,
}

/// A header value template: literal text around exactly one `{token}` and at most one
/// `{token_type}` (the scheme the provider named, e.g. BagID's `tokenType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFormat {
    pub parts: Vec<FormatPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatPart {
    Literal(String),
    Token,
    TokenType,
}

impl TokenFormat {
    pub fn render(&self, token: &str, token_type: &str) -> String {
        let mut value = String::with_capacity(token.len() + 32);
        for part in &self.parts {
            match part {
                FormatPart::Literal(text) => value.push_str(text),
                FormatPart::Token => value.push_str(token),
                FormatPart::TokenType => value.push_str(token_type),
            }
        }
        value
    }
}
