//! `tollgate demo` as a user runs it: it prints the curl lines to try, every demo route
//! shows its injected credential, and Ctrl-C (SIGINT) ends it cleanly. The demo uses fixed
//! ports (which the harness's `free_port` never draws), so one demo runs at a time: every
//! test that runs it (here, in `mcp` and in `per_caller`) starts it with [`Demo::start`],
//! which waits for the one before to end. A build without the `demo` feature has no demo
//! (see main.rs).

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{client, eventually, BIN};

/// Held by the running demo: its ports are fixed, so a second one would not start.
static DEMO_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The last line of the demo's instructions.
const LAST_INSTRUCTION: &str = "Ctrl-C stops it.";

/// A running `tollgate demo`, killed when dropped; it holds the demo ports until then.
pub struct Demo {
    child: std::process::Child,
    client: reqwest::Client,
    printed: Arc<Mutex<Vec<String>>>,
    _ports: tokio::sync::MutexGuard<'static, ()>,
}

impl Demo {
    /// Starts `tollgate demo` (once no other test runs it) and waits until it is ready
    /// (`/readyz` 200) and its instructions are printed to the last line.
    pub async fn start() -> Demo {
        let ports = DEMO_PORTS.lock().await;
        let mut child = Command::new(BIN)
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tollgate demo starts");
        // Read stdout all along (the log lines follow the instructions), so the pipe never
        // fills.
        let printed = Arc::new(Mutex::new(Vec::<String>::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let demo = Demo {
            child,
            client: client(),
            printed,
            _ports: ports,
        };
        let ready = eventually(Duration::from_secs(20), || async {
            let ready = demo.client.get("http://127.0.0.1:9901/readyz").send().await;
            ready.is_ok_and(|reply| reply.status() == 200)
        })
        .await;
        assert!(ready, "the demo is not ready within 20 s");
        // The instructions are printed before the gateway serves; this waits for the
        // reader thread to have them all.
        let shown = eventually(Duration::from_secs(10), || async {
            demo.printed().iter().any(|line| line == LAST_INSTRUCTION)
        })
        .await;
        assert!(
            shown,
            "the demo did not print its instructions:\n{:?}",
            demo.printed()
        );
        demo
    }

    /// `GET path` on the demo's proxy port with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(format!("http://127.0.0.1:8080{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the demo answers")
    }

    /// The lines the demo printed so far.
    pub fn printed(&self) -> Vec<String> {
        self.printed.lock().unwrap().clone()
    }

    /// Sends SIGINT (Ctrl-C) and waits up to `limit` for the demo to exit.
    async fn interrupt(&mut self, limit: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "demo did not exit on SIGINT");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's routes and the header each one injects.
const ROUTES: [(&str, &str, &str); 9] = [
    ("oauth2", "authorization", "Bearer eyJ"),
    ("bigid", "authorization", "Bearer eyJ"),
    ("bigid-session", "authorization", "Bearer eyJ"),
    ("dsm", "authorization", "Bearer "),
    ("engine", "x-auth", "eyJ"),
    ("bagid", "authorization", "Bearer eyJ"),
    ("bagid-guest", "authorization", "Bearer eyJ"),
    ("static", "x-api-key", "demo-api-key"),
    ("declared", "authorization", "Bearer eyJ"),
];

/// `GET path` on the demo with `header`: what the echo upstream saw.
async fn echoed(demo: &Demo, path: &str, header: (&str, &str)) -> Value {
    demo.get(path, &[header])
        .await
        .json()
        .await
        .expect("echo JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_routes_show_their_credentials_and_ctrl_c_exits_cleanly() {
    let mut demo = Demo::start().await;
    let printed = demo.printed().join("\n");
    for (route, _, _) in ROUTES {
        let curl = format!("curl -s localhost:8080/{route}/anything");
        assert!(printed.contains(&curl), "the demo did not print `{curl}`");
    }

    for (route, header, prefix) in ROUTES {
        let path = format!("/{route}/anything");
        let reply = echoed(&demo, &path, (header, "caller-supplied")).await;
        let value = reply["headers"][header].as_str().unwrap_or_default();
        assert!(value.starts_with(prefix), "{route}: {header} is {value:?}");
        assert!(
            value.len() > prefix.len() || prefix == "demo-api-key",
            "{route}: empty credential"
        );
        assert!(
            !value.contains("caller-supplied"),
            "{route}: the caller's {header} was forwarded"
        );
        assert_eq!(
            reply["path"].as_str().map(|p| p.ends_with("/anything")),
            Some(true),
            "{route}"
        );
    }

    let refused = demo.get("/ingress/anything", &[]).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let refused: Value = refused.json().await.expect("JSON error");
    assert_eq!(refused["error"], "unauthenticated");
    let passed = echoed(
        &demo,
        "/ingress/anything",
        ("x-api-key", "demo-caller-key-0001"),
    )
    .await;
    let injected = passed["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(injected.starts_with("Bearer eyJ"), "ingress: {injected:?}");
    assert!(
        passed["headers"]["x-api-key"].is_null(),
        "the caller's key was forwarded"
    );

    let status = demo.interrupt(Duration::from_secs(10)).await;
    assert!(status.success(), "demo exited with {status}");
}
