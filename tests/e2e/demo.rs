//! `tollgate demo` as a user runs it: it prints the curl lines to try, every demo route
//! shows its injected credential, and Ctrl-C (SIGINT) ends it cleanly. The demo uses fixed
//! ports (which the harness's `free_port` never draws), so this module holds one test. A
//! build without the `demo` feature has no demo (see main.rs).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// `GET path` on the demo's proxy port with `header`: what the echo upstream saw.
async fn echoed(client: &reqwest::Client, path: &str, header: (&str, &str)) -> Value {
    client
        .get(format!("http://127.0.0.1:8080{path}"))
        .header(header.0, header.1)
        .send()
        .await
        .expect("demo answers")
        .json()
        .await
        .expect("echo JSON")
}

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_routes_show_their_credentials_and_ctrl_c_exits_cleanly() {
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tollgate demo starts"),
    );
    // Read stdout all along (the log lines follow the instructions), so the pipe never fills.
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = demo.0.stdout.take().expect("piped stdout");
    let lines = Arc::clone(&printed);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client.get("http://127.0.0.1:9901/readyz").send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "demo not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The instructions are printed before the gateway serves: a ready demo has shown them.
    let printed = printed.lock().unwrap().join("\n");
    for (route, _, _) in ROUTES {
        let curl = format!("curl -s localhost:8080/{route}/anything");
        assert!(printed.contains(&curl), "the demo did not print `{curl}`");
    }

    for (route, header, prefix) in ROUTES {
        let path = format!("/{route}/anything");
        let reply = echoed(&client, &path, (header, "caller-supplied")).await;
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

    let refused = client
        .get("http://127.0.0.1:8080/ingress/anything")
        .send()
        .await
        .expect("demo answers");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let refused: Value = refused.json().await.expect("JSON error");
    assert_eq!(refused["error"], "unauthenticated");
    let passed = echoed(
        &client,
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

    let pid = demo.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = demo.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not exit on SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "demo exited with {status}");
}
