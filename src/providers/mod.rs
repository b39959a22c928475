//! Provider clients: one file per provider `type`, all behind [`Provider`].
//!
//! A provider only speaks its login protocol and reports what it got ([`Grant`]); when to
//! call it, caching, lifetimes and backoff belong to the token manager.

mod bagid;
mod bigbucks;
mod bigid;
mod fortanix;
mod http;
mod http_login;
mod oauth2;
mod static_value;
mod token_endpoint;
mod token_exchange;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ProviderSettings, ProviderSpec};
use crate::secret::Secret;

pub use self::http::ProviderHttp;

/// What a provider handed out on a successful login or refresh.
#[derive(Debug)]
pub struct Grant {
    pub access_token: Secret,
    /// Lifetime as the provider stated it (`expires_in`); `None` when it said nothing.
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<Secret>,
    pub refresh_expires_in: Option<Duration>,
    /// The scheme the provider says to present the token with (BagID's `tokenType`).
    pub token_type: Option<String>,
}

impl Grant {
    pub fn bare(access_token: Secret) -> Self {
        Grant {
            access_token,
            expires_in: None,
            refresh_token: None,
            refresh_expires_in: None,
            token_type: None,
        }
    }
}

/// Why a provider call failed. Every message is safe to log and to show in a 503 body:
/// it never carries a credential or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("provider rejected the credentials (HTTP {status}): {detail}")]
    Rejected { status: u16, detail: String },
    #[error("provider rejected the refresh token (HTTP {status}): {detail}")]
    RefreshRejected { status: u16, detail: String },
    #[error("provider failed (HTTP {status}): {detail}")]
    Failed { status: u16, detail: String },
    #[error("provider reply unusable: {0}")]
    BadReply(String),
    #[error("the account needs multi-factor authentication, which a gateway cannot complete: configure an app credential (app id and secret) instead")]
    MfaRequired,
    #[error("attestor failed: {0}")]
    Attestor(String),
    /// The provider refused the caller's token it was asked to exchange: an answer about
    /// that caller, not about the provider or the gateway's own credentials.
    #[error("provider refused the caller's token (HTTP {status}{}): {detail}", error_code(.error))]
    CallerRefused {
        status: u16,
        /// The OAuth error code (`invalid_grant`...), when the reply had one.
        error: Option<String>,
        detail: String,
    },
    /// A call the provider has no flow for: a token of its own from a provider that mints
    /// one per caller, or the reverse.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Why a provider that mints per caller has no `login`.
pub const PER_CALLER_ONLY: &str =
    "this provider mints a token per caller, from the caller's verified token; it has none of its own";

fn error_code(error: &Option<String>) -> String {
    error
        .as_deref()
        .map_or_else(String::new, |code| format!(" {code}"))
}

impl ProviderError {
    /// A refresh that failed this way should fall back to a full login at once.
    pub fn needs_login(&self) -> bool {
        matches!(self, ProviderError::RefreshRejected { .. })
    }

    /// Retrying soon cannot help (the configuration must change), so the token manager
    /// waits its longest backoff instead of hammering the provider.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ProviderError::MfaRequired)
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Starts a new session from the configured credentials.
    async fn login(&self) -> Result<Grant, ProviderError>;

    /// Trades a refresh token from an earlier grant for a new grant. Providers without a
    /// refresh flow log in again.
    async fn refresh(&self, _refresh_token: &Secret) -> Result<Grant, ProviderError> {
        self.login().await
    }

    /// Mints a token for the caller whose verified token is `subject` (providers that mint
    /// per caller). Its refresh token, if any, is traded with [`Provider::refresh`].
    async fn exchange(&self, _subject: &Secret) -> Result<Grant, ProviderError> {
        Err(ProviderError::Unsupported(
            "this provider does not mint tokens per caller",
        ))
    }

    /// Ends the session the token belongs to, for providers configured to on shutdown.
    async fn end_session(&self, _token: &Secret) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Whether [`Provider::end_session`] does anything.
    fn ends_sessions(&self) -> bool {
        false
    }
}

/// Builds the client for one configured provider.
pub fn build(spec: &ProviderSpec) -> Result<Arc<dyn Provider>, BuildError> {
    let http = ProviderHttp::new(spec)?;
    Ok(match &spec.settings {
        ProviderSettings::OAuth2(settings) => Arc::new(oauth2::OAuth2::new(settings, http)),
        ProviderSettings::BigId(settings) => Arc::new(bigid::BigId::new(settings, http)),
        ProviderSettings::Fortanix(settings) => Arc::new(fortanix::Fortanix::new(settings, http)),
        ProviderSettings::BigBucks(settings) => Arc::new(bigbucks::BigBucks::new(settings, http)),
        ProviderSettings::BagId(settings) => Arc::new(bagid::BagId::new(settings, http)),
        ProviderSettings::Static(settings) => Arc::new(static_value::StaticValue::new(settings)),
        ProviderSettings::Http(settings) => Arc::new(http_login::HttpLogin::new(settings, http)),
        ProviderSettings::TokenExchange(settings) => {
            Arc::new(token_exchange::TokenExchange::new(settings, http))
        }
    })
}

#[derive(Debug, thiserror::Error)]
#[error("provider {provider}: cannot build its HTTP client: {reason}")]
pub struct BuildError {
    pub provider: String,
    pub reason: String,
}
