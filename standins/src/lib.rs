//! Loopback stand-ins for the auth providers and for an upstream, used by `tollgate demo`
//! and by the end-to-end tests.
//!
//! Every stand-in runs an axum server on a tokio task of the current runtime, keeps its
//! counters and issued tokens in shared state, and can be switched "down" to test how the
//! gateway behaves when a provider fails. None of them is meant to face a network.

pub mod bagid;
pub mod bigbucks;
pub mod bigid;
mod controls;
pub mod echo;
pub mod fortanix;
pub mod jwt;
pub mod oauth2;
pub mod scripted;
pub mod stack;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long [`RunningServer::stop`] waits for open connections to finish before it aborts.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A stand-in server running on a tokio task; stops when dropped or on [`stop`](Self::stop).
///
/// Dropping it stops accepting connections at once and lets the requests in flight finish
/// in the background; [`stop`](Self::stop) does the same and waits for them.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown: stop accepting, close idle keep-alive connections, wait (up to a
    /// few seconds) for the requests in flight, then return.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Bind `addr` (port 0 allowed) and serve `router` (axum) on the current tokio runtime.
pub async fn serve(router: axum::Router, addr: SocketAddr) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(addr).await?;
    serve_listener(router, listener)
}

/// Serve `router` on an already bound listener (lets a stand-in learn its address before
/// it builds its router).
pub(crate) fn serve_listener(
    router: axum::Router,
    listener: TcpListener,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // The signal fires on `stop()` and also when the sender is dropped with the handle.
        let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = signal.await;
        });
        if let Err(error) = serving.await {
            tracing::warn!(%addr, %error, "stand-in server failed");
        }
    });
    Ok(RunningServer {
        addr,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

/// `127.0.0.1:0`: any free loopback port.
pub(crate) fn any_loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Lock a mutex, ignoring poisoning: stand-in state stays usable after a panicking test.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A JSON response with the given status and body.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    fn hello() -> axum::Router {
        axum::Router::new().route("/hello", get(|| async { "hi" }))
    }

    #[tokio::test]
    async fn serve_binds_port_zero_and_answers() {
        let server = serve(hello(), any_loopback_port()).await.unwrap();
        assert_ne!(server.addr().port(), 0);
        assert_eq!(
            server.url(),
            format!("http://127.0.0.1:{}", server.addr().port())
        );
        let text = reqwest::get(format!("{}/hello", server.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(text, "hi");
        server.stop().await;
    }

    #[tokio::test]
    async fn stop_is_quick_with_an_idle_keep_alive_connection() {
        let server = serve(hello(), any_loopback_port()).await.unwrap();
        let url = format!("{}/hello", server.url());
        let client = reqwest::Client::new();
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        let started = std::time::Instant::now();
        server.stop().await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(client.get(&url).send().await.is_err());
    }

    #[tokio::test]
    async fn drop_stops_the_server() {
        let server = serve(hello(), any_loopback_port()).await.unwrap();
        let url = format!("{}/hello", server.url());
        drop(server);
        let mut refused = false;
        for _ in 0..50 {
            if reqwest::get(&url).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the server still answers after drop");
    }

    #[tokio::test]
    async fn binding_a_busy_port_fails() {
        let server = serve(hello(), any_loopback_port()).await.unwrap();
        assert!(serve(hello(), server.addr()).await.is_err());
    }
}
