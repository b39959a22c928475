//! Per-caller tokens: a provider that mints a token for each caller from the caller's
//! verified token (RFC 8693 token exchange, BagID's federated login with
//! `federated_token: from_caller`).
//!
//! - **Cache.** One bounded moka cache per provider (`per_caller.max_entries`), keyed by
//!   [`CallerKey`]: SHA-256 of the provider's name and the caller's token, so the caller's
//!   token is never held as a key. A minted token is served until the earlier of its own
//!   expiry and the caller token's `exp` (no leeway); its entry is kept no longer than the
//!   caller token's `exp`, for the refresh token it may hold.
//! - **Single flight per caller.** A miss runs one provider call on the control runtime
//!   under moka's per-key compute lock; concurrent requests of the same caller queue on that
//!   lock and take what it put in the cache. Other callers never wait for it.
//! - **Renewal.** A token due for renewal (`refresh_at`) is renewed in the background while
//!   it is still served, with the refresh token when one is held (BagID), else by a new
//!   exchange; an expired one is renewed on the request that finds it.
//! - **Refusals and outages.** The provider refusing a caller's token is an answer about
//!   that caller: 403 for it, held for a backoff (so a refused caller cannot turn its
//!   requests into exchanges), and nobody else is affected. A failing endpoint holds the
//!   failing caller back the same way (503 with `Retry-After`); the whole provider backs
//!   off only once callers with two different subjects failed in a row, so that one bad
//!   caller (whose token makes the endpoint fail) can never lock the others out.
//! - **Rejections.** An upstream rejecting a caller's token marks exactly that entry, and
//!   the retry mints a new one; when that new one is rejected too, renewing did not help,
//!   and the token is kept until it expires (the caller gets the upstream's answer) rather
//!   than turning each request into an exchange. An accepted request ends that.
//!
//! Nothing here logs, counts or shows a caller's token, a minted token or a subject: logs
//! and `/status` say what happened, never to whom.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use super::{backoff, CredentialUnavailable, ProviderStatus, Rejection, Token, TokenManager};
use crate::config::{PerCallerSettings, ProviderSpec, RefreshPolicy};
use crate::metrics::{CacheLookupCounters, Metrics};
use crate::providers::{Grant, Provider, ProviderError};
use crate::secret::Secret;

use super::ProviderId;

/// Callers with different subjects whose exchanges failed in a row before the whole
/// provider backs off: one caller alone only ever holds itself back.
const OUTAGE_WITNESSES: usize = 2;

/// The caller's token as the route's inbound check verified it: what a per-caller provider
/// exchanges. Its `Debug` shows no value.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerToken {
    pub value: Secret,
    /// The token's `exp` (unix seconds), when it has one: nothing minted from it is served
    /// from that second on.
    pub expires_at_unix: Option<u64>,
    /// The token's `sub`, when it has one: failures are told apart by subject, so that one
    /// caller holding several tokens still counts once. Never logged or shown.
    pub subject: Option<String>,
}

impl fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerToken")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish_non_exhaustive()
    }
}

impl CallerToken {
    /// The instant the token stops being usable, or `None` when its `exp` has passed (no
    /// leeway: RFC 7519 says a token is accepted only *before* its `exp`).
    pub fn usable_until(&self, now: Instant) -> Option<Instant> {
        let Some(exp) = self.expires_at_unix else {
            return Some(far_future(now));
        };
        let left = (UNIX_EPOCH + Duration::from_secs(exp))
            .duration_since(SystemTime::now())
            .ok()
            .filter(|left| !left.is_zero())?;
        Some(now + left.min(FAR))
    }

    /// Who failures are counted against: the subject when known, else the token.
    fn witness(&self, key: &CallerKey) -> [u8; 32] {
        match &self.subject {
            Some(subject) => Sha256::new()
                .chain_update(b"sub\0")
                .chain_update(subject.as_bytes())
                .finalize()
                .into(),
            None => key.0,
        }
    }
}

/// How far ahead "no expiry" is put (a day is as good as never for a cache entry).
const FAR: Duration = Duration::from_secs(24 * 3600);

fn far_future(now: Instant) -> Instant {
    now + FAR
}

/// A caller's place in a provider's cache: SHA-256 of the provider name and the caller's
/// token. Its `Debug` shows no bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerKey([u8; 32]);

