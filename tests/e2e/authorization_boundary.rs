//! End to end, as an attacker on the proxy port would try it: a route's caller check and
//! its credential apply to exactly the paths under that route. The path that is routed,
//! checked and forwarded is one canonical path (dot segments in every spelling, encoded
//! slashes, `..;`, climbing above `/`); header names with `_` never stand in for the
//! identity headers; no log level prints a credential; provider error text never shows a
//! secret in any encoding; and `/status` is not open to whoever reaches `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::raw::*;
use crate::common::*;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tollgate_standins::oauth2::OAuth2Settings;
use tollgate_standins::scripted::{Reply, ScriptedProvider};

const HMAC_SECRET: &str = "boundary-test-hmac-secret-0123456789abcdef";
const PRIVATE_CONTENT: &str = "TOP-SECRET-CONTENT-7c1f";
const WAIT: Duration = Duration::from_secs(10);

/// An HS256 caller token for `sub`, valid for ten minutes.
fn caller_jwt(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "iat": now, "exp": now + 600}),
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The route keys of an HS256 check with `X-Auth-Subject` from `sub`.
fn jwt_check() -> String {
    format!(
        "inbound:\n  jwt:\n    from: {{ header: Authorization, scheme: Bearer }}\n    algorithms: [HS256]\n    secret: {HMAC_SECRET}\n  identity_headers:\n    X-Auth-Subject: sub\n"
    )
}

