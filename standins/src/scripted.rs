//! A token endpoint that answers from a script, for fault tests: `POST /oauth/token` gets
//! the next queued [`Reply`] (or the fixed default one), whatever the request says. A reply
//! is a status with raw body bytes and a content type, a fresh token, a body cut off before
//! its declared length, or a connection closed without an answer; any of them can come late.
//!
//! It speaks HTTP/1.1 by hand on a plain `TcpListener`, so it can misbehave in ways a
//! well-behaved server library would not allow. Every answer closes the connection. It
//! counts the calls and records when each arrived, so tests can check backoff timing.
//! Dropped or stopped, it stops accepting; connections already open are answered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::handle::StandIn;
use crate::server::RunningServer;
use crate::{any_loopback_port, jwt, lock};

/// The path of the scripted token endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";

/// Request headers larger than this are refused (the connection is closed).
const MAX_HEAD: usize = 64 * 1024;
/// Request bodies larger than this are refused (the connection is closed).
const MAX_BODY: usize = 1024 * 1024;

/// One answer of the script.
#[derive(Clone, Debug)]
pub struct Reply {
    kind: ReplyKind,
    delay: Duration,
}

#[derive(Clone, Debug)]
enum ReplyKind {
    Respond {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        /// A `Content-Length` larger than the body: the body is cut off.
        declared_length: Option<usize>,
    },
    /// A new JWT for every call, with `expires_in`.
    Token { ttl: Duration },
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// `status` with `body` as it is, sent with `Content-Type: content_type`.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(ReplyKind::Respond {
            status,
            content_type: Some(content_type.to_owned()),
            body: body.into(),
            declared_length: None,
        })
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::raw(status, "application/json", body.to_string())
    }

    /// 200 with a freshly minted demo JWT (`exp` = now + `ttl`) and `expires_in`, a new
    /// token for every call.
    pub fn token(ttl: Duration) -> Reply {
        Reply::new(ReplyKind::Token { ttl })
    }

    /// `status` with headers announcing `declared_length` bytes of body, then only `body`
    /// (shorter), then the connection is closed.
    pub fn cut_off(
        status: u16,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        declared_length: usize,
    ) -> Reply {
        Reply::new(ReplyKind::Respond {
            status,
            content_type: Some(content_type.to_owned()),
            body: body.into(),
            declared_length: Some(declared_length),
        })
    }

    /// Close the connection once the request has arrived, without any answer.
    pub fn close() -> Reply {
        Reply::new(ReplyKind::Close)
    }

    /// The same reply, given `delay` after the request arrived.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    fn new(kind: ReplyKind) -> Reply {
        Reply {
            kind,
            delay: Duration::ZERO,
        }
    }
}

/// A request the scripted endpoint received.
#[derive(Clone, Debug)]
pub struct ScriptedRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The state of the scripted token endpoint.
pub struct Script {
    issuer: String,
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<ScriptedRequest>>,
}

impl Script {
    fn next_reply(&self) -> Reply {
        match lock(&self.queue).pop_front() {
            Some(reply) => reply,
            None => lock(&self.default).clone(),
        }
    }
}

/// The scripted token endpoint.
pub type ScriptedProvider = StandIn<Script>;

impl ScriptedProvider {
    /// Starts on `127.0.0.1:0`, answering `default` to every call until told otherwise.
    pub async fn start(default: Reply) -> std::io::Result<ScriptedProvider> {
        let listener = TcpListener::bind(any_loopback_port()).await?;
        let script = Arc::new(Script {
            issuer: format!("http://{}", listener.local_addr()?),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            requests: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&script);
        let server = RunningServer::spawn(listener, |listener, signal| {
            accept_loop(listener, shared, signal)
        })?;
        Ok(StandIn::from_parts(server, script))
    }

    /// `url() + "/oauth/token"`.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.url())
    }

    /// The answer for every call once the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.state().default) = reply;
    }

    /// Queues `reply` for one call; queued replies go first, in order.
    pub fn push(&self, reply: Reply) {
        lock(&self.state().queue).push_back(reply);
    }

    /// Calls of the token endpoint so far (counted when the request has arrived).
    pub fn calls(&self) -> usize {
        lock(&self.state().requests).len()
    }

    /// When each call arrived, in order.
    pub fn call_times(&self) -> Vec<Instant> {
        lock(&self.state().requests).iter().map(|r| r.at).collect()
    }

    /// Every call received, in order.
    pub fn requests(&self) -> Vec<ScriptedRequest> {
        lock(&self.state().requests).clone()
    }

    /// Serves one connection on any stream (a TLS stream, say) with the same script.
    pub async fn serve_stream<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        serve_connection(stream, self.state()).await;
    }
}

