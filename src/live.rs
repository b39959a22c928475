//! What the gateway serves from: the compiled routes and the token manager of one config.
//! A config reload builds a new [`Routing`] and swaps it in whole; a request keeps the one
//! it started with.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::proxy::router::Router;
use crate::proxy::{CompiledRoute, RouteBuildError};
use crate::tokens::TokenManager;

pub struct Routing {
    pub router: Router<CompiledRoute>,
    pub tokens: Arc<TokenManager>,
}

/// The current routing, shared by the proxy, the admin listener and the reloader.
pub type Live = ArcSwap<Routing>;

impl Routing {
    /// Compiles the config's routes against `tokens`; `control` runs their inbound checks'
    /// calls.
    pub fn build(
        config: &Config,
        tokens: Arc<TokenManager>,
        control: &tokio::runtime::Handle,
    ) -> Result<Routing, RouteBuildError> {
        let routes = config
            .routes
            .iter()
            .map(|route| CompiledRoute::build(route, &tokens, control))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Routing {
            router: Router::new(routes),
            tokens,
        })
    }
}
