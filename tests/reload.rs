//! End to end: config reload. A route change under load drops no request, SIGHUP reloads
//! at once, unchanged providers keep their token while changed ones log in again and
//! removed ones go, an invalid file is refused while the old config keeps serving, and a
//! `server` section change is only logged.
//!
//! The harness's `Gateway` does not expose the child's pid, so the gateway is spawned here
//! ([`Reloading`]), keeping its ports so that the config can be rewritten with the same
//! `server` section.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bearer, client, config, eventually, free_port, oauth2, route, sample};
use serde_json::Value;
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

/// The gateway polls its config file every 2 s; a file change is seen within this.
const POLL_SEEN: Duration = Duration::from_secs(4);

/// A `tollgate run` child whose config file can be rewritten and which can be sent SIGHUP.
struct Reloading {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    proxy: SocketAddr,
    admin: SocketAddr,
    client: reqwest::Client,
}

impl Reloading {
    /// Starts `tollgate run` on `yaml` (with `{listen}`/`{admin}` placeholders) and waits
    /// for `/healthz` and the proxy listener; retries on a lost port race.
    async fn start(yaml: &str) -> Reloading {
        for attempt in 1.. {
            let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("tollgate.yaml");
            write_atomically(&config, &fill(yaml, proxy, admin));
            let stdout = File::create(dir.path().join("stdout.log")).unwrap();
            let stderr = File::create(dir.path().join("stderr.log")).unwrap();
            let mut gateway = Reloading {
                child: Command::new(common::BIN)
                    .args(["run", "--config", config.to_str().unwrap()])
                    .current_dir(dir.path())
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr)
                    .env_remove("TOLLGATE_CONFIG")
                    .env_remove("TOLLGATE_LOG_FORMAT")
                    .env_remove("RUST_LOG")
                    .spawn()
                    .expect("spawn tollgate"),
                dir,
                config,
                proxy,
                admin,
                client: client(),
            };
            match gateway.wait_started().await {
                Ok(()) => return gateway,
                Err(logs)
                    if attempt < 4 && logs.to_lowercase().contains("address already in use") =>
                {
                    eprintln!("gateway lost a port race, retrying:\n{logs}");
                }
                Err(logs) => panic!("the gateway did not start:\n{logs}"),
            }
        }
        unreachable!()
    }

    async fn wait_started(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let quick = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.logs()));
            }
            let healthy = quick
                .get(self.admin_url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if healthy && tokio::net::TcpStream::connect(self.proxy).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!("not healthy within 20 s\n{}", self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces the config file the way a ConfigMap update does (see [`write_atomically`]),
    /// with this gateway's ports for the placeholders.
    fn write_config(&self, yaml: &str) {
        write_atomically(&self.config, &fill(yaml, self.proxy, self.admin));
    }

    fn sighup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -HUP failed");
    }

    fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// The JSON log lines whose message is `message`.
    fn log_events(&self, message: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == message)
            .collect()
    }

    /// `GET` on the proxy: status and the body as JSON (`Null` if it is not JSON).
    async fn get(&self, path: &str) -> (u16, Value) {
        let reply = self
            .client
            .get(self.proxy_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the gateway failed: {e:?}"));
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The bearer token the upstream received on `GET path` (which must answer 200).
    async fn token_sent(&self, path: &str) -> String {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let value = body["headers"]["authorization"]
            .as_str()
            .unwrap_or_default();
        bearer(value)
            .unwrap_or_else(|| panic!("no bearer token upstream on {path}: {body}"))
            .to_owned()
    }

    async fn metric(&self, query: &str) -> f64 {
        let text = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap();
        sample(&text, query).unwrap_or(0.0)
    }

    async fn reloads(&self, outcome: &str) -> f64 {
        self.metric(&format!(
            "tollgate_config_reloads_total{{outcome=\"{outcome}\"}}"
        ))
        .await
    }

    /// Waits until `tollgate_config_reloads_total{outcome}` reaches `count`.
    async fn wait_reloads(&self, outcome: &str, count: f64, within: Duration) {
        let reached = eventually(within, || async { self.reloads(outcome).await >= count }).await;
        assert!(
            reached,
            "config_reloads_total{{outcome={outcome}}} did not reach {count} within {within:?} (it is {})",
            self.reloads(outcome).await
        );
    }

    /// The `providers` array of `/status`.
    async fn status_providers(&self) -> Vec<Value> {
        let status: Value = self
            .client
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("GET /status")
            .json()
            .await
            .expect("/status is JSON");
        status["providers"]
            .as_array()
            .unwrap_or_else(|| panic!("/status has no providers array: {status}"))
            .clone()
    }

    async fn fingerprint(&self, provider: &str) -> String {
        let providers = self.status_providers().await;
        let entry = providers
            .iter()
            .find(|p| p["provider"] == provider)
            .unwrap_or_else(|| panic!("/status has no provider {provider}: {providers:?}"));
        entry["token_fingerprint"]
            .as_str()
            .unwrap_or_else(|| panic!("{provider} has no token fingerprint: {entry}"))
            .to_owned()
    }

    async fn wait_ready(&self) {
        let ready = eventually(Duration::from_secs(10), || async {
            self.client
                .get(self.admin_url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "/readyz not 200 within 10 s");
    }
}

/// `yaml` with its `{listen}` and `{admin}` placeholders filled in.
fn fill(yaml: &str, proxy: SocketAddr, admin: SocketAddr) -> String {
    yaml.replace("{listen}", &proxy.to_string())
        .replace("{admin}", &admin.to_string())
}

/// Writes `text` to a file next to `path` and renames it over `path`, so that a reader
/// never sees a half-written file (as with the symlink swap of a ConfigMap update).
fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("yaml.new");
    std::fs::write(&temp, text).expect("write the new config");
    std::fs::rename(&temp, path).expect("rename the new config into place");
}

impl Drop for Reloading {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gateway output ----\n{}", self.logs());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_change_under_load_fails_no_request() {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo1 = EchoUpstream::start().await.unwrap();
    let echo2 = EchoUpstream::start().await.unwrap();
    echo1.set_recording(false);
    echo2.set_recording(false);
    let provider = oauth2("idp", &idp.token_url(), "");
    let before = config(
        std::slice::from_ref(&provider),
        &[route("a", "/a/", &echo1.url(), "idp", "")],
    );
    let after = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo2.url(), "idp", ""),
            route("b", "/b/", &echo1.url(), "idp", ""),
        ],
    );
    let gateway = Arc::new(Reloading::start(&before).await);
    gateway.wait_ready().await;
    assert_eq!(
        gateway.get("/b/x").await.0,
        404,
        "route b before the reload"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = client();
    let mut clients = Vec::new();
    for c in 0..20 {
        let (stop, sent, failures, client) =
            (stop.clone(), sent.clone(), failures.clone(), client.clone());
        let url = gateway.proxy_url(&format!("/a/client/{c}"));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                match client.get(&url).send().await {
                    Ok(reply) if reply.status() == 200 => {
                        // Read the body: a reply cut short is a failure too.
                        if let Err(error) = reply.bytes().await {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("#{n}: body: {error}"));
                        }
                    }
                    Ok(reply) => {
                        let status = reply.status();
                        let body = reply.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("#{n}: {status} {body}"));
                    }
                    Err(error) => failures.lock().unwrap().push(format!("#{n}: {error:?}")),
                }
            }
        }));
    }

    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(echo1.request_count() > 0, "no load reached echo1");
    assert_eq!(echo2.request_count(), 0);
    gateway.write_config(&after);
    // The poll sees the change within 2 s; let the load run on well past it.
    gateway.wait_reloads("success", 1.0, POLL_SEEN).await;
    let reloaded_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let echo1_settled = echo1.request_count();
    let echo2_at_settle = echo2.request_count();
    let remaining = Duration::from_secs(6).saturating_sub(started.elapsed());
    tokio::time::sleep(remaining.max(Duration::from_secs(1))).await;
    stop.store(true, Ordering::Relaxed);
    for task in clients {
        task.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    let total = sent.load(Ordering::Relaxed);
    eprintln!(
        "{total} requests in {:?}, reload seen at {reloaded_at:?}; echo1 {}, echo2 {}",
        started.elapsed(),
        echo1.request_count(),
        echo2.request_count()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed across the reload: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total > 100, "only {total} requests: the load was too light");
    assert!(echo2_at_settle > 0, "echo2 got nothing after the reload");
    assert!(
        echo2.request_count() > echo2_at_settle,
        "echo2 stopped getting route a's requests"
    );
    assert_eq!(
        echo1.request_count(),
        echo1_settled,
        "route a still went to echo1 a second after the reload"
    );
    let (status, body) = gateway.get("/b/after").await;
    assert_eq!(status, 200, "route b after the reload: {body}");
    assert_eq!(
        echo1.request_count(),
        echo1_settled + 1,
        "route b goes to echo1"
    );
    assert_eq!(gateway.reloads("success").await, 1.0);
    assert_eq!(gateway.reloads("failure").await, 0.0);
    assert_eq!(
        idp.token_requests(),
        1,
        "the unchanged provider logged in again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_at_once() {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let provider = oauth2("idp", &idp.token_url(), "");
    let one = config(
        std::slice::from_ref(&provider),
        &[route("a", "/a/", &echo.url(), "idp", "")],
    );
    let two = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("b", "/b/", &echo.url(), "idp", ""),
        ],
    );
    let gateway = Reloading::start(&one).await;
    gateway.wait_ready().await;

    // The file is unchanged, so only the signal can cause this reload.
    gateway.sighup();
    gateway
        .wait_reloads("success", 1.0, Duration::from_secs(3))
        .await;
    let reloads = gateway.log_events("config reloaded");
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert_eq!(reloads[0]["trigger"], "SIGHUP", "{}", reloads[0]);

    // A changed file with a SIGHUP right after it is applied at once.
    assert_eq!(gateway.get("/b/x").await.0, 404);
    gateway.write_config(&two);
    let signalled = Instant::now();
    gateway.sighup();
    let applied = eventually(Duration::from_secs(3), || async {
        gateway.get("/b/x").await.0 == 200
    })
    .await;
    assert!(applied, "route b not served within 3 s of SIGHUP");
    eprintln!("route b served {:?} after SIGHUP", signalled.elapsed());
    let reloads = gateway.log_events("config reloaded");
    assert!(
        reloads.iter().filter(|e| e["trigger"] == "SIGHUP").count() >= 2,
        "{reloads:?}"
    );
    assert_eq!(gateway.reloads("failure").await, 0.0);
    assert_eq!(idp.token_requests(), 1);
}

