//! Wiring: a validated [`Config`] becomes a running gateway — the control runtime (provider
//! calls, refreshers, admin listener) beside pingora's proxy service.

use std::path::PathBuf;
use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use tokio::runtime::Runtime;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::generation::{self, Context, Generation, Live};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::Reloader;
use crate::shutdown::{Drainer, InFlight, Signals};
use crate::store::{Fleet, RedisStore};

/// After the drain time, pingora gives its runtimes this long to stop.
const RUNTIME_SHUTDOWN_SECONDS: u64 = 1;
/// pingora's own grace period outlasts the drain by this much, so the drainer finishes.
const GRACE_AFTER_DRAIN_SECONDS: u64 = 3;
const CONTROL_THREADS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the control runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Generation(#[from] generation::BuildError),
    #[error("cannot set up the MCP endpoint's client: {0}")]
    McpClient(reqwest::Error),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

pub struct App {
    config: Config,
    control: Runtime,
    live: Arc<Live>,
    /// What every generation is built with.
    context: Context,
    /// The file to reload from on SIGHUP or when it changes.
    config_path: Option<PathBuf>,
}

impl App {
    pub fn build(config: Config) -> Result<App, StartError> {
        let control = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CONTROL_THREADS)
            .thread_name("tollgate-control")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let metrics = Arc::new(Metrics::new()?);
        let fleet = match &config.server.store {
            None => None,
            Some(settings) => Some(Arc::new(Fleet::new(
                settings,
                Arc::new(RedisStore::new(settings)),
                metrics.store()?,
            ))),
        };
        let context = Context {
            control: control.handle().clone(),
            metrics,
            fleet,
        };
        let generation = Generation::build(&config, None, &context)?;
        Ok(App {
            config,
            control,
            live: Arc::new(Live::from_pointee(generation)),
            context,
            config_path: None,
        })
    }

    /// Reload from `path` on SIGHUP and whenever its content changes.
    pub fn reload_from(mut self, path: PathBuf) -> App {
        self.config_path = Some(path);
        self
    }

    /// The runtime that hosts provider calls; the demo runs its stand-ins on it too.
    pub fn control(&self) -> &tokio::runtime::Handle {
        self.control.handle()
    }

    /// Binds the listeners, starts the refreshers, the upstream DNS refresh and the reloader,
    /// and serves until SIGTERM or SIGINT
    /// (see [`crate::shutdown`]).
    pub fn run(self) -> Result<(), StartError> {
        let admin_addr = self.config.server.admin;
        let admin_listener = bind(admin_addr)?;
        for addr in &self.config.server.listen {
            // pingora binds later and cannot report a failure well; try first.
            drop(bind(*addr)?);
        }
        let state = AdminState {
            live: Arc::clone(&self.live),
            metrics: Arc::clone(&self.context.metrics),
            status_access: admin::StatusAccess::for_server(&self.config.server),
        };
        let proxy_addrs = self.config.server.listen.clone();
        if let Some(settings) = self.config.server.mcp.clone() {
            let mcp_listener = bind(settings.listen)?;
            // Tool calls go through a proxy listener, on loopback.
            let proxy = loopback(self.config.server.listen[0]);
            let caller = crate::mcp::call::Caller::new(
                Arc::clone(&self.live),
                Arc::clone(&self.context.metrics),
                proxy,
                self.config.server.paths,
            )
            .map_err(StartError::McpClient)?;
            let proxy_addrs = proxy_addrs.clone();
            self.control.spawn(async move {
                wait_until_accepting(&proxy_addrs).await;
                match tokio::net::TcpListener::from_std(mcp_listener) {
                    Ok(listener) => {
                        crate::mcp::endpoint::serve(listener, settings, Arc::new(caller)).await
                    }
                    Err(error) => tracing::error!(%error, "MCP listener failed"),
                }
            });
        }
        self.control.spawn(async move {
            // /healthz must not answer before the proxy accepts, so the admin listener
            // (bound already, its backlog holding early probes) serves only from then on.
            wait_until_accepting(&proxy_addrs).await;
            match tokio::net::TcpListener::from_std(admin_listener) {
                Ok(listener) => admin::serve(listener, state).await,
                Err(error) => tracing::error!(%error, "admin listener failed"),
            }
        });
        self.live.load().tokens.start_refreshers();
        self.control
            .spawn(generation::dns::run(Arc::clone(&self.live)));
        if let Some(fleet) = &self.context.fleet {
            self.control.spawn(Arc::clone(fleet).watch());
        }
        if let Some(path) = &self.config_path {
            let reloader = Reloader::new(
                path.clone(),
                &self.config,
                Arc::clone(&self.live),
                self.context.clone(),
            );
            self.control.spawn(reloader.run());
        }

        let conf = ServerConf {
            threads: self.config.server.threads,
            upstream_keepalive_pool_size: self.config.server.upstream_pool_size,
            // A fallback only: the drainer ends the process at the drain time, after it has
            // ended provider sessions.
            grace_period_seconds: Some(
                self.config.server.drain_timeout.as_secs_f64().ceil() as u64
                    + GRACE_AFTER_DRAIN_SECONDS,
            ),
            graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_SECONDS),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let in_flight = Arc::new(InFlight::default());
        let gateway = Gateway::new(
            Arc::clone(&self.live),
            &self.config.server,
            Arc::clone(&self.context.metrics),
            Arc::clone(&in_flight),
        );
        let mut service = pingora::proxy::http_proxy_service(&server.configuration, gateway);
        for addr in &self.config.server.listen {
            service.add_tcp(&addr.to_string());
        }
        server.add_service(service);
        server.add_service(pingora::services::background::background_service(
            "drainer",
            Drainer {
                in_flight,
                live: Arc::clone(&self.live),
                drain_timeout: self.config.server.drain_timeout,
            },
        ));
        let listen: Vec<String> = self
            .config
            .server
            .listen
            .iter()
            .map(ToString::to_string)
            .collect();
        if !self.config.server.admin_is_loopback()
            && admin::StatusAccess::for_server(&self.config.server).loopback_only()
        {
            tracing::warn!(admin = %admin_addr, "the admin listener is reachable beyond loopback and server.admin_token is not set: /status answers loopback callers only (metrics and health stay open)");
        }
        let mcp = self
            .config
            .server
            .mcp
            .as_ref()
            .map(|mcp| format!("http://{}{}", mcp.listen, mcp.path));
        tracing::info!(
            listen = %listen.join(","),
            admin = %admin_addr,
            mcp = mcp.as_deref().unwrap_or("off"),
            tools = self.config.mcp.tools.len(),
            providers = self.config.providers.len(),
            routes = self.config.routes.len(),
            threads = self.config.server.threads,
            "tollgate started"
        );
        server.run(pingora::server::RunArgs {
            shutdown_signal: Box::new(Signals),
        });
        // Dropping the control runtime from async context would panic; it is done here.
        self.control
            .shutdown_timeout(std::time::Duration::from_secs(1));
        Ok(())
    }
}

/// The address to reach a listener on from this host: an unspecified IP becomes loopback.
fn loopback(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Returns once every proxy listener accepts connections (pingora binds them itself).
async fn wait_until_accepting(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        let probe = loopback(*addr);
        while tokio::net::TcpStream::connect(probe).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|error| StartError::Listen { addr, error })?;
    listener
        .set_nonblocking(true)
        .map_err(|error| StartError::Listen { addr, error })?;
    Ok(listener)
}
