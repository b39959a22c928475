//! A remote decision by the BigBucks Auth Engine (seed 002).
//!
//! The caller's credential is sent as `X-Auth` to `POST {url}/user/authorize` with the
//! route's `{action, resource, scope, orgID?}` (the action may come from the HTTP method);
//! `{"status": true}` lets the request pass, `false` is a 403. A 400/401 means the engine
//! did not accept the credential (401), a 403 is a denial. Anything else (5xx, other
//! statuses, transport errors, a reply that is not `{"status": bool}`) means the decision
//! could not be made: 503, or a pass without identity when `fail_open` is set.
//!
//! Decisions (allow, deny, credential refused) are cached in moka for `cache_ttl`, keyed by
//! SHA-256 of the credential and the question; concurrent identical questions share one
//! call. Failures are not cached, but after one the engine is not asked again for
//! [`HOLD_DOWN`] (a down engine must not cost a timeout per request). With
//! `identity_from_me`, `GET {url}/me` supplies the identity document, cached the same way.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};
use moka::future::Cache;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use url::Url;

use super::{credential, invalid, unauthenticated, InboundBuildError, Refusal};
use crate::config::inbound::{AuthorizeAction, AuthorizeSettings, TokenSource};
use crate::outbound::{Outbound, Reply};

/// After a failed call, the engine is not asked again for this long.
pub const HOLD_DOWN: Duration = Duration::from_secs(1);
/// Cached decisions and identities per route, at most.
const MAX_CACHED: u64 = 100_000;
const MAX_REPLY_BYTES: usize = 64 * 1024;
const X_AUTH: &str = "x-auth";

/// What the engine said about one credential and question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allowed,
    Denied,
    /// 400/401: the engine did not accept the credential.
    CredentialRefused,
}

/// What `/me` said about one credential.
#[derive(Debug, Clone)]
enum MeReply {
    Identity(Arc<Value>),
    CredentialRefused,
}

pub(crate) struct AuthorizeCheck {
    inner: Arc<Inner>,
    control: Handle,
}

struct Inner {
    from: TokenSource,
    action: AuthorizeAction,
    resource: String,
    scope: String,
    org_id: Option<i64>,
    fail_open: bool,
    identity_from_me: bool,
    authorize_url: Url,
    me_url: Url,
    client: Outbound,
    cache_ttl: Duration,
    decisions: Cache<[u8; 32], Decision>,
    identities: Cache<[u8; 32], MeReply>,
    /// No call before this instant (set after a failure).
    hold_down_until: Mutex<Option<Instant>>,
    #[cfg(test)]
    calls: std::sync::atomic::AtomicUsize,
}

impl fmt::Debug for AuthorizeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("AuthorizeCheck")
            .field("from", &inner.from)
            .field("action", &inner.action)
            .field("resource", &inner.resource)
            .field("scope", &inner.scope)
            .field("org_id", &inner.org_id)
            .field("fail_open", &inner.fail_open)
            .field("identity_from_me", &inner.identity_from_me)
            .field("host", &inner.authorize_url.host_str())
            .field("cache_ttl", &inner.cache_ttl)
            .finish()
    }
}

impl AuthorizeCheck {
    pub(crate) fn build(
        settings: &AuthorizeSettings,
        control: Handle,
    ) -> Result<AuthorizeCheck, InboundBuildError> {
        let client =
            Outbound::new(settings.timeout, &settings.tls).map_err(|reason| InboundBuildError {
                check: "authorize",
                reason,
            })?;
        let inner = Inner {
            from: settings.from.clone(),
            action: settings.action.clone(),
            resource: settings.resource.clone(),
            scope: settings.scope.clone(),
            org_id: settings.org_id,
            fail_open: settings.fail_open,
            identity_from_me: settings.identity_from_me,
            authorize_url: endpoint(&settings.url, "/user/authorize"),
            me_url: endpoint(&settings.url, "/me"),
            client,
            cache_ttl: settings.cache_ttl,
            decisions: cache(settings.cache_ttl),
            identities: cache(settings.cache_ttl),
            hold_down_until: Mutex::new(None),
            #[cfg(test)]
            calls: std::sync::atomic::AtomicUsize::new(0),
        };
        Ok(AuthorizeCheck {
            inner: Arc::new(inner),
            control,
        })
    }

    /// Where the credential is read.
    pub(crate) fn source(&self) -> &TokenSource {
        &self.inner.from
    }

