//! The Prometheus metrics of the DESIGN contract, in one registry served by the admin
//! listener. No label ever carries a path, a user or a token.

use std::sync::LazyLock;

use crate::config::Config;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `tollgate_tls_handshake_failures_total{reason}`: a process-wide counter, because the
/// handshake failures are counted from pingora's log line ([`crate::tls::failures`]),
/// whose layer is installed before any [`Metrics`] exists. Every registry serves it.
pub static TLS_HANDSHAKE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "tls_handshake_failures_total",
            "TLS handshakes refused or broken off, by reason",
        ),
        &["reason"],
    )
    // A fixed, valid name and label: this cannot fail.
    .expect("valid metric options")
});

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub token_requests: IntCounterVec,
    pub token_request_duration: HistogramVec,
    pub token_expiry: GaugeVec,
    pub token_cache_lookups: IntCounterVec,
    pub credential_unavailable: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub inbound_auth: IntCounterVec,
    /// Upstream answers that rejected the token sent (a status in `on_upstream_status`).
    pub token_rejections: IntCounterVec,
    /// Caller headers removed before routing (`reason="underscore"`).
    pub underscore_headers_dropped: IntCounter,
    /// The serving certificate of each TLS listener: when it expires, and its reloads.
    tls_certificate_expiry: GaugeVec,
    tls_certificate_reloads: IntCounterVec,
    /// Upgrades (WebSocket) the upstream accepted, and those still open, by route.
    pub websocket_upgrades: IntCounterVec,
    pub websocket_connections: IntGaugeVec,
    /// MCP tool calls, by tool and outcome (see [`crate::mcp::Outcome`]).
    pub mcp_tool_calls: IntCounterVec,
    pub mcp_tool_call_duration: HistogramVec,
    /// What per-caller providers did for callers (`minted`, `refreshed`, `refused`, `failed`).
    pub caller_tokens: IntCounterVec,
}

/// The metrics of fleet mode, registered only when a store is configured (a gauge at 0
/// would read as a store that is down).
#[derive(Clone)]
pub struct StoreMetrics {
    pub up: IntGauge,
    pub operations: IntCounterVec,
    pub leases: IntCounterVec,
}

/// The `outcome` values of `tollgate_caller_tokens_total`.
pub const CALLER_TOKEN_OUTCOMES: [&str; 4] = ["minted", "refreshed", "refused", "failed"];

