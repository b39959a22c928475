//! The token manager: one token per provider, shared by every request, kept in moka.
//!
//! It owns the whole lifecycle. The request path only ever calls [`TokenManager::credential`]
//! (a cache hit never waits on I/O) and [`TokenManager::reject`]. Every provider call runs
//! as a job on the control runtime under the provider's fetch lock, so concurrent misses
//! and the background refresher make one call between them (single flight), and a caller
//! that goes away cannot abandon a login half way.

mod backoff;
mod fetch;
mod per_caller;
mod rejection;
#[cfg(test)]
mod tests;
mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;
use prometheus::Gauge;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::config::{ProviderSpec, RefreshPolicy};
use crate::metrics::{CacheLookupCounters, Metrics};
use crate::providers::{BuildError, Provider, ProviderError};
use crate::secret::Secret;
use crate::store::{Fleet, SlotKeys};

pub use per_caller::{
    CallerCredentialError, CallerKey, CallerRefused, CallerToken, ExchangeCounts, PerCallerStatus,
};
use rejection::{RejectionGuard, Verdict};
pub use token::{fingerprint, jwt_claims, jwt_expiry, LifetimeSource, Token};

/// Index of a provider in the manager, resolved once at startup so the hot path does not
/// hash provider names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProviderId(usize);

/// Names a provider's token in the cache. Unique for the life of the process, so a
/// provider kept across a config reload keeps its key, its token and its refresher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SlotKey(u64);

/// No valid token could be had; the request must not be forwarded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct CredentialUnavailable {
    pub provider: String,
    pub reason: String,
    pub retry_after: Duration,
}

pub struct TokenManager {
    shared: Arc<Shared>,
    slots: Vec<Arc<Slot>>,
    by_name: HashMap<String, ProviderId>,
}

/// What every manager of the process shares with the managers later config reloads build,
/// and all a refresher or a fetch job needs besides its slot. A refresher holds this, not
/// its manager, so a manager a reload replaced (and the providers it retired) is freed even
/// while a provider it shared with the next one keeps refreshing.
struct Shared {
    cache: Cache<SlotKey, Arc<Token>>,
    control: Handle,
    counters: Counters,
    metrics: Arc<Metrics>,
    /// Fleet mode: tokens shared with the other replicas through the store.
    fleet: Option<Arc<Fleet>>,
}

/// Process-wide sequence numbers, shared across reloads so ids never repeat.
#[derive(Default)]
struct Counters {
    next_token_id: AtomicU64,
    next_slot_key: AtomicU64,
}

struct Slot {
    key: SlotKey,
    name: String,
    /// The settings it was built from; a reload keeps the slot only if they are unchanged.
    spec: ProviderSpec,
    /// Set when a reload dropped or changed the provider; its refresher stops.
    retired: AtomicBool,
    refresher_running: AtomicBool,
    provider: Arc<dyn Provider>,
    policy: RefreshPolicy,
    fetch_lock: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
    /// Set while the rejection guard has something an accepted request would reset, so
    /// that the request path takes no lock otherwise.
    guard_engaged: AtomicBool,
    /// Wakes the background refresher when its token was purged.
    wake: Notify,
    /// Where its token lives in the store (fleet mode).
    store_keys: Option<SlotKeys>,
    lookups: CacheLookupCounters,
    expiry: Gauge,
    /// Set for a provider that mints a token per caller: its cache of callers' tokens. Such
    /// a slot has no token of its own, and no refresher.
    per_caller: Option<Arc<per_caller::PerCaller>>,
}

#[derive(Default)]
struct SlotState {
    consecutive_failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<ProviderError>,
    last_success: Option<SystemTime>,
    refresh_token: Option<(Secret, Option<Instant>)>,
    rejections: RejectionGuard,
    /// The fingerprint of a token an upstream rejected here, to delete from the store
    /// before the next fetch (the request path does no store I/O).
    store_purge: Option<String>,
}

/// What an upstream's rejection of a token led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The token is (or already was) replaced: a retry gets a fresh one.
    Renewing,
    /// Renewals on rejection are paused (fresh tokens were rejected too): the caller gets
    /// the upstream's answer.
    Paused,
}

