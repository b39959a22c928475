//! Fleet mode: the replicas of one deployment share each provider's token through a store
//! (Redis or Valkey), so the fleet logs in and refreshes as one gateway.
//!
//! moka stays the first tier: a request with a valid token in its replica never touches the
//! store. The token manager consults the store on a miss and when it renews:
//!
//! - a usable token another replica published is taken as it is;
//! - otherwise one replica takes the provider's lease (set-if-absent with expiry), logs in
//!   or refreshes (only the lease holder ever uses the refresh token), publishes, and
//!   releases the lease (compare-and-delete); the others poll for what it publishes, up to
//!   the provider's timeout, then log in by themselves rather than fail;
//! - an upstream's rejection at any replica deletes exactly that token from the store
//!   (compare-and-delete on its fingerprint), so a newer one another replica stored
//!   survives.
//!
//! When the store is down or slow (every operation is bounded by `server.store.timeout`),
//! each replica logs in by itself, `tollgate_store_up` is 0, `/status` says `store: down`,
//! one line is logged, and it rejoins when the store answers again.

mod fleet;
mod redis_store;
mod sealed;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::clock::unix_ms;
pub use fleet::{Decision, Fleet, SlotKeys};
pub use redis_store::RedisStore;
pub use sealed::{Record, SealError, Sealer};

/// The store operations fleet mode needs: plain values with expiry, set-if-absent for the
/// lease, and compare-and-delete by prefix (a fingerprint, or a lease holder's id).
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Sets `key` only when it is absent; whether it did.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Deletes `key` only when its value starts with `prefix`; whether it did.
    async fn delete_if_prefixed(&self, key: &str, prefix: &str) -> Result<bool, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A store operation that failed or took too long. Its text names the cause, never a URL
/// (which may hold a password) or a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);
