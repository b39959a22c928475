//! Fleet mode: what a request that misses moka pays when the store has the token. Starts
//! its own `redis-server` (installed by `.ci/deps`) on a free loopback port, publishes a
//! sealed token, and measures `Fleet::decide` (one GET and the unsealing) against the moka
//! hit it replaces. Run: `cargo bench --bench store`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use tollgate::config::{StoreEndpoint, StoreSettings};
use tollgate::metrics::Metrics;
use tollgate::secret::Secret;
use tollgate::store::{unix_ms, Decision, Fleet, Record, RedisStore};
use tollgate_standins::redis::RedisServer;

mod support;

fn bench(c: &mut Criterion) {
    let runtime = support::runtime();
    let redis = runtime.block_on(RedisServer::start());
    let settings = StoreSettings {
        endpoint: StoreEndpoint::Direct(Secret::new(redis.url())),
        key_prefix: "bench/".into(),
        encryption_key: Secret::new("bm90LWEtcmVhbC1rZXktanVzdC1mb3ItdGhlLWJlbmM="),
        lease: Duration::from_secs(10),
        timeout: Duration::from_millis(500),
    };
    let metrics = Metrics::new().expect("metrics");
    let fleet = Fleet::new(
        &settings,
        Arc::new(RedisStore::new(&settings)),
        metrics.store().expect("store metrics"),
    );
    let keys = fleet.keys("idp", &[7; 32]);
    let record = Record {
        access_token: Secret::new(
            "eyJhbGciOiJIUzI1NiJ9.a-bench-token-of-realistic-length.signature",
        ),
        token_type: Some("Bearer".into()),
        expires_at_ms: unix_ms() + 3_600_000,
        lifetime_ms: 3_600_000,
        refresh_token: None,
        refresh_expires_at_ms: None,
    };
    runtime.block_on(async {
        fleet.publish(&keys, &record).await;
    });

    c.bench_function("store_miss_served_from_redis", |b| {
        b.to_async(&runtime).iter(|| async {
            let decision = fleet
                .decide(&keys, None, None, |_| true, Duration::from_secs(1))
                .await;
            assert!(
                matches!(decision, Decision::Shared(_)),
                "not served from the store"
            );
        })
    });
    drop(redis);
}

criterion_group!(benches, bench);
criterion_main!(benches);