/// Per-provider view for `/status` and `/readyz`; it holds a fingerprint, never a token.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub provider: String,
    pub state: &'static str,
    pub seconds_to_expiry: Option<u64>,
    pub last_refresh_unix: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Rounds in a row in which the upstream rejected a token fresh from a renewal.
    pub upstream_rejections: u32,
    /// How long renewals on rejection stay paused, when they are.
    pub rejection_pause_seconds: Option<u64>,
    pub retry_in_seconds: Option<u64>,
    pub token_fingerprint: Option<String>,
    /// For a provider that mints a token per caller: counts of callers and outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_caller: Option<PerCallerStatus>,
}

/// Lets each cache entry live exactly as long as its token is usable.
struct TokenExpiry;

impl Expiry<SlotKey, Arc<Token>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &SlotKey,
        token: &Arc<Token>,
        now: Instant,
    ) -> Option<Duration> {
        Some(token.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &SlotKey,
        token: &Arc<Token>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(token.expires_at.saturating_duration_since(now))
    }
}

impl TokenManager {
    /// `control` is the runtime that runs provider calls and refreshers; it must outlive
    /// the manager's use.
    pub fn new(
        providers: Vec<(&ProviderSpec, Arc<dyn Provider>)>,
        control: Handle,
        metrics: Arc<Metrics>,
        fleet: Option<Arc<Fleet>>,
    ) -> Arc<TokenManager> {
        // Room for reloads that replace every provider while old tokens still expire.
        let cache = Cache::builder()
            .max_capacity((providers.len().max(1) * 4) as u64)
            .expire_after(TokenExpiry)
            .build();
        let shared = Arc::new(Shared {
            cache,
            control,
            counters: Counters::default(),
            metrics,
            fleet,
        });
        let slots: Vec<Arc<Slot>> = providers
            .into_iter()
            .map(|(spec, provider)| new_slot(spec, provider, &shared))
            .collect();
        Self::assemble(slots, shared)
    }

    /// The manager for a reloaded config: providers whose settings did not change keep
    /// their slot (token, refresher, backoff state); the others get new ones. Call
    /// [`TokenManager::retire_replaced`] on `self` once the successor is in use.
    pub fn successor(
        &self,
        specs: &[ProviderSpec],
        mut build: impl FnMut(&ProviderSpec) -> Result<Arc<dyn Provider>, BuildError>,
    ) -> Result<Arc<TokenManager>, BuildError> {
        let mut slots = Vec::with_capacity(specs.len());
        for spec in specs {
            let kept = self
                .slots
                .iter()
                .find(|slot| slot.name == spec.name && slot.spec == *spec);
            slots.push(match kept {
                Some(slot) => Arc::clone(slot),
                None => new_slot(spec, build(spec)?, &self.shared),
            });
        }
        Ok(Self::assemble(slots, Arc::clone(&self.shared)))
    }

    /// Stops the refreshers of providers `successor` no longer has, and drops their tokens.
    pub async fn retire_replaced(&self, successor: &TokenManager) {
        for slot in &self.slots {
            if successor.slots.iter().any(|kept| Arc::ptr_eq(kept, slot)) {
                continue;
            }
            slot.retired.store(true, Ordering::Release);
            slot.wake.notify_one();
            self.shared.cache.invalidate(&slot.key).await;
            if let Some(per_caller) = &slot.per_caller {
                per_caller.clear();
            }
            tracing::info!(provider = %slot.name, "provider removed or changed by reload; its token is dropped");
        }
    }

