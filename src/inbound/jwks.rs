//! A JWKS (RFC 7517) fetched from the issuer, cached in moka, rotated without a restart.
//!
//! - The key set is cached for `jwks_refresh`, then fetched again on the next request.
//! - A token whose `kid` is not in the set refetches it, but **every** fetch (scheduled,
//!   unknown `kid`, or a retry after a failure) is at most one per `jwks_min_refetch`: a
//!   flood of made-up `kid`s costs the issuer one request per interval, not one each.
//! - Fetches run on the control runtime under one lock (single flight); the request awaits
//!   the job, which completes and fills the cache even if the request goes away.
//! - When a refresh fails, the last good set is kept in use for up to [`STALE_LIMIT`] past
//!   its refresh time (retried once per `jwks_min_refetch`); with no usable set the check
//!   answers 503, never a pass.
//! - Only signature keys are taken: `kty` RSA (2048 to 4096 bits), EC (P-256, P-384), OKP
//!   (Ed25519); `use: enc` keys and symmetric (`oct`) keys are skipped. A key's `alg`, when
//!   given, is the only algorithm it verifies.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use moka::future::Cache;
use moka::Expiry;
use serde::Deserialize;
use tokio::runtime::Handle;
use url::Url;

use super::jwt::VerifyKey;
use super::Refusal;
use crate::config::inbound::JwksSettings;
use crate::keys::{JwkMembers, PublicKey};
use crate::outbound::Outbound;

/// A key set that cannot be refreshed stays in use this long past its refresh time.
pub const STALE_LIMIT: Duration = Duration::from_secs(3600);
/// A JWKS reply larger than this is refused.
const MAX_JWKS_BYTES: usize = 512 * 1024;
/// At most this many keys are taken from one JWKS.
const MAX_KEYS: usize = 64;

/// One fetched key set.
pub(crate) struct KeySet {
    /// Increases with every successful fetch; tells a refetch whether the set changed.
    pub(crate) generation: u64,
    keys: Arc<[VerifyKey]>,
    /// When this set was fetched.
    fetched_at: Instant,
    /// How long the cache entry lives: `jwks_refresh`, or `jwks_min_refetch` for a stale set
    /// put back after a failed refresh.
    ttl: Duration,
}

/// The keys a token may be verified with.
pub(crate) enum Selection<'a> {
    Keys(Vec<&'a VerifyKey>),
    /// The `kid` is known, but its key does not verify the token's algorithm.
    WrongAlgorithm,
    /// No key with that `kid` (or, without a `kid`, none for the algorithm).
    Unknown,
}

