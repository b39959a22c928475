//! Getting a token: one job at a time per provider (the fetch lock), on the control runtime,
//! from the cache, the store (fleet mode) or the provider; and the refresher that renews
//! ahead of expiry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{backoff, lock, unavailable, CredentialUnavailable, Shared, Slot, Token};
use crate::providers::{Grant, ProviderError};
use crate::secret::Secret;
use crate::store::{unix_ms, Decision, Fleet, Record, SlotKeys};

/// A token obtained from the provider, and the refresh token that came with it.
struct Obtained {
    token: Arc<Token>,
    refresh: Option<(Secret, Option<Duration>)>,
}

impl Shared {
    /// Runs (or joins) a provider call on the control runtime and waits for its outcome.
    /// `replacing` is the token a renewal replaces (not to be taken back).
    pub(super) async fn fetch(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        replacing: Option<Arc<Token>>,
    ) -> Result<Arc<Token>, CredentialUnavailable> {
        if let Some(unavailable) = self.backing_off(slot) {
            return Err(unavailable);
        }
        let shared = Arc::clone(self);
        let job_slot = Arc::clone(slot);
        let job = async move { shared.run_fetch(&job_slot, replacing.as_deref()).await };
        match self.control.spawn(job).await {
            Ok(result) => result,
            Err(_) => Err(CredentialUnavailable {
                provider: slot.name.clone(),
                reason: "token fetch was interrupted (shutting down)".to_owned(),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// One fetch under the fetch lock. Callers that queued behind a successful one take its
    /// token; callers that queued behind a failed one take its backoff.
    async fn run_fetch(
        &self,
        slot: &Slot,
        replacing: Option<&Token>,
    ) -> Result<Arc<Token>, CredentialUnavailable> {
        let _guard = slot.fetch_lock.lock().await;
        let now = Instant::now();
        if let Some(token) = self.cache.get(&slot.key).await.filter(|t| t.is_usable(now)) {
            if replacing.map(|r| r.id) != Some(token.id) {
                return Ok(token);
            }
        }
        if let Some(unavailable) = self.backing_off(slot) {
            return Err(unavailable);
        }
        match (&self.fleet, &slot.store_keys) {
            (Some(fleet), Some(keys)) => self.through_fleet(fleet, keys, slot, replacing).await,
            _ => {
                let refresh_token = held_refresh_token(slot);
                self.call_and_keep(slot, refresh_token)
                    .await
                    .map(|o| o.token)
            }
        }
    }

    /// Fleet mode: a token another replica published, or the provider under the lease (then
    /// published), or the provider alone when the store cannot help.
    async fn through_fleet(
        &self,
        fleet: &Fleet,
        keys: &SlotKeys,
        slot: &Slot,
        replacing: Option<&Token>,
    ) -> Result<Arc<Token>, CredentialUnavailable> {
        let stale = replacing.map(|token| fleet.fingerprint(&token.value));
        let purge = lock(&slot.state).store_purge.take();
        let policy = slot.policy;
        let usable = |record: &Record| {
            Token::from_shared(
                0,
                record.access_token.clone(),
                record.token_type.as_deref(),
                record.expires_at_ms,
                Duration::from_millis(record.lifetime_ms),
                &policy,
            )
            .is_some()
        };
        let decision = fleet
            .decide(
                keys,
                stale.as_deref(),
                purge.as_deref(),
                usable,
                slot.spec.timeout,
            )
            .await;
        match decision {
            Decision::Shared(record) => self.take_shared(slot, record).await,
            Decision::Call {
                lease: false,
                refresh_token: _,
            } => self.call_and_keep(slot, None).await.map(|o| o.token),
            Decision::Call {
                lease: true,
                refresh_token,
            } => {
                let result = self.call_and_keep(slot, refresh_token).await;
                if let Ok(obtained) = &result {
                    fleet.publish(keys, &record_of(obtained)).await;
                }
                fleet.release(keys).await;
                result.map(|o| o.token)
            }
        }
    }

    /// Takes a token another replica published, as it is.
    async fn take_shared(
        &self,
        slot: &Slot,
        record: Record,
    ) -> Result<Arc<Token>, CredentialUnavailable> {
        let id = self.counters.next_token_id.fetch_add(1, Ordering::Relaxed);
        let Some(token) = Token::from_shared(
            id,
            record.access_token,
            record.token_type.as_deref(),
            record.expires_at_ms,
            Duration::from_millis(record.lifetime_ms),
            &slot.policy,
        ) else {
            // Checked usable a moment ago; the clock moved past it since.
            return self.call_and_keep(slot, None).await.map(|o| o.token);
        };
        let token = Arc::new(token);
        self.succeeded(slot, id);
        self.cache.insert(slot.key, Arc::clone(&token)).await;
        slot.expiry.set(token.expires_at_unix);
        tracing::info!(
            provider = %slot.name,
            fingerprint = %token.fingerprint,
            expires_in_seconds = token.expires_at.saturating_duration_since(Instant::now()).as_secs(),
            "token taken from the store"
        );
        Ok(token)
    }

    /// The provider call and its bookkeeping: metrics, the cache, backoff on failure.
    async fn call_and_keep(
        &self,
        slot: &Slot,
        refresh_token: Option<Secret>,
    ) -> Result<Obtained, CredentialUnavailable> {
        let started = Instant::now();
        let (kind, result) = self.call_provider(slot, refresh_token).await;
        self.metrics
            .token_request_duration
            .with_label_values(&[&slot.name])
            .observe(started.elapsed().as_secs_f64());
        let result = result.and_then(|grant| self.accept(slot, kind, grant));
        // Counted once the outcome is in force (a new token in the cache), so whoever
        // watches the counter sees the token in use.
        let count = |outcome: &str| {
            self.metrics
                .token_requests
                .with_label_values(&[&slot.name, kind, outcome])
                .inc();
        };
        match result {
            Ok(obtained) => {
                let token = &obtained.token;
                self.cache.insert(slot.key, Arc::clone(token)).await;
                slot.expiry.set(token.expires_at_unix);
                count("success");
                tracing::info!(
                    provider = %slot.name,
                    kind,
                    fingerprint = %token.fingerprint,
                    expires_in_seconds = token.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                    lifetime_from = ?token.lifetime_source,
                    "token obtained"
                );
                Ok(obtained)
            }
            Err(error) => {
                let mut state = lock(&slot.state);
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let delay = if error.is_permanent() {
                    slot.policy.max_backoff
                } else {
                    backoff::delay(&slot.policy, state.consecutive_failures)
                };
                state.retry_at = Some(Instant::now() + delay);
                tracing::warn!(
                    provider = %slot.name,
                    kind,
                    error = %error,
                    consecutive_failures = state.consecutive_failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "token request failed"
                );
                state.last_error = Some(error);
                let unavailable = unavailable(slot, &state, delay);
                drop(state);
                count("failure");
                Err(unavailable)
            }
        }
    }

    /// Refreshes with `refresh_token` when there is one; a refused refresh token is
    /// dropped and replaced by one full login, never retried in a loop.
    async fn call_provider(
        &self,
        slot: &Slot,
        refresh_token: Option<Secret>,
    ) -> (&'static str, Result<Grant, ProviderError>) {
        if let Some(refresh_token) = refresh_token {
            match slot.provider.refresh(&refresh_token).await {
                Err(error) if error.needs_login() => {
                    tracing::warn!(provider = %slot.name, error = %error, "refresh token refused; logging in again");
                    self.metrics
                        .token_requests
                        .with_label_values(&[&slot.name, "refresh", "failure"])
                        .inc();
                    lock(&slot.state).refresh_token = None;
                }
                other => return ("refresh", other),
            }
        }
        ("login", slot.provider.login().await)
    }

    /// A grant becomes the token in use. Without a store the refresh token stays with the
    /// slot; in fleet mode it goes to the store with the token, for the next lease holder.
    fn accept(&self, slot: &Slot, kind: &str, grant: Grant) -> Result<Obtained, ProviderError> {
        let id = self.counters.next_token_id.fetch_add(1, Ordering::Relaxed);
        let token = Arc::new(Token::from_grant(id, &grant, &slot.policy)?);
        let refresh = grant
            .refresh_token
            .map(|refresh_token| (refresh_token, grant.refresh_expires_in));
        if slot.store_keys.is_none() {
            let mut state = lock(&slot.state);
            match &refresh {
                Some((refresh_token, expires_in)) => {
                    let expires = expires_in.map(|d| Instant::now() + d);
                    state.refresh_token = Some((refresh_token.clone(), expires));
                }
                None if kind == "login" => state.refresh_token = None,
                None => {}
            }
        }
        self.succeeded(slot, id);
        Ok(Obtained { token, refresh })
    }

    /// A new token `id` is in use: the failure state resets.
    fn succeeded(&self, slot: &Slot, id: u64) {
        let mut state = lock(&slot.state);
        state.consecutive_failures = 0;
        state.retry_at = None;
        state.last_error = None;
        state.last_success = Some(SystemTime::now());
        state.rejections.token_obtained(id);
        slot.guard_engaged
            .store(state.rejections.is_engaged(), Ordering::Relaxed);
    }

    pub(super) fn backing_off(&self, slot: &Slot) -> Option<CredentialUnavailable> {
        let state = lock(&slot.state);
        let retry_at = state.retry_at?;
        let wait = retry_at.checked_duration_since(Instant::now())?;
        Some(unavailable(slot, &state, wait))
    }

    pub(super) async fn refresh_loop(self: Arc<Self>, slot: Arc<Slot>) {
        while !slot.retired.load(Ordering::Acquire) {
            let now = Instant::now();
            let current = self.cache.get(&slot.key).await.filter(|t| t.is_usable(now));
            let due = current.as_ref().map_or(now, |token| token.refresh_at);
            let retry_at = lock(&slot.state).retry_at.unwrap_or(now);
            let due = due.max(retry_at);
            if due > now {
                tracing::debug!(
                    provider = %slot.name,
                    in_seconds = due.duration_since(now).as_secs(),
                    "next token renewal scheduled"
                );
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = slot.wake.notified() => {}
                }
                continue;
            }
            if let Err(error) = self.fetch(&slot, current).await {
                tracing::warn!(provider = %slot.name, reason = %error.reason, retry_in_seconds = error.retry_after.as_secs(), "token refresh failed");
            }
        }
    }
}

/// The refresh token the slot holds, if it is still fresh (without a store).
fn held_refresh_token(slot: &Slot) -> Option<Secret> {
    let state = lock(&slot.state);
    state
        .refresh_token
        .as_ref()
        .filter(|(_, expires)| expires.is_none_or(|at| at > Instant::now()))
        .map(|(token, _)| token.clone())
}

/// What the lease holder publishes for the other replicas.
fn record_of(obtained: &Obtained) -> Record {
    let token = &obtained.token;
    let now_ms = unix_ms();
    Record {
        access_token: token.value.clone(),
        token_type: Some(token.token_type.clone()),
        expires_at_ms: (token.expires_at_unix * 1000.0) as u64,
        lifetime_ms: token.lifetime.as_millis() as u64,
        refresh_token: obtained.refresh.as_ref().map(|(r, _)| r.clone()),
        refresh_expires_at_ms: obtained
            .refresh
            .as_ref()
            .and_then(|(_, expires_in)| *expires_in)
            .map(|d| now_ms + d.as_millis() as u64),
    }
}
