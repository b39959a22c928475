//! End to end: graceful shutdown. On SIGTERM (Kubernetes) or SIGINT (Ctrl-C) the gateway
//! stops accepting, lets the request in flight finish, and exits 0 as soon as it has, well
//! before the drain time; a request that outlives the drain time is cut and the process
//! exits when the drain time is up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use tollgate_standins::echo::EchoUpstream;
use tollgate_standins::fortanix::{FortanixSettings, FortanixStandIn, DEMO_APP_ID};

/// A gateway with one route to `echo` (no provider call needed) and `server_extra` keys.
fn yaml(echo: &EchoUpstream, server_extra: &str) -> String {
    with_server(
        &keyed_config(&[keyed_route("slow", &echo.url(), "")]),
        server_extra,
    )
}

/// Starts a request through the gateway and returns once the upstream has it.
async fn request_in_flight(
    gateway: &Gateway,
    echo: &EchoUpstream,
) -> tokio::task::JoinHandle<Result<(u16, String), reqwest::Error>> {
    let before = echo.request_count();
    let request = client().get(gateway.proxy_url("/slow/in-flight"));
    let task = tokio::spawn(async move {
        let reply = request.send().await?;
        let status = reply.status().as_u16();
        Ok((status, reply.text().await?))
    });
    let arrived = eventually(Duration::from_secs(5), || async {
        echo.request_count() > before
    })
    .await;
    assert!(arrived, "the request never reached the upstream");
    task
}

/// The time until new connections to `addr` are refused (checked every 10 ms).
async fn refused_within(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The in-flight request completes, new connections are refused, and the process exits 0
/// right after the response, long before the 20 s default drain time.
async fn drains_then_exits_on(signal: &str) {
    let echo = start_echo().await;
    let mut gateway = Gateway::start(&yaml(&echo, "")).await;
    let (status, _) = {
        let reply = client()
            .get(gateway.proxy_url("/slow/warm"))
            .send()
            .await
            .unwrap();
        (reply.status().as_u16(), reply.text().await.unwrap())
    };
    assert_eq!(status, 200);

    let delay = Duration::from_secs(2);
    echo.set_delay(delay);
    let in_flight = request_in_flight(&gateway, &echo).await;
    let signalled = Instant::now();
    gateway.signal(signal);

    let refused = refused_within(gateway.proxy_addr(), Duration::from_millis(1500)).await;
    assert!(
        refused.is_some(),
        "SIG{signal}: new connections were still accepted 1.5 s later"
    );
    let (status, body) = in_flight
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("SIG{signal}: the request in flight was cut: {e}"));
    let answered = signalled.elapsed();
    assert_eq!(status, 200, "SIG{signal}: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["path"], "/in-flight");

    let exit = gateway.exited_within(Duration::from_secs(5)).await;
    let exited = signalled.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("SIG{signal}: still running 5 s after the response"));
    assert_eq!(exit.code(), Some(0), "SIG{signal}: {exit}");
    assert!(
        exited < answered + Duration::from_millis(1000),
        "SIG{signal}: exited {:?} after the last response; it should exit as soon as nothing is in flight",
        exited - answered
    );
    assert!(
        exited < Duration::from_secs(5),
        "SIG{signal}: exit took {exited:?}"
    );
    eprintln!(
        "SIG{signal}: refused after {:?}, answered after {answered:?}, exited after {exited:?}",
        refused.unwrap()
    );
    let logged = json_lines(&gateway.logs()).into_iter().any(|line| {
        line["signal"] == format!("SIG{signal}")
            && line["message"]
                .as_str()
                .is_some_and(|m| m.contains("draining"))
    });
    assert!(
        logged,
        "the drain is not logged with its signal:\n{}",
        gateway.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    drains_then_exits_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigint_drains_like_sigterm() {
    drains_then_exits_on("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_drain_time_bounds_the_wait_for_a_slow_request() {
    let echo = start_echo().await;
    let mut gateway = Gateway::start(&yaml(&echo, "drain_timeout: 1s")).await;
    echo.set_delay(Duration::from_secs(5));
    let in_flight = request_in_flight(&gateway, &echo).await;
    let signalled = Instant::now();
    gateway.signal("TERM");
    let exit = gateway.exited_within(Duration::from_secs(4)).await;
    let exited = signalled.elapsed();
    let exit = exit.unwrap_or_else(|| {
        panic!("still running 4 s after SIGTERM with drain_timeout 1s and a 5 s request")
    });
    assert_eq!(exit.code(), Some(0), "{exit}");
    assert!(
        exited >= Duration::from_millis(900),
        "exited after {exited:?}: it did not wait the drain time for the request in flight"
    );
    assert!(
        exited <= Duration::from_millis(3000),
        "exited after {exited:?} with drain_timeout 1s"
    );
    eprintln!("drain_timeout 1s: exited after {exited:?}");
    // The request could not finish in time: it was cut, not answered 200.
    let outcome = in_flight.await.unwrap();
    assert!(
        !matches!(outcome, Ok((200, _))),
        "a 5 s request finished within a 1 s drain: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_cut_at_the_end_of_the_drain_time_are_logged_and_sessions_still_end() {
    let dsm: FortanixStandIn = start_standin(FortanixSettings::default()).await;
    let echo = start_echo().await;
    let provider = format!(
        "  dsm:\n    type: fortanix\n    base_url: {}\n    basic: {{ username: \"{DEMO_APP_ID}\", password: demo-app-secret }}\n    terminate_on_shutdown: true\n",
        dsm.url()
    );
    let routes = [route("slow", "/slow/", &echo.url(), "dsm", "")];
    let text = with_server(&config(&[provider], &routes), "drain_timeout: 1s");
    // Ready: the DSM session is open.
    let mut gateway = Gateway::start_ready(&text).await;
    echo.set_delay(Duration::from_secs(5));
    let _in_flight = request_in_flight(&gateway, &echo).await;
    gateway.signal("TERM");
    let exit = gateway.exited_within(Duration::from_secs(4)).await;
    assert!(exit.is_some(), "still running 4 s after SIGTERM");
    assert!(
        gateway.logs().contains("drain time is up"),
        "cutting the request in flight is not logged:\n{}",
        gateway.logs()
    );
    assert_eq!(
        dsm.terminate_requests(),
        1,
        "the DSM session was not ended at shutdown"
    );
}