impl CallerKey {
    pub fn of(provider: &str, caller_token: &str) -> CallerKey {
        let digest = Sha256::new()
            .chain_update((provider.len() as u64).to_be_bytes())
            .chain_update(provider.as_bytes())
            .chain_update(caller_token.as_bytes())
            .finalize();
        CallerKey(digest.into())
    }
}

impl fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerKey(..)")
    }
}

/// Why a caller got no token from a per-caller provider.
#[derive(Debug, Clone)]
pub enum CallerCredentialError {
    /// The provider refused this caller's token: 403 `forbidden`.
    Refused(CallerRefused),
    /// The provider could not be asked or failed: 503 `credential_unavailable`.
    Unavailable(CredentialUnavailable),
    /// The caller's token expired (its `exp`, without leeway): 401.
    Expired,
}

/// The provider refused the caller's token. `detail` is the provider's answer, cleaned of
/// secrets and of the caller's token; it goes to that caller only.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct CallerRefused {
    pub provider: String,
    pub detail: String,
}

/// `/status` of a per-caller provider: counts, never a token or a subject.
#[derive(Debug, Clone, Serialize)]
pub struct PerCallerStatus {
    pub max_entries: u64,
    /// Callers whose minted token is cached (served, or kept for its refresh token).
    pub cached_callers: u64,
    /// Callers the provider refused lately (held back for a backoff).
    pub refused_callers: u64,
    /// Callers for whom the provider failed lately (held back for a backoff).
    pub unavailable_callers: u64,
    /// What the provider did since the gateway started.
    pub exchanges: ExchangeCounts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExchangeCounts {
    pub minted: u64,
    pub refreshed: u64,
    pub refused: u64,
    pub failed: u64,
}

/// One caller's entry.
enum Entry {
    Minted(Minted),
    Held(Held),
}

struct Minted {
    token: Arc<Token>,
    refresh: Option<(Secret, Option<Instant>)>,
    /// Served until then: the earlier of the token's own expiry and the caller token's.
    serve_until: Instant,
    /// Kept until then (for its refresh token), never past the caller token's expiry.
    keep_until: Instant,
    /// The upstream rejected this token: the next request gets a new one.
    rejected: AtomicBool,
    /// This token replaced one the upstream rejected: its own rejection is not renewed.
    replacement: AtomicBool,
    /// A background renewal was started (once per token).
    renewing: AtomicBool,
}

impl Minted {
    fn serves(&self, now: Instant) -> bool {
        now < self.serve_until && !self.rejected.load(Ordering::Relaxed)
    }

    /// Renewal ahead of expiry helps only when the token's own expiry, not the caller
    /// token's, ends it.
    fn due_for_renewal(&self, now: Instant) -> bool {
        now >= self.token.refresh_at && self.serve_until >= self.token.expires_at
    }
}

/// A caller held back after a refusal or a failure; its entry outlives the hold by
/// `max_backoff`, so the next failure backs off longer.
struct Held {
    until: Instant,
    keep_until: Instant,
    failures: u32,
    outcome: HeldOutcome,
}

enum HeldOutcome {
    Refused(String),
    Unavailable(String),
}

/// Each entry lives exactly as long as it is of use.
struct EntryExpiry;

impl EntryExpiry {
    fn left(entry: &Entry, now: Instant) -> Duration {
        let until = match entry {
            Entry::Minted(minted) => minted.keep_until,
            Entry::Held(held) => held.keep_until,
        };
        until.saturating_duration_since(now)
    }
}

impl Expiry<CallerKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &CallerKey,
        entry: &Arc<Entry>,
        now: Instant,
    ) -> Option<Duration> {
        Some(Self::left(entry, now))
    }

    fn expire_after_update(
        &self,
        _: &CallerKey,
        entry: &Arc<Entry>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::left(entry, now))
    }
}

/// Failures across callers: the whole provider backs off only when callers with
/// [`OUTAGE_WITNESSES`] different subjects failed with no success or refusal in between.
#[derive(Default)]
struct Outage {
    consecutive: u32,
    witnesses: Vec<[u8; 32]>,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    last_success: Option<SystemTime>,
}

impl Outage {
    fn wait(&self, now: Instant) -> Option<Duration> {
        if self.witnesses.len() < OUTAGE_WITNESSES {
            return None;
        }
        self.retry_at?
            .checked_duration_since(now)
            .filter(|wait| !wait.is_zero())
    }

