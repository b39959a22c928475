//! End to end: upstreams that misbehave. A refused backend fails over to the next one;
//! connect and read timeouts are per route and answered with JSON; an upstream that hangs
//! up half way through a response is logged and counted, and the client never gets another
//! request's bytes; upstream TLS certificates are checked unless a route says otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::raw::*;
use crate::common::tls::*;
use crate::common::*;
use tollgate_standins::echo::EchoUpstream;

/// The route `pair`, round-robin over a backend that refuses connections and `echo`.
fn failover_config(echo: &EchoUpstream) -> String {
    let urls = format!("urls: [{}, {}]", closed_port_url(), echo.url());
    keyed_config(&[route_block(
        "pair",
        "path_prefix: /pair/",
        &urls,
        Some("key"),
        "",
    )])
}

/// An echo upstream (to be slowed down) behind the route `/{name}/` with `timeouts`.
async fn slow_upstream(name: &str, timeouts: &str) -> (EchoUpstream, Gateway) {
    let echo = start_echo().await;
    let gateway = Gateway::start(&keyed_config(&[keyed_route(name, &echo.url(), timeouts)])).await;
    (echo, gateway)
}

/// `GET path` must be the gateway's JSON `504 upstream_timeout`; how long it took, and the
/// body.
async fn timed_out(gateway: &Gateway, path: &str) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let (status, _, body) = gateway.get_json(path).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 504, "GET {path} after {elapsed:?}: {body}");
    assert_error_body(&body, "upstream_timeout");
    (elapsed, body)
}

