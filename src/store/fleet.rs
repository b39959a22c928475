//! The protocol the replicas follow on the store: what the token manager asks before it
//! calls a provider, and what it publishes after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Record, Sealer, StoreError, TokenStore};
use crate::clock::unix_ms;
use crate::config::StoreSettings;
use crate::metrics::StoreMetrics;
use crate::secret::Secret;

/// How often a replica waiting for the lease holder looks for what it published.
const POLL: Duration = Duration::from_millis(50);
/// How often the store is pinged, so that its state shows while no token is due.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

pub struct Fleet {
    store: Arc<dyn TokenStore>,
    sealer: Sealer,
    prefix: String,
    lease: Duration,
    /// This replica's id in lease values.
    holder: String,
    up: AtomicBool,
    metrics: StoreMetrics,
}

/// Where one provider's entries live in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotKeys {
    provider: String,
    token: String,
    lease: String,
}

/// What the token manager does next.
#[derive(Debug)]
pub enum Decision {
    /// Use the token another replica published.
    Shared(Record),
    /// Call the provider. With the lease, publish the result and release it; the stored
    /// refresh token, if any, is this replica's to use.
    Call {
        lease: bool,
        refresh_token: Option<Secret>,
    },
}

impl Fleet {
    pub fn new(
        settings: &StoreSettings,
        store: Arc<dyn TokenStore>,
        metrics: StoreMetrics,
    ) -> Fleet {
        let mut key = [0u8; 32];
        use base64::Engine;
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD
            .decode(settings.encryption_key.expose().trim())
        {
            if bytes.len() == 32 {
                key.copy_from_slice(&bytes);
            }
        }
        let sealer = Sealer::new(&key);
        zeroize::Zeroize::zeroize(&mut key);
        metrics.up.set(1);
        Fleet {
            store,
            sealer,
            prefix: settings.key_prefix.clone(),
            lease: settings.lease,
            holder: format!("{:032x}", rand::random::<u128>()),
            up: AtomicBool::new(true),
            metrics,
        }
    }

    pub fn keys(&self, provider: &str, identity: &[u8; 32]) -> SlotKeys {
        let tag = self.sealer.provider_tag(provider, identity);
        SlotKeys {
            provider: provider.to_owned(),
            token: format!("{}token/{tag}", self.prefix),
            lease: format!("{}lease/{tag}", self.prefix),
        }
    }