impl KeySet {
    pub(crate) fn select(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
        max_without_kid: usize,
    ) -> Selection<'_> {
        match kid {
            Some(kid) => {
                let named: Vec<&VerifyKey> = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Selection::Unknown;
                }
                let usable: Vec<&VerifyKey> = named
                    .into_iter()
                    .filter(|k| k.verifies(algorithm))
                    .collect();
                if usable.is_empty() {
                    Selection::WrongAlgorithm
                } else {
                    Selection::Keys(usable)
                }
            }
            None => {
                let usable: Vec<&VerifyKey> = self
                    .keys
                    .iter()
                    .filter(|key| key.verifies(algorithm))
                    .take(max_without_kid)
                    .collect();
                if usable.is_empty() {
                    Selection::Unknown
                } else {
                    Selection::Keys(usable)
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

struct SetExpiry;

impl Expiry<(), Arc<KeySet>> for SetExpiry {
    fn expire_after_create(&self, _: &(), set: &Arc<KeySet>, _: Instant) -> Option<Duration> {
        Some(set.ttl)
    }

    fn expire_after_update(
        &self,
        _: &(),
        set: &Arc<KeySet>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(set.ttl)
    }
}

/// A JWKS source; cheap to share.
pub(crate) struct Jwks {
    inner: Arc<Inner>,
    control: Handle,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("host", &self.inner.url.host_str())
            .field("refresh", &self.inner.refresh)
            .field("min_refetch", &self.inner.min_refetch)
            .finish()
    }
}

struct Inner {
    url: Url,
    client: Outbound,
    refresh: Duration,
    min_refetch: Duration,
    algorithms: Vec<Algorithm>,
    cache: Cache<(), Arc<KeySet>>,
    /// Held across a fetch: one fetch at a time.
    state: tokio::sync::Mutex<FetchState>,
    generation: AtomicU64,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_good: Option<Arc<KeySet>>,
    last_error: Option<String>,
}

impl Jwks {
    /// Builds the source and starts the first fetch on `control`.
    pub(crate) fn build(
        settings: &JwksSettings,
        algorithms: &[Algorithm],
        control: Handle,
    ) -> Result<Jwks, String> {
        let client = Outbound::new(settings.timeout, &settings.tls)?;
        let inner = Arc::new(Inner {
            url: settings.url.clone(),
            client,
            refresh: settings.refresh,
            min_refetch: settings.min_refetch,
            algorithms: algorithms.to_vec(),
            cache: Cache::builder()
                .max_capacity(1)
                .expire_after(SetExpiry)
                .build(),
            state: tokio::sync::Mutex::new(FetchState::default()),
            generation: AtomicU64::new(0),
        });
        let warm = Arc::clone(&inner);
        control.spawn(async move {
            let _ = warm.refresh(None).await;
        });
        Ok(Jwks { inner, control })
    }

    /// The current key set: a cache hit, or a fetch (joined if one runs).
    pub(crate) async fn keys(&self) -> Result<Arc<KeySet>, Refusal> {
        if let Some(set) = self.inner.cache.get(&()).await {
            return Ok(set);
        }
        self.run(None).await
    }

    /// The token's key is not in `generation`: fetch again if the interval allows, else
    /// answer the set at hand.
    pub(crate) async fn refetch_after_unknown(
        &self,
        generation: u64,
    ) -> Result<Arc<KeySet>, Refusal> {
        self.run(Some(generation)).await
    }

    async fn run(&self, seen: Option<u64>) -> Result<Arc<KeySet>, Refusal> {
        let inner = Arc::clone(&self.inner);
        match self
            .control
            .spawn(async move { inner.refresh(seen).await })
            .await
        {
            Ok(result) => result,
            Err(_) => Err(Refusal::unavailable(
                "the JWKS fetch was interrupted (shutting down)",
                Duration::from_secs(1),
            )),
        }
    }
}

impl Inner {
    /// One fetch under the lock, unless someone else's fetch already answered, or the
    /// interval since the last attempt has not passed.
    async fn refresh(self: Arc<Self>, seen: Option<u64>) -> Result<Arc<KeySet>, Refusal> {
        let mut state = self.state.lock().await;
        let current = self.cache.get(&()).await;
        if let Some(set) = &current {
            if Some(set.generation) != seen {
                return Ok(Arc::clone(set));
            }
        }
        let now = Instant::now();
        if let Some(at) = state.last_attempt {
            let since = now.saturating_duration_since(at);
            if since < self.min_refetch {
                if let Some(set) = current.or_else(|| self.usable_stale(&state, now)) {
                    return Ok(set);
                }
                let wait = self.min_refetch - since;
                let reason = state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no key set yet".to_owned());
                return Err(Refusal::unavailable(
                    format!("the issuer's JWKS cannot be fetched: {reason}"),
                    wait,
                ));
            }
        }
        state.last_attempt = Some(now);
        match self.fetch().await {
            Ok(keys) => {
                let set = Arc::new(KeySet {
                    generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
                    keys: keys.into(),
                    fetched_at: Instant::now(),
                    ttl: self.refresh,
                });
                self.cache.insert((), Arc::clone(&set)).await;
                state.last_good = Some(Arc::clone(&set));
                state.last_error = None;
                tracing::info!(
                    keys = set.len(),
                    generation = set.generation,
                    "JWKS fetched"
                );
                Ok(set)
            }
            Err(reason) => {
                tracing::warn!(%reason, "JWKS fetch failed");
                state.last_error = Some(reason.clone());
                if let Some(set) = current {
                    // A refetch for an unknown `kid` failed: the cached set stays as it is.
                    return Ok(set);
                }
                if let Some(stale) = self.usable_stale(&state, now) {
                    // Keep serving the last good keys; retry after the interval.
                    let again = Arc::new(KeySet {
                        generation: stale.generation,
                        keys: Arc::clone(&stale.keys),
                        fetched_at: stale.fetched_at,
                        ttl: self.min_refetch,
                    });
                    self.cache.insert((), Arc::clone(&again)).await;
                    return Ok(again);
                }
                Err(Refusal::unavailable(
                    format!("the issuer's JWKS cannot be fetched: {reason}"),
                    self.min_refetch,
                ))
            }
        }
    }

    fn usable_stale(&self, state: &FetchState, now: Instant) -> Option<Arc<KeySet>> {
        state
            .last_good
            .as_ref()
            .filter(|set| {
                now.saturating_duration_since(set.fetched_at) < self.refresh + STALE_LIMIT
            })
            .cloned()
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, String> {
        let request = self
            .client
            .client()
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json");
        let reply = self
            .client
            .exchange(request, MAX_JWKS_BYTES)
            .await
            .map_err(|error| error.to_string())?;
        if !reply.status.is_success() {
            return Err(format!(
                "the JWKS endpoint answered {}",
                reply.status.as_u16()
            ));
        }
        let keys = parse_jwks(&reply.body, &self.algorithms)?;
        if keys.is_empty() {
            return Err("the JWKS holds no usable signature key".to_owned());
        }
        Ok(keys)
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The usable keys of a JWKS document; keys that do not parse or fit are skipped (and
/// logged), a document that does not parse is an error.
pub(crate) fn parse_jwks(body: &[u8], configured: &[Algorithm]) -> Result<Vec<VerifyKey>, String> {
    let document: RawJwks = serde_json::from_slice(body)
        .map_err(|_| "the JWKS is not a JSON object with a `keys` list".to_owned())?;
    let mut keys = Vec::new();
    for (index, value) in document.keys.into_iter().enumerate() {
        if keys.len() == MAX_KEYS {
            tracing::warn!(max = MAX_KEYS, "JWKS holds more keys than are used");
            break;
        }
        match parse_jwk(value, configured) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(reason) => tracing::warn!(index, %reason, "JWKS key skipped"),
        }
    }
    Ok(keys)
}

fn parse_jwk(
    value: serde_json::Value,
    configured: &[Algorithm],
) -> Result<Option<VerifyKey>, String> {
    let raw: RawJwk = serde_json::from_value(value).map_err(|_| "malformed key".to_owned())?;
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let members = JwkMembers {
        kty: &raw.kty,
        crv: raw.crv.as_deref(),
        n: raw.n.as_deref(),
        e: raw.e.as_deref(),
        x: raw.x.as_deref(),
        y: raw.y.as_deref(),
    };
    // Symmetric keys do not belong in a published key set; never use them.
    let Some(key) = PublicKey::from_jwk(&members)? else {
        return Ok(None);
    };
    let mut algorithms = key.usable(configured);
    if let Some(alg) = &raw.alg {
        let Ok(stated) = alg.parse::<Algorithm>() else {
            return Err(format!(
                "key `alg` {alg} is not a signature algorithm we verify"
            ));
        };
        algorithms.retain(|a| *a == stated);
    }
    if algorithms.is_empty() {
        return Ok(None);
    }
    Ok(Some(VerifyKey {
        kid: raw.kid,
        key: key.decoding_key().clone(),
        algorithms,
    }))
}

#[cfg(test)]
mod tests;
