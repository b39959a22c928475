//! Graceful shutdown: SIGTERM or SIGINT stop new connections, requests in flight finish
//! within the drain time, provider sessions are ended, and the process exits 0.
//!
//! pingora's own graceful path always waits its whole grace period. tollgate counts the
//! requests in flight and exits as soon as the last one is done; pingora's grace period
//! (set to the drain time) remains the upper bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::generation::Live;

const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The number of requests being served.
#[derive(Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Held by a request while it is served; dropping it, however the request ends, counts
/// it out.
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// SIGTERM (Kubernetes) and SIGINT (Ctrl-C) both drain gracefully.
pub struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "draining: no new connections, finishing requests in flight"
        );
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs once shutdown starts: waits for the requests in flight (up to the drain time),
/// ends provider sessions, and exits.
pub struct Drainer {
    pub in_flight: Arc<InFlight>,
    pub live: Arc<Live>,
    pub drain_timeout: Duration,
}

#[async_trait]
impl BackgroundService for Drainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let deadline = Instant::now() + self.drain_timeout;
        while self.in_flight.count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let left = self.in_flight.count();
        if left > 0 {
            tracing::warn!(
                requests = left,
                "drain time is up; cutting requests still in flight"
            );
        }
        let tokens = std::sync::Arc::clone(&self.live.load().tokens);
        tokens.end_sessions().await;
        tracing::info!("drained; exiting");
        std::process::exit(0);
    }
}
