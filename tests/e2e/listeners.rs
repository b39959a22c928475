//! End to end: listeners fit for an ingress. TLS termination with the injected credential
//! at the upstream, TLS 1.1 refused, HTTP/2 by ALPN and h2c, mTLS with and without a
//! client certificate (and its identity headers), certificate rotation through a Secret
//! mount's `..data` swap while an open connection keeps working, gRPC end to end against
//! a real gRPC server (grpcio) with tollgate's own refusals as gRPC statuses, and a
//! WebSocket echo with the credential on the upgrade request.
//!
//! Certificates are made at test time (`tollgate_standins::pki`). The gRPC and TLS 1.1 peers are Python
//! (grpcio, OpenSSL), installed by `.ci/deps`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_tungstenite::tungstenite::handshake::{self, client, server::Callback};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;
use support::*;
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::oauth2::{OAuth2Settings, OAuth2StandIn};

const WAIT: Duration = Duration::from_secs(10);

/// How soon after its files change a rotated certificate must serve new handshakes: the
/// documented check interval (2 s, `tls::watch::INTERVAL`) and a margin for a busy
/// machine.
const ROTATION_BOUND: Duration = Duration::from_secs(4);

async fn idp() -> OAuth2StandIn {
    OAuth2StandIn::start(OAuth2Settings::default())
        .await
        .expect("OAuth2 stand-in")
}

fn idp_provider(idp: &OAuth2StandIn) -> String {
    oauth2("idp", &idp.token_url(), "grant: client_credentials")
}

/// A config whose `listen` holds the harness's plain `{listen}` and `extra` entries
/// (YAML list items, each starting with `    - `).
fn config_with_listeners(extra: &str, providers: &[String], routes: &[String]) -> String {
    format!(
        "server:\n  listen:\n    - \"{{listen}}\"\n{extra}  admin: \"{{admin}}\"\n  threads: 1\nproviders:\n{}routes:\n{}",
        providers.concat(),
        routes.concat()
    )
}

/// A TLS listener entry on `port` serving the certificate and key of `mount` (`tls.crt`,
/// `tls.key`), with a client CA and HTTP/2 when given.
fn tls_listener(port: u16, mount: &SecretMount, client_ca: Option<&Path>, http2: bool) -> String {
    let ca = client_ca.map_or(String::new(), |ca| {
        format!(", client_ca_file: \"{}\"", ca.display())
    });
    format!(
        "    - address: \"127.0.0.1:{port}\"\n      tls: {{ cert_file: \"{}\", key_file: \"{}\"{ca} }}\n      http2: {http2}\n",
        mount.path("tls.crt").display(),
        mount.path("tls.key").display()
    )
}

/// A gateway whose listeners are the plain one and a TLS one on `port` serving `mount`
/// (HTTP/2 when `http2`), with the route `/` to `echo` and a static key: for the tests of
/// the TLS layer alone.
async fn keyed_tls_gateway(
    port: u16,
    mount: &SecretMount,
    echo: &EchoUpstream,
    http2: bool,
) -> Gateway {
    let yaml = config_with_listeners(
        &tls_listener(port, mount, None, http2),
        &[static_provider("key")],
        &[route("api", "/", &echo.url(), "key", "strip_prefix: false")],
    );
    Gateway::start(&yaml).await
}

/// The identity provider, the echo upstream and a CA: what most listener tests start with.
async fn idp_echo_pki() -> (OAuth2StandIn, EchoUpstream, Pki) {
    let echo = EchoUpstream::start().await.expect("echo upstream");
    (idp().await, echo, Pki::new("CA"))
}

