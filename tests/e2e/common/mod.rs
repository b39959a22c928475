//! Harness for the end-to-end tests: runs the real `tollgate` binary on loopback ports
//! against the in-process stand-ins of `tollgate_standins`, sends requests through it and
//! reads what the upstream saw, its admin endpoints and its logs.
//!
//! `use crate::common::*` brings the gateway, the config text builders ([`config`]) and the
//! Prometheus helpers ([`metrics`]); [`raw`] (HTTP spoken by hand) and [`tls`] (a test CA)
//! are for the tests that need them.

pub mod config;
pub mod metrics;
pub mod raw;
pub mod tls;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};
use tollgate_standins::{Provider, StandIn};

pub use config::*;
pub use metrics::*;

/// The gateway binary built by cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// How long the gateway gets to answer `/healthz` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `tollgate check` (or a `run` that must fail) gets to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The fixed ports of `tollgate demo`'s stand-ins (18081-18086, the echo on 18090), which
/// the demo test binds while the other tests run.
const DEMO_PORTS: std::ops::RangeInclusive<u16> = 18_080..=18_099;

/// The Python of the tests' peers (the MCP SDK client, grpcio, an OpenSSL client), in the
/// `.ci/venv` that `.ci/deps` makes.
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    assert!(
        python.exists(),
        "the tests' Python environment is missing: run `bash .ci/deps` (it makes .ci/venv with the MCP SDK and grpcio)"
    );
    python
}

/// A free loopback port for the gateway to listen on. It is drawn below the kernel's
/// ephemeral range, so that the stand-ins of concurrent tests (which bind port 0) and
/// outgoing connections cannot take it between this check and the gateway's bind, and
/// outside [`DEMO_PORTS`]; two gateways drawing the same port is left to
/// [`Gateway::start`]'s retry.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        for _ in 0..100 {
            let port = rand::random_range(10_000..ephemeral_low);
            if !DEMO_PORTS.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `http://127.0.0.1:PORT` of a loopback port nothing listens on (for "unreachable").
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// An HTTP client for the tests: no proxy from the environment, generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// An OAuth2 stand-in with `settings` (the default client is `demo-client` /
/// `demo-secret`, see [`oauth2`]).
pub async fn start_oauth2(settings: OAuth2Settings) -> OAuth2StandIn {
    start_standin(settings).await
}

/// A provider stand-in started with `settings`; the binding names which one:
/// `let dsm: FortanixStandIn = start_standin(FortanixSettings::default()).await;`.
pub async fn start_standin<P: Provider>(settings: P::Settings) -> StandIn<P> {
    StandIn::<P>::start(settings)
        .await
        .expect("start the stand-in")
}

/// The lifetime of the tokens of [`start_short_lived`] stand-ins.
pub const SHORT_TTL: Duration = Duration::from_secs(2);

/// As [`start_standin`], the stand-in issuing tokens that live [`SHORT_TTL`] (2 s): for the
/// tests of renewals, with [`SHORT_REFRESH`].
pub async fn start_short_lived<P: Provider>(settings: P::Settings) -> StandIn<P> {
    let stand_in = start_standin(settings).await;
    stand_in.set_token_ttl(SHORT_TTL);
    stand_in
}

/// An OAuth2 stand-in with `settings` issuing 2 s tokens ([`start_short_lived`]), the echo
/// upstream, and a ready gateway on [`reports_config`] renewing them 1 s ahead
/// ([`SHORT_REFRESH`]).
pub async fn short_lived_reports(
    settings: OAuth2Settings,
) -> (OAuth2StandIn, EchoUpstream, Gateway) {
    let idp: OAuth2StandIn = start_short_lived(settings).await;
    let (echo, gateway) = reports_gateway(&idp, SHORT_REFRESH).await;
    gateway.wait_ready().await;
    (idp, echo, gateway)
}

