//! Certificate rotation: every TLS listener's files are read again every [`INTERVAL`] (and
//! on SIGHUP). A change of content is what counts, not of inode or time stamp, so the
//! symlink swap of a Kubernetes Secret mount (`..data` pointing at a new directory) is
//! seen like any rewrite. A new pair that loads replaces the old one for new handshakes;
//! open connections keep theirs. One that does not load is logged, counted, and the old
//! pair keeps serving.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::listener::{Reload, TlsListener};
use crate::metrics::Metrics;

/// How often the certificate files are read; a rotation serves new handshakes at most
/// this long (plus the read) after the files change.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Sets the expiry gauges, then watches the listeners' files until the process ends.
pub async fn run(listeners: Vec<Arc<TlsListener>>, metrics: Arc<Metrics>) {
    for listener in &listeners {
        metrics.tls_certificate_expiry(&listener.label, listener.not_after());
    }
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            Some(()) = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = tick.tick() => {}
        }
        for listener in &listeners {
            check(listener, &metrics).await;
        }
    }
}

/// Reads one listener's files (off the async threads) and records what happened.
async fn check(listener: &Arc<TlsListener>, metrics: &Metrics) {
    let reading = Arc::clone(listener);
    let outcome = match tokio::task::spawn_blocking(move || reading.reload()).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(listener = %listener.label, %error, "certificate check failed");
            return;
        }
    };
    match outcome {
        Reload::Unchanged => {}
        Reload::Loaded { not_after, subject } => {
            metrics.tls_certificate_reloaded(&listener.label, true);
            metrics.tls_certificate_expiry(&listener.label, not_after);
            tracing::info!(
                listener = %listener.label,
                %subject,
                not_after,
                "TLS certificate reloaded; new handshakes use it"
            );
        }
        Reload::Failed(error) => {
            metrics.tls_certificate_reloaded(&listener.label, false);
            tracing::error!(
                listener = %listener.label,
                %error,
                "the new TLS certificate files cannot be used; the previous certificate keeps serving"
            );
        }
    }
}