    /// How replicas name a token (an HMAC; never the token).
    pub fn fingerprint(&self, token: &Secret) -> String {
        self.sealer.fingerprint(token)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Before a provider call: first deletes `purge` (a token an upstream rejected here) if
    /// it is still the stored one; then takes a stored token that is not `stale` and is
    /// `usable`; else takes the lease, or waits up to `wait` for the holder's token. A store
    /// that fails says: call the provider alone.
    pub async fn decide(
        &self,
        keys: &SlotKeys,
        stale: Option<&str>,
        purge: Option<&str>,
        usable: impl Fn(&Record) -> bool,
        wait: Duration,
    ) -> Decision {
        let alone = Decision::Call {
            lease: false,
            refresh_token: None,
        };
        if let Some(fingerprint) = purge {
            let prefix = format!("{fingerprint}:");
            if self
                .op("purge", self.store.delete_if_prefixed(&keys.token, &prefix))
                .await
                .is_err()
            {
                return alone;
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            let Ok(current) = self.read(keys).await else {
                return alone;
            };
            if let Some(record) = current.as_ref().filter(|r| self.fresh(r, stale, &usable)) {
                self.lease_outcome(keys, "shared");
                return Decision::Shared(clone_record(record));
            }
            match self
                .op(
                    "lease",
                    self.store
                        .set_if_absent(&keys.lease, &self.holder, self.lease),
                )
                .await
            {
                Err(_) => return alone,
                Ok(true) => {
                    // The previous holder may have published just before it let go.
                    if let Ok(Some(record)) = self.read(keys).await {
                        if self.fresh(&record, stale, &usable) {
                            self.release(keys).await;
                            self.lease_outcome(keys, "shared");
                            return Decision::Shared(record);
                        }
                    }
                    self.lease_outcome(keys, "acquired");
                    let now_ms = unix_ms();
                    let refresh_token = current.and_then(|record| {
                        let fresh = record.refresh_expires_at_ms.is_none_or(|at| at > now_ms);
                        record.refresh_token.filter(|_| fresh)
                    });
                    return Decision::Call {
                        lease: true,
                        refresh_token,
                    };
                }
                Ok(false) if Instant::now() >= deadline => {
                    self.lease_outcome(keys, "fallback");
                    tracing::warn!(
                        provider = %keys.provider,
                        waited_ms = wait.as_millis() as u64,
                        "another replica holds the login lease and published no token in time; logging in alone"
                    );
                    return alone;
                }
                Ok(false) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Stores the token this replica obtained under the lease, for the others.
    pub async fn publish(&self, keys: &SlotKeys, record: &Record) {
        let left = record.expires_at_ms.saturating_sub(unix_ms());
        if left == 0 {
            return;
        }
        let value = self.sealer.seal(&keys.token, record);
        let _ = self
            .op(
                "publish",
                self.store
                    .set(&keys.token, &value, Duration::from_millis(left)),
            )
            .await;
    }

    /// Lets go of the lease, if this replica still holds it.
    pub async fn release(&self, keys: &SlotKeys) {
        let _ = self
            .op(
                "release",
                self.store.delete_if_prefixed(&keys.lease, &self.holder),
            )
            .await;
    }

    /// Pings the store every few seconds until the process ends, so `tollgate_store_up` and
    /// `/status` follow it while no token is due.
    pub async fn watch(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let _ = self.op("ping", self.store.ping()).await;
        }
    }

    fn fresh(
        &self,
        record: &Record,
        stale: Option<&str>,
        usable: &impl Fn(&Record) -> bool,
    ) -> bool {
        stale != Some(self.fingerprint(&record.access_token).as_str()) && usable(record)
    }

    /// The stored record; a value that does not open (another key, or tampered with) counts
    /// as none, and is left for its owner's expiry.
    async fn read(&self, keys: &SlotKeys) -> Result<Option<Record>, StoreError> {
        let Some(value) = self.op("get", self.store.get(&keys.token)).await? else {
            return Ok(None);
        };
        match self.sealer.open(&keys.token, &value) {
            Ok(record) => Ok(Some(record)),
            Err(error) => {
                tracing::warn!(provider = %keys.provider, %error, "ignoring a stored token");
                Ok(None)
            }
        }
    }

    fn lease_outcome(&self, keys: &SlotKeys, outcome: &str) {
        self.metrics
            .leases
            .with_label_values(&[&keys.provider, outcome])
            .inc();
    }

    /// Runs one store operation, counts it, and follows the store's state: one line when it
    /// goes down (every replica then logs in alone), one when it is back.
    async fn op<T>(
        &self,
        operation: &str,
        future: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = future.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .operations
            .with_label_values(&[operation, outcome])
            .inc();
        let up = result.is_ok();
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.up.set(i64::from(up));
            match &result {
                Err(error) => tracing::error!(
                    %error,
                    operation,
                    "the token store is unreachable: every replica logs in and refreshes by itself until it is back"
                ),
                Ok(_) => tracing::info!("the token store answers again: tokens are shared again"),
            }
        }
        result
    }
}

fn clone_record(record: &Record) -> Record {
    Record {
        access_token: record.access_token.clone(),
        token_type: record.token_type.clone(),
        expires_at_ms: record.expires_at_ms,
        lifetime_ms: record.lifetime_ms,
        refresh_token: None,
        refresh_expires_at_ms: None,
    }
}

#[cfg(test)]
mod tests;
