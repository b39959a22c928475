//! Fleet mode: what a request that misses moka pays when the store has the token. Starts
//! its own `redis-server` (installed by `.ci/deps`) on a free loopback port, publishes a
//! sealed token, and measures `Fleet::decide` (one GET and the unsealing) against the moka
//! hit it replaces. Run: `cargo bench --bench store`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use tollgate::config::{StoreEndpoint, StoreSettings};
use tollgate::metrics::Metrics;
use tollgate::secret::Secret;
use tollgate::store::{unix_ms, Decision, Fleet, Record, RedisStore};

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn bench(c: &mut Criterion) {
    let port = free_port();
    let redis = Redis(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (bash .ci/deps installs it)"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let settings = StoreSettings {
        endpoint: StoreEndpoint::Direct(Secret::new(format!("redis://127.0.0.1:{port}/0"))),
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
        // The server needs a moment before it accepts.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