/// Pre-resolved counters for one provider's cache lookups, so the hot path does no label
/// hashing.
#[derive(Clone)]
pub struct CacheLookupCounters {
    pub hit: IntCounter,
    pub miss: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tollgate".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests answered, by route and status code",
            ),
            &["route", "code"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request start to the end of the response, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "upstream_retries_total",
                "Requests sent upstream again, by route and reason",
            ),
            &["route", "reason"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Failed exchanges with an upstream (refused, timed out, closed mid-response), by route and kind",
            ),
            &["route", "kind"],
        )?;
        let token_requests = IntCounterVec::new(
            Opts::new(
                "token_requests_total",
                "Calls to a provider, by kind and outcome",
            ),
            &["provider", "kind", "outcome"],
        )?;
        let token_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "token_request_duration_seconds",
                "Duration of calls to a provider",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["provider"],
        )?;
        let token_expiry = GaugeVec::new(
            Opts::new(
                "token_expiry_timestamp_seconds",
                "Unix time at which the provider's current token expires",
            ),
            &["provider"],
        )?;
        let token_cache_lookups = IntCounterVec::new(
            Opts::new(
                "token_cache_lookups_total",
                "Token cache lookups on the request path",
            ),
            &["provider", "result"],
        )?;
        let credential_unavailable = IntCounterVec::new(
            Opts::new(
                "credential_unavailable_total",
                "Requests refused because no valid credential could be had",
            ),
            &["route"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new("config_reloads_total", "Config reloads, by outcome"),
            &["outcome"],
        )?;
        let inbound_auth = IntCounterVec::new(
            Opts::new(
                "inbound_auth_total",
                "Inbound caller checks, by route and outcome (allowed, unauthenticated, forbidden, unavailable)",
            ),
            &["route", "outcome"],
        )?;
        let token_rejections = IntCounterVec::new(
            Opts::new(
                "token_rejections_total",
                "Upstream answers that rejected the token sent (a status in the route's on_upstream_status), by provider and route",
            ),
            &["provider", "route"],
        )?;
        let request_headers_dropped = IntCounterVec::new(
            Opts::new(
                "request_headers_dropped_total",
                "Caller request headers removed before routing, by reason (underscore: a name with `_`)",
            ),
            &["reason"],
        )?;
        let tls_certificate_expiry = GaugeVec::new(
            Opts::new(
                "tls_certificate_expiry_timestamp_seconds",
                "Unix time at which the certificate a TLS listener serves expires",
            ),
            &["listener"],
        )?;
        let tls_certificate_reloads = IntCounterVec::new(
            Opts::new(
                "tls_certificate_reloads_total",
                "Changed certificate files of a TLS listener, by outcome (success: serving; failure: the previous pair kept)",
            ),
            &["listener", "outcome"],
        )?;
        let websocket_upgrades = IntCounterVec::new(
            Opts::new(
                "websocket_upgrades_total",
                "Connection upgrades (WebSocket) the upstream accepted, by route",
            ),
            &["route"],
        )?;
        let websocket_connections = IntGaugeVec::new(
            Opts::new(
                "websocket_connections",
                "Upgraded connections (WebSocket) open now, by route",
            ),
            &["route"],
        )?;
        let mcp_tool_calls = IntCounterVec::new(
            Opts::new(
                "mcp_tool_calls_total",
                "MCP tool calls, by tool and outcome (success, http_error, invalid_arguments, failure)",
            ),
            &["tool", "outcome"],
        )?;
        let mcp_tool_call_duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_tool_call_duration_seconds",
                "Time from an MCP tool call's arrival to its result, by tool",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["tool"],
        )?;
        let caller_tokens = IntCounterVec::new(
            Opts::new(
                "caller_tokens_total",
                "Tokens a per-caller provider minted or refreshed for a caller, and exchanges it refused or that failed, by provider and outcome",
            ),
            &["provider", "outcome"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build of this tollgate"),
            &["version"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_retries.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(token_requests.clone()))?;
        registry.register(Box::new(token_request_duration.clone()))?;
        registry.register(Box::new(token_expiry.clone()))?;
        registry.register(Box::new(token_cache_lookups.clone()))?;
        registry.register(Box::new(credential_unavailable.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(inbound_auth.clone()))?;
        registry.register(Box::new(request_headers_dropped.clone()))?;
        registry.register(Box::new(token_rejections.clone()))?;
        registry.register(Box::new(tls_certificate_expiry.clone()))?;
        registry.register(Box::new(tls_certificate_reloads.clone()))?;
        registry.register(Box::new(TLS_HANDSHAKE_FAILURES.clone()))?;
        registry.register(Box::new(websocket_upgrades.clone()))?;
        registry.register(Box::new(websocket_connections.clone()))?;
        registry.register(Box::new(mcp_tool_calls.clone()))?;
        registry.register(Box::new(mcp_tool_call_duration.clone()))?;
        registry.register(Box::new(caller_tokens.clone()))?;
        for outcome in ["success", "failure"] {
            config_reloads.with_label_values(&[outcome]);
        }
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_retries,
            upstream_errors,
            token_requests,
            token_request_duration,
            token_expiry,
            token_cache_lookups,
            credential_unavailable,
            config_reloads,
            inbound_auth,
            token_rejections,
            underscore_headers_dropped: request_headers_dropped.with_label_values(&["underscore"]),
            tls_certificate_expiry,
            tls_certificate_reloads,
            websocket_upgrades,
            websocket_connections,
            mcp_tool_calls,
            mcp_tool_call_duration,
            caller_tokens,
        })
    }

    /// Creates the counters that alerts watch at 0, so `increase()` sees their first event.
    pub fn prepare(&self, config: &Config) {
        for route in &config.routes {
            self.credential_unavailable
                .with_label_values(&[&route.name]);
            if let Some(credential) = &route.credential {
                self.token_rejections
                    .with_label_values(&[&credential.provider, &route.name]);
            }
        }
        for tool in &config.mcp.tools {
            for outcome in crate::mcp::Outcome::ALL {
                self.mcp_tool_calls
                    .with_label_values(&[&tool.name, outcome.label()]);
            }
        }
        for provider in &config.providers {
            if provider.per_caller.is_some() {
                for outcome in CALLER_TOKEN_OUTCOMES {
                    self.caller_tokens
                        .with_label_values(&[&provider.name, outcome]);
                }
            }
            for kind in ["login", "refresh"] {
                for outcome in ["success", "failure"] {
                    self.token_requests
                        .with_label_values(&[&provider.name, kind, outcome]);
                }
            }
        }
    }

    /// Creates the TLS counters a listener's alerts watch, at 0.
    pub fn prepare_listener(&self, listener: &str) {
        for outcome in ["success", "failure"] {
            self.tls_certificate_reloads
                .with_label_values(&[listener, outcome]);
        }
    }

    pub fn tls_certificate_expiry(&self, listener: &str, not_after: i64) {
        self.tls_certificate_expiry
            .with_label_values(&[listener])
            .set(not_after as f64);
    }

    pub fn tls_certificate_reloaded(&self, listener: &str, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.tls_certificate_reloads
            .with_label_values(&[listener, outcome])
            .inc();
    }

    pub fn cache_lookups(&self, provider: &str) -> CacheLookupCounters {
        CacheLookupCounters {
            hit: self
                .token_cache_lookups
                .with_label_values(&[provider, "hit"]),
            miss: self
                .token_cache_lookups
                .with_label_values(&[provider, "miss"]),
        }
    }

    pub fn expiry_gauge(&self, provider: &str) -> Gauge {
        self.token_expiry.with_label_values(&[provider])
    }

    /// Registers and returns the store's metrics (call once, when fleet mode is on).
    pub fn store(&self) -> Result<StoreMetrics, prometheus::Error> {
        let up = IntGauge::new(
            "store_up",
            "1 while the token store answers, 0 while every replica logs in by itself",
        )?;
        let operations = IntCounterVec::new(
            Opts::new(
                "store_operations_total",
                "Operations on the token store, by operation (get, lease, publish, release, purge, ping) and outcome (ok, error)",
            ),
            &["operation", "outcome"],
        )?;
        let leases = IntCounterVec::new(
            Opts::new(
                "store_leases_total",
                "Token fetches through the store, by provider and outcome: acquired (this replica called the provider), shared (another replica's token was taken), fallback (the lease holder published nothing in time)",
            ),
            &["provider", "outcome"],
        )?;
        self.registry.register(Box::new(up.clone()))?;
        self.registry.register(Box::new(operations.clone()))?;
        self.registry.register(Box::new(leases.clone()))?;
        Ok(StoreMetrics {
            up,
            operations,
            leases,
        })
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
