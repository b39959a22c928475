//! Wiring: a validated [`Config`] becomes a running gateway — the control runtime (provider
//! calls, refreshers, admin listener) beside pingora's proxy service.

use std::path::PathBuf;
use std::sync::Arc;

use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
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
    #[error("server.mcp: tool calls go through a plain (not TLS) proxy listener, and server.listen has none")]
    McpNoPlainListener,
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("listener {addr}: {error}")]
    Tls {
        addr: std::net::SocketAddr,
        error: crate::tls::TlsLoadError,
    },
    #[error("listener {addr}: {error}")]
    Pingora {
        addr: std::net::SocketAddr,
        error: Box<pingora::Error>,
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
        for listener in &self.config.server.listen {
            // pingora binds later and cannot report a failure well; try first.
            drop(bind(listener.address)?);
        }
        let tls_listeners = load_tls(&self.config.server.listen)?;
        let state = AdminState {
            live: Arc::clone(&self.live),
            metrics: Arc::clone(&self.context.metrics),
            status_access: admin::StatusAccess::for_server(&self.config.server),
        };
        let proxy_listeners = self.config.server.listen.clone();
        let mcp = match self.config.server.mcp.clone() {
            None => None,
            Some(settings) => {
                let mcp_listener = bind(settings.listen)?;
                // Tool calls go through a plain proxy listener, on loopback (`tollgate
                // check` asks for one when MCP is on).
                let proxy = proxy_listeners
                    .iter()
                    .find(|listener| listener.tls.is_none())
                    .map(|listener| loopback(listener.address))
                    .ok_or(StartError::McpNoPlainListener)?;
                let caller = crate::mcp::call::Caller::new(
                    Arc::clone(&self.live),
                    Arc::clone(&self.context.metrics),
                    proxy,
                    self.config.server.paths,
                )
                .map_err(StartError::McpClient)?;
                Some((mcp_listener, settings, caller))
            }
        };
        self.control.spawn(async move {
            // /healthz must not answer before the proxy accepts, so the admin listener
            // (bound already, its backlog holding early probes) serves only from then on.
            // So does the MCP endpoint, whose tool calls go through a proxy listener. One
            // wait for both: a TLS listener is probed by binding its address, and a second
            // prober would make a clash with pingora's own bind likelier.
            wait_until_accepting(&proxy_listeners).await;
            if let Some((mcp_listener, settings, caller)) = mcp {
                match tokio::net::TcpListener::from_std(mcp_listener) {
                    Ok(listener) => {
                        tokio::spawn(crate::mcp::endpoint::serve(
                            listener,
                            settings,
                            Arc::new(caller),
                        ));
                    }
                    Err(error) => tracing::error!(%error, "MCP listener failed"),
                }
            }
            match tokio::net::TcpListener::from_std(admin_listener) {
                Ok(listener) => admin::serve(listener, state).await,
                Err(error) => tracing::error!(%error, "admin listener failed"),
            }
        });
        for (_, tls) in &tls_listeners {
            self.context.metrics.prepare_listener(&tls.label);
        }
        self.control.spawn(crate::tls::watch::run(
            tls_listeners
                .iter()
                .map(|(_, tls)| Arc::clone(tls))
                .collect(),
            Arc::clone(&self.context.metrics),
        ));
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
            // One thread has no one to steal from: pingora then runs it as tokio's
            // current-thread scheduler, which hands tasks over without the multi-thread
            // scheduler's atomics and queues (docs/PERFORMANCE.md, "What changed, and what each did").
            work_stealing: self.config.server.threads > 1,
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
        let gateway = || {
            Gateway::new(
                Arc::clone(&self.live),
                &self.config.server,
                Arc::clone(&self.context.metrics),
                Arc::clone(&in_flight),
            )
        };
        let (service, h2c_service) = proxy_services(
            &server.configuration,
            &self.config.server.listen,
            &tls_listeners,
            gateway,
        )?;
        server.add_service(service);
        if let Some(h2c) = h2c_service {
            server.add_service(h2c);
        }
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

type ProxyService = pingora::services::listening::Service<pingora::proxy::HttpProxy<Gateway>>;

/// pingora's proxy service with every listener: plain ones with `add_tcp`, TLS ones with
/// their `TlsListener`'s settings. h2c is a setting of a pingora service, not of a
/// listener, so plain listeners with `http2` go to a second service with it on.
fn proxy_services(
    conf: &Arc<ServerConf>,
    listeners: &[crate::config::Listener],
    tls_listeners: &[(std::net::SocketAddr, Arc<crate::tls::TlsListener>)],
    gateway: impl Fn() -> Gateway,
) -> Result<(ProxyService, Option<ProxyService>), StartError> {
    let mut service = pingora::proxy::http_proxy_service(conf, gateway());
    let mut h2c_service: Option<ProxyService> = None;
    for listener in listeners {
        let addr = listener.address.to_string();
        let tls = tls_listeners
            .iter()
            .find(|(address, _)| *address == listener.address);
        if let Some((_, tls)) = tls {
            let settings = tls
                .settings(listener.http2)
                .map_err(|error| StartError::Pingora {
                    addr: listener.address,
                    error,
                })?;
            service.add_listener(
                ListenerConfig::tcp(&addr)
                    .tls(settings)
                    .l4_buffer(l4_buffer(TLS_READ_BUFFER)),
            );
        } else if listener.http2 {
            h2c_service
                .get_or_insert_with(|| {
                    let mut h2c = pingora::proxy::http_proxy_service_with_name(
                        conf,
                        gateway(),
                        "Pingora HTTP Proxy Service (h2c)",
                    );
                    let mut options = pingora::apps::HttpServerOptions::default();
                    options.h2c = true;
                    if let Some(proxy) = h2c.app_logic_mut() {
                        proxy.server_options = Some(options);
                    }
                    h2c
                })
                .add_listener(ListenerConfig::tcp(&addr).l4_buffer(l4_buffer(0)));
        } else {
            service.add_listener(ListenerConfig::tcp(&addr).l4_buffer(l4_buffer(0)));
        }
    }
    Ok((service, h2c_service))
}

/// What a TLS listener reads at a time: one TLS record at most.
const TLS_READ_BUFFER: usize = 16 * 1024;

/// pingora puts a 64 KiB read buffer in front of every accepted connection by default, and
/// once that memory has been used before, all of it is resident: up to 16 MB at 256
/// connections (docs/PERFORMANCE.md, "Memory"). The HTTP/1 parser reads into its own
/// buffer, so a plain listener reads straight from the socket; a TLS one reads a record at
/// a time. Writes keep pingora's default buffer.
fn l4_buffer(read: usize) -> L4BufferSettings {
    L4BufferSettings::new(read, DEFAULT_L4_WRITE_BUFFER_SIZE)
}

/// The TLS listeners' certificates and client CAs, read and checked.
fn load_tls(
    listeners: &[crate::config::Listener],
) -> Result<Vec<(std::net::SocketAddr, Arc<crate::tls::TlsListener>)>, StartError> {
    let mut loaded = Vec::new();
    for listener in listeners {
        let tls = crate::tls::TlsListener::load(listener).map_err(|error| StartError::Tls {
            addr: listener.address,
            error,
        })?;
        if let Some(tls) = tls {
            loaded.push((listener.address, Arc::new(tls)));
        }
    }
    Ok(loaded)
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
/// A plain listener is probed with a connection; a TLS listener by trying to bind its
/// address, which fails once pingora holds it: a connection that never starts a handshake
/// would be logged and counted as a failed one.
async fn wait_until_accepting(listeners: &[crate::config::Listener]) {
    for listener in listeners {
        let probe = loopback(listener.address);
        loop {
            let listening = if listener.tls.is_some() {
                std::net::TcpListener::bind(listener.address).is_err()
            } else {
                tokio::net::TcpStream::connect(probe).await.is_ok()
            };
            if listening {
                break;
            }
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
