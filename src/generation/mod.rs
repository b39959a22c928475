//! What the gateway serves from: the compiled routes and the token manager of one config, a
//! generation. Start-up builds the first; a config reload builds the next from the one in
//! force, keeping the tokens of providers whose settings did not change, and swaps it in
//! whole. A request keeps the generation it started with.

pub mod dns;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::mcp::Catalog;
use crate::metrics::Metrics;
use crate::providers;
use crate::routing::{CompiledRoute, RouteBuildError, Router};
use crate::store::Fleet;
use crate::tokens::TokenManager;

pub struct Generation {
    pub router: Router<CompiledRoute>,
    pub tokens: Arc<TokenManager>,
    /// The MCP tools and the MCP endpoint's caller checks of this config.
    pub mcp: Arc<Catalog>,
}

/// The generation in force, shared by the proxy, the admin listener, the DNS refresh, the
/// drainer and the reloader.
pub type Live = ArcSwap<Generation>;

/// What every generation is built with, for the life of the process.
#[derive(Clone)]
pub struct Context {
    /// Runs provider calls, refreshers and the inbound checks' calls.
    pub control: Handle,
    pub metrics: Arc<Metrics>,
    /// Fleet mode: the store the replicas share tokens through.
    pub fleet: Option<Arc<Fleet>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Provider(#[from] providers::BuildError),
    #[error(transparent)]
    Route(#[from] RouteBuildError),
    #[error("mcp.inbound: {0}")]
    Mcp(#[from] crate::inbound::InboundBuildError),
}

impl Generation {
    /// The generation serving `config`. With `previous`, providers whose settings did not
    /// change keep their token, refresher and backoff state (see
    /// [`TokenManager::successor`]); the caller starts the new refreshers
    /// ([`TokenManager::start_refreshers`]) once it serves this generation, and retires the
    /// previous one's replaced providers.
    pub fn build(
        config: &Config,
        previous: Option<&Generation>,
        context: &Context,
    ) -> Result<Generation, BuildError> {
        let Context {
            control,
            metrics,
            fleet,
        } = context;
        warn_about_unverified_tls(config);
        metrics.prepare(config);
        let tokens = match previous {
            Some(previous) => previous
                .tokens
                .successor(&config.providers, providers::build)?,
            None => {
                let mut clients = Vec::with_capacity(config.providers.len());
                for spec in &config.providers {
                    clients.push((spec, providers::build(spec)?));
                }
                TokenManager::new(clients, control.clone(), Arc::clone(metrics), fleet.clone())
            }
        };
        let routes = config
            .routes
            .iter()
            .map(|route| CompiledRoute::build(route, &tokens, control))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Generation {
            router: Router::new(routes),
            tokens,
            mcp: Arc::new(Catalog::build(&config.mcp, control)?),
        })
    }
}

/// Turning certificate checks off is allowed, but never silently (at start and on reload).
fn warn_about_unverified_tls(config: &Config) {
    for provider in &config.providers {
        if provider.tls.insecure_skip_verify {
            tracing::warn!(provider = %provider.name, "TLS certificate verification is OFF for this provider (tls.insecure_skip_verify)");
        }
    }
    for route in &config.routes {
        if route
            .backends
            .iter()
            .any(|b| b.tls && b.tls_settings.insecure_skip_verify)
        {
            tracing::warn!(route = %route.name, "TLS certificate verification is OFF for this route's upstream (upstream.tls.insecure_skip_verify)");
        }
    }
}
