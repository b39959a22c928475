//! HTTP spoken by hand over raw TCP, for requests and upstreams a well-behaved library
//! will not produce: a client connection that reads responses one at a time, and
//! upstreams that misbehave, record raw bytes or only count connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names; shown by `{:?}` in assertion messages.
    #[allow(dead_code)]
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts that this is the gateway's JSON error answer `status` with `error`.
    pub fn assert_error(&self, status: u16, error: &str) {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        super::assert_error_body(&self.json(), error);
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub enum RawOutcome {
    Response(RawResponse),
    /// Closed or reset before a whole response head arrived.
    Closed,
}

/// A raw client connection: writes go out in the background (so a server that stops
/// reading cannot block the test), reads parse responses one at a time.
pub struct RawConnection {
    reader: tokio::net::tcp::OwnedReadHalf,
    writer: Option<tokio::net::tcp::OwnedWriteHalf>,
    buffer: Vec<u8>,
    eof: bool,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the gateway");
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        RawConnection {
            reader,
            writer: Some(writer),
            buffer: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes`; errors (the server closed or reset) are ignored.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Some(writer) = self.writer.as_mut() {
            let write = async {
                writer.write_all(bytes).await?;
                writer.flush().await
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), write).await,
                Ok(Ok(()))
            ) {
                self.writer = None;
            }
        }
    }

    /// Writes `bytes` on a background task and returns at once (for bodies the server may
    /// refuse to read).
    pub fn send_in_background(&mut self, bytes: Vec<u8>) -> JoinHandle<()> {
        let mut writer = self.writer.take().expect("writer still open");
        tokio::spawn(async move {
            let write = async {
                writer.write_all(&bytes).await?;
                writer.flush().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), write).await;
            // Keep the write side open: closing it would look like a client that left.
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
    }

    /// One read of at most `max` bytes into the buffer, waiting up to `wait`: `Some(true)`
    /// when bytes arrived, `Some(false)` when the connection ended, `None` when nothing
    /// happened in time.
    async fn read_some(&mut self, max: usize, wait: Duration) -> Option<bool> {
        let mut chunk = vec![0u8; max];
        match tokio::time::timeout(wait, self.reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                Some(false)
            }
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Some(true)
            }
            Err(_) => None,
        }
    }

    async fn fill(&mut self, wait: Duration) -> bool {
        if self.eof {
            return false;
        }
        self.read_some(16 * 1024, wait).await.unwrap_or_else(|| {
            panic!(
                "no response and no close within {wait:?}; read so far: {:?}",
                String::from_utf8_lossy(&self.buffer)
            )
        })
    }

    /// The next response, or `Closed` when the connection ends first. Panics when nothing
    /// happens within `wait`.
    pub async fn response(&mut self, wait: Duration) -> RawOutcome {
        let deadline = Instant::now() + wait;
        let left = || deadline.saturating_duration_since(Instant::now());
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end;
            }
            if !self.fill(left()).await {
                return RawOutcome::Closed;
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response head: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        self.buffer.drain(..head_end + 4);
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let body = match (length, chunked) {
            (_, true) => {
                while find(&self.buffer, b"0\r\n\r\n").is_none() {
                    if !self.fill(left()).await {
                        break;
                    }
                }
                std::mem::take(&mut self.buffer)
            }
            (Some(length), false) => {
                while self.buffer.len() < length {
                    if !self.fill(left()).await {
                        break;
                    }
                }
                let take = length.min(self.buffer.len());
                self.buffer.drain(..take).collect()
            }
            (None, false) => {
                while self.fill(left()).await {}
                std::mem::take(&mut self.buffer)
            }
        };
        RawOutcome::Response(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Reads until the server closes; returns what arrived (beyond what was parsed). Panics
    /// when the connection is still open after `wait`.
    pub async fn rest_until_closed(&mut self, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        while self
            .fill(deadline.saturating_duration_since(Instant::now()))
            .await
        {}
        std::mem::take(&mut self.buffer)
    }

    /// True when the server closes the connection within `wait` (with nothing more sent).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        if self.eof {
            return self.buffer.is_empty();
        }
        // Closed: the read ended the connection; bytes or silence: still open.
        self.read_some(1024, wait).await == Some(false)
    }
}

/// One request on a new connection: the response or `Closed`.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawOutcome {
    let mut connection = RawConnection::open(addr).await;
    connection.send_in_background(request.to_vec());
    connection.response(Duration::from_secs(10)).await
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

// Upstreams that misbehave, record raw bytes or only count connections.

/// Binds a loopback port and hands each connection it accepts to `handle`, on a task of
/// its own; the accepting task stops when the returned handle is aborted.
pub(super) async fn serve_raw<F, Fut>(handle: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(stream));
        }
    });
    (addr, task)
}

/// A raw upstream that counts the connections it accepts and hands each one to its
/// handler: [`canned`](Self::canned), [`keep_alive`](Self::keep_alive) or
/// [`holding`](Self::holding).
pub struct CountedUpstream {
    addr: SocketAddr,
    connections: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl CountedUpstream {
    async fn start<F, Fut>(handle: F) -> CountedUpstream
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let connections = Arc::new(Mutex::new(0));
        let count = Arc::clone(&connections);
        let (addr, task) = serve_raw(move |stream| {
            *count.lock().unwrap() += 1;
            handle(stream)
        })
        .await;
        CountedUpstream {
            addr,
            connections,
            task,
        }
    }

    /// Accepts connections and holds them open, answering nothing: a place a request must
    /// never reach (the test asserts it saw no connection).
    pub async fn holding() -> CountedUpstream {
        Self::start(|stream| async move {
            let _held = stream;
            std::future::pending::<()>().await
        })
        .await
    }

    /// Reads each connection's request head and answers with fixed bytes, then closes
    /// (used for a response cut off after its headers).
    pub async fn canned(answer: &'static [u8]) -> CountedUpstream {
        Self::start(move |mut stream| async move {
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while find(&head, b"\r\n\r\n").is_none() {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(answer).await;
            let _ = stream.flush().await;
            // Let the bytes leave before the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .await
    }

    /// Keeps connections open and answers every request head (bodies are not expected)
    /// with `200 ok` after `delay`, so that concurrent requests each need their own
    /// connection.
    pub async fn keep_alive(delay: Duration) -> CountedUpstream {
        Self::start(move |mut stream| async move {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(end) = find(&buffer, b"\r\n\r\n") {
                    buffer.drain(..end + 4);
                    tokio::time::sleep(delay).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

impl Drop for CountedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that records the raw bytes of every connection and answers `200 ok` only
/// to a complete request (head without body, `Content-Length` satisfied, or a chunked body
/// with its last chunk).
pub struct RecordingUpstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    complete: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let received = Arc::new(Mutex::new(Vec::new()));
        let complete = Arc::new(Mutex::new(0));
        let (r, c) = (Arc::clone(&received), Arc::clone(&complete));
        let (addr, task) =
            serve_raw(move |stream| record_connection(stream, Arc::clone(&r), Arc::clone(&c)))
                .await;
        RecordingUpstream {
            addr,
            received,
            complete,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bytes of each connection so far.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Requests that arrived whole.
    pub fn complete_requests(&self) -> usize {
        *self.complete.lock().unwrap()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record_connection(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    complete: Arc<Mutex<usize>>,
) {
    let index = {
        let mut all = received.lock().unwrap();
        all.push(Vec::new());
        all.len() - 1
    };
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        data.extend_from_slice(&chunk[..n]);
        received.lock().unwrap()[index] = data.clone();
        if request_is_complete(&data) {
            *complete.lock().unwrap() += 1;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
            return;
        }
    }
}

fn request_is_complete(data: &[u8]) -> bool {
    let Some(end) = find(data, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let body = &data[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.starts_with(b"0\r\n\r\n") || find(body, b"\r\n0\r\n\r\n").is_some();
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}
