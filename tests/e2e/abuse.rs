//! End to end: bad input from callers, spoken over raw TCP where a well-behaved client
//! library would refuse. Oversized heads, bodies over the route's limit, conflicting body
//! framing, invalid header bytes: a 4xx or a closed connection, nothing (or nothing whole)
//! upstream, and the gateway keeps serving others. tollgate is not an open proxy: the
//! upstream address always comes from config. Config values that would inject CR/LF into a
//! header are refused at load time, and the admin listener is on loopback by default.

use std::time::Duration;

use crate::common::raw::*;
use crate::common::*;
use tollgate_standins::echo::EchoUpstream;

const WAIT: Duration = Duration::from_secs(10);

/// A gateway with `/open/` (no body limit but the default) and `/small/` (1 KiB) to the
/// echo upstream.
async fn gateway_and_echo() -> (Gateway, EchoUpstream) {
    let echo = start_echo().await;
    let yaml = keyed_config(&[
        keyed_route("open", &echo.url(), ""),
        keyed_route("small", &echo.url(), "max_request_body: 1KiB"),
    ]);
    (Gateway::start(&yaml).await, echo)
}

/// The gateway still answers a normal request through `/open/`.
async fn still_serving(gateway: &Gateway, echo: &EchoUpstream) {
    let before = echo.request_count();
    let (status, _, body) = gateway.get_json("/open/still-serving").await;
    assert_eq!(status, 200, "the gateway stopped serving: {body}");
    assert_eq!(echo.request_count(), before + 1);
}