    /// Passes (with the `/me` document when `identity_from_me`), or why not.
    pub(crate) async fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Value>>, Refusal> {
        let inner = &self.inner;
        let token =
            credential(&inner.from, headers).map_err(|p| unauthenticated(&inner.from, p))?;
        let Some(action) = inner.action_for(method) else {
            return Err(Refusal::forbidden(format!(
                "{method} requests are not allowed on this route"
            )));
        };
        let key = question_key(&[
            b"authorize",
            token.as_bytes(),
            action.as_bytes(),
            inner.resource.as_bytes(),
            inner.scope.as_bytes(),
            inner
                .org_id
                .map(|id| id.to_string())
                .unwrap_or_default()
                .as_bytes(),
        ]);
        let decision = self
            .cached(&inner.decisions, key, || {
                let inner = Arc::clone(inner);
                let token = token.to_owned();
                let action = action.to_owned();
                async move { inner.ask(&token, &action).await }
            })
            .await;
        match decision {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Denied) => {
                return Err(Refusal::forbidden(format!(
                    "the authorization server denies `{action}` on `{}`",
                    inner.resource
                )))
            }
            Ok(Decision::CredentialRefused) => return Err(self.refused()),
            Err(reason) => return self.down(&reason),
        }
        if !inner.identity_from_me {
            return Ok(None);
        }
        let key = question_key(&[b"me", token.as_bytes()]);
        let me = self
            .cached(&inner.identities, key, || {
                let inner = Arc::clone(inner);
                let token = token.to_owned();
                async move { inner.me(&token).await }
            })
            .await;
        match me {
            Ok(MeReply::Identity(document)) => Ok(Some(document)),
            Ok(MeReply::CredentialRefused) => Err(self.refused()),
            Err(reason) => self.down(&reason),
        }
    }

    /// A cache hit, or one call on the control runtime shared by every concurrent asker of
    /// the same key. Failures are not cached.
    async fn cached<V, F, Fut>(
        &self,
        cache: &Cache<[u8; 32], V>,
        key: [u8; 32],
        call: F,
    ) -> Result<V, String>
    where
        V: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, String>> + Send + 'static,
    {
        let run = async {
            if let Some(wait) = self.inner.held_down() {
                return Err(format!(
                    "it failed a moment ago; next attempt in {}ms",
                    wait.as_millis()
                ));
            }
            let outcome = match self.control.spawn(call()).await {
                Ok(outcome) => outcome,
                Err(_) => Err("the authorization call was interrupted (shutting down)".to_owned()),
            };
            if let Err(reason) = &outcome {
                tracing::warn!(%reason, "authorization server call failed");
                self.inner.hold_down();
            }
            outcome
        };
        if self.inner.cache_ttl.is_zero() {
            return run.await;
        }
        cache
            .try_get_with(key, run)
            .await
            .map_err(|reason| reason.as_ref().clone())
    }

    fn refused(&self) -> Refusal {
        invalid(
            &self.inner.from,
            "invalid_token",
            "the authorization server did not accept the credential",
        )
    }

    fn down(&self, reason: &str) -> Result<Option<Arc<Value>>, Refusal> {
        if self.inner.fail_open {
            tracing::warn!(%reason, "authorization server unavailable; fail_open lets the request pass");
            return Ok(None);
        }
        Err(Refusal::unavailable(
            format!("the authorization server is unavailable: {reason}"),
            HOLD_DOWN,
        ))
    }

    #[cfg(test)]
    fn calls(&self) -> usize {
        self.inner.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Inner {
    fn action_for(&self, method: &Method) -> Option<&str> {
        match &self.action {
            AuthorizeAction::Fixed(action) => Some(action),
            AuthorizeAction::ByMethod(map) => map
                .iter()
                .find(|(m, _)| m == method)
                .map(|(_, action)| action.as_str()),
        }
    }

    fn held_down(&self) -> Option<Duration> {
        let until = (*self
            .hold_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()))?;
        until.checked_duration_since(Instant::now())
    }

    fn hold_down(&self) {
        *self
            .hold_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + HOLD_DOWN);
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        self.client
            .exchange(request, MAX_REPLY_BYTES)
            .await
            .map_err(|error| error.to_string())
    }

    fn x_auth(token: &str) -> Result<HeaderValue, String> {
        let mut value = HeaderValue::from_bytes(token.as_bytes())
            .map_err(|_| "the credential cannot be sent as a header".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// `POST {url}/user/authorize`.
    async fn ask(&self, token: &str, action: &str) -> Result<Decision, String> {
        #[cfg(test)]
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut body = json!({
            "action": action,
            "resource": self.resource,
            "scope": self.scope,
        });
        if let Some(org_id) = self.org_id {
            body["orgID"] = json!(org_id);
        }
        let request = self
            .client
            .client()
            .post(self.authorize_url.clone())
            .header(X_AUTH, Self::x_auth(token)?)
            .json(&body);
        let reply = self.exchange(request).await?;
        let status = reply.status.as_u16();
        match status {
            200..=299 => match serde_json::from_slice::<Value>(&reply.body) {
                Ok(reply) => match reply.get("status") {
                    Some(Value::Bool(true)) => Ok(Decision::Allowed),
                    Some(Value::Bool(false)) => Ok(Decision::Denied),
                    _ => Err("the reply has no boolean `status`".to_owned()),
                },
                Err(_) => Err("the reply is not JSON".to_owned()),
            },
            400 | 401 => {
                tracing::debug!(status, "authorization server refused the credential");
                Ok(Decision::CredentialRefused)
            }
            403 => Ok(Decision::Denied),
            other => Err(format!("answered {other}")),
        }
    }

    /// `GET {url}/me`.
    async fn me(&self, token: &str) -> Result<MeReply, String> {
        #[cfg(test)]
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let request = self
            .client
            .client()
            .get(self.me_url.clone())
            .header(X_AUTH, Self::x_auth(token)?)
            .header(http::header::ACCEPT, "application/json");
        let reply = self.exchange(request).await?;
        let status = reply.status.as_u16();
        match status {
            200..=299 => match serde_json::from_slice::<Value>(&reply.body) {
                Ok(document @ Value::Object(_)) => Ok(MeReply::Identity(Arc::new(document))),
                _ => Err("the /me reply is not a JSON object".to_owned()),
            },
            400 | 401 | 403 => Ok(MeReply::CredentialRefused),
            other => Err(format!("/me answered {other}")),
        }
    }
}

fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> Cache<[u8; 32], V> {
    Cache::builder()
        .max_capacity(MAX_CACHED)
        .time_to_live(ttl.max(Duration::from_millis(1)))
        .build()
}

/// `path` appended to the base URL's own path (`https://h/api/v1` + `/me`).
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// SHA-256 over length-prefixed parts, so no two different questions share a key.
fn question_key(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests;
