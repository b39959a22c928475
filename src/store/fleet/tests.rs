//! The fleet protocol against an in-memory store that two or more `Fleet`s (replicas) share,
//! and that a test can take down.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::config::{StoreEndpoint, StoreSettings};
use crate::metrics::Metrics;

/// A store in memory, with expiry, that can be switched off.
#[derive(Default)]
struct MemoryStore {
    entries: Mutex<HashMap<String, (String, Instant)>>,
    down: AtomicBool,
}

impl MemoryStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError("connection refused".into()))
        } else {
            Ok(())
        }
    }

    fn live(&self, key: &str) -> Option<String> {
        let mut entries = self.entries.lock().unwrap();
        match entries.get(key) {
            Some((value, until)) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn values(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .map(|(v, _)| v.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl TokenStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        Ok(self.live(key))
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.check()?;
        self.entries
            .lock()
            .unwrap()
            .insert(key.to_owned(), (value.to_owned(), Instant::now() + ttl));
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.check()?;
        if self.live(key).is_some() {
            return Ok(false);
        }
        self.set(key, value, ttl).await?;
        Ok(true)
    }

    async fn delete_if_prefixed(&self, key: &str, prefix: &str) -> Result<bool, StoreError> {
        self.check()?;
        match self.live(key) {
            Some(value) if value.starts_with(prefix) => {
                self.entries.lock().unwrap().remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }
}

fn settings(lease: Duration) -> StoreSettings {
    StoreSettings {
        endpoint: StoreEndpoint::Direct(Secret::new("redis://127.0.0.1:1")),
        key_prefix: "t/".into(),
        encryption_key: Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        lease,
        timeout: Duration::from_millis(500),
    }
}

/// A replica on `store`.
fn replica(store: &Arc<MemoryStore>, lease: Duration) -> Fleet {
    let metrics = Metrics::new().unwrap();
    Fleet::new(
        &settings(lease),
        Arc::clone(store) as Arc<dyn TokenStore>,
        metrics.store().unwrap(),
    )
}

fn record(token: &str, refresh: Option<&str>) -> Record {
    Record {
        access_token: Secret::new(token),
        token_type: None,
        expires_at_ms: unix_ms() + 3_600_000,
        lifetime_ms: 3_600_000,
        refresh_token: refresh.map(Secret::new),
        refresh_expires_at_ms: None,
    }
}

fn any_record(_: &Record) -> bool {
    true
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn one_replica_takes_the_lease_and_the_others_take_what_it_publishes() {
    let store = Arc::new(MemoryStore::default());
    let (a, b) = (replica(&store, WAIT), replica(&store, WAIT));
    let keys = a.keys("idp", &[1; 32]);
    assert_eq!(keys, b.keys("idp", &[1; 32]), "replicas agree on the keys");

    let Decision::Call {
        lease: true,
        refresh_token: None,
    } = a.decide(&keys, None, None, any_record, WAIT).await
    else {
        panic!("the first replica did not get the lease");
    };
    // B waits for A's token rather than calling the provider itself.
    let waiting = tokio::spawn(async move {
        let keys = b.keys("idp", &[1; 32]);
        b.decide(&keys, None, None, any_record, WAIT).await
    });
    a.publish(&keys, &record("token-1", Some("refresh-1")))
        .await;
    a.release(&keys).await;
    let Decision::Shared(shared) = waiting.await.unwrap() else {
        panic!("the waiting replica did not take the published token");
    };
    assert_eq!(shared.access_token.expose(), "token-1");
    assert!(
        shared.refresh_token.is_none(),
        "only the lease holder uses the refresh token"
    );
}

#[tokio::test]
async fn a_stale_token_is_renewed_under_the_lease_with_the_stored_refresh_token() {
    let store = Arc::new(MemoryStore::default());
    let a = replica(&store, WAIT);
    let keys = a.keys("idp", &[1; 32]);
    a.publish(&keys, &record("token-1", Some("refresh-1")))
        .await;
    let stale = a.fingerprint(&Secret::new("token-1"));
    let Decision::Call {
        lease: true,
        refresh_token: Some(refresh),
    } = a.decide(&keys, Some(&stale), None, any_record, WAIT).await
    else {
        panic!("the stale token was taken back");
    };
    assert_eq!(refresh.expose(), "refresh-1");
}

#[tokio::test]
async fn a_purge_deletes_exactly_the_rejected_token() {
    let store = Arc::new(MemoryStore::default());
    let a = replica(&store, WAIT);
    let keys = a.keys("idp", &[1; 32]);
    a.publish(&keys, &record("token-2", None)).await;
    // A late rejection of an older token leaves the newer one.
    let old = a.fingerprint(&Secret::new("token-1"));
    let Decision::Shared(kept) = a.decide(&keys, None, Some(&old), any_record, WAIT).await else {
        panic!("a rejection of an older token purged the newer one");
    };
    assert_eq!(kept.access_token.expose(), "token-2");
    // A rejection of this one deletes it: the next fetch renews under the lease.
    let current = a.fingerprint(&Secret::new("token-2"));
    let Decision::Call { lease: true, .. } = a
        .decide(&keys, None, Some(&current), any_record, WAIT)
        .await
    else {
        panic!("the rejected token was not purged");
    };
}

#[tokio::test]
async fn a_lease_that_outlives_its_holder_expires_and_waiters_fall_back() {
    let store = Arc::new(MemoryStore::default());
    let (a, b) = (
        replica(&store, Duration::from_millis(300)),
        replica(&store, WAIT),
    );
    let keys = a.keys("idp", &[1; 32]);
    let Decision::Call { lease: true, .. } = a.decide(&keys, None, None, any_record, WAIT).await
    else {
        panic!("no lease");
    };
    // A dies holding it: B waits its provider timeout, then logs in alone.
    let Decision::Call { lease: false, .. } = b
        .decide(&keys, None, None, any_record, Duration::from_millis(100))
        .await
    else {
        panic!("B did not fall back");
    };
    // Once the lease expired, B can take it.
    let taken = tokio::time::timeout(WAIT, async {
        loop {
            if let Decision::Call { lease: true, .. } = b
                .decide(&keys, None, None, any_record, Duration::ZERO)
                .await
            {
                return;
            }
        }
    })
    .await;
    assert!(taken.is_ok(), "the dead holder's lease never expired");
}

#[tokio::test]
async fn a_store_that_is_down_means_logging_in_alone_and_comes_back() {
    let store = Arc::new(MemoryStore::default());
    let a = replica(&store, WAIT);
    let keys = a.keys("idp", &[1; 32]);
    store.down.store(true, Ordering::SeqCst);
    let Decision::Call {
        lease: false,
        refresh_token: None,
    } = a.decide(&keys, None, None, any_record, WAIT).await
    else {
        panic!("a down store was trusted");
    };
    assert!(!a.is_up());
    store.down.store(false, Ordering::SeqCst);
    let Decision::Call { lease: true, .. } = a.decide(&keys, None, None, any_record, WAIT).await
    else {
        panic!("no lease once the store is back");
    };
    assert!(a.is_up());
}

#[tokio::test]
async fn an_unusable_or_foreign_token_is_not_taken_and_nothing_is_in_clear() {
    let store = Arc::new(MemoryStore::default());
    let a = replica(&store, WAIT);
    let keys = a.keys("idp", &[1; 32]);
    a.publish(
        &keys,
        &record("token-secret-value", Some("refresh-secret-value")),
    )
    .await;
    let Decision::Call { lease: true, .. } = a.decide(&keys, None, None, |_| false, WAIT).await
    else {
        panic!("an unusable token was taken");
    };
    for value in store.values() {
        assert!(!value.contains("secret-value"), "{value}");
    }
    // Another provider's settings (a rotated secret) name other keys.
    assert_ne!(a.keys("idp", &[2; 32]), keys);
}
