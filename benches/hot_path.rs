//! The request hot path, piece by piece: route match, token cache hit, and building the
//! upstream request with the injected credential. Run: `cargo bench --bench hot_path`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;

use tollgate::canonical::{canonical_path, PathPolicy};
use tollgate::config;
use tollgate::metrics::Metrics;
use tollgate::providers::{Grant, Provider, ProviderError};
use tollgate::proxy::{rewrite, Exchange};
use tollgate::routing::{CompiledRoute, Router};
use tollgate::secret::Secret;
use tollgate::tokens::TokenManager;

mod support;

/// A provider that answers at once, so the bench measures the gateway, not a network.
struct InstantProvider;

#[async_trait]
impl Provider for InstantProvider {
    async fn login(&self) -> Result<Grant, ProviderError> {
        let mut grant = Grant::bare(Secret::new(
            "eyJhbGciOiJIUzI1NiJ9.bench-token-value.signature",
        ));
        grant.expires_in = Some(Duration::from_secs(3600));
        Ok(grant)
    }
}

/// A config with `routes` routes and one provider, all on loopback.
fn config_text(routes: usize) -> String {
    let mut text = String::from(
        "server: { listen: [\"127.0.0.1:18080\"], admin: \"127.0.0.1:19901\" }\n\
         providers:\n  idp: { type: oauth2, token_url: http://127.0.0.1:1/token, client_id: c, client_secret: s }\n\
         routes:\n",
    );
    for index in 0..routes {
        text.push_str(&format!(
            "  - {{ name: r{index}, match: {{ path_prefix: /service-{index}/ }}, strip_prefix: true, \
             upstream: {{ url: http://127.0.0.1:9000/api }}, credential: {{ provider: idp }} }}\n"
        ));
    }
    text
}

fn bench(c: &mut Criterion) {
    let runtime = support::runtime();
    let config = config::parse(&config_text(100)).expect("bench config is valid");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let provider: Arc<dyn Provider> = Arc::new(InstantProvider);
    let tokens = TokenManager::new(
        vec![(&config.providers[0], provider)],
        runtime.handle().clone(),
        Arc::clone(&metrics),
        None,
    );
    let routes: Vec<Arc<CompiledRoute>> = config
        .routes
        .iter()
        .map(|route| CompiledRoute::build(route, &tokens, runtime.handle()).expect("route"))
        .collect();
    let router = Router::new(routes.clone());
    let provider_id = tokens.provider_id("idp").expect("provider");
    // Warm the cache: the bench measures hits.
    let token = runtime
        .block_on(tokens.credential(provider_id))
        .expect("token");

    c.bench_function("route_match_100_routes", |b| {
        b.iter(|| {
            router.find(
                black_box(Some("api.example")),
                black_box("/service-73/v1/items?x=1"),
            )
        })
    });

    c.bench_function("token_cache_hit", |b| {
        b.to_async(&runtime).iter(|| {
            let tokens = Arc::clone(&tokens);
            async move { tokens.credential(black_box(provider_id)).await }
        })
    });

    let mut exchange = Exchange::new(Arc::clone(&routes[73]), Arc::clone(&tokens));
    exchange.token = Some(token);
    exchange
        .next_peer(std::time::Instant::now())
        .expect("a backend");
    let connection = rewrite::Connection {
        client: Some(std::net::IpAddr::from([10, 1, 2, 3])),
        tls: false,
    };
    c.bench_function("build_upstream_request", |b| {
        b.iter(|| {
            let mut request =
                RequestHeader::build("GET", b"/service-73/v1/items?x=1", Some(8)).expect("request");
            request
                .insert_header("host", "api.example")
                .expect("header");
            request
                .insert_header("authorization", "Bearer caller-supplied")
                .expect("header");
            rewrite::upstream_request(
                &exchange,
                connection,
                &http::HeaderValue::from_static("req-1"),
                &mut request,
            )
            .expect("rewrite");
            request
        })
    });

    let policy = PathPolicy::default();
    c.bench_function("canonical_path_already_canonical", |b| {
        b.iter(|| canonical_path(black_box(b"/service-73/v1/items/42"), &policy).is_ok())
    });
    c.bench_function("canonical_path_with_dot_segments", |b| {
        b.iter(|| {
            canonical_path(
                black_box(b"/service-73/v1/./items/%2e%2e/items/42"),
                &policy,
            )
            .is_ok()
        })
    });

    c.bench_function("record_request_metrics", |b| {
        b.iter(|| {
            metrics
                .requests
                .with_label_values(&[black_box("r73"), black_box("200")])
                .inc();
            metrics
                .request_duration
                .with_label_values(&[black_box("r73")])
                .observe(0.001);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
