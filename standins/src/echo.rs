//! An upstream that answers every request with a JSON description of what it received, and
//! records it, so tests can check what the gateway forwarded (the injected credential, the
//! path after prefix stripping, the dropped client header...).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::controls::Delay;
use crate::handle::StandIn;
use crate::{any_loopback_port, find_header, header_list, json_response, lock};

/// The most recent requests kept by [`EchoUpstream::requests`]; older ones are dropped so a
/// long `tollgate demo` or a load test does not grow without bound.
pub const MAX_RECORDED: usize = 10_000;

/// Request bodies above this size are answered 413 (and recorded without their body).
const MAX_BODY: usize = 1024 * 1024;

/// A request as the echo upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names, in the order received (values of one name kept together).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The echo upstream. Answers any method on any path.
pub type EchoUpstream = StandIn<Echo>;

/// The state of the echo upstream.
pub struct Echo {
    requests: Mutex<VecDeque<RecordedRequest>>,
    count: AtomicUsize,
    recording: AtomicBool,
    /// (status, how many more requests get it)
    forced: Mutex<Option<(u16, usize)>>,
    delay: Delay,
    /// Answer with the description of the request (true) or a bare `{"ok":true}`.
    reflect: AtomicBool,
    /// How many requests have arrived, watched by answers held back ([`EchoUpstream::hold_answers_until`]).
    arrivals: watch::Sender<usize>,
    /// Answers wait until this many requests have arrived.
    release_at: AtomicUsize,
}

impl EchoUpstream {
    /// Start on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<EchoUpstream> {
        Self::start_on(any_loopback_port()).await
    }

    /// Start on `addr` (the address of a stopped echo, say).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<EchoUpstream> {
        let echo = |_| Echo {
            requests: Mutex::new(VecDeque::new()),
            count: AtomicUsize::new(0),
            recording: AtomicBool::new(true),
            forced: Mutex::new(None),
            delay: Delay::default(),
            reflect: AtomicBool::new(true),
            arrivals: watch::channel(0).0,
            release_at: AtomicUsize::new(0),
        };
        Self::launch(addr, echo, Router::new().fallback(echo_request)).await
    }

    /// Everything received, in order (at most the last [`MAX_RECORDED`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state().requests).iter().cloned().collect()
    }

    /// The most recent recorded request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.state().requests).back().cloned()
    }

    /// Every request received, recorded or not.
    pub fn request_count(&self) -> usize {
        self.state().count.load(Ordering::SeqCst)
    }

    /// Stop (false) or resume (true) keeping requests for [`requests`](Self::requests),
    /// e.g. under a load test. They are still counted. On by default.
    pub fn set_recording(&self, on: bool) {
        self.state().recording.store(on, Ordering::SeqCst);
    }

    /// The next `count` requests get `status` with `{"error":"stand-in forced status"}`
    /// (they are still recorded). Replaces an earlier setting; `count` 0 clears it.
    pub fn respond_next_with(&self, status: u16, count: usize) {
        *lock(&self.state().forced) = (count > 0).then_some((status, count));
    }

    /// Hold every answer back until `total` requests (counted since the start) have
    /// arrived: a barrier that lines up concurrent requests at the upstream without
    /// guessing how long they take to get there.
    pub fn hold_answers_until(&self, total: usize) {
        self.state().release_at.store(total, Ordering::SeqCst);
    }

    /// Sleep this long before answering each request (a slow upstream); zero to stop.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay.set(delay);
    }

    /// How many answers a delay has held back so far.
    pub fn delayed_answers(&self) -> u64 {
        self.state().delay.held()
    }

    /// Answer 200 with the JSON description of the request (true, the default), or with a
    /// bare `{"ok":true}` (false) like an upstream that does not reflect what it received,
    /// so that a test of the gateway's own output does not see the credential come back
    /// in a response body. Requests are recorded either way.
    pub fn set_reflect(&self, on: bool) {
        self.state().reflect.store(on, Ordering::SeqCst);
    }
}