/// The echo upstream and a gateway on [`reports_config`] in front of `idp`, with `extra`
/// provider keys: started (`/healthz` answers), not waited ready.
pub async fn reports_gateway(idp: &OAuth2StandIn, extra: &str) -> (EchoUpstream, Gateway) {
    let echo = start_echo().await;
    let gateway = Gateway::start(&reports_config(&idp.token_url(), extra, &echo.url())).await;
    (echo, gateway)
}

/// The OAuth2 stand-in's default settings, issuing a refresh token with each access token.
pub fn oauth2_with_refresh_tokens() -> OAuth2Settings {
    OAuth2Settings {
        issue_refresh_tokens: true,
        ..OAuth2Settings::default()
    }
}

/// An echo upstream: answers every request with what it received, as JSON, and records it.
pub async fn start_echo() -> EchoUpstream {
    EchoUpstream::start()
        .await
        .expect("start the echo upstream")
}

/// `yaml` with its port placeholders filled in.
fn fill(yaml: &str, proxy: SocketAddr, admin: SocketAddr) -> String {
    yaml.replace("{listen}", &proxy.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{admin_any}", &format!("0.0.0.0:{}", admin.port()))
}

// ---------------------------------------------------------------------------------------
// The running gateway.
// ---------------------------------------------------------------------------------------

/// A `tollgate run` child process with its config and logs in a temporary directory.
/// Dropping it kills the process.
pub struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    admin: SocketAddr,
    client: reqwest::Client,
}

impl Gateway {
    /// Starts the gateway on `yaml` (with `{listen}` and `{admin}` placeholders) and waits
    /// until `/healthz` answers 200. Panics with the gateway's output if it does not.
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    /// As [`start`](Self::start), then waits until `/readyz` is 200: every provider holds a
    /// token.
    pub async fn start_ready(yaml: &str) -> Gateway {
        let gateway = Self::start(yaml).await;
        gateway.wait_ready().await;
        gateway
    }

