//! Config reload without dropping requests: on SIGHUP, and when the config file's content
//! changes (a Kubernetes ConfigMap update swaps a symlink, so the file is re-read rather
//! than watched by inode). A valid config replaces the routing atomically, keeping the
//! tokens of providers whose settings did not change; an invalid one is logged and the
//! old config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, Config, Server};
use crate::generation::{self, Context, Generation, Live};

/// How often the config file is read to see whether it changed.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

pub struct Reloader {
    path: PathBuf,
    /// The `server` section in force; changing it needs a restart.
    server: Server,
    live: Arc<Live>,
    context: Context,
    last_digest: Mutex<Option<[u8; 32]>>,
}

#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("invalid config:\n{0}")]
    Invalid(#[from] config::ConfigErrors),
    #[error(transparent)]
    Generation(#[from] generation::BuildError),
}

impl Reloader {
    pub fn new(path: PathBuf, config: &Config, live: Arc<Live>, context: Context) -> Reloader {
        let last_digest = Mutex::new(digest_of(&path));
        Reloader {
            path,
            server: config.server.clone(),
            live,
            context,
            last_digest,
        }
    }

    /// Watches for SIGHUP and file changes until the process ends.
    pub async fn run(self) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let trigger = tokio::select! {
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick() => {
                    if !self.file_changed() {
                        continue;
                    }
                    "file change"
                }
            };
            self.reload(trigger).await;
        }
    }

    fn file_changed(&self) -> bool {
        let current = digest_of(&self.path);
        let mut last = self.last_digest.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none() || *last == current {
            return false;
        }
        *last = current;
        true
    }

    async fn reload(&self, trigger: &str) {
        match self.try_reload().await {
            Ok(summary) => {
                self.context
                    .metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(trigger, %summary, "config reloaded");
            }
            Err(error) => {
                self.context
                    .metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(trigger, error = %error, "config reload refused; the previous config keeps serving");
            }
        }
    }

    async fn try_reload(&self) -> Result<String, ReloadError> {
        // Remember exactly what was read, so the file poll does not reload it again.
        let text = std::fs::read(&self.path).map_err(|error| ReloadError::Read {
            path: self.path.display().to_string(),
            error,
        })?;
        *self.last_digest.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Sha256::digest(&text).into());
        let text = String::from_utf8(text).map_err(|_| ReloadError::Read {
            path: self.path.display().to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
        })?;
        let base_dir = self
            .path
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."));
        let config = config::parse_in(&text, base_dir)?;
        if config.server != self.server {
            tracing::warn!("the server section changed; listeners, threads and drain time apply after a restart");
        }
        let current = self.live.load_full();
        let next = Generation::build(&config, Some(&current), &self.context)?;
        let successor = Arc::clone(&next.tokens);
        let provider_names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        successor.start_refreshers();
        self.live.store(Arc::new(next));
        current.tokens.retire_replaced(&successor).await;
        let kept: Vec<&str> = provider_names
            .iter()
            .copied()
            .filter(|name| current.tokens.keeps_provider(&successor, name))
            .collect();
        Ok(format!(
            "{} routes, {} providers ({} kept with their tokens: {})",
            config.routes.len(),
            provider_names.len(),
            kept.len(),
            kept.join(", ")
        ))
    }
}

fn digest_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
}