/// A SIGHUP reload records the file's digest, so the next 2 s poll does not see the file
/// as changed and reload the same content a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sighup_reload_is_not_repeated_by_the_file_poll() {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let provider = oauth2("idp", &idp.token_url(), "");
    let one = config(
        std::slice::from_ref(&provider),
        &[route("a", "/a/", &echo.url(), "idp", "")],
    );
    let two = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("b", "/b/", &echo.url(), "idp", ""),
        ],
    );
    let three = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("b", "/b/", &echo.url(), "idp", ""),
            route("c", "/c/", &echo.url(), "idp", ""),
        ],
    );
    let gateway = Reloading::start(&one).await;
    gateway.wait_ready().await;
    gateway.write_config(&two);
    gateway.sighup();
    gateway
        .wait_reloads("success", 1.0, Duration::from_secs(3))
        .await;
    // The barrier: a third config, picked up by the poll. The poll runs in one loop, so a
    // reload of what SIGHUP already loaded would come before this one.
    gateway.write_config(&three);
    let barrier = eventually(Duration::from_secs(5), || async {
        gateway.log_events("config reloaded").iter().any(|e| {
            e["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("3 routes"))
        })
    })
    .await;
    assert!(
        barrier,
        "the third config was not reloaded:\n{}",
        gateway.logs()
    );
    let triggers: Vec<String> = gateway
        .log_events("config reloaded")
        .iter()
        .map(|e| e["trigger"].as_str().unwrap_or_default().to_owned())
        .collect();
    // The poll may have beaten the signal (then "file change" comes first); what must not
    // happen is a poll reloading the content the signal already loaded.
    let last_sighup = triggers.iter().rposition(|t| t == "SIGHUP");
    assert!(last_sighup.is_some(), "no SIGHUP reload: {triggers:?}");
    assert_eq!(
        last_sighup,
        Some(triggers.len() - 2),
        "the file poll reloaded what SIGHUP had loaded: {triggers:?}"
    );
    assert_eq!(triggers.last().map(String::as_str), Some("file change"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_providers_keep_their_token_changed_ones_log_in_removed_ones_go() {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let other = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let idp_v1 = oauth2("idp", &idp.token_url(), "scopes: [reports.read]");
    let idp_v2 = oauth2(
        "idp",
        &idp.token_url(),
        "scopes: [reports.read, reports.write]",
    );
    let other_block = oauth2("other", &other.token_url(), "");
    let other_route = route("o", "/o/", &echo.url(), "other", "");
    let start = config(
        &[idp_v1.clone(), other_block.clone()],
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            other_route.clone(),
        ],
    );
    // Only the routes change: a new route on idp.
    let routes_only = config(
        &[idp_v1.clone(), other_block.clone()],
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("a2", "/a2/", &echo.url(), "idp", ""),
            other_route.clone(),
        ],
    );
    // idp's scopes change, and `other` goes with its route.
    let provider_changed = config(
        &[idp_v2],
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("a2", "/a2/", &echo.url(), "idp", ""),
        ],
    );

    let gateway = Reloading::start(&start).await;
    gateway.wait_ready().await;
    assert_eq!(idp.token_requests(), 1);
    assert_eq!(other.token_requests(), 1);
    let token1 = gateway.token_sent("/a/x").await;
    let fingerprint1 = gateway.fingerprint("idp").await;

    gateway.write_config(&routes_only);
    gateway.wait_reloads("success", 1.0, POLL_SEEN).await;
    assert_eq!(
        gateway.token_sent("/a2/x").await,
        token1,
        "new route, kept token"
    );
    assert_eq!(gateway.token_sent("/a/x").await, token1);
    assert_eq!(gateway.fingerprint("idp").await, fingerprint1);
    assert_eq!(
        idp.token_requests(),
        1,
        "an unchanged provider logged in again"
    );
    assert_eq!(
        other.token_requests(),
        1,
        "an unchanged provider logged in again"
    );
    let summary = gateway.log_events("config reloaded")[0]["summary"].clone();
    assert!(
        summary.as_str().is_some_and(|s| s.contains("2 kept")),
        "reload summary: {summary}"
    );

    gateway.write_config(&provider_changed);
    gateway.wait_reloads("success", 2.0, POLL_SEEN).await;
    // Counted by the gateway once the new token is in its cache.
    let logged_in = eventually(Duration::from_secs(3), || async {
        gateway
            .metric("tollgate_token_requests_total{provider=\"idp\",kind=\"login\",outcome=\"success\"}")
            .await
            >= 2.0
    })
    .await;
    assert!(logged_in, "the changed provider did not log in again");
    let token2 = gateway.token_sent("/a/x").await;
    assert_ne!(
        token2, token1,
        "requests still carry the old provider's token"
    );
    assert_eq!(
        idp.issued_tokens().last(),
        Some(&token2),
        "requests do not carry the newest token"
    );
    assert_eq!(
        idp.last_request()
            .and_then(|r| r.param("scope").map(str::to_owned)),
        Some("reports.read reports.write".to_owned()),
        "the new login does not use the new scopes"
    );
    assert_eq!(gateway.token_sent("/a2/x").await, token2);
    assert_ne!(gateway.fingerprint("idp").await, fingerprint1);
    assert_eq!(
        idp.token_requests(),
        2,
        "one login for the changed provider"
    );
    let providers = gateway.status_providers().await;
    assert!(
        providers.iter().all(|p| p["provider"] != "other"),
        "the removed provider is still in /status: {providers:?}"
    );
    assert_eq!(gateway.get("/o/x").await.0, 404, "the removed route");
    assert_eq!(
        other.token_requests(),
        1,
        "the removed provider logged in again"
    );
    assert_eq!(gateway.reloads("failure").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo1 = EchoUpstream::start().await.unwrap();
    let echo2 = EchoUpstream::start().await.unwrap();
    let provider = oauth2("idp", &idp.token_url(), "");
    let good = config(
        std::slice::from_ref(&provider),
        &[route("a", "/a/", &echo1.url(), "idp", "")],
    );
    // An unknown route key, and route a moved to echo2 (which must not take effect).
    let unknown_key = config(
        std::slice::from_ref(&provider),
        &[route(
            "a",
            "/a/",
            &echo2.url(),
            "idp",
            "upstrem_timeout: 5s",
        )],
    );
    // A route naming a provider that does not exist.
    let missing_provider = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo2.url(), "idp", ""),
            route("b", "/b/", &echo2.url(), "nowhere", ""),
        ],
    );
    let fixed = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo2.url(), "idp", ""),
            route("b", "/b/", &echo2.url(), "idp", ""),
        ],
    );
    let gateway = Reloading::start(&good).await;
    gateway.wait_ready().await;
    let refused = |gateway: &Reloading| {
        gateway
            .log_events("config reload refused; the previous config keeps serving")
            .iter()
            .map(|e| e["error"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };

    gateway.write_config(&unknown_key);
    gateway.wait_reloads("failure", 1.0, POLL_SEEN).await;
    let errors = refused(&gateway);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("routes[0].upstrem_timeout"),
        "the error does not name the key: {}",
        errors[0]
    );
    assert_eq!(gateway.get("/a/x").await.0, 200);
    assert_eq!(echo1.request_count(), 1, "the old route a serves");
    assert_eq!(echo2.request_count(), 0);

    gateway.write_config(&missing_provider);
    gateway.wait_reloads("failure", 2.0, POLL_SEEN).await;
    let errors = refused(&gateway);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[1].contains("routes[1].credential.provider"),
        "the error does not name the key: {}",
        errors[1]
    );
    assert_eq!(gateway.get("/a/x").await.0, 200);
    assert_eq!(echo1.request_count(), 2, "the old route a serves");
    assert_eq!(
        gateway.get("/b/x").await.0,
        404,
        "route b of a refused config"
    );
    assert_eq!(echo2.request_count(), 0);
    assert_eq!(gateway.reloads("success").await, 0.0);

    gateway.write_config(&fixed);
    gateway.wait_reloads("success", 1.0, POLL_SEEN).await;
    assert_eq!(gateway.get("/a/x").await.0, 200);
    assert_eq!(gateway.get("/b/x").await.0, 200);
    assert_eq!(echo2.request_count(), 2, "the fixed config serves");
    assert_eq!(echo1.request_count(), 2);
    assert_eq!(gateway.reloads("failure").await, 2.0);
    assert_eq!(idp.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_change_is_logged_for_a_restart_and_the_rest_applies() {
    let idp = OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let provider = oauth2("idp", &idp.token_url(), "");
    let one = config(
        std::slice::from_ref(&provider),
        &[route("a", "/a/", &echo.url(), "idp", "")],
    );
    let two = config(
        std::slice::from_ref(&provider),
        &[
            route("a", "/a/", &echo.url(), "idp", ""),
            route("b", "/b/", &echo.url(), "idp", ""),
        ],
    );
    assert!(two.contains("threads: 1\n"));
    let two = two.replace("threads: 1\n", "threads: 2\n");
    let gateway = Reloading::start(&one).await;
    gateway.wait_ready().await;
    assert!(
        gateway
            .logs()
            .lines()
            .all(|l| !l.contains("apply after a restart")),
        "restart warning before any reload"
    );

    gateway.write_config(&two);
    gateway.wait_reloads("success", 1.0, POLL_SEEN).await;
    let warnings: Vec<String> = gateway
        .logs()
        .lines()
        .filter(|l| l.contains("server section changed") && l.contains("after a restart"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "no restart warning: {warnings:?}");
    let warning: Value = serde_json::from_str(&warnings[0]).expect("a JSON log line");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(
        gateway.get("/b/x").await.0,
        200,
        "the routes were not applied"
    );
    assert_eq!(gateway.reloads("failure").await, 0.0);
}