    /// Records a failure; the wait when the whole provider now backs off.
    fn failure(
        &mut self,
        witness: [u8; 32],
        reason: String,
        policy: &RefreshPolicy,
        now: Instant,
    ) -> Option<Duration> {
        self.consecutive = self.consecutive.saturating_add(1);
        if !self.witnesses.contains(&witness) && self.witnesses.len() < OUTAGE_WITNESSES {
            self.witnesses.push(witness);
        }
        self.last_error = Some(reason);
        if self.witnesses.len() < OUTAGE_WITNESSES {
            return None;
        }
        let delay = backoff::delay(policy, self.consecutive.saturating_sub(1).max(1));
        self.retry_at = Some(now + delay);
        Some(delay)
    }

    /// The provider answered (a token, or a refusal): it works.
    fn answered(&mut self, success: bool) {
        self.consecutive = 0;
        self.witnesses.clear();
        self.retry_at = None;
        self.last_error = None;
        if success {
            self.last_success = Some(SystemTime::now());
        }
    }
}

/// How many entries of each kind the cache holds, kept up to date on every put and (by
/// moka's eviction listener) every removal, so that `/status` never walks the cache.
#[derive(Default)]
struct Census {
    minted: AtomicI64,
    refused: AtomicI64,
    unavailable: AtomicI64,
}

impl Census {
    fn of(&self, entry: &Entry) -> &AtomicI64 {
        match entry {
            Entry::Minted(_) => &self.minted,
            Entry::Held(Held {
                outcome: HeldOutcome::Refused(_),
                ..
            }) => &self.refused,
            Entry::Held(_) => &self.unavailable,
        }
    }

    fn added(&self, entry: &Entry) {
        self.of(entry).fetch_add(1, Ordering::Relaxed);
    }

    fn removed(&self, entry: &Entry) {
        self.of(entry).fetch_sub(1, Ordering::Relaxed);
    }