    /// Whether the two managers share the slot of `name` (a reload kept the provider).
    pub fn keeps_provider(&self, successor: &TokenManager, name: &str) -> bool {
        let slot = |manager: &TokenManager| manager.slots.iter().find(|s| s.name == name).cloned();
        matches!((slot(self), slot(successor)), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b))
    }

    fn assemble(slots: Vec<Arc<Slot>>, shared: Arc<Shared>) -> Arc<TokenManager> {
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(index, slot)| (slot.name.clone(), ProviderId(index)))
            .collect();
        Arc::new(TokenManager {
            shared,
            slots,
            by_name,
        })
    }

    pub fn provider_id(&self, name: &str) -> Option<ProviderId> {
        self.by_name.get(name).copied()
    }

    /// Starts a background refresher for each provider that has none yet (a slot kept by
    /// a reload keeps its own); each logs in at once.
    pub fn start_refreshers(self: &Arc<Self>) {
        for slot in &self.slots {
            if slot.per_caller.is_some() || slot.refresher_running.swap(true, Ordering::AcqRel) {
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let slot = Arc::clone(slot);
            self.shared
                .control
                .spawn(async move { shared.refresh_loop(slot).await });
        }
    }

    /// The provider's current token. A hit returns at once; a miss joins (or starts) the
    /// single provider call, unless the provider is backing off after failures.
    pub async fn credential(
        self: &Arc<Self>,
        id: ProviderId,
    ) -> Result<Arc<Token>, CredentialUnavailable> {
        let slot = &self.slots[id.0];
        if let Some(token) = self.shared.cache.get(&slot.key).await {
            if token.is_usable(Instant::now()) {
                slot.lookups.hit.inc();
                return Ok(token);
            }
        }
        slot.lookups.miss.inc();
        tracing::debug!(provider = %slot.name, "no usable token in the cache; fetching one");
        self.shared.fetch(slot, None).await
    }

    /// The provider's token in the cache, if any, without fetching one: what an MCP tool
    /// result is cleaned of.
    pub async fn peek(&self, id: ProviderId) -> Option<Arc<Token>> {
        self.shared.cache.get(&self.slots[id.0].key).await
    }

    /// The upstream refused `token_id`: drop it, unless a newer token already replaced it,
    /// or the rejection guard says renewing does not help (see `rejection.rs`).
    pub async fn reject(&self, id: ProviderId, token_id: u64) -> Rejection {
        let slot = &self.slots[id.0];
        let verdict = {
            let mut state = lock(&slot.state);
            let verdict = state
                .rejections
                .on_rejection(token_id, Instant::now(), &slot.policy);
            slot.guard_engaged
                .store(state.rejections.is_engaged(), Ordering::Relaxed);
            verdict
        };
        match verdict {
            Verdict::Keep => return Rejection::Paused,
            Verdict::Pause(pause) => {
                tracing::warn!(
                    provider = %slot.name,
                    paused_seconds = pause.as_secs_f64(),
                    "the upstream rejected a token fresh from a renewal too: renewals on rejection are paused, callers get the upstream's answer"
                );
                return Rejection::Paused;
            }
            Verdict::Purge => {}
        }
        let result = self
            .shared
            .cache
            .entry(slot.key)
            .and_compute_with(|entry| {
                let op = match entry {
                    Some(entry) if entry.value().id == token_id => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        if let moka::ops::compute::CompResult::Removed(entry) = result {
            let mut state = lock(&slot.state);
            state.rejections.purged();
            if let Some(fleet) = &self.shared.fleet {
                state.store_purge = Some(fleet.fingerprint(&entry.value().value));
            }
            drop(state);
            tracing::info!(provider = %slot.name, "upstream rejected the token; it was purged");
            slot.wake.notify_one();
        }
        Rejection::Renewing
    }

    /// The upstream accepted a request with the provider's token: renewing on rejection
    /// works (again). Free on the request path unless the rejection guard is engaged.
    pub fn accepted(&self, id: ProviderId) {
        let slot = &self.slots[id.0];
        if !slot.guard_engaged.load(Ordering::Relaxed) {
            return;
        }
        lock(&slot.state).rejections.accepted();
        slot.guard_engaged.store(false, Ordering::Relaxed);
    }

    /// Ends the current session of every provider configured to (on shutdown).
    pub async fn end_sessions(&self) {
        for slot in &self.slots {
            if !slot.provider.ends_sessions() {
                continue;
            }
            let Some(token) = self.shared.cache.get(&slot.key).await else {
                continue;
            };
            self.shared.cache.invalidate(&slot.key).await;
            let provider = Arc::clone(&slot.provider);
            let outcome = self
                .shared
                .control
                .spawn(async move { provider.end_session(&token.value).await })
                .await;
            match outcome {
                Ok(Ok(())) => tracing::info!(provider = %slot.name, "session ended"),
                Ok(Err(error)) => {
                    tracing::warn!(provider = %slot.name, %error, "could not end the session")
                }
                Err(_) => {
                    tracing::warn!(provider = %slot.name, "ending the session was interrupted")
                }
            }
        }
    }

    /// The token store in fleet mode: `up` or `down`; `off` without one.
    pub fn store_state(&self) -> &'static str {
        match &self.shared.fleet {
            None => "off",
            Some(fleet) if fleet.is_up() => "up",
            Some(_) => "down",
        }
    }

    pub async fn status(&self) -> Vec<ProviderStatus> {
        let mut statuses = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            if let Some(per_caller) = &slot.per_caller {
                statuses.push(per_caller.status().await);
                continue;
            }
            let now = Instant::now();
            let token = self
                .shared
                .cache
                .get(&slot.key)
                .await
                .filter(|t| t.is_usable(now));
            statuses.push(Self::slot_status(slot, token.as_deref(), now));
        }
        statuses
    }

    fn slot_status(slot: &Slot, token: Option<&Token>, now: Instant) -> ProviderStatus {
        let state = lock(&slot.state);
        let retry_in = state
            .retry_at
            .and_then(|at| at.checked_duration_since(now))
            .map(|d| d.as_secs().max(1));
        let label = match (&token, state.consecutive_failures) {
            (Some(_), 0) => "valid",
            (Some(_), _) => "valid_refresh_failing",
            (None, 0) => "pending",
            (None, _) => "unavailable",
        };
        ProviderStatus {
            provider: slot.name.clone(),
            state: label,
            seconds_to_expiry: token.map(|t| t.expires_at.saturating_duration_since(now).as_secs()),
            last_refresh_unix: state
                .last_success
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            consecutive_failures: state.consecutive_failures,
            last_error: state.last_error.as_ref().map(ToString::to_string),
            upstream_rejections: state.rejections.consecutive(),
            rejection_pause_seconds: state
                .rejections
                .pause_left(now)
                .map(|left| left.as_secs().max(1)),
            retry_in_seconds: retry_in,
            token_fingerprint: token.map(|t| t.fingerprint.clone()),
            per_caller: None,
        }
    }
}

fn unavailable(slot: &Slot, state: &SlotState, wait: Duration) -> CredentialUnavailable {
    let reason = match &state.last_error {
        Some(error) => format!(
            "{error} (after {} failed attempts)",
            state.consecutive_failures
        ),
        None => "no token yet".to_owned(),
    };
    CredentialUnavailable {
        provider: slot.name.clone(),
        reason,
        retry_after: wait,
    }
}

/// The slot state holds no invariant a panic could break half way, so a poisoned lock is
/// still safe to use.
fn lock(state: &Mutex<SlotState>) -> MutexGuard<'_, SlotState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_slot(spec: &ProviderSpec, provider: Arc<dyn Provider>, shared: &Shared) -> Arc<Slot> {
    let (counters, metrics) = (&shared.counters, &shared.metrics);
    Arc::new(Slot {
        key: SlotKey(counters.next_slot_key.fetch_add(1, Ordering::Relaxed)),
        name: spec.name.clone(),
        spec: spec.clone(),
        retired: AtomicBool::new(false),
        refresher_running: AtomicBool::new(false),
        policy: spec.refresh,
        fetch_lock: tokio::sync::Mutex::new(()),
        state: Mutex::new(SlotState::default()),
        guard_engaged: AtomicBool::new(false),
        wake: Notify::new(),
        store_keys: shared
            .fleet
            .as_ref()
            .map(|fleet| fleet.keys(&spec.name, &spec.identity)),
        lookups: metrics.cache_lookups(&spec.name),
        expiry: metrics.expiry_gauge(&spec.name),
        per_caller: spec.per_caller.map(|settings| {
            Arc::new(per_caller::PerCaller::new(
                spec,
                settings,
                Arc::clone(&provider),
                metrics,
            ))
        }),
        provider,
    })
}