/// Python's `http.server` over a directory: an upstream that resolves `..` and `%2e%2e`
/// itself, as the one the issue was found with.
struct FileServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl FileServer {
    async fn start() -> FileServer {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in [
            ("files/public/readme.txt", "public readme"),
            ("files/private/secret.txt", PRIVATE_CONTENT),
        ] {
            let file = dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, content).unwrap();
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(addr.port().to_string())
            .arg("--directory")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let ready = eventually(WAIT, || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(ready, "python3 http.server did not listen on {addr}");
        FileServer {
            child,
            addr,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn raw_get(gateway: &Gateway, target: &str, headers: &str) -> RawResponse {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: files.test\r\n{headers}Connection: close\r\n\r\n");
    match raw_exchange(gateway.proxy_addr(), request.as_bytes()).await {
        RawOutcome::Response(response) => response,
        RawOutcome::Closed => panic!("GET {target}: closed without an answer"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dot_segments_in_any_spelling_never_carry_a_request_past_a_route_check() {
    let files = FileServer::start().await;
    let yaml = config(
        &[],
        &[
            route_block(
                "public",
                "path_prefix: /files/public/",
                &format!("url: {}", files.url()),
                None,
                "strip_prefix: false",
            )
            .replace("    strip_prefix: true\n", ""),
            route_block(
                "private",
                "path_prefix: /files/private/",
                &format!("url: {}", files.url()),
                None,
                &format!("strip_prefix: false\n{}", jwt_check()),
            )
            .replace("    strip_prefix: true\n", ""),
        ],
    );
    let gateway = Gateway::start(&yaml).await;

    // Each lands on the private route (and its check) or is refused outright.
    let cases = [
        ("/files/public/../private/secret.txt", 401),
        ("/files/public/%2e%2e/private/secret.txt", 401),
        ("/files/public/%2E%2E/private/secret.txt", 401),
        ("/files/public/.%2e/private/secret.txt", 401),
        ("/files/public/%2e./private/secret.txt", 401),
        ("/files/public/./../private/secret.txt", 401),
        ("/files/public/%2e/%2e%2e/private/secret.txt", 401),
        ("/files/public//../private/secret.txt", 401),
        ("/files/private", 401),
        ("/files/public/..%2Fprivate/secret.txt", 400),
        ("/files/public/..%2fprivate/secret.txt", 400),
        ("/files/public/%2e%2e%2fprivate/secret.txt", 400),
        ("/files/public/..%5Cprivate%5Csecret.txt", 400),
        ("/files/public/..;/private/secret.txt", 400),
        ("/files/public/..;x=1/private/secret.txt", 400),
        ("/files/public/%2e%2e;/private/secret.txt", 400),
        ("/files/public/../../../private/secret.txt", 400),
        ("/files/public/%00/../private/secret.txt", 400),
    ];
    for (target, status) in cases {
        let response = raw_get(&gateway, target, "").await;
        let body = String::from_utf8_lossy(&response.body);
        assert!(
            !body.contains(PRIVATE_CONTENT),
            "{target} served the private file"
        );
        assert_eq!(response.status, status, "{target}: {body}");
        let kind = if status == 400 {
            "bad_request"
        } else {
            "unauthenticated"
        };
        assert_error_body(&response.json(), kind);
    }
    // A backslash never gets through either, whoever refuses it.
    let response = raw_get(&gateway, "/files/public/..\\private\\secret.txt", "").await;
    assert!((400..500).contains(&response.status), "{response:?}");

    // With a valid token the canonical path is what is routed, checked and served.
    let authorization = format!("Authorization: Bearer {}\r\n", caller_jwt("alice"));
    let response = raw_get(
        &gateway,
        "/files/public/%2e%2e/private/secret.txt",
        &authorization,
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(String::from_utf8_lossy(&response.body), PRIVATE_CONTENT);
    let response = raw_get(&gateway, "/files/public/./readme.txt", "").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(String::from_utf8_lossy(&response.body), "public readme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stripped_route_never_sends_its_credential_above_the_upstream_base_path() {
    let echo = start_echo().await;
    let base_path = format!("{}/api/v1", echo.url());
    let yaml = keyed_config(&[keyed_route("s", &base_path, "")]);
    let gateway = Gateway::start(&yaml).await;
    for target in [
        "/s/../../admin",
        "/s/%2e%2e/%2e%2e/admin",
        "/s/..%2f..%2fadmin",
        "/s/x/../../../admin",
    ] {
        let response = raw_get(&gateway, target, "").await;
        assert_eq!(response.status, 400, "{target}: {response:?}");
        assert_error_body(&response.json(), "bad_request");
    }
    // Leaving the route is not a way out either: the canonical path matches no route.
    let response = raw_get(&gateway, "/s/%2e%2e/admin", "").await;
    assert_eq!(response.status, 404, "{response:?}");
    assert_error_body(&response.json(), "no_route");

    // The last request is the barrier: once it arrived, nothing else did.
    let response = raw_get(&gateway, "/s/a/%2e%2e/b?q=../x", "").await;
    assert_eq!(response.status, 200, "{response:?}");
    let requests = echo.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/api/v1/b");
    assert_eq!(requests[0].query.as_deref(), Some("q=../x"));
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer static-test-key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_names_with_underscores_never_stand_in_for_identity_headers() {
    let echo = start_echo().await;
    let route = |policy: &str| {
        let yaml = config(
            &[],
            &[route_block(
                "api",
                "path_prefix: /api/",
                &format!("url: {}", echo.url()),
                None,
                &jwt_check(),
            )],
        );
        match policy {
            "" => yaml,
            policy => with_server(&yaml, &format!("headers_with_underscores: {policy}")),
        }
    };
    let token = format!("Bearer {}", caller_jwt("alice"));
    let spoofed = |gateway: &Gateway| {
        gateway
            .client()
            .get(gateway.proxy_url("/api/x"))
            .header("Authorization", token.as_str())
            .header("X_Auth_Subject", "admin")
            .header("x_auth_subject", "root")
            .header("X-Trace_Id", "t-1")
            .send()
    };

    // Dropped by default, and counted.
    let gateway = Gateway::start(&route("")).await;
    let reply = spoofed(&gateway).await.unwrap();
    assert_eq!(reply.status(), 200);
    let received = echo.last_request().unwrap();
    assert_eq!(received.header_values("x-auth-subject"), ["alice"]);
    assert!(
        received.headers.iter().all(|(name, _)| !name.contains('_')),
        "{:?}",
        received.headers
    );
    let metrics = gateway.metrics_after(1.0).await;
    assert_eq!(
        sample(
            &metrics,
            "tollgate_request_headers_dropped_total{reason=\"underscore\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    drop(gateway);

    // Refused outright when asked, never forwarded.
    let gateway = Gateway::start(&route("reject")).await;
    let before = echo.request_count();
    let reply = spoofed(&gateway).await.unwrap();
    assert_eq!(reply.status(), 400);
    let body: Value = reply.json().await.unwrap();
    assert_error_body(&body, "bad_request");
    let reply = gateway
        .client()
        .get(gateway.proxy_url("/api/barrier"))
        .header("Authorization", token.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(echo.request_count(), before + 1);
    assert_eq!(echo.last_request().unwrap().path, "/barrier");
    drop(gateway);

    // And passed on when allowed: the knob is what decides.
    let gateway = Gateway::start(&route("allow")).await;
    spoofed(&gateway).await.unwrap();
    assert_eq!(
        echo.last_request().unwrap().header("x_auth_subject"),
        Some("admin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_log_level_prints_a_credential() {
    const API_KEY: &str = "caller-api-key-b71e09d2";
    const BODY_PASSWORD: &str = "body-password-5a9c03";
    const QUERY_KEY: &str = "query-key-e2f4a188";
    const MALFORMED_SECRET: &str = "malformed-secret-9d0b7e";
    const CLIENT_SECRET: &str = "trace-client-secret-44c1";
    let idp = start_oauth2(OAuth2Settings {
        clients: vec![("trace-client".into(), CLIENT_SECRET.into())],
        ..OAuth2Settings::default()
    })
    .await;
    let echo = start_echo().await;
    // A real upstream does not send the request back; the echo would put the credential
    // into a response body, which is the upstream's to log, not the gateway's.
    echo.set_reflect(false);
    let keys = format!("inbound:\n  api_keys:\n    header: X-Api-Key\n    keys: [\"{API_KEY}\"]\n");
    let yaml = config(
        &[oauth2(
            "idp",
            &idp.token_url(),
            &format!("client_id: trace-client\nclient_secret: {CLIENT_SECRET}"),
        )],
        &[
            route("keyed", "/keyed/", &echo.url(), "idp", &keys),
            route("jwt", "/jwt/", &echo.url(), "idp", &jwt_check()),
            route("down", "/down/", &closed_port_url(), "idp", ""),
        ],
    );
    let gateway = Gateway::start_with_env(&yaml, &[("RUST_LOG", "trace")]).await;
    gateway.wait_ready().await;
    let caller_token = caller_jwt("alice");
    let client = gateway.client();

    let reply = client
        .post(gateway.proxy_url(&format!("/keyed/x?api_key={QUERY_KEY}")))
        .header("X-Api-Key", API_KEY)
        .body(format!("{{\"password\":\"{BODY_PASSWORD}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let injected = echo
        .last_request()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_owned();
    let reply = client
        .get(gateway.proxy_url("/jwt/x"))
        .header("Authorization", format!("Bearer {caller_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let reply = client
        .get(gateway.proxy_url(&format!("/down/x?token={QUERY_KEY}")))
        .header("X-Api-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 502);
    // A head that fails to parse, with a credential in it: pingora refuses it itself.
    let malformed = format!(
        "GET /keyed/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {MALFORMED_SECRET}\r\nX-Api-Key {API_KEY}\r\nbroken line\r\n\r\n"
    );
    match raw_exchange(gateway.proxy_addr(), malformed.as_bytes()).await {
        RawOutcome::Response(response) => assert_eq!(response.status, 400),
        RawOutcome::Closed => {}
    }

    // The events that would have carried a credential have all happened once the three
    // access lines are written (the malformed head was answered before the reply came).
    let logged = eventually(WAIT, || async {
        gateway
            .log_lines()
            .iter()
            .filter(|line| line["target"] == "access")
            .count()
            >= 3
    })
    .await;
    let logs = gateway.logs();
    assert!(logged, "no access lines:\n{logs}");
    // The level really is trace: tollgate's own debug lines are there.
    assert!(
        json_lines(&logs)
            .iter()
            .any(|line| line["level"] == "DEBUG"),
        "no debug line at RUST_LOG=trace:\n{logs}"
    );
    let bearer = injected.strip_prefix("Bearer ").unwrap();
    for (what, secret) in [
        ("injected token", bearer),
        ("caller JWT", caller_token.as_str()),
        ("caller API key", API_KEY),
        ("body password", BODY_PASSWORD),
        ("query key", QUERY_KEY),
        ("credential in a malformed head", MALFORMED_SECRET),
        ("client secret", CLIENT_SECRET),
    ] {
        assert!(!logs.contains(secret), "the logs print the {what}:\n{logs}");
    }
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("trace-client:{CLIENT_SECRET}"));
    assert!(
        !logs.contains(&basic),
        "the logs print the client's Basic credentials"
    );
}

/// Provider error text echoing the client secret in some encoding, and how to recognise
/// every form of it in what the gateway shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_error_text_never_shows_a_secret_in_any_encoding() {
    let secret = "echo/Secret+with space&\"q\"\u{e9}-71b2";
    let form =
        |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let base64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    let json_escaped = serde_json::to_string(secret)
        .unwrap()
        .trim_matches('"')
        .replace('/', "\\/");
    let forms = [
        secret.to_owned(),
        form(secret),
        base64(format!("gateway:{}", form(secret))),
        json_escaped.clone(),
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
        "echo/Secret".to_owned(),
        "Secret+with".to_owned(),
    ];
    let replies = [
        (
            "post",
            Reply::raw(
                400,
                "text/plain",
                format!(
                    "bad request: grant_type=client_credentials&client_id=gateway&client_secret={}",
                    form(secret)
                ),
            ),
        ),
        (
            "basic",
            Reply::json(
                401,
                &json!({"error": "invalid_client", "error_description": format!("bad header: Basic {}", base64(format!("gateway:{}", form(secret))))}),
            ),
        ),
        (
            "post",
            Reply::raw(
                400,
                "text/plain",
                format!("{}{secret} and more", "x".repeat(190)),
            ),
        ),
        (
            "post",
            Reply::raw(
                500,
                "application/json",
                format!("{{\"message\":\"got {json_escaped}\"}}"),
            ),
        ),
    ];
    for (index, (client_auth, reply)) in replies.into_iter().enumerate() {
        let scripted = ScriptedProvider::start(reply).await.unwrap();
        let echo = start_echo().await;
        let yaml = config(
            &[oauth2(
                "idp",
                &scripted.token_url(),
                &format!("client_id: gateway\nclient_secret: ${{env:ECHO_TEST_SECRET}}\nclient_auth: {client_auth}\nrefresh: {{ min_backoff: 5s, max_backoff: 5s }}"),
            )],
            &[route("api", "/api/", &echo.url(), "idp", "")],
        );
        let gateway = Gateway::start_with_env(&yaml, &[("ECHO_TEST_SECRET", secret)]).await;
        let failed = eventually(WAIT, || async {
            gateway.provider_status("idp").await["consecutive_failures"].as_u64() >= Some(1)
        })
        .await;
        assert!(failed, "case {index}: the login never failed");
        let (status, _, body) = gateway.get_json("/api/x").await;
        assert_eq!(status, 503, "case {index}: {body}");
        let shown = [
            body["detail"].as_str().unwrap_or_default().to_owned(),
            gateway.provider_status("idp").await["last_error"].to_string(),
            gateway.readyz().await.1,
            gateway.logs(),
        ];
        for text in &shown {
            assert!(
                text.contains("***"),
                "case {index}: the echo was not blanked: {text}"
            );
            for form in &forms {
                assert!(
                    !text.contains(form.as_str()),
                    "case {index}: `{form}` shows in: {text}"
                );
            }
        }
    }
}

/// This host's address on a non-loopback interface, to call the admin listener as another
/// host would.
fn non_loopback_address() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    for probe in ["192.0.2.1:9", "10.255.255.254:9", "198.51.100.1:9"] {
        if socket.connect(probe).is_ok() {
            if let Ok(local) = socket.local_addr() {
                if !local.ip().is_loopback() && !local.ip().is_unspecified() {
                    return local.ip();
                }
            }
        }
    }
    let output = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("this test needs an address on a non-loopback interface")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_beyond_loopback_needs_the_admin_token() {
    const ADMIN_TOKEN: &str = "admin-token-3f9b1c7e5d2a";
    let echo = start_echo().await;
    let base = keyed_config(&[route("api", "/api/", &echo.url(), "key", "")])
        .replace("\"{admin}\"", "\"{admin_any}\"");
    let remote = non_loopback_address();
    let client = client();
    let get = |gateway: &Gateway, path: &str, token: Option<&str>| {
        let url = format!(
            "http://{}{path}",
            SocketAddr::new(remote, gateway.admin_addr().port())
        );
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // No token configured: other hosts get metrics and health, not /status.
    let gateway = Gateway::start(&base).await;
    assert_eq!(get(&gateway, "/metrics", None).await.unwrap().status(), 200);
    assert_eq!(get(&gateway, "/readyz", None).await.unwrap().status(), 200);
    let reply = get(&gateway, "/status", None).await.unwrap();
    assert_eq!(reply.status(), 403);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(!body.to_string().contains("fingerprint"), "{body}");
    // This host (kubectl port-forward, kubectl exec) still reads it.
    assert_eq!(gateway.status().await["providers"][0]["provider"], "key");
    assert!(
        gateway.logs().contains("server.admin_token is not set"),
        "{}",
        gateway.logs()
    );
    drop(gateway);

    // With a token: only its bearer.
    let yaml = with_server(&base, "admin_token: ${env:ADMIN_TOKEN}");
    let gateway = Gateway::start_with_env(&yaml, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let reply = get(&gateway, "/status", None).await.unwrap();
    assert_eq!(reply.status(), 401);
    assert!(reply.headers().contains_key("www-authenticate"));
    assert_eq!(
        get(&gateway, "/status", Some("wrong-token-0000000000"))
            .await
            .unwrap()
            .status(),
        401
    );
    let reply = get(&gateway, "/status", Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["providers"][0]["provider"], "key");
    assert!(!gateway.logs().contains(ADMIN_TOKEN));
    assert!(!gateway.metrics().await.contains(ADMIN_TOKEN));
}

#[test]
fn check_refuses_a_route_prefix_that_is_not_canonical_and_bad_path_options() {
    for (prefix, expected) in [
        ("/a/../b/", "write `/b/`"),
        ("/a//b/", "write `/a/b/`"),
        ("/%61pi/", "write `/api/`"),
        ("/../x/", "climbs above"),
    ] {
        let yaml = keyed_config(&[route_block(
            "r",
            &format!("path_prefix: \"{prefix}\""),
            "url: http://127.0.0.1:9",
            Some("key"),
            "",
        )]);
        check_refuses(&yaml, &["routes[0].match.path_prefix", expected]);
    }
    let base = keyed_config(&[keyed_route("r", "http://127.0.0.1:9", "")]);
    for (option, path) in [
        (
            "paths: { escaped_slashes: decode }",
            "server.paths.escaped_slashes",
        ),
        (
            "headers_with_underscores: maybe",
            "server.headers_with_underscores",
        ),
        ("admin_token: short", "server.admin_token"),
    ] {
        check_refuses(&with_server(&base, option), &[path]);
    }
}