/// `closed` or `STATUS body`, for the test output.
fn describe(outcome: &RawOutcome) -> String {
    match outcome {
        RawOutcome::Closed => "closed".to_owned(),
        RawOutcome::Response(response) => format!(
            "{} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ),
    }
}

/// A 4xx from the gateway or a closed connection.
fn assert_refused(outcome: &RawOutcome, what: &str) {
    eprintln!("{what}: {}", describe(outcome));
    match outcome {
        RawOutcome::Closed => {}
        RawOutcome::Response(response) => {
            assert!(
                (400..500).contains(&response.status),
                "{what}: expected a 4xx or a closed connection, got {} {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_header_and_request_line_are_refused_and_others_still_served() {
    let (gateway, echo) = gateway_and_echo().await;
    let host = gateway.proxy_addr().to_string();
    let huge = "a".repeat(2 << 20);

    let header = format!("GET /open/x HTTP/1.1\r\nHost: {host}\r\nX-Huge: {huge}\r\n\r\n");
    let outcome = raw_exchange(gateway.proxy_addr(), header.as_bytes()).await;
    assert_refused(&outcome, "2 MiB header");

    let line = format!("GET /open/{huge} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let outcome = raw_exchange(gateway.proxy_addr(), line.as_bytes()).await;
    assert_refused(&outcome, "2 MiB request line");

    let many: String = (0..2000).map(|i| format!("X-Many-{i}: v\r\n")).collect();
    let headers = format!("GET /open/x HTTP/1.1\r\nHost: {host}\r\n{many}\r\n");
    let outcome = raw_exchange(gateway.proxy_addr(), headers.as_bytes()).await;
    assert_refused(&outcome, "2000 headers");

    assert_eq!(echo.request_count(), 0, "an oversized head went upstream");
    still_serving(&gateway, &echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_body_over_the_route_limit_is_413_and_never_forwarded() {
    let (gateway, echo) = gateway_and_echo().await;
    let host = gateway.proxy_addr().to_string();
    let body = vec![b'x'; 2048];
    let mut request =
        format!("POST /small/upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2048\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(&body);
    let outcome = raw_exchange(gateway.proxy_addr(), &request).await;
    let RawOutcome::Response(response) = outcome else {
        panic!("expected a 413, the connection was closed without one");
    };
    response.assert_error(413, "payload_too_large");
    assert_eq!(response.json()["route"], "small");
    assert_eq!(
        echo.request_count(),
        0,
        "the upstream saw the oversized request"
    );

    // Under the limit it goes through, and the limit is this route's only.
    let reply = gateway.post("/small/upload", vec![b'y'; 1000]).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(echo.last_request().unwrap().body.len(), 1000);
    let reply = gateway.post("/open/upload", body).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(echo.last_request().unwrap().body.len(), 2048);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunked_body_growing_over_the_limit_never_reaches_the_upstream_whole() {
    let upstream = RecordingUpstream::start().await;
    let echo = start_echo().await;
    let yaml = keyed_config(&[
        keyed_route("small", &upstream.url(), "max_request_body: 1KiB"),
        keyed_route("open", &echo.url(), ""),
    ]);
    let gateway = Gateway::start(&yaml).await;
    let host = gateway.proxy_addr().to_string();

    let head = format!(
        "POST /small/upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut connection = RawConnection::open(gateway.proxy_addr()).await;
    connection.send(head.as_bytes()).await;
    // Four chunks of 512 bytes, a little apart so they arrive one by one, then the end.
    let chunk = format!("200\r\n{}\r\n", "z".repeat(512));
    for _ in 0..4 {
        connection.send(chunk.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connection.send(b"0\r\n\r\n").await;
    let outcome = connection.response(WAIT).await;
    match &outcome {
        RawOutcome::Closed => {}
        RawOutcome::Response(response) => response.assert_error(413, "payload_too_large"),
    }
    // The request is done (its access line is written after all it sent upstream); a
    // small request on the same route, arriving whole, is the barrier for the bytes
    // before it.
    gateway.logs_after_requests(1).await;
    let reply = gateway.post("/small/barrier", "small").await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        upstream.complete_requests(),
        1,
        "the upstream got a whole request: {:?}",
        upstream
            .received()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
    for received in upstream.received() {
        let body = find(&received, b"\r\n\r\n").map_or(&[][..], |end| &received[end + 4..]);
        let body_bytes = body.iter().filter(|&&b| b == b'z').count();
        assert!(
            body_bytes <= 1024,
            "{body_bytes} body bytes went upstream past the 1 KiB limit"
        );
    }
    still_serving(&gateway, &echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_body_framing_is_never_forwarded_as_two_requests() {
    let (gateway, echo) = gateway_and_echo().await;
    let host = gateway.proxy_addr().to_string();
    let smuggled = format!("GET /open/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let variants = [
        (
            // CL.TE: the chunked body ends at once; Content-Length covers the smuggled
            // request.
            "CL.TE",
            format!(
                "POST /open/a HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            // TE.CL: Content-Length ends the body at once; the chunk holds the smuggled
            // request.
            "TE.CL",
            format!(
                "POST /open/b HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "POST /open/c HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "obfuscated Transfer-Encoding",
            format!(
                "POST /open/d HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
        ),
    ];
    for (name, request) in variants {
        let before = echo.request_count();
        let mut connection = RawConnection::open(gateway.proxy_addr()).await;
        connection.send(request.as_bytes()).await;
        let outcome = connection.response(WAIT).await;
        // Refused, or forwarded once (Transfer-Encoding wins, RFC 9112 §6.3): either way
        // the connection must close, so the rest is never read as a request. Once the
        // gateway closed it, every request it read there was logged (the logging phase
        // runs before the connection is let go), and so had reached the upstream.
        let status = match &outcome {
            RawOutcome::Closed => 0,
            RawOutcome::Response(response) => response.status,
        };
        assert!(
            connection.closed_within(Duration::from_secs(3)).await,
            "{name}: answered {status} and kept the connection open after a request with conflicting framing"
        );
        let logs = gateway.logs();
        assert!(
            !logs.contains("smuggled"),
            "{name}: the gateway read the smuggled request:\n{logs}"
        );
        let forwarded = &echo.requests()[before..];
        assert!(
            forwarded.iter().all(|r| !r.path.contains("smuggled")),
            "{name}: the smuggled request reached the upstream"
        );
        assert!(
            forwarded.len() <= 1,
            "{name}: one request became {}",
            forwarded.len()
        );
        for request in forwarded {
            assert!(
                !(request.header("content-length").is_some()
                    && request.header("transfer-encoding").is_some()),
                "{name}: forwarded with both Content-Length and Transfer-Encoding: {request:?}"
            );
        }
        eprintln!(
            "{name}: {}, {} forwarded",
            describe(&outcome),
            forwarded.len()
        );
    }
    still_serving(&gateway, &echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_header_bytes_are_refused() {
    let (gateway, echo) = gateway_and_echo().await;
    let host = gateway.proxy_addr().to_string();
    let variants: [(&str, &[u8]); 6] = [
        ("NUL in a value", b"X-Bad: a\x00b\r\n"),
        ("bare CR in a value", b"X-Bad: a\rb\r\n"),
        ("space in a name", b"X Bad: a\r\n"),
        ("no colon", b"X-Bad\r\n"),
        ("control byte in a name", b"X-B\x01ad: a\r\n"),
        ("space before the colon", b"X-Bad : a\r\n"),
    ];
    for (name, line) in variants {
        let mut request = format!("GET /open/x HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
        let outcome = raw_exchange(gateway.proxy_addr(), &request).await;
        assert_refused(&outcome, name);
        assert_eq!(echo.request_count(), 0, "{name}: forwarded upstream");
    }
    still_serving(&gateway, &echo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absolute_form_targets_and_foreign_hosts_never_choose_the_upstream() {
    let trap = CountedUpstream::holding().await;
    let echo = start_echo().await;
    let other = start_echo().await;
    let any_host = start_echo().await;
    // Host-specific routes, and one path route for any host.
    let yaml = keyed_config(&[
        route_block(
            "api",
            "host: api.internal",
            &format!("url: {}", echo.url()),
            Some("key"),
            "",
        ),
        route_block(
            "files",
            "host: files.internal, path_prefix: /files/",
            &format!("url: {}", other.url()),
            Some("key"),
            "",
        ),
        route_block(
            "any-host",
            "path_prefix: /open/",
            &format!("url: {}", any_host.url()),
            Some("key"),
            "",
        ),
    ]);
    let gateway = Gateway::start(&yaml).await;
    let proxy = gateway.proxy_addr();
    let trap_addr = trap.addr();
    let echo_authority = echo.addr().to_string();

    // The target names a configured host: the configured upstream gets it, with its own
    // authority as Host.
    let request = "GET http://api.internal/x?q=1 HTTP/1.1\r\nHost: api.internal\r\n\r\n".to_owned();
    let RawOutcome::Response(response) = raw_exchange(proxy, request.as_bytes()).await else {
        panic!("closed without an answer");
    };
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let recorded = echo.last_request().expect("the configured upstream got it");
    assert_eq!(recorded.path, "/x");
    assert_eq!(recorded.header("host"), Some(echo_authority.as_str()));

    // A path route for any host takes a target naming the trap, and sends it to its own
    // upstream with that upstream's authority as Host.
    let request = format!("GET http://{trap_addr}/open/z HTTP/1.1\r\nHost: {trap_addr}\r\n\r\n");
    let RawOutcome::Response(response) = raw_exchange(proxy, request.as_bytes()).await else {
        panic!("closed without an answer");
    };
    assert_eq!(
        response.status,
        200,
        "{}",
        describe(&RawOutcome::Response(response.clone()))
    );
    let recorded = any_host
        .last_request()
        .expect("the configured upstream got it");
    assert_eq!(recorded.path, "/z");
    assert_eq!(
        recorded.header("host"),
        Some(any_host.addr().to_string().as_str())
    );
    assert_eq!(
        trap.connections(),
        0,
        "the gateway connected to the request's target"
    );

    // Targets that name another place: the trap (a real listener), a name that does not
    // resolve; with or without a configured Host, and a configured target with a foreign
    // Host. None of them may leave for the target (a Host that differs from the target is
    // refused outright by pingora, stricter than RFC 9112 §3.2.2).
    let targets = [
        "GET http://api.internal/y HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(),
        format!("GET http://{trap_addr}/x HTTP/1.1\r\nHost: {trap_addr}\r\n\r\n"),
        format!("GET http://{trap_addr}/x HTTP/1.1\r\nHost: api.internal\r\n\r\n"),
        "GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(),
        "GET http://evil.example/x HTTP/1.1\r\nHost: api.internal\r\n\r\n".to_owned(),
        format!("GET http://{trap_addr}/files/x HTTP/1.1\r\nHost: files.internal\r\n\r\n"),
        format!("CONNECT {trap_addr} HTTP/1.1\r\nHost: {trap_addr}\r\n\r\n"),
        format!("CONNECT {trap_addr} HTTP/1.1\r\nHost: api.internal\r\n\r\n"),
    ];
    for request in &targets {
        let first_line = request.lines().next().unwrap();
        let host_line = request.lines().nth(1).unwrap();
        let before = (
            echo.request_count(),
            other.request_count(),
            any_host.request_count(),
        );
        let outcome = raw_exchange(proxy, request.as_bytes()).await;
        eprintln!("{first_line} {host_line}: {}", describe(&outcome));
        match outcome {
            RawOutcome::Closed => {}
            RawOutcome::Response(response) => {
                let body = response.json();
                match response.status {
                    // The target's authority decides (RFC 9112 §3.2.2): no route for it.
                    404 => assert_error_body(&body, "no_route"),
                    // Or the Host's route took it: then to its configured upstream only.
                    200 => assert_eq!(
                        (
                            echo.request_count(),
                            other.request_count(),
                            any_host.request_count()
                        ),
                        (before.0 + 1, before.1, before.2),
                        "{first_line}: answered 200 but not by the api route's upstream"
                    ),
                    status => assert!(
                        (400..500).contains(&status),
                        "{first_line}: {status} {body}"
                    ),
                }
            }
        }
        assert_eq!(
            trap.connections(),
            0,
            "{first_line}: the gateway connected to the request's target"
        );
    }

    // Origin-form requests whose Host matches no route go nowhere.
    for host in ["evil.example", "127.0.0.1", "api.internal.evil.example"] {
        let reply = gateway
            .client()
            .get(gateway.proxy_url("/files/x"))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 404, "Host {host}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_error_body(&body, "no_route");
    }
    let outcome = raw_exchange(proxy, b"GET /x HTTP/1.0\r\n\r\n").await;
    match outcome {
        RawOutcome::Closed => {}
        RawOutcome::Response(response) => assert!(
            (400..500).contains(&response.status),
            "no Host at all: {response:?}"
        ),
    }
    assert_eq!(trap.connections(), 0);
}

/// `tollgate check` refuses `yaml` and names `path` on a line of its own.
fn assert_check_refuses(yaml: &str, env: &[(&str, &str)], path: &str) {
    let exit = run_to_exit("check", yaml, env);
    assert!(!exit.timed_out, "check did not exit: {exit:?}");
    assert!(
        exit.code.is_some_and(|c| c != 0),
        "check accepted a header injection at {path}: {exit:?}"
    );
    let prefix = format!("{path}:");
    assert!(
        exit.stderr
            .lines()
            .any(|l| l.trim_start().starts_with(&prefix) && l.to_ascii_uppercase().contains("CR")),
        "check did not name {path} (and CR/LF): {}",
        exit.stderr
    );
}

#[test]
fn config_values_that_would_inject_cr_lf_into_headers_are_refused_at_load() {
    let with_format = |format: &str| {
        keyed_config(&[format!(
                "  - name: r\n    match: {{ path_prefix: /r/ }}\n    upstream: {{ url: http://127.0.0.1:9 }}\n    credential: {{ provider: key, header: Authorization, format: {format} }}\n"
            )],
        )
    };
    // The good one passes, so the refusals below are about the CR/LF only.
    check_accepts(&with_format("\"Bearer {token}\""));

    assert_check_refuses(
        &with_format("\"Bearer {token}\\r\\nX-Evil: 1\""),
        &[],
        "routes[0].credential.format",
    );
    assert_check_refuses(
        &with_format("\"Bearer {token}\\nX-Evil: 1\""),
        &[],
        "routes[0].credential.format",
    );
    // Through a secret reference too: the check runs on the expanded value.
    assert_check_refuses(
        &with_format("\"${env:TOLLGATE_TEST_FORMAT}\""),
        &[("TOLLGATE_TEST_FORMAT", "Bearer {token}\r\nX-Evil: 1")],
        "routes[0].credential.format",
    );
    // A static value is injected as it is.
    let yaml = config(
        &["  key:\n    type: static\n    value: \"abc\\r\\nX-Evil: 1\"\n".to_owned()],
        &[route_block(
            "r",
            "path_prefix: /r/",
            "url: http://127.0.0.1:9",
            Some("key"),
            "",
        )],
    );
    assert_check_refuses(&yaml, &[], "providers.key.value");

    // And `run` refuses it as well, without serving.
    let exit = run_to_exit(
        "run",
        &with_format("\"Bearer {token}\\r\\nX-Evil: 1\""),
        &[],
    );
    assert!(!exit.timed_out, "run served a config with CR/LF: {exit:?}");
    assert_ne!(exit.code, Some(0), "{exit:?}");
    assert!(exit.output().contains("routes[0].credential.format"));
}

#[test]
fn the_admin_listener_defaults_to_loopback() {
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:{}\"]\nproviders:\n{}routes:\n{}",
        free_port(),
        static_provider("key"),
        route_block(
            "r",
            "path_prefix: /r/",
            "url: http://127.0.0.1:9",
            Some("key"),
            ""
        )
    );
    let stdout = check_accepts(&yaml);
    assert!(
        stdout.contains("admin 127.0.0.1:9901"),
        "the summary does not show the loopback admin default:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "pingora's downstream read timeout is 60 s per read, not configurable yet"]
async fn a_client_trickling_its_headers_is_cut_off() {
    let (gateway, echo) = gateway_and_echo().await;
    let host = gateway.proxy_addr().to_string();
    let mut connection = RawConnection::open(gateway.proxy_addr()).await;
    connection
        .send(format!("GET /open/x HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
        .await;
    // One byte every 500 ms, never finishing the head: a slowloris. A downstream read
    // timeout for the whole head (say 10 s) must cut it off well before 30 s.
    let started = std::time::Instant::now();
    let mut cut_off = false;
    while started.elapsed() < Duration::from_secs(30) {
        connection.send(b"X").await;
        if connection.closed_within(Duration::from_millis(500)).await {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "a client trickling its head was still connected after 30 s"
    );
    assert_eq!(echo.request_count(), 0);
    still_serving(&gateway, &echo).await;
}
