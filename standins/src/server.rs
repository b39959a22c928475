//! The server under every stand-in: a task of the current tokio runtime that stops
//! accepting when its handle is stopped or dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// Run `serving` on `listener`; the future it returns ends its service once the signal
    /// it is given fires (on `stop()`, or when the handle is dropped).
    pub(crate) fn spawn<F>(
        listener: TcpListener,
        serving: impl FnOnce(TcpListener, oneshot::Receiver<()>) -> F,
    ) -> std::io::Result<RunningServer>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(serving(listener, signal));
        Ok(RunningServer {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

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
/// it builds its state).
pub(crate) fn serve_listener(
    router: axum::Router,
    listener: TcpListener,
) -> std::io::Result<RunningServer> {
    RunningServer::spawn(listener, |listener, signal| async move {
        let addr = listener.local_addr().ok();
        let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = signal.await;
        });
        if let Err(error) = serving.await {
            tracing::warn!(?addr, %error, "stand-in server failed");
        }
    })
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
        let server = serve(hello(), crate::any_loopback_port()).await.unwrap();
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
        let server = serve(hello(), crate::any_loopback_port()).await.unwrap();
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
        let server = serve(hello(), crate::any_loopback_port()).await.unwrap();
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
        let server = serve(hello(), crate::any_loopback_port()).await.unwrap();
        assert!(serve(hello(), server.addr()).await.is_err());
    }
}
