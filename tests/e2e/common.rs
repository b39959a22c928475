//! Harness for the end-to-end tests: runs the real `tollgate` binary on loopback ports
//! against the in-process stand-ins of `tollgate_standins`, and reads its admin endpoints.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The gateway binary built by cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// How long the gateway gets to answer `/healthz` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `tollgate check` (or a `run` that must fail) gets to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Backoff for every test provider unless a test says otherwise: short, so that a test
/// that makes a provider fail does not wait long to see it recover.
pub const FAST_REFRESH: &str = "refresh: { min_backoff: 200ms, max_backoff: 1s }";

/// The fixed ports of `tollgate demo`'s stand-ins (18081-18086, the echo on 18090), which
/// the demo test binds while the other tests run.
const DEMO_PORTS: std::ops::RangeInclusive<u16> = 18_080..=18_099;

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

// ---------------------------------------------------------------------------------------
// Config text builders. `{listen}` and `{admin}` are left for the harness to fill in.
// ---------------------------------------------------------------------------------------

/// A whole config: the server section with the port placeholders, then the given provider
/// blocks (each from [`oauth2`]/[`bigid_user_token`]/...) and route blocks ([`route`]).
pub fn config(providers: &[String], routes: &[String]) -> String {
    format!(
        "server:\n  listen: [\"{{listen}}\"]\n  admin: \"{{admin}}\"\n  threads: 1\nproviders:\n{}routes:\n{}",
        providers.concat(),
        routes.concat()
    )
}