/// `GET path` over a new TLS connection made with `config`: the answer, or why the
/// handshake or the request failed.
async fn get_over_tls(
    port: u16,
    config: Arc<ClientConfig>,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tls_connect(addr(port), config).await?;
    http1_get(&mut stream, path).await
}
/// The certificate and key of `leaf` as files in a fresh Secret mount.
fn mounted(leaf: &Leaf) -> SecretMount {
    SecretMount::new(&[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)])
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until `query` (a metric sample) reaches `at_least`; its value.
async fn metric_reaches(gateway: &Gateway, query: &str, at_least: f64) -> f64 {
    let started = Instant::now();
    loop {
        let value = gateway.metric(query).await;
        if value >= at_least {
            return value;
        }
        assert!(
            started.elapsed() < WAIT,
            "{query} stayed at {value}, expected {at_least}\n{}",
            gateway.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_carries_the_injected_credential_to_the_upstream() {
    let (idp, echo, pki) = idp_echo_pki().await;
    let mount = mounted(&pki.server("gateway", 2035));
    let port = free_port();
    let yaml = config_with_listeners(
        &tls_listener(port, &mount, None, false),
        &[idp_provider(&idp)],
        &[route("reports", "/reports/", &echo.url(), "idp", "")],
    );
    let gateway = Gateway::start(&yaml).await;
    gateway.wait_ready().await;

    let reply = https_client(&pki.ca_pem())
        .get(format!("https://localhost:{port}/reports/daily"))
        .header("Authorization", "Bearer the-caller-s-own")
        .send()
        .await
        .expect("HTTPS request through the gateway");
    assert_eq!(reply.status(), 200);
    let recorded = echo.last_request().expect("the upstream got the request");
    assert_eq!(recorded.path, "/daily");
    let authorization = recorded.header_values("authorization");
    assert_eq!(authorization.len(), 1, "{authorization:?}");
    let token = bearer(authorization[0]).expect("Bearer");
    assert!(idp.is_valid_token(token), "the upstream got {token}");
    assert_eq!(recorded.header("x-forwarded-proto"), Some("https"));

    // The plain listener beside it serves as before, and says so upstream.
    assert_eq!(gateway.get("/reports/plain").await.status(), 200);
    let recorded = echo.last_request().unwrap();
    assert_eq!(recorded.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        gateway
            .metric(&format!(
                "tollgate_tls_certificate_expiry_timestamp_seconds{{listener=\"127.0.0.1:{port}\"}}"
            ))
            .await,
        new_year(2035) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_below_1_2_is_refused() {
    let (echo, pki) = (EchoUpstream::start().await.unwrap(), Pki::new("CA"));
    let mount = mounted(&pki.server("gateway", 2035));
    let port = free_port();
    let gateway = keyed_tls_gateway(port, &mount, &echo, true).await;
    let ca = pki.ca_file();

    // The same OpenSSL client, pinned to one version each time: only the version differs.
    let old = handshake_with_version(port, &ca, "TLSv1_1").await;
    assert!(old.starts_with("refused"), "TLS 1.1: {old}");
    assert_eq!(
        handshake_with_version(port, &ca, "TLSv1_2").await,
        "ok TLSv1.2"
    );
    assert_eq!(
        handshake_with_version(port, &ca, "TLSv1_3").await,
        "ok TLSv1.3"
    );
    metric_reaches(
        &gateway,
        "tollgate_tls_handshake_failures_total{reason=\"protocol_version\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_is_negotiated_by_alpn_and_spoken_as_h2c_on_a_plain_listener() {
    let (idp, echo, pki) = idp_echo_pki().await;
    let mount = mounted(&pki.server("gateway", 2035));
    let (h2_port, h1_port, h2c_port) = (free_port(), free_port(), free_port());
    let listeners = format!(
        "{}{}    - {{ address: \"127.0.0.1:{h2c_port}\", http2: true }}\n",
        tls_listener(h2_port, &mount, None, true),
        tls_listener(h1_port, &mount, None, false),
    );
    let yaml = config_with_listeners(
        &listeners,
        &[idp_provider(&idp)],
        &[route("api", "/api/", &echo.url(), "idp", "")],
    );
    let gateway = Gateway::start(&yaml).await;
    gateway.wait_ready().await;
    let offer: &[&[u8]] = &[b"h2", b"http/1.1"];
    let config = tls_config(&pki.ca_pem(), None, offer);

    let stream = tls_connect(addr(h2_port), Arc::clone(&config))
        .await
        .unwrap();
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (status, body) = h2_get(stream, &format!("localhost:{h2_port}"), "/api/x?q=1").await;
    assert_eq!(status, 200, "{body}");
    let recorded = echo.last_request().unwrap();
    assert_eq!(
        (recorded.path.as_str(), recorded.query.as_deref()),
        ("/x", Some("q=1"))
    );
    let token = bearer(recorded.header("authorization").unwrap()).unwrap();
    assert!(idp.is_valid_token(token));

    // Without http2, the listener offers no ALPN and speaks HTTP/1.1.
    let mut stream = tls_connect(addr(h1_port), Arc::clone(&config))
        .await
        .unwrap();
    assert_eq!(alpn(&stream), None);
    assert_eq!(http1_get(&mut stream, "/api/y").await.unwrap().0, 200);

    // A plain listener with http2 takes HTTP/2 by prior knowledge, and HTTP/1.1 still.
    let plain = tokio::net::TcpStream::connect(addr(h2c_port))
        .await
        .unwrap();
    let (status, _) = h2_get(plain, &format!("localhost:{h2c_port}"), "/api/z").await;
    assert_eq!(status, 200);
    assert_eq!(echo.last_request().unwrap().path, "/z");
    let mut plain = tokio::net::TcpStream::connect(addr(h2c_port))
        .await
        .unwrap();
    assert_eq!(http1_get(&mut plain, "/api/w").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_requires_a_client_certificate_and_names_the_caller() {
    let (idp, echo, pki) = idp_echo_pki().await;
    let mount = mounted(&pki.server("gateway", 2035));
    let client_ca = pki.ca_file();
    let port = free_port();
    let inbound = "inbound:\n  client_cert: {}\n  identity_headers: { X-Client-Subject: client_cert.subject, X-Client-Sans: client_cert.sans }";
    let yaml = config_with_listeners(
        &tls_listener(port, &mount, Some(&client_ca), false),
        &[idp_provider(&idp)],
        &[route("internal", "/internal/", &echo.url(), "idp", inbound)],
    );
    let gateway = Gateway::start(&yaml).await;
    gateway.wait_ready().await;

    // A certificate from the client CA: the request passes, named by its certificate.
    let client = pki.client(
        "reporting",
        vec![
            SanType::DnsName("reports.example".try_into().unwrap()),
            SanType::URI(
                "spiffe://cluster.local/ns/reports/sa/api"
                    .try_into()
                    .unwrap(),
            ),
        ],
    );
    let config = tls_config(&pki.ca_pem(), Some(&client), &[]);
    let mut stream = tls_connect(addr(port), config).await.unwrap();
    // Identity headers the caller sends itself are never what the upstream sees.
    let spoofed = [
        ("X-Client-Subject", "CN=admin"),
        ("X-Client-Sans", "DNS:admin"),
    ];
    let (status, body) = http1_get_with(&mut stream, "/internal/x", &spoofed)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let recorded = echo.last_request().unwrap();
    assert_eq!(
        recorded.header_values("x-client-subject"),
        ["CN=reporting,O=Example\\, Inc"]
    );
    assert_eq!(
        recorded.header("x-client-sans"),
        Some("DNS:reports.example,URI:spiffe://cluster.local/ns/reports/sa/api")
    );
    assert!(idp.is_valid_token(bearer(recorded.header("authorization").unwrap()).unwrap()));
    let forwarded = echo.request_count();

    // No certificate: the handshake is refused (TLS 1.3 tells the client on its first
    // read), counted, and nothing reaches the upstream.
    let refused = get_over_tls(port, tls_config(&pki.ca_pem(), None, &[]), "/internal/x").await;
    assert!(
        refused.is_err(),
        "without a client certificate: {refused:?}"
    );
    metric_reaches(
        &gateway,
        "tollgate_tls_handshake_failures_total{reason=\"no_client_certificate\"}",
        1.0,
    )
    .await;

    // A certificate from another CA: refused too.
    let stranger = Pki::new("Other CA").client("stranger", vec![]);
    let config = tls_config(&pki.ca_pem(), Some(&stranger), &[]);
    let refused = get_over_tls(port, config, "/internal/x").await;
    assert!(refused.is_err(), "with a foreign certificate: {refused:?}");
    metric_reaches(
        &gateway,
        "tollgate_tls_handshake_failures_total{reason=\"bad_client_certificate\"}",
        1.0,
    )
    .await;
    // Both refusals are counted, so both handshakes are over: nothing was forwarded.
    assert_eq!(echo.request_count(), forwarded);

    // The same route reached over the plain listener has no certificate to show.
    let (status, _, body) = gateway.get_json("/internal/x").await;
    assert_eq!(status, 401);
    assert_error_body(&body, "unauthenticated");
    assert_eq!(echo.request_count(), forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificate_files_serve_new_handshakes_while_open_connections_live_on() {
    let (echo, pki) = (EchoUpstream::start().await.unwrap(), Pki::new("CA"));
    let first = pki.server("first", 2031);
    let mut mount = mounted(&first);
    let port = free_port();
    let gateway = keyed_tls_gateway(port, &mount, &echo, false).await;
    let listener = format!("listener=\"127.0.0.1:{port}\"");
    let expiry = format!("tollgate_tls_certificate_expiry_timestamp_seconds{{{listener}}}");
    let config = tls_config(&pki.ca_pem(), None, &[]);

    let mut open = tls_connect(addr(port), Arc::clone(&config)).await.unwrap();
    assert_eq!(common_name(&server_cert(&open)), "first");
    assert_eq!(http1_get(&mut open, "/before").await.unwrap().0, 200);
    assert_eq!(gateway.metric(&expiry).await, new_year(2031) as f64);

    // cert-manager renews: the Secret mount's ..data symlink moves to the new files.
    let second = pki.server("second", 2032);
    let swapped = Instant::now();
    mount.swap(&[("tls.crt", &second.cert_pem), ("tls.key", &second.key_pem)]);
    let mut seen = String::new();
    while swapped.elapsed() < WAIT {
        let fresh = tls_connect(addr(port), Arc::clone(&config)).await.unwrap();
        seen = common_name(&server_cert(&fresh));
        if seen == "second" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = swapped.elapsed();
    assert_eq!(
        seen, "second",
        "new handshakes never got the new certificate"
    );
    assert!(
        took <= ROTATION_BOUND,
        "the new certificate served {took:?} after the swap"
    );
    metric_reaches(
        &gateway,
        &format!("tollgate_tls_certificate_reloads_total{{{listener},outcome=\"success\"}}"),
        1.0,
    )
    .await;
    assert_eq!(gateway.metric(&expiry).await, new_year(2032) as f64);

    // The connection opened before the rotation was not dropped.
    assert_eq!(http1_get(&mut open, "/after").await.unwrap().0, 200);

    // A key that is not the certificate's: logged, counted, and the last good pair stays.
    let third = pki.server("third", 2033);
    let unrelated = pki.server("unrelated", 2033);
    mount.swap(&[
        ("tls.crt", &third.cert_pem),
        ("tls.key", &unrelated.key_pem),
    ]);
    metric_reaches(
        &gateway,
        &format!("tollgate_tls_certificate_reloads_total{{{listener},outcome=\"failure\"}}"),
        1.0,
    )
    .await;
    let fresh = tls_connect(addr(port), Arc::clone(&config)).await.unwrap();
    assert_eq!(common_name(&server_cert(&fresh)), "second");
    assert_eq!(gateway.metric(&expiry).await, new_year(2032) as f64);
    let logs = gateway
        .logs_once_written("the previous certificate keeps serving")
        .await;
    assert!(
        logs.contains("does not belong to the certificate"),
        "{logs}"
    );
    assert!(
        !logs.contains(unrelated.key_pem.lines().nth(1).unwrap()),
        "{logs}"
    );
    assert_eq!(http1_get(&mut open, "/still").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_call_goes_through_with_the_credential_in_its_metadata() {
    let (idp, pki) = (idp().await, Pki::new("CA"));
    let mount = mounted(&pki.server("gateway", 2035));
    // Two real gRPC servers: one over h2c, one over TLS with a certificate of our CA.
    let plain = GrpcServer::start(None).await;
    let upstream_cert = mounted(&pki.server("grpc-upstream", 2035));
    let secure = GrpcServer::start(Some((
        &upstream_cert.path("tls.crt"),
        &upstream_cert.path("tls.key"),
    )))
    .await;
    let ca = pki.ca_file();
    let port = free_port();
    let yaml = config_with_listeners(
        &tls_listener(port, &mount, None, true),
        &[idp_provider(&idp)],
        &[
            format!(
                "  - name: echo\n    match: {{ path_prefix: /echo.v1.Echo/ }}\n    upstream: {{ url: \"http://127.0.0.1:{}\", http2: true }}\n    credential: {{ provider: idp }}\n",
                plain.port
            ),
            format!(
                "  - name: secure-echo\n    match: {{ host: secure.example, path_prefix: /echo.v1.Echo/ }}\n    upstream: {{ url: \"https://localhost:{}\", http2: true, tls: {{ ca_file: \"{}\" }} }}\n    credential: {{ provider: idp }}\n",
                secure.port,
                ca.display()
            ),
        ],
    );
    let gateway = Gateway::start(&yaml).await;
    gateway.wait_ready().await;
    let ca_text = ca.to_str().unwrap();
    let target = format!("127.0.0.1:{port}");

    let call = grpc_tls_call(&target, "/echo.v1.Echo/Unary", ca_text, &[]).await;
    assert_eq!(call["code"], "OK", "{call}");
    let reply: Value = serde_json::from_str(call["reply"].as_str().unwrap()).unwrap();
    let authorization = reply["metadata"]["authorization"]
        .as_str()
        .unwrap_or_default();
    let token = bearer(authorization).unwrap_or_else(|| panic!("metadata: {reply}"));
    assert!(idp.is_valid_token(token), "{reply}");
    assert_eq!(call["trailing"]["x-echo-trailer"], "kept", "{call}");

    // The upstream's own status and trailers pass through.
    let call = grpc_tls_call(&target, "/echo.v1.Echo/Fail", ca_text, &[]).await;
    assert_eq!(call["code"], "NOT_FOUND", "{call}");
    assert_eq!(call["details"], "the upstream has no such thing");
    assert_eq!(call["trailing"]["x-echo-trailer"], "kept", "{call}");

    // Caller metadata travels as it came.
    let metadata = ["--metadata", "x-caller=1"];
    let call = grpc_tls_call(&target, "/echo.v1.Echo/Unary", ca_text, &metadata).await;
    assert_eq!(call["code"], "OK", "{call}");
    let reply: Value = serde_json::from_str(call["reply"].as_str().unwrap()).unwrap();
    assert_eq!(reply["metadata"]["x-caller"], "1", "{reply}");
    // HTTP/2 over TLS to the upstream (ALPN h2), on the route the :authority chose.
    let authority = ["--authority", "secure.example"];
    let call = grpc_tls_call(&target, "/echo.v1.Echo/Unary", ca_text, &authority).await;
    assert_eq!(call["code"], "OK", "{call}");
    let reply: Value = serde_json::from_str(call["reply"].as_str().unwrap()).unwrap();
    assert!(reply["metadata"]["authorization"]
        .as_str()
        .is_some_and(|value| value.starts_with("Bearer ")));
}

/// A call of `method` over a TLS channel to `target` (the name `localhost`, trusting the
/// CA file `ca`), with more `args`.
async fn grpc_tls_call(target: &str, method: &str, ca: &str, args: &[&str]) -> Value {
    let mut all = vec!["--ca", ca, "--name", "localhost"];
    all.extend_from_slice(args);
    grpc_call(target, method, &all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_s_own_refusals_of_grpc_calls_are_grpc_statuses() {
    let (idp, down) = (idp().await, idp().await);
    down.set_available(false);
    let grpc = GrpcServer::start(None).await;
    let upstream = format!("http://127.0.0.1:{}", grpc.port);
    let grpc_route = |name: &str, prefix: &str, extra: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: {prefix} }}\n    upstream: {{ url: \"{upstream}\", http2: true }}\n{extra}"
        )
    };
    let h2c_port = free_port();
    let yaml = config_with_listeners(
        &format!("    - {{ address: \"127.0.0.1:{h2c_port}\", http2: true }}\n"),
        &[
            idp_provider(&idp),
            oauth2("down", &down.token_url(), "grant: client_credentials"),
        ],
        &[
            grpc_route("ok", "/ok.v1.Ok/", "    credential: { provider: idp }\n"),
            grpc_route("down", "/down.v1.Down/", "    credential: { provider: down }\n"),
            grpc_route(
                "keyed",
                "/keyed.v1.Keyed/",
                "    inbound: { api_keys: { keys: [\"key-0123456789abcdef\"] } }\n    credential: { provider: idp }\n",
            ),
        ],
    );
    let gateway = Gateway::start(&yaml).await;
    let target = format!("127.0.0.1:{h2c_port}");

    // The provider is down and no token was ever had: UNAVAILABLE, not forwarded.
    let call = grpc_call(&target, "/down.v1.Down/Get", &[]).await;
    assert_eq!(call["code"], "UNAVAILABLE", "{call}");
    assert!(
        call["details"]
            .as_str()
            .is_some_and(|d| d.starts_with("credential_unavailable: ")),
        "{call}"
    );
    assert!(call["trailing"]["x-request-id"].is_string(), "{call}");

    // The caller fails the inbound check: UNAUTHENTICATED.
    let call = grpc_call(&target, "/keyed.v1.Keyed/Get", &[]).await;
    assert_eq!(call["code"], "UNAUTHENTICATED", "{call}");
    // The details are tollgate's, not a client's reading of an HTTP status.
    assert_eq!(
        call["details"], "unauthenticated: no API key was sent",
        "{call}"
    );
    assert!(call["trailing"]["www-authenticate"].is_string(), "{call}");
    // With the key, the call reaches the gRPC server (which has no such method).
    let call = grpc_call(
        &target,
        "/keyed.v1.Keyed/Get",
        &["--metadata", "x-api-key=key-0123456789abcdef"],
    )
    .await;
    assert_eq!(call["code"], "UNIMPLEMENTED", "{call}");

    // No route: NOT_FOUND.
    let call = grpc_call(&target, "/nowhere.v1.Nowhere/Get", &[]).await;
    assert_eq!(call["code"], "NOT_FOUND", "{call}");
    assert_eq!(
        call["details"], "no_route: no route matches this host and path",
        "{call}"
    );

    // A plain HTTP caller of the same route still gets the JSON contract.
    let (status, _, body) = gateway.get_json("/down.v1.Down/Get").await;
    assert_eq!(status, 503);
    assert_error_body(&body, "credential_unavailable");
}

/// Keeps the headers of each upgrade request the echo server accepts.
struct RecordUpgrade(Arc<Mutex<Vec<http::HeaderMap>>>);

impl Callback for RecordUpgrade {
    fn on_request(
        self,
        request: &handshake::server::Request,
        response: handshake::server::Response,
    ) -> Result<handshake::server::Response, handshake::server::ErrorResponse> {
        self.0.lock().unwrap().push(request.headers().clone());
        Ok(response)
    }
}

/// A WebSocket echo server; records the headers of every upgrade request.
async fn websocket_echo() -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let upgrades = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&upgrades);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = RecordUpgrade(Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        if socket.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    (address, upgrades)
}

type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A ready gateway with the route `/ws/` to the WebSocket server at `upstream`, with
/// `timeouts`, and a WebSocket opened through it on `/ws/{path}` (with the upgrade's answer).
async fn websocket_through(
    idp: &OAuth2StandIn,
    upstream: SocketAddr,
    timeouts: &str,
    path: &str,
) -> (Gateway, WebSocket, client::Response) {
    let yaml = config_with_listeners(
        "",
        &[idp_provider(idp)],
        &[route(
            "ws",
            "/ws/",
            &format!("http://{upstream}"),
            "idp",
            &format!("timeouts: {timeouts}"),
        )],
    );
    let gateway = Gateway::start_ready(&yaml).await;
    let url = format!("ws://{}/ws/{path}", gateway.proxy_addr());
    let (socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    (gateway, socket, response)
}

/// Sends `text` and expects it back.
async fn assert_echoed(socket: &mut WebSocket, text: &str) {
    socket.send(Message::text(text)).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_echo_carries_the_credential_on_the_upgrade() {
    let idp = idp().await;
    let (upstream, upgrades) = websocket_echo().await;
    let timeouts = "{ read: 1s, upgraded_idle: 10s }";
    let (gateway, mut socket, response) = websocket_through(&idp, upstream, timeouts, "chat").await;
    assert_eq!(response.status(), 101);
    assert_echoed(&mut socket, "hello").await;
    {
        let upgrades = upgrades.lock().unwrap();
        assert_eq!(upgrades.len(), 1);
        let authorization = upgrades[0]["authorization"].to_str().unwrap();
        assert!(idp.is_valid_token(bearer(authorization).unwrap()));
    }
    assert_eq!(
        metric_reaches(
            &gateway,
            "tollgate_websocket_connections{route=\"ws\"}",
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        gateway
            .metric("tollgate_websocket_upgrades_total{route=\"ws\"}")
            .await,
        1.0
    );

    // Quiet for longer than the route's read timeout: the upgraded connection lives on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_echoed(&mut socket, "again").await;

    socket.close(None).await.unwrap();
    let closed = eventually(WAIT, || async {
        gateway
            .metric("tollgate_websocket_connections{route=\"ws\"}")
            .await
            == 0.0
    })
    .await;
    assert!(closed, "{}", gateway.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_websocket_is_closed_after_upgraded_idle() {
    let idp = idp().await;
    let (upstream, _) = websocket_echo().await;
    let (_gateway, mut socket, _) =
        websocket_through(&idp, upstream, "{ upgraded_idle: 1s }", "chat").await;
    assert_echoed(&mut socket, "hello").await;
    let quiet = Instant::now();
    // The next thing the client sees is the end of the connection.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the idle connection was not closed within {WAIT:?}"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "{:?}",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn tollgate_check_names_the_listener_keys_it_cannot_use() {
    let pki = Pki::new("CA");
    let cert = pki.server("gateway", 2035);
    let other = pki.server("other", 2035);
    let mount = SecretMount::new(&[("tls.crt", &cert.cert_pem), ("tls.key", &other.key_pem)]);
    let yaml = format!(
        "server:\n  listen:\n    - \"{{listen}}\"\n{}    - {{ address: \"127.0.0.1:1\", tls: {{ cert_file: /nonexistent/tls.crt, key_file: /nonexistent/tls.key }} }}\n  admin: \"{{admin}}\"\nproviders: {{}}\nroutes:\n  - {{ name: api, match: {{ path_prefix: / }}, upstream: {{ url: \"http://127.0.0.1:9\" }} }}\n",
        tls_listener(2, &mount, None, true)
    );
    check_refuses(
        &yaml,
        &[
            "server.listen[1].tls: the private key in",
            "server.listen[2].tls.cert_file: cannot read /nonexistent/tls.crt",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_where_only_the_server_talks_is_not_idle() {
    let idp = idp().await;
    // A server that pushes a message every 200 ms and never reads.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while socket.send(Message::text("tick")).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
    });
    let (_gateway, mut socket, _) =
        websocket_through(&idp, upstream, "{ upgraded_idle: 1s }", "feed").await;
    // The client stays silent for three times upgraded_idle; the pushes keep coming.
    let listening = Instant::now();
    let mut ticks = 0;
    while listening.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
            Ok(Some(Ok(message))) if message.is_text() => ticks += 1,
            other => panic!(
                "after {:?} and {ticks} pushes: {other:?}",
                listening.elapsed()
            ),
        }
    }
    assert!(ticks >= 10, "{ticks} pushes in 3 s");
}