    /// As [`start`](Self::start), with extra environment variables for the process.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_inner(yaml, env, &[], true).await
    }

    /// As [`start`](Self::start), with more arguments after `run --config FILE`.
    pub async fn start_with_args(yaml: &str, args: &[&str]) -> Gateway {
        Self::start_inner(yaml, &[], args, true).await
    }

    /// Starts the gateway and returns as soon as `/healthz` answers 200, without also
    /// waiting for the proxy listener to accept connections (to test that they go together).
    pub async fn start_healthz_only(yaml: &str) -> Gateway {
        Self::start_inner(yaml, &[], &[], false).await
    }

    async fn start_inner(
        yaml: &str,
        env: &[(&str, &str)],
        args: &[&str],
        wait_for_proxy: bool,
    ) -> Gateway {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(yaml, env, args, wait_for_proxy).await {
                Ok(gateway) => return gateway,
                Err(StartFailure::PortTaken(logs)) if attempt < 4 => {
                    eprintln!("gateway lost a port race, retrying:\n{logs}");
                }
                Err(StartFailure::PortTaken(logs)) | Err(StartFailure::Other(logs)) => {
                    panic!("the gateway did not start:\n{logs}")
                }
            }
        }
    }

    async fn try_start(
        yaml: &str,
        env: &[(&str, &str)],
        args: &[&str],
        wait_for_proxy: bool,
    ) -> Result<Gateway, StartFailure> {
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tollgate.yaml");
        std::fs::write(&config, fill(yaml, proxy, admin)).expect("write config");
        let mut all_args = vec!["run", "--config", config.to_str().unwrap()];
        all_args.extend_from_slice(args);
        let child = spawn(&all_args, env, dir.path());
        let mut gateway = Gateway {
            child,
            dir,
            proxy,
            admin,
            client: client(),
        };
        let quick = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let started = Instant::now();
        let mut healthy = false;
        loop {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                let logs = format!("exited with {status}\n{}", gateway.logs());
                let lower = logs.to_ascii_lowercase();
                return Err(
                    if lower.contains("address already in use") || lower.contains("addrinuse") {
                        StartFailure::PortTaken(logs)
                    } else {
                        StartFailure::Other(logs)
                    },
                );
            }
            if !healthy {
                if let Ok(reply) = quick.get(gateway.admin_url("/healthz")).send().await {
                    healthy = reply.status() == 200;
                }
            }
            // `/healthz` may answer a moment before the proxy listener is bound (see the
            // test `proxy_accepts_as_soon_as_healthz_answers`); wait for both so that the
            // other tests test their own behaviour.
            if healthy
                && (!wait_for_proxy || tokio::net::TcpStream::connect(gateway.proxy).await.is_ok())
            {
                return Ok(gateway);
            }
            if started.elapsed() > START_TIMEOUT {
                let logs = format!(
                    "no 200 from /healthz (got one: {healthy}) or no proxy listener within {START_TIMEOUT:?}\n{}",
                    gateway.logs()
                );
                return Err(StartFailure::Other(logs));
            }
            // Poll fast when the point is to catch the moment `/healthz` turns 200.
            let pause = if wait_for_proxy { 20 } else { 2 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    // ----- the process -----------------------------------------------------------------

    /// Replaces the config file the way a ConfigMap update does: written next to it and
    /// renamed over it, so the gateway never reads half a file. The placeholders get this
    /// gateway's ports, so the server section is unchanged.
    pub fn rewrite_config(&self, yaml: &str) {
        let path = self.dir.path().join("tollgate.yaml");
        let temp = path.with_extension("yaml.new");
        std::fs::write(&temp, fill(yaml, self.proxy, self.admin)).expect("write the new config");
        std::fs::rename(&temp, &path).expect("rename the new config into place");
    }

    /// Sends `signal` (`TERM`, `INT`, `HUP`) to the gateway process with `kill`.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -s {signal} failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ----- requests through the proxy ----------------------------------------------------

    /// `GET` on the proxy.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.fetch(self.proxy_url(path)).await
    }

    /// `GET url` with the gateway's client (panics when there is no answer).
    async fn fetch(&self, url: String) -> reqwest::Response {
        self.client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e:?}"))
    }

    /// The status of `GET path` on the proxy (the body is read and dropped).
    pub async fn status_of(&self, path: &str) -> u16 {
        self.get_with(path, &[]).await.status
    }

    /// `POST path` on the proxy with `body`.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.proxy_url(path))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} through the gateway failed: {e:?}"))
    }

    /// `GET` on the proxy: status, headers and the body parsed as JSON (`Null` if it is
    /// not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, HeaderMap, Value) {
        let reply = self.get_with(path, &[]).await;
        (reply.status, reply.headers, reply.body)
    }

    /// `GET` on the proxy with `headers` (a name may come more than once), read whole.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.client.get(self.proxy_url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the gateway failed: {e:?}"));
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let text = reply.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            headers,
        }
    }

    /// `GET path`, which must answer 200 from the echo upstream; returns the one value of
    /// `header` the upstream received (panics if it got none or several).
    pub async fn upstream_header(&self, path: &str, header: &str) -> String {
        self.upstream_header_sending(path, header, &[]).await
    }

    /// As [`upstream_header`](Self::upstream_header), with headers the client sends itself.
    pub async fn upstream_header_sending(
        &self,
        path: &str,
        header: &str,
        sent: &[(&str, &str)],
    ) -> String {
        let reply = self.get_with(path, sent).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
        let body = &reply.body;
        assert!(
            body.is_object(),
            "GET {path}: not the echo's JSON: {}",
            reply.text
        );
        let value = body["headers"][header.to_ascii_lowercase()]
            .as_str()
            .unwrap_or_else(|| panic!("GET {path}: the upstream got no {header}: {body}"));
        assert!(
            !value.contains(", "),
            "GET {path}: the upstream got several {header} values: {value}"
        );
        value.to_owned()
    }

    /// `GET path` must be answered `status` with the gateway's own error body `error`.
    pub async fn refused(&self, path: &str, status: u16, error: &str) -> Reply {
        let reply = self.get_with(path, &[]).await;
        assert_eq!(reply.status, status, "GET {path}: {}", reply.text);
        assert_error_body(&reply.body, error);
        reply
    }

    /// The token of the `Authorization: Bearer <token>` the upstream received on `GET path`
    /// (which must answer 200 from the echo upstream).
    pub async fn bearer_upstream(&self, path: &str) -> String {
        bearer_of(&self.upstream_header(path, "Authorization").await)
    }

    /// `GET path` must be refused with `503 credential_unavailable` for `provider`, with a
    /// `Retry-After` of at least a second.
    pub async fn credential_unavailable(&self, path: &str, provider: &str) -> Unavailable {
        let reply = self.get_with(path, &[]).await;
        assert_eq!(reply.status, 503, "GET {path}: {}", reply.text);
        assert_error_body(&reply.body, "credential_unavailable");
        assert_eq!(reply.body["provider"], provider, "{}", reply.text);
        let retry_after = reply
            .header("retry-after")
            .unwrap_or_else(|| panic!("GET {path}: a 503 without Retry-After: {}", reply.text));
        let retry_after: u64 = retry_after
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {retry_after}"));
        assert!(retry_after >= 1, "Retry-After: {retry_after}");
        Unavailable {
            detail: reply.detail().to_owned(),
            retry_after,
            body: reply.body,
        }
    }

    /// What the gateway wrote on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// Everything the gateway wrote on stdout and stderr so far.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.fetch(self.admin_url(path)).await
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        let reply = self.admin_get("/status").await;
        assert_eq!(reply.status(), 200, "GET /status");
        reply.json().await.expect("/status is JSON")
    }

    /// The `/status` entry of one provider.
    pub async fn provider_status(&self, provider: &str) -> Value {
        let status = self.status().await;
        status["providers"]
            .as_array()
            .unwrap_or_else(|| panic!("/status has no providers array: {status}"))
            .iter()
            .find(|p| p["provider"] == provider)
            .cloned()
            .unwrap_or_else(|| panic!("/status has no provider {provider}: {status}"))
    }

    /// `seconds_to_expiry` of `provider` in `/status` (panics when it holds no token).
    pub async fn seconds_to_expiry(&self, provider: &str) -> u64 {
        let status = self.provider_status(provider).await;
        status["seconds_to_expiry"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seconds_to_expiry: {status}"))
    }

    /// Waits up to `within` until `/status` shows `provider` in `state` (`valid`,
    /// `unavailable`...); panics with its entry if it does not.
    pub async fn wait_for_state(&self, provider: &str, state: &str, within: Duration) {
        let reached = eventually(within, || async {
            self.provider_status(provider).await["state"] == state
        })
        .await;
        assert!(
            reached,
            "{provider} not {state} within {within:?}: {}",
            self.provider_status(provider).await
        );
    }

    /// Waits (up to 5 s) until `/status` reports a failed attempt of `provider`; returns its
    /// entry.
    pub async fn wait_failed(&self, provider: &str) -> Value {
        let failed = eventually(Duration::from_secs(5), || async {
            self.provider_status(provider).await["consecutive_failures"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        })
        .await;
        let status = self.provider_status(provider).await;
        assert!(failed, "{provider} never failed: {status}");
        status
    }

    /// `GET /readyz`: status code and body.
    pub async fn readyz(&self) -> (u16, String) {
        let reply = self.admin_get("/readyz").await;
        let status = reply.status().as_u16();
        (status, reply.text().await.unwrap_or_default())
    }

    /// Polls `/readyz` until it answers 200 (at most 10 s).
    pub async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let (status, body) = self.readyz().await;
            if status == 200 {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!(
                    "/readyz still {status} after 10 s: {body}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let reply = self.admin_get("/metrics").await;
        assert_eq!(reply.status(), 200, "GET /metrics");
        reply.text().await.unwrap()
    }

    /// `GET /metrics` text once `requests` requests have been counted. A request is
    /// counted in pingora's logging phase, which runs after the answer has been sent, so
    /// a scrape right after the last answer may miss it. Gives up after 2 s and returns
    /// the last text, for the caller's assertions to report.
    pub async fn metrics_after(&self, requests: f64) -> String {
        let started = Instant::now();
        loop {
            let text = self.metrics().await;
            let counted = sample_sum(&text, "tollgate_requests_total", &[]);
            if counted >= requests || started.elapsed() > Duration::from_secs(2) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The JSON log lines written so far (lines that are not JSON are skipped).
    pub fn log_lines(&self) -> Vec<Value> {
        json_lines(&self.stdout())
    }

    /// Waits until the gateway has written `count` access lines (one per request, written
    /// in its logging phase, after everything else the request did), and returns the
    /// logs. A test that asserts something is absent from the logs first proves, this
    /// way, that the requests that would have written it are done. Panics after 10 s.
    pub async fn logs_after_requests(&self, count: usize) -> String {
        let started = Instant::now();
        loop {
            let written = self
                .log_lines()
                .iter()
                .filter(|line| line["target"] == "access")
                .count();
            if written >= count {
                return self.logs();
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!(
                    "{written} access lines after 10 s, expected {count}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a log line holds `text`, and returns the logs. Panics after 10 s.
    pub async fn logs_once_written(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(text) {
                return logs;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!("no log line holds `{text}` after 10 s:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `count` JSON log lines have `message` as theirs, and returns them all.
    /// Log lines are written after the counters they go with are raised, so a test that saw
    /// a counter move waits here for the line. Panics after 10 s.
    pub async fn log_events_once(&self, message: &str, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let events = self.log_events(message);
            if events.len() >= count {
                return events;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!(
                    "{} log lines `{message}` after 10 s, expected {count}:\n{}",
                    events.len(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The JSON log lines whose message is `message`.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|event| event["message"] == message)
            .collect()
    }

    /// The value of one sample, named as `name{label="value",...}` (labels in any order,
    /// all of them), or 0 when the sample is absent.
    pub async fn metric(&self, query: &str) -> f64 {
        sample(&self.metrics().await, query).unwrap_or(0.0)
    }

    /// `tollgate_token_requests_total` of `provider`, `kind` (`login`, `refresh`) and
    /// `outcome` (`success`, `failure`).
    pub async fn token_requests(&self, provider: &str, kind: &str, outcome: &str) -> f64 {
        self.metric(&token_requests_query(provider, kind, outcome))
            .await
    }
}

/// A reply through the gateway, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON, `Null` when it is not JSON.
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `detail` of an error body the gateway made itself ("" when there is none).
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }

    /// Asserts that the error `detail` says `words`.
    pub fn assert_detail(&self, words: &str) {
        assert!(
            self.detail().contains(words),
            "the detail does not say `{words}`: {}",
            self.text
        );
    }
}

/// A `503 credential_unavailable`, from [`Gateway::credential_unavailable`].
pub struct Unavailable {
    pub body: Value,
    pub detail: String,
    /// `Retry-After`, in seconds.
    pub retry_after: u64,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gateway output ----\n{}", self.logs());
        }
    }
}

enum StartFailure {
    PortTaken(String),
    Other(String),
}

fn spawn(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Child {
    let stdout = File::create(dir.join("stdout.log")).expect("stdout.log");
    let stderr = File::create(dir.join("stderr.log")).expect("stderr.log");
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_LOG_FORMAT")
        // The default level unless a test asks for another one.
        .env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("spawn the tollgate binary")
}

/// The outcome of a command that is expected to exit by itself.
#[derive(Debug)]
pub struct Exit {
    /// The exit code; `None` when killed by a signal or by the harness after a timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The process did not exit in time and was killed.
    pub timed_out: bool,
}

impl Exit {
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Writes `yaml` (placeholders filled with free ports) to a temporary file, runs the binary
/// with `subcommand --config FILE`, and waits for it to exit.
pub fn run_to_exit(subcommand: &str, yaml: &str, env: &[(&str, &str)]) -> Exit {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = fill(
        yaml,
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let config: PathBuf = dir.path().join("tollgate.yaml");
    std::fs::write(&config, text).expect("write config");
    let mut child = spawn(
        &[subcommand, "--config", config.to_str().unwrap()],
        env,
        dir.path(),
    );
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > EXIT_TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    Exit {
        code: status.and_then(|s| s.code()),
        stdout: read("stdout.log"),
        stderr: read("stderr.log"),
        timed_out,
    }
}

/// `tollgate check --config FILE`: (exit code, stdout, stderr).
pub fn run_check(yaml: &str) -> (Option<i32>, String, String) {
    let exit = run_to_exit("check", yaml, &[]);
    assert!(!exit.timed_out, "tollgate check did not exit: {exit:?}");
    (exit.code, exit.stdout, exit.stderr)
}

/// `tollgate check` accepts `yaml`; returns the summary it printed.
pub fn check_accepts(yaml: &str) -> String {
    let (code, stdout, stderr) = run_check(yaml);
    assert_eq!(code, Some(0), "check refused:\n{yaml}\n{stdout}{stderr}");
    stdout
}

/// `tollgate check` refuses `yaml` (exit code 1) with errors that say each of `expected`;
/// returns them.
pub fn check_refuses(yaml: &str, expected: &[&str]) -> String {
    let (code, _, stderr) = run_check(yaml);
    assert_eq!(code, Some(1), "check did not refuse:\n{yaml}\n{stderr}");
    for words in expected {
        assert!(
            stderr.contains(words),
            "check does not say `{words}` about:\n{yaml}\n{stderr}"
        );
    }
    stderr
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

/// The bearer token in an `Authorization` value, if it is `Bearer <token>`.
pub fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ")
}

/// The token of an `Authorization: Bearer <token>` value (panics if it is not one).
pub fn bearer_of(value: &str) -> String {
    bearer(value)
        .unwrap_or_else(|| panic!("not a Bearer value: {value}"))
        .to_owned()
}

/// `base64(user:password)`, as HTTP Basic sends it.
pub fn basic_pair(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// The `sub` claim of a JWT a stand-in minted.
pub fn subject(token: &str) -> String {
    tollgate_standins::jwt::verify(token)
        .unwrap_or_else(|e| panic!("not a demo JWT ({e}): {token}"))
        .sub
}

/// The JSON lines of a log text (lines that are not JSON are skipped).
pub fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

/// Polls `check` every 20 ms for up to `timeout`; true once it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a body the gateway made itself is the JSON error contract with `error`.
pub fn assert_error_body(body: &Value, error: &str) {
    assert_eq!(body["error"], error, "error body: {body}");
    assert!(
        body.get("detail").is_some_and(Value::is_string),
        "error body without a detail string: {body}"
    );
}

/// Asserts that a reply is JSON by its `Content-Type`.
pub fn assert_json_content_type(headers: &HeaderMap) {
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "content-type: {headers:?}"
    );
}

/// Asserts that none of `needles` (secrets, tokens) occurs in `haystack`, naming `what`.
pub fn assert_absent(what: &str, haystack: &str, needles: &[String]) {
    for needle in needles {
        assert!(!needle.is_empty(), "an empty needle for {what}");
        assert!(
            !haystack.contains(needle.as_str()),
            "{what} contains `{needle}`:\n{haystack}"
        );
    }
}