/// Indents each non-empty line of `extra` (provider or route keys written flush left) by
/// four spaces.
fn indent4(extra: &str) -> String {
    let mut out = String::new();
    for line in extra.lines() {
        if line.trim().is_empty() {
            continue;
        }
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// An oauth2 provider block named `name` with the stand-in's default client
/// (`demo-client` / `demo-secret`). `extra` holds more keys, one per line, flush left
/// (`grant: password`, `refresh: {...}`...). Without a `refresh:` line, [`FAST_REFRESH`]
/// is used.
pub fn oauth2(name: &str, token_url: &str, extra: &str) -> String {
    let mut extra = extra.to_owned();
    if !extra.contains("refresh:") {
        extra.push('\n');
        extra.push_str(FAST_REFRESH);
    }
    let has = |key: &str| extra.lines().any(|l| l.trim_start().starts_with(key));
    let mut block = format!("  {name}:\n    type: oauth2\n    token_url: {token_url}\n");
    if !has("client_id:") {
        block.push_str("    client_id: demo-client\n");
    }
    if !has("client_secret:") {
        block.push_str("    client_secret: demo-secret\n");
    }
    block.push_str(&indent4(&extra));
    block
}

/// A bigid provider block logging in with a user token.
pub fn bigid_user_token(name: &str, base_url: &str, user_token: &str, extra: &str) -> String {
    let mut extra = extra.to_owned();
    if !extra.contains("refresh:") {
        extra.push('\n');
        extra.push_str(FAST_REFRESH);
    }
    format!(
        "  {name}:\n    type: bigid\n    base_url: {base_url}\n    user_token: {user_token}\n{}",
        indent4(&extra)
    )
}

/// A bigid provider block logging in with username and password.
pub fn bigid_password(
    name: &str,
    base_url: &str,
    username: &str,
    password: &str,
    extra: &str,
) -> String {
    let mut extra = extra.to_owned();
    if !extra.contains("refresh:") {
        extra.push('\n');
        extra.push_str(FAST_REFRESH);
    }
    format!(
        "  {name}:\n    type: bigid\n    base_url: {base_url}\n    username: {username}\n    password: {password}\n{}",
        indent4(&extra)
    )
}

/// A route `name` matching `path_prefix`, stripping it, forwarding to `upstream_url`, with
/// `Authorization: Bearer {token}` from `provider`. `extra` holds more route keys, flush
/// left.
pub fn route(
    name: &str,
    path_prefix: &str,
    upstream_url: &str,
    provider: &str,
    extra: &str,
) -> String {
    let strip = if extra.contains("strip_prefix:") {
        String::new()
    } else {
        "    strip_prefix: true\n".to_owned()
    };
    format!(
        "  - name: {name}\n    match: {{ path_prefix: {path_prefix} }}\n{strip}    upstream: {{ url: {upstream_url} }}\n    credential: {{ provider: {provider}, header: Authorization, format: \"Bearer {{token}}\" }}\n{}",
        indent4(extra)
    )
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
        let text = yaml
            .replace("{listen}", &proxy.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{admin_any}", &format!("0.0.0.0:{}", admin.port()));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tollgate.yaml");
        std::fs::write(&config, text).expect("write config");
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

    /// The temporary directory holding the config and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET` on the proxy.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.proxy_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the gateway failed: {e:?}"))
    }

    /// `GET` on the proxy: status, headers and the body parsed as JSON (`Null` if it is
    /// not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let reply = self.get(path).await;
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let text = reply.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
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

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        let reply = self
            .client
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("GET /status");
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

    /// `GET /readyz`: status code and body.
    pub async fn readyz(&self) -> (u16, String) {
        let reply = self
            .client
            .get(self.admin_url("/readyz"))
            .send()
            .await
            .expect("GET /readyz");
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
        let reply = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
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
        self.stdout()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
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

    /// The value of one sample, named as `name{label="value",...}` (labels in any order,
    /// all of them), or 0 when the sample is absent.
    pub async fn metric(&self, query: &str) -> f64 {
        sample(&self.metrics().await, query).unwrap_or(0.0)
    }
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
    let text = yaml
        .replace("{listen}", &format!("127.0.0.1:{}", free_port()))
        .replace("{admin}", &format!("127.0.0.1:{}", free_port()));
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

// ---------------------------------------------------------------------------------------
// Prometheus text.
// ---------------------------------------------------------------------------------------

/// Splits `name{a="1",b="2"}` into the name and its sorted label pairs.
fn parse_series(series: &str) -> Option<(String, Vec<(String, String)>)> {
    let series = series.trim();
    let Some(open) = series.find('{') else {
        return Some((series.to_owned(), Vec::new()));
    };
    let name = series[..open].to_owned();
    let inner = series[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].strip_prefix('"')?;
        // Values may hold escaped quotes.
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        let end = end?;
        labels.push((key, value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    labels.sort();
    Some((name, labels))
}

/// One sample: metric name, sorted label pairs, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Every sample of the text.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let split = line.rfind(' ')?;
            let (series, value) = line.split_at(split);
            let value: f64 = value.trim().parse().ok()?;
            let (name, labels) = parse_series(series)?;
            Some((name, labels, value))
        })
        .collect()
}

/// The value of the sample `query` (`name{labels}`, every label given, any order).
pub fn sample(text: &str, query: &str) -> Option<f64> {
    let (name, labels) = parse_series(query).expect("a metric query like name{a=\"b\"}");
    samples(text)
        .into_iter()
        .find(|(n, l, _)| *n == name && *l == labels)
        .map(|(_, _, v)| v)
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

/// The bearer token in an `Authorization` value, if it is `Bearer <token>`.
pub fn bearer(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_queries_ignore_label_order() {
        let text = "# HELP x y\n# TYPE tollgate_token_requests_total counter\n\
            tollgate_token_requests_total{kind=\"login\",outcome=\"success\",provider=\"idp\"} 3\n\
            tollgate_build_info{version=\"0.1.0\"} 1\n\
            plain 2.5\n";
        assert_eq!(
            sample(
                text,
                "tollgate_token_requests_total{provider=\"idp\",kind=\"login\",outcome=\"success\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(text, "tollgate_token_requests_total{provider=\"idp\"}"),
            None
        );
        assert_eq!(sample(text, "plain"), Some(2.5));
        assert_eq!(
            sample_sum(
                text,
                "tollgate_token_requests_total",
                &[("provider", "idp")]
            ),
            3.0
        );
    }
}