async fn echo_request(State(state): State<Arc<Echo>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (body, too_large) = read_capped(body).await;
    let recorded = RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: header_list(&parts.headers),
        body,
    };
    if state.recording.load(Ordering::SeqCst) {
        let mut requests = lock(&state.requests);
        if requests.len() >= MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(recorded.clone());
    }
    let arrived = state.count.fetch_add(1, Ordering::SeqCst) + 1;
    state.arrivals.send_replace(arrived);

    // Decide the forced status at arrival, so the order of answers follows the order of
    // requests even when a delay is set.
    let forced = {
        let mut forced = lock(&state.forced);
        match forced.as_mut() {
            Some((status, left)) => {
                let status = *status;
                *left -= 1;
                if *left == 0 {
                    *forced = None;
                }
                Some(status)
            }
            None => None,
        }
    };

    let release_at = state.release_at.load(Ordering::SeqCst);
    let _ = state
        .arrivals
        .subscribe()
        .wait_for(|arrived| *arrived >= release_at)
        .await;
    state.delay.sleep().await;

    if let Some(status) = forced {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_response(status, &json!({"error": "stand-in forced status"}));
    }
    if too_large {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "request body over 1 MiB"}),
        );
    }

    if !state.reflect.load(Ordering::SeqCst) {
        return json_response(StatusCode::OK, &json!({"ok": true}));
    }

    let mut header_map = Map::new();
    for (name, value) in &recorded.headers {
        match header_map.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                header_map.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({
            "method": recorded.method,
            "path": recorded.path,
            "query": recorded.query,
            "headers": header_map,
            "body": String::from_utf8_lossy(&recorded.body),
        }),
    )
}