/// Accepts until the stand-in is stopped or dropped; each connection on a task of its own.
async fn accept_loop(listener: TcpListener, script: Arc<Script>, mut stop: oneshot::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let script = Arc::clone(&script);
        tokio::spawn(async move { serve_tcp(stream, &script).await });
    }
}

async fn serve_tcp(stream: TcpStream, shared: &Script) {
    let _ = stream.set_nodelay(true);
    serve_connection(stream, shared).await;
}

/// Reads one request, answers it from the script, and closes the connection.
async fn serve_connection<S>(mut stream: S, shared: &Script)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    if request.method != "POST" || request.path.split('?').next() != Some(TOKEN_PATH) {
        let body = json!({"error": "not_found"}).to_string();
        let _ = write_response(
            &mut stream,
            404,
            Some("application/json"),
            body.as_bytes(),
            None,
        )
        .await;
        return;
    }
    lock(&shared.requests).push(request);
    let reply = shared.next_reply();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    match reply.kind {
        ReplyKind::Close => {}
        ReplyKind::Respond {
            status,
            content_type,
            body,
            declared_length,
        } => {
            let _ = write_response(
                &mut stream,
                status,
                content_type.as_deref(),
                &body,
                declared_length,
            )
            .await;
        }
        ReplyKind::Token { ttl } => {
            let token = jwt::mint("scripted", &shared.issuer, ttl);
            let body = json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
            })
            .to_string();
            let _ = write_response(
                &mut stream,
                200,
                Some("application/json"),
                body.as_bytes(),
                None,
            )
            .await;
        }
    }
    let _ = stream.shutdown().await;
}

async fn write_response<S>(
    stream: &mut S,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    declared_length: Option<usize>,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        reason(status),
        declared_length.unwrap_or(body.len())
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads a request with a `Content-Length` body (or none); `None` when the peer closed or
/// sent something too large or unreadable.
async fn read_request<S>(stream: &mut S) -> Option<ScriptedRequest>
where
    S: AsyncRead + Unpin,
{
    let mut buffer = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(ScriptedRequest {
        at,
        method,
        path,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let reply = reqwest::Client::new()
            .post(url)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?;
        let status = reply.status().as_u16();
        Ok((status, reply.bytes().await?.to_vec()))
    }

    #[tokio::test]
    async fn queue_first_then_the_default() {
        let server = ScriptedProvider::start(Reply::raw(503, "text/plain", "down"))
            .await
            .unwrap();
        server.push(Reply::json(200, &json!({"a": 1})));
        let url = server.token_url();
        assert_eq!(post(&url).await.unwrap(), (200, b"{\"a\":1}".to_vec()));
        assert_eq!(post(&url).await.unwrap(), (503, b"down".to_vec()));
        server.set_default(Reply::token(Duration::from_secs(60)));
        let (status, body) = post(&url).await.unwrap();
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["expires_in"], 60);
        jwt::verify(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(server.calls(), 3);
        let requests = server.requests();
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].body, b"grant_type=client_credentials");
        let times = server.call_times();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[tokio::test]
    async fn close_cut_off_and_delay() {
        let server = ScriptedProvider::start(Reply::close()).await.unwrap();
        let url = server.token_url();
        assert!(post(&url).await.is_err());
        server.set_default(Reply::cut_off(200, "application/json", "{\"acc", 100));
        assert!(post(&url).await.is_err());
        server
            .set_default(Reply::raw(200, "text/html", "<html>").after(Duration::from_millis(200)));
        let started = Instant::now();
        assert_eq!(post(&url).await.unwrap(), (200, b"<html>".to_vec()));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(server.calls(), 3);
    }

    #[tokio::test]
    async fn other_paths_are_404_and_not_counted() {
        let server = ScriptedProvider::start(Reply::token(Duration::from_secs(1)))
            .await
            .unwrap();
        let reply = reqwest::get(format!("{}/other", server.url()))
            .await
            .unwrap();
        assert_eq!(reply.status(), 404);
        assert_eq!(server.calls(), 0);
    }
}