/// `tollgate_upstream_errors_total` of `route` (any kind) reaches 1 within 2 s.
async fn upstream_errors_counted(gateway: &Gateway, route: &str) -> bool {
    eventually(Duration::from_secs(2), || async {
        sample_sum(
            &gateway.metrics().await,
            "tollgate_upstream_errors_total",
            &[("route", route)],
        ) >= 1.0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_backend_fails_over_to_the_next_one() {
    let echo = start_echo().await;
    let yaml = failover_config(&echo);
    let gateway = Gateway::start(&yaml).await;
    // Round-robin sends every other request to the dead backend first.
    for i in 0..10 {
        let (status, _, body) = gateway.get_json(&format!("/pair/{i}")).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["path"], format!("/{i}"));
    }
    assert_eq!(echo.request_count(), 10);
}

/// Sends `count` requests at once to `path` and checks they all succeed.
async fn burst(gateway: &Gateway, path: &str, count: usize) {
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..count {
        let url = gateway.proxy_url(path);
        requests.spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    }
    while let Some(outcome) = requests.join_next().await {
        let status = outcome.unwrap().expect("a request through the gateway");
        assert_eq!(status, 200);
    }
}

/// Upstream connections opened by a second burst of 8 concurrent requests, after a first
/// burst of 8 left its connections to the pool.
async fn connections_opened_by_a_second_burst(pool_size: Option<usize>) -> usize {
    let upstream = CountedUpstream::keep_alive(Duration::from_millis(300)).await;
    let mut yaml = keyed_config(&[keyed_route("pooled", &upstream.url(), "")]);
    if let Some(size) = pool_size {
        yaml = with_server(&yaml, &format!("upstream_pool_size: {size}"));
    }
    let gateway = Gateway::start(&yaml).await;
    burst(&gateway, "/pooled/x", 8).await;
    let first = upstream.connections();
    assert_eq!(first, 8, "8 concurrent requests on 8 connections");
    // pingora puts a connection back in the pool before it logs the request, so eight
    // access lines mean eight connections were offered to the pool.
    gateway.logs_after_requests(8).await;
    burst(&gateway, "/pooled/x", 8).await;
    upstream.connections() - first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_pool_size_bounds_the_idle_connections_kept_for_reuse() {
    let reopened = connections_opened_by_a_second_burst(None).await;
    assert!(
        reopened <= 1,
        "the default pool keeps every idle connection: {reopened} reopened"
    );
    let reopened = connections_opened_by_a_second_burst(Some(2)).await;
    assert!(
        (5..=6).contains(&reopened),
        "a pool of 2 keeps 2 of 8 idle connections: {reopened} reopened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_fail_over_to_the_next_backend_too() {
    let echo = start_echo().await;
    echo.set_recording(false);
    let yaml = failover_config(&echo);
    let gateway = Gateway::start(&yaml).await;
    let client = client();
    let mut statuses = BTreeMap::new();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let request = client.get(gateway.proxy_url(&format!("/pair/{round}/{i}")));
            tasks.push(tokio::spawn(async move {
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        for task in tasks {
            *statuses.entry(task.await.unwrap()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 200)]),
        "with one live backend every request must get through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_backend_refused_is_a_json_502_and_counted() {
    let yaml = keyed_config(&[route_block(
        "gone",
        "path_prefix: /gone/",
        &format!("urls: [{}, {}]", closed_port_url(), closed_port_url()),
        Some("key"),
        "",
    )]);
    let gateway = Gateway::start(&yaml).await;
    let Reply { headers, body, .. } = gateway
        .refused("/gone/x", 502, "upstream_unreachable")
        .await;
    assert_eq!(body["route"], "gone");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(
        headers["content-type"].to_str().unwrap(),
        "application/json",
        "{headers:?}"
    );
    // Counted when the request is logged, just after the answer.
    assert!(
        upstream_errors_counted(&gateway, "gone").await,
        "upstream errors not counted:\n{}",
        gateway.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_upstream_is_a_json_504_after_the_route_read_timeout() {
    let (echo, gateway) = slow_upstream("slow", "timeouts: { read: 300ms }").await;
    echo.set_delay(Duration::from_secs(1));
    let (elapsed, body) = timed_out(&gateway, "/slow/x").await;
    assert_eq!(body["route"], "slow");
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_millis(1000),
        "answered after {elapsed:?} with a 300ms read timeout and a 1 s upstream"
    );
    assert!(
        upstream_errors_counted(&gateway, "slow").await,
        "the timeout was not counted:\n{}",
        gateway.metrics().await
    );
    // The upstream is fine again: so is the route.
    echo.set_delay(Duration::ZERO);
    let (status, _, body) = gateway.get_json("/slow/y").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_total_timeout_caps_the_whole_exchange() {
    let timeouts = "timeouts: { read: 10s, total: 400ms }";
    let (echo, gateway) = slow_upstream("capped", timeouts).await;
    echo.set_delay(Duration::from_secs(2));
    let (elapsed, _) = timed_out(&gateway, "/capped/x").await;
    assert!(
        elapsed >= Duration::from_millis(390) && elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?} with a 400ms total, a 10 s read timeout and a 2 s upstream"
    );
    echo.set_delay(Duration::ZERO);
    let (status, _, body) = gateway.get_json("/capped/y").await;
    assert_eq!(status, 200, "{body}");
}

/// A loopback listener whose accept queue is full, so that new connections hang in the
/// SYN stage (Linux drops the SYN): a connect timeout without leaving the machine.
struct Unaccepting {
    addr: std::net::SocketAddr,
    _listener: tokio::net::TcpListener,
    _held: Vec<tokio::net::TcpStream>,
}

impl Unaccepting {
    /// `None` when the kernel completes connections anyway (then the test cannot run).
    async fn start() -> Option<Unaccepting> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(_)) => return None,
                Err(_) => {
                    return Some(Unaccepting {
                        addr,
                        _listener: listener,
                        _held: held,
                    })
                }
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_that_does_not_accept_is_a_json_504_after_the_connect_timeout() {
    let Some(unaccepting) = Unaccepting::start().await else {
        eprintln!("SKIPPED: this kernel completes connections beyond the accept queue");
        return;
    };
    let yaml = keyed_config(&[route_block(
        "stuck",
        "path_prefix: /stuck/",
        &format!("url: http://{}", unaccepting.addr),
        Some("key"),
        "timeouts: { connect: 300ms }",
    )]);
    let gateway = Gateway::start(&yaml).await;
    // A connect timeout is a timeout.
    let (elapsed, _) = timed_out(&gateway, "/stuck/x").await;
    assert!(
        elapsed < Duration::from_millis(1500),
        "the 300ms connect timeout took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_hanging_up_mid_response_is_counted_and_never_mixes_responses() {
    // Announces 100 bytes, sends 10, hangs up.
    let broken = CountedUpstream::canned(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    let echo = start_echo().await;
    let yaml = keyed_config(&[
        keyed_route("broken", &broken.url(), ""),
        keyed_route("healthy", &echo.url(), ""),
    ]);
    let gateway = Gateway::start(&yaml).await;
    let host = gateway.proxy_addr().to_string();

    // Two requests pipelined on one connection: the second one's answer must never be
    // read as the rest of the first one's body.
    let pipelined = format!(
        "GET /broken/x HTTP/1.1\r\nHost: {host}\r\n\r\nGET /healthy/second HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let mut connection = RawConnection::open(gateway.proxy_addr()).await;
    connection.send(pipelined.as_bytes()).await;
    let outcome = connection.response(Duration::from_secs(10)).await;
    eprintln!("cut-off upstream response: {outcome:?}");
    match outcome {
        RawOutcome::Closed => {}
        RawOutcome::Response(response) if response.status == 200 => {
            assert_eq!(
                response.body,
                b"0123456789",
                "the client got more than the upstream sent: {:?}",
                String::from_utf8_lossy(&response.body)
            );
            let rest = connection.rest_until_closed(Duration::from_secs(5)).await;
            assert!(
                rest.is_empty(),
                "after a cut-off body the connection must close, not go on: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
        RawOutcome::Response(response) => {
            // An error answer instead is fine, if it is the gateway's own.
            assert!(response.status >= 500, "{response:?}");
            assert!(response.json()["error"].is_string(), "{response:?}");
        }
    }
    assert!(broken.connections() >= 1);
    assert_eq!(
        echo.requests()
            .iter()
            .filter(|r| r.path == "/second")
            .count(),
        0,
        "the pipelined request was served on the broken connection"
    );

    assert!(
        upstream_errors_counted(&gateway, "broken").await,
        "not counted:\n{}",
        gateway.metrics().await
    );
    // The access line is written just after the counter is bumped.
    let logged = eventually(Duration::from_secs(2), || async {
        gateway.log_lines().into_iter().any(|line| {
            line["target"] == "access" && line["route"] == "broken" && line["error"].is_string()
        })
    })
    .await;
    assert!(
        logged,
        "no access line with the error:\n{}",
        gateway.stdout()
    );

    // Others are served as before.
    let (status, _, body) = gateway.get_json("/healthy/after").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_tls_is_verified_unless_explicitly_turned_off_which_is_logged() {
    let pki = Pki::new("tollgate test CA");
    let echo = start_echo().await;
    let relay = TlsRelay::start(&pki.server("relay", 2040), echo.addr()).await;
    let ca = yaml_path(&pki.ca_file());
    let yaml = keyed_config(&[
        keyed_route("by-default", &relay.url(), ""),
        route_block(
            "with-ca",
            "path_prefix: /with-ca/",
            &format!("url: {}, tls: {{ ca_file: {ca} }}", relay.url()),
            Some("key"),
            "",
        ),
        route_block(
            "unverified",
            "path_prefix: /unverified/",
            &format!(
                "url: {}, tls: {{ insecure_skip_verify: true }}",
                relay.url()
            ),
            Some("key"),
            "",
        ),
    ]);
    let gateway = Gateway::start(&yaml).await;

    // An unknown CA is not accepted.
    gateway
        .refused("/by-default/x", 502, "upstream_unreachable")
        .await;
    assert_eq!(echo.request_count(), 0);
    assert_ca_file_trusted_and_skip_verify_skips(&gateway).await;
    assert_eq!(echo.request_count(), 2);
    assert_one_verification_off_warning(&gateway, "route");
}