    fn count(counter: &AtomicI64) -> u64 {
        u64::try_from(counter.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

pub(super) struct PerCaller {
    name: String,
    provider: Arc<dyn Provider>,
    policy: RefreshPolicy,
    settings: PerCallerSettings,
    cache: Cache<CallerKey, Arc<Entry>>,
    census: Arc<Census>,
    outage: Mutex<Outage>,
    next_token_id: AtomicU64,
    counts: Counts,
    lookups: CacheLookupCounters,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Counts {
    minted: AtomicU64,
    refreshed: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// What one provider call for a caller produced.
enum Minting {
    Minted(Minted),
    Refused(String),
    Failed(ProviderError),
}

impl PerCaller {
    pub(super) fn new(
        spec: &ProviderSpec,
        settings: PerCallerSettings,
        provider: Arc<dyn Provider>,
        metrics: &Arc<Metrics>,
    ) -> PerCaller {
        // No token of its own, so no expiry: a series stuck at 0 would read as expired
        // (and page through the TollgateTokenExpiringSoon alert).
        let _ = metrics.token_expiry.remove_label_values(&[&spec.name]);
        let census = Arc::new(Census::default());
        let listener = Arc::clone(&census);
        PerCaller {
            name: spec.name.clone(),
            provider,
            policy: spec.refresh,
            settings,
            cache: Cache::builder()
                .max_capacity(settings.max_entries)
                .expire_after(EntryExpiry)
                .eviction_listener(move |_, entry: Arc<Entry>, _| listener.removed(&entry))
                .build(),
            census,
            outage: Mutex::new(Outage::default()),
            next_token_id: AtomicU64::new(0),
            counts: Counts::default(),
            lookups: metrics.cache_lookups(&spec.name),
            metrics: Arc::clone(metrics),
        }
    }

    /// The caller's token from the cache, or from one provider call that concurrent
    /// requests of the same caller share.
    async fn obtain(
        self: &Arc<Self>,
        caller: &CallerToken,
        control: &Handle,
    ) -> Result<(Arc<Token>, CallerKey), CallerCredentialError> {
        let now = Instant::now();
        let Some(caller_until) = caller.usable_until(now) else {
            return Err(CallerCredentialError::Expired);
        };
        let key = CallerKey::of(&self.name, caller.value.expose());
        if let Some(entry) = self.cache.get(&key).await {
            match &*entry {
                Entry::Minted(minted) if minted.serves(now) => {
                    self.lookups.hit.inc();
                    if minted.due_for_renewal(now) && !minted.renewing.swap(true, Ordering::AcqRel)
                    {
                        self.renew_ahead(key, caller.clone(), minted.token.id, control);
                    }
                    return Ok((Arc::clone(&minted.token), key));
                }
                Entry::Held(held) if now < held.until => {
                    self.lookups.hit.inc();
                    return Err(self.held_answer(held, now));
                }
                _ => {}
            }
        }
        self.lookups.miss.inc();
        let provider_wait = lock(&self.outage).wait(now);
        if let Some(wait) = provider_wait {
            return Err(self.unavailable_now(wait));
        }
        tracing::debug!(provider = %self.name, "no usable token cached for this caller; asking the provider");
        let this = Arc::clone(self);
        let caller = caller.clone();
        let job = control.spawn(async move { this.fill(key, caller, caller_until).await });
        match job.await {
            Ok(result) => result.map(|token| (token, key)),
            Err(_) => Err(CallerCredentialError::Unavailable(CredentialUnavailable {
                provider: self.name.clone(),
                reason: "token exchange was interrupted (shutting down)".to_owned(),
                retry_after: Duration::from_secs(1),
            })),
        }
    }

    /// Under the caller's key lock: take what an earlier holder of the lock put there, or
    /// make the one provider call and put its outcome there.
    async fn fill(
        self: &Arc<Self>,
        key: CallerKey,
        caller: CallerToken,
        caller_until: Instant,
    ) -> Result<Arc<Token>, CallerCredentialError> {
        let this = self.as_ref();
        let caller = &caller;
        let computed = self
            .cache
            .entry(key)
            .and_try_compute_with(|current| async move {
                let now = Instant::now();
                let previous = current.map(|entry| entry.into_value());
                match previous.as_deref() {
                    Some(Entry::Minted(minted)) if minted.serves(now) => return Ok(Op::Nop),
                    Some(Entry::Held(held)) if now < held.until => return Ok(Op::Nop),
                    _ => {}
                }
                let provider_wait = lock(&this.outage).wait(now);
                if let Some(wait) = provider_wait {
                    return Err(this.unavailable_now(wait));
                }
                let minting = this.mint(caller, previous.as_deref(), caller_until).await;
                let entry = this.settle(&key, caller, previous.as_deref(), minting);
                this.census.added(&entry);
                Ok(Op::Put(Arc::new(entry)))
            })
            .await?;
        let entry = match computed {
            CompResult::Inserted(entry)
            | CompResult::ReplacedWith(entry)
            | CompResult::Unchanged(entry) => entry.into_value(),
            CompResult::StillNone(_) | CompResult::Removed(_) => {
                return Err(self.unavailable_now(Duration::from_secs(1)));
            }
        };
        let now = Instant::now();
        match &*entry {
            Entry::Minted(minted) if minted.serves(now) => Ok(Arc::clone(&minted.token)),
            Entry::Minted(_) => Err(self.unavailable_now(Duration::from_secs(1))),
            Entry::Held(held) => Err(self.held_answer(held, now)),
        }
    }

    /// One provider call for the caller: the refresh token of its expired entry when one
    /// is held and fresh (refused: one new exchange instead), else an exchange.
    async fn mint(
        &self,
        caller: &CallerToken,
        previous: Option<&Entry>,
        caller_until: Instant,
    ) -> Minting {
        let now = Instant::now();
        let refresh_token = match previous {
            Some(Entry::Minted(minted)) => minted
                .refresh
                .as_ref()
                .filter(|(_, expires)| expires.is_none_or(|at| at > now))
                .map(|(token, _)| token.clone()),
            _ => None,
        };
        let started = Instant::now();
        let mut kind = "login";
        let mut result = None;
        if let Some(refresh_token) = refresh_token {
            match self.provider.refresh(&refresh_token).await {
                Err(error) if error.needs_login() => {
                    tracing::info!(provider = %self.name, "a caller's refresh token was refused; exchanging the caller's token again");
                    self.count_call("refresh", "failure");
                }
                other => {
                    kind = "refresh";
                    result = Some(other);
                }
            }
        }
        let result = match result {
            Some(result) => result,
            None => self.provider.exchange(&caller.value).await,
        };
        self.metrics
            .token_request_duration
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        let replacement =
            matches!(previous, Some(Entry::Minted(m)) if m.rejected.load(Ordering::Relaxed));
        match result.and_then(|grant| self.minted(grant, caller_until, replacement)) {
            Ok(minted) => {
                self.count_call(kind, "success");
                let outcome = if kind == "refresh" {
                    self.counts.refreshed.fetch_add(1, Ordering::Relaxed);
                    "refreshed"
                } else {
                    self.counts.minted.fetch_add(1, Ordering::Relaxed);
                    "minted"
                };
                self.count_outcome(outcome);
                tracing::debug!(
                    provider = %self.name,
                    kind,
                    expires_in_seconds = minted.token.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                    served_for_seconds = minted.serve_until.saturating_duration_since(Instant::now()).as_secs(),
                    "token minted for a caller"
                );
                Minting::Minted(minted)
            }
            Err(ProviderError::CallerRefused {
                status,
                error,
                detail,
            }) => {
                // An answer about the caller, not a failure of the provider: counted in
                // caller_tokens_total only, so that refused callers page nobody.
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                self.count_outcome("refused");
                tracing::info!(
                    provider = %self.name,
                    status,
                    error = error.as_deref().unwrap_or("-"),
                    "the provider refused a caller's token"
                );
                Minting::Refused(format!(
                    "provider {} refused the caller's token (HTTP {status}): {detail}",
                    self.name
                ))
            }
            Err(error) => {
                self.count_call(kind, "failure");
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                self.count_outcome("failed");
                Minting::Failed(error)
            }
        }
    }

    fn minted(
        &self,
        grant: Grant,
        caller_until: Instant,
        replacement: bool,
    ) -> Result<Minted, ProviderError> {
        let id = self.next_token_id.fetch_add(1, Ordering::Relaxed);
        let token = Token::from_grant(id, &grant, &self.policy)?;
        let refresh = grant
            .refresh_token
            .map(|token| (token, grant.refresh_expires_in.map(|d| Instant::now() + d)));
        let (serve_until, keep_until) = lifetime(&token, refresh.as_ref(), caller_until);
        Ok(Minted {
            token: Arc::new(token),
            refresh,
            serve_until,
            keep_until,
            rejected: AtomicBool::new(false),
            replacement: AtomicBool::new(replacement),
            renewing: AtomicBool::new(false),
        })
    }

    /// What the cache keeps after a provider call, and the bookkeeping of failures.
    fn settle(
        &self,
        key: &CallerKey,
        caller: &CallerToken,
        previous: Option<&Entry>,
        minting: Minting,
    ) -> Entry {
        let now = Instant::now();
        let failures = match previous {
            Some(Entry::Held(held)) => held.failures.saturating_add(1),
            _ => 1,
        };
        match minting {
            Minting::Minted(minted) => {
                lock(&self.outage).answered(true);
                Entry::Minted(minted)
            }
            Minting::Refused(detail) => {
                lock(&self.outage).answered(false);
                self.held(now, failures, HeldOutcome::Refused(detail), None)
            }
            Minting::Failed(error) => {
                let reason = public_reason(&error);
                let shared_wait = lock(&self.outage).failure(
                    caller.witness(key),
                    reason.clone(),
                    &self.policy,
                    now,
                );
                tracing::warn!(
                    provider = %self.name,
                    error = %error,
                    provider_backing_off = shared_wait.is_some(),
                    "token exchange for a caller failed"
                );
                let cause = format!("{error}");
                self.held(now, failures, HeldOutcome::Unavailable(cause), shared_wait)
            }
        }
    }

    fn held(
        &self,
        now: Instant,
        failures: u32,
        outcome: HeldOutcome,
        at_least: Option<Duration>,
    ) -> Entry {
        let delay = backoff::delay(&self.policy, failures).max(at_least.unwrap_or_default());
        let until = now + delay;
        Entry::Held(Held {
            until,
            keep_until: until + self.policy.max_backoff,
            failures,
            outcome,
        })
    }

    /// Renews a token due for renewal while it is still served; on any failure the token
    /// stays until it expires, and the request that then finds it expired renews it.
    fn renew_ahead(
        self: &Arc<Self>,
        key: CallerKey,
        caller: CallerToken,
        token_id: u64,
        control: &Handle,
    ) {
        let this = Arc::clone(self);
        control.spawn(async move {
            let now = Instant::now();
            let Some(caller_until) = caller.usable_until(now) else {
                return;
            };
            let (owner, caller) = (this.as_ref(), &caller);
            let computed = owner
                .cache
                .entry(key)
                .and_compute_with(|current| async move {
                    let this = owner;
                    let previous = current.map(|entry| entry.into_value());
                    let Some(Entry::Minted(current)) = previous.as_deref() else {
                        return Op::Nop;
                    };
                    if current.token.id != token_id || !current.serves(Instant::now()) {
                        return Op::Nop;
                    }
                    match this.mint(caller, previous.as_deref(), caller_until).await {
                        Minting::Minted(minted) => {
                            lock(&this.outage).answered(true);
                            let entry = Entry::Minted(minted);
                            this.census.added(&entry);
                            Op::Put(Arc::new(entry))
                        }
                        Minting::Refused(_) => Op::Nop,
                        Minting::Failed(error) => {
                            tracing::warn!(provider = %this.name, error = %error, "renewing a caller's token ahead of expiry failed; it is served until it expires");
                            Op::Nop
                        }
                    }
                })
                .await;
            if matches!(computed, CompResult::ReplacedWith(_)) {
                tracing::debug!(provider = %this.name, "a caller's token was renewed ahead of expiry");
            }
        });
    }

    /// The upstream rejected `token_id` for the caller at `key`.
    async fn reject(&self, key: &CallerKey, token_id: u64) -> Rejection {
        let Some(entry) = self.cache.get(key).await else {
            return Rejection::Renewing;
        };
        let Entry::Minted(minted) = &*entry else {
            return Rejection::Renewing;
        };
        if minted.token.id != token_id {
            // Already replaced: the retry gets the new one.
            return Rejection::Renewing;
        }
        if minted.replacement.load(Ordering::Relaxed) {
            tracing::info!(provider = %self.name, "the upstream rejected a caller's token fresh from a renewal too: it is kept until it expires, the caller gets the upstream's answer");
            return Rejection::Paused;
        }
        minted.rejected.store(true, Ordering::Relaxed);
        tracing::info!(provider = %self.name, "the upstream rejected a caller's token; the caller gets a new one");
        Rejection::Renewing
    }

    /// The upstream accepted the caller's token: a later rejection renews it again.
    async fn accepted(&self, key: &CallerKey) {
        if let Some(entry) = self.cache.get(key).await {
            if let Entry::Minted(minted) = &*entry {
                minted.replacement.store(false, Ordering::Relaxed);
            }
        }
    }

    fn held_answer(&self, held: &Held, now: Instant) -> CallerCredentialError {
        match &held.outcome {
            HeldOutcome::Refused(detail) => CallerCredentialError::Refused(CallerRefused {
                provider: self.name.clone(),
                detail: detail.clone(),
            }),
            HeldOutcome::Unavailable(reason) => {
                CallerCredentialError::Unavailable(CredentialUnavailable {
                    provider: self.name.clone(),
                    reason: format!("{reason} (after {} failed attempts)", held.failures),
                    retry_after: held.until.saturating_duration_since(now),
                })
            }
        }
    }

    /// The whole provider is backing off.
    fn unavailable_now(&self, wait: Duration) -> CallerCredentialError {
        let outage = lock(&self.outage);
        let reason = match &outage.last_error {
            Some(error) => format!(
                "{error} (the provider is failing for several callers; after {} failed attempts)",
                outage.consecutive
            ),
            None => "no token for this caller yet".to_owned(),
        };
        CallerCredentialError::Unavailable(CredentialUnavailable {
            provider: self.name.clone(),
            reason,
            retry_after: wait,
        })
    }

    fn count_call(&self, kind: &str, outcome: &str) {
        self.metrics
            .token_requests
            .with_label_values(&[&self.name, kind, outcome])
            .inc();
    }

    fn count_outcome(&self, outcome: &str) {
        self.metrics
            .caller_tokens
            .with_label_values(&[&self.name, outcome])
            .inc();
    }

    pub(super) fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub(super) async fn status(&self) -> ProviderStatus {
        // Expired and evicted entries leave the census here.
        self.cache.run_pending_tasks().await;
        let now = Instant::now();
        let census = &self.census;
        let outage = lock(&self.outage);
        let wait = outage.wait(now);
        ProviderStatus {
            provider: self.name.clone(),
            state: if wait.is_some() {
                "unavailable"
            } else {
                "per_caller"
            },
            seconds_to_expiry: None,
            last_refresh_unix: outage
                .last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            consecutive_failures: outage.consecutive,
            last_error: outage.last_error.clone(),
            upstream_rejections: 0,
            rejection_pause_seconds: None,
            retry_in_seconds: wait.map(|d| d.as_secs().max(1)),
            token_fingerprint: None,
            per_caller: Some(PerCallerStatus {
                max_entries: self.settings.max_entries,
                cached_callers: Census::count(&census.minted),
                refused_callers: Census::count(&census.refused),
                unavailable_callers: Census::count(&census.unavailable),
                exchanges: ExchangeCounts {
                    minted: self.counts.minted.load(Ordering::Relaxed),
                    refreshed: self.counts.refreshed.load(Ordering::Relaxed),
                    refused: self.counts.refused.load(Ordering::Relaxed),
                    failed: self.counts.failed.load(Ordering::Relaxed),
                },
            }),
        }
    }
}

/// How long a minted token is served, and how long its entry is kept: served until the
/// earlier of its own expiry and the caller token's; kept (for a refresh token) until the
/// later of its expiry and the refresh token's, but never past the caller token's.
fn lifetime(
    token: &Token,
    refresh: Option<&(Secret, Option<Instant>)>,
    caller_until: Instant,
) -> (Instant, Instant) {
    let serve_until = token.expires_at.min(caller_until);
    let keep = match refresh {
        None => token.expires_at,
        Some((_, None)) => caller_until,
        Some((_, Some(refresh_until))) => token.expires_at.max(*refresh_until),
    };
    (serve_until, keep.min(caller_until))
}

/// What `/status` shows of a failure: what failed, never the provider's text (which may
/// name the caller).
fn public_reason(error: &ProviderError) -> String {
    match error {
        ProviderError::Rejected { status, .. } => {
            format!("provider rejected the gateway's client credentials (HTTP {status})")
        }
        ProviderError::RefreshRejected { status, .. } => {
            format!("provider rejected a refresh token (HTTP {status})")
        }
        ProviderError::Failed { status, .. } => format!("provider failed (HTTP {status})"),
        ProviderError::CallerRefused { status, .. } => {
            format!("provider refused a caller's token (HTTP {status})")
        }
        ProviderError::BadReply(_) => "provider reply unusable".to_owned(),
        ProviderError::Attestor(_) => "attestor failed".to_owned(),
        other => other.to_string(),
    }
}

/// The outage state holds no invariant a panic could break half way.
fn lock(outage: &Mutex<Outage>) -> MutexGuard<'_, Outage> {
    outage
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The request path's side of per-caller providers; the cache itself is the slot's.
impl TokenManager {
    /// Whether the provider mints a token per caller.
    pub fn is_per_caller(&self, id: ProviderId) -> bool {
        self.slots[id.0].per_caller.is_some()
    }

    /// The caller's token from a per-caller provider: a cache hit returns at once; a miss
    /// joins (or starts) the one provider call for this caller.
    pub async fn caller_credential(
        &self,
        id: ProviderId,
        caller: &CallerToken,
    ) -> Result<(Arc<Token>, CallerKey), CallerCredentialError> {
        let slot = &self.slots[id.0];
        let Some(per_caller) = &slot.per_caller else {
            return Err(CallerCredentialError::Unavailable(CredentialUnavailable {
                provider: slot.name.clone(),
                reason: "the provider does not mint tokens per caller".to_owned(),
                retry_after: Duration::from_secs(1),
            }));
        };
        per_caller.obtain(caller, &self.shared.control).await
    }

    /// The upstream refused the caller's token `token_id`.
    pub async fn reject_caller(&self, id: ProviderId, key: &CallerKey, token_id: u64) -> Rejection {
        match &self.slots[id.0].per_caller {
            Some(per_caller) => per_caller.reject(key, token_id).await,
            None => Rejection::Paused,
        }
    }

    /// The upstream accepted a request with the caller's token.
    pub async fn accepted_caller(&self, id: ProviderId, key: &CallerKey) {
        if let Some(per_caller) = &self.slots[id.0].per_caller {
            per_caller.accepted(key).await;
        }
    }
}

#[cfg(test)]
mod tests;