/// Read the body up to [`MAX_BODY`]. Past the cap, keep reading and discarding (up to a
/// bound) so the client sees the 413 instead of a reset connection; the body is then empty.
async fn read_capped(mut body: Body) -> (Vec<u8>, bool) {
    const DRAIN_LIMIT: usize = 64 * MAX_BODY;
    let mut data = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    seen = seen.saturating_add(chunk.len());
                    if seen <= MAX_BODY {
                        data.extend_from_slice(&chunk);
                    } else if seen > DRAIN_LIMIT {
                        break;
                    }
                }
            }
            // A broken body: answer with what arrived.
            Some(Err(_)) | None => break,
        }
    }
    if seen > MAX_BODY {
        (Vec::new(), true)
    } else {
        (data, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_method_path_query_and_headers() {
        let echo = EchoUpstream::start().await.unwrap();
        let client = reqwest::Client::new();
        let reply = client
            .post(format!("{}/x/y?a=b&c=d", echo.url()))
            .header("Authorization", "Bearer abc")
            .header("X-Custom", "one")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(
            reply.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["method"], "POST");
        assert_eq!(body["path"], "/x/y");
        assert_eq!(body["query"], "a=b&c=d");
        assert_eq!(body["headers"]["authorization"], "Bearer abc");
        assert_eq!(body["headers"]["x-custom"], "one");
        assert_eq!(body["body"], "hello");

        let recorded = echo.requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(echo.request_count(), 1);
        let r = &recorded[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/x/y");
        assert_eq!(r.query.as_deref(), Some("a=b&c=d"));
        assert_eq!(r.header("AUTHORIZATION"), Some("Bearer abc"));
        assert_eq!(r.header("x-missing"), None);
        assert_eq!(r.body, b"hello");
        assert!(r.headers.iter().all(|(n, _)| n == &n.to_ascii_lowercase()));
        echo.stop().await;
    }

    #[tokio::test]
    async fn no_query_is_null_and_any_method_works() {
        let echo = EchoUpstream::start().await.unwrap();
        let client = reqwest::Client::new();
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let reply = client
                .request(method.parse().unwrap(), format!("{}/p", echo.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            let body: Value = reply.json().await.unwrap();
            assert_eq!(body["method"], method);
            assert_eq!(body["query"], Value::Null);
        }
        let methods: Vec<String> = echo.requests().into_iter().map(|r| r.method).collect();
        assert_eq!(methods, ["GET", "PUT", "DELETE", "PATCH"]);
        assert_eq!(echo.last_request().unwrap().query, None);
    }

    #[tokio::test]
    async fn repeated_headers_are_joined() {
        let echo = EchoUpstream::start().await.unwrap();
        let request = reqwest::Client::new().get(format!("{}/", echo.url()));
        let reply =
            crate::testing::send(request.header("X-Multi", "a").header("X-Multi", "b")).await;
        let body = reply.json();
        assert_eq!(body["headers"]["x-multi"], "a, b");
        let r = echo.last_request().unwrap();
        assert_eq!(r.header_values("x-multi"), ["a", "b"]);
        assert_eq!(r.header("x-multi"), Some("a"));
    }

    #[tokio::test]
    async fn respond_next_with_forces_then_recovers() {
        let echo = EchoUpstream::start().await.unwrap();
        let client = reqwest::Client::new();
        echo.respond_next_with(401, 2);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let reply = client
                .get(format!("{}/r", echo.url()))
                .send()
                .await
                .unwrap();
            let status = reply.status().as_u16();
            let body: Value = reply.json().await.unwrap();
            if status == 401 {
                assert_eq!(body["error"], "stand-in forced status");
            } else {
                assert_eq!(body["path"], "/r");
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [401, 401, 200]);
        assert_eq!(echo.request_count(), 3);
    }

    #[tokio::test]
    async fn delay_slows_the_answer() {
        let echo = EchoUpstream::start().await.unwrap();
        echo.set_delay(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let reply = reqwest::get(format!("{}/slow", echo.url())).await.unwrap();
        assert_eq!(reply.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(echo.delayed_answers(), 1);
        echo.set_delay(Duration::ZERO);
        reqwest::get(format!("{}/fast", echo.url())).await.unwrap();
        // Not held back: read from the count, not a clock (a busy machine is slow anyway).
        assert_eq!(echo.delayed_answers(), 1);
    }

    #[tokio::test]
    async fn without_recording_requests_are_only_counted() {
        let echo = EchoUpstream::start().await.unwrap();
        echo.set_recording(false);
        reqwest::get(format!("{}/a", echo.url())).await.unwrap();
        echo.set_recording(true);
        reqwest::get(format!("{}/b", echo.url())).await.unwrap();
        assert_eq!(echo.request_count(), 2);
        let paths: Vec<String> = echo.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/b"]);
    }

    #[tokio::test]
    async fn without_reflection_the_answer_is_bare_but_recorded() {
        let echo = EchoUpstream::start().await.unwrap();
        echo.set_reflect(false);
        let reply = reqwest::Client::new()
            .get(format!("{}/quiet", echo.url()))
            .header("Authorization", "Bearer secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        let text = reply.text().await.unwrap();
        assert_eq!(text, r#"{"ok":true}"#);
        let recorded = echo.last_request().unwrap();
        assert_eq!(
            recorded.header("authorization"),
            Some("Bearer secret-token")
        );
        echo.set_reflect(true);
        let body: Value = reqwest::get(format!("{}/loud", echo.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["path"], "/loud");
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let echo = EchoUpstream::start().await.unwrap();
        let reply = reqwest::Client::new()
            .post(format!("{}/big", echo.url()))
            .body(vec![b'x'; MAX_BODY + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 413);
        assert_eq!(echo.request_count(), 1);
        assert!(echo.last_request().unwrap().body.is_empty());
    }

    #[tokio::test]
    async fn stop_closes_the_port() {
        let echo = EchoUpstream::start().await.unwrap();
        let url = echo.url();
        reqwest::get(format!("{url}/")).await.unwrap();
        echo.stop().await;
        assert!(reqwest::get(format!("{url}/")).await.is_err());
    }

    #[tokio::test]
    async fn restart_on_the_same_address() {
        let echo = EchoUpstream::start().await.unwrap();
        let addr = echo.addr();
        echo.stop().await;
        let again = EchoUpstream::start_on(addr).await.unwrap();
        assert_eq!(again.addr(), addr);
        let reply = reqwest::get(format!("{}/again", again.url()))
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
}
