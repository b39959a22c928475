//! Upstream host names resolved again in the background, so a backend whose address
//! changes (a SaaS API behind rotating addresses, a re-created Kubernetes service) is
//! followed without a restart or reload. The request path only reads the address in use.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;

use super::Live;
use crate::routing::{CompiledRoute, UpstreamBackend};

/// How often upstream host names are resolved again.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Resolves every route's upstream host names every [`REFRESH_INTERVAL`] until the
/// process ends; the routing in force is read at each round, so reloads are followed.
pub async fn run(live: Arc<Live>) {
    let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the routes were resolved when they were built.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let generation = live.load_full();
        refresh(
            generation.router.routes().map(|route| route.as_ref()),
            system_lookup,
        )
        .await;
    }
}

async fn system_lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}

/// One round: each backend named by host name is looked up, and when the address in use
/// is no longer among the answers, the first answer replaces it. A failed or empty lookup
/// keeps the address in use: a DNS outage must not take a working upstream away.
/// Returns how many backends changed address.
async fn refresh<'a, F, Fut>(routes: impl Iterator<Item = &'a CompiledRoute>, lookup: F) -> usize
where
    F: Fn(String, u16) -> Fut,
    Fut: std::future::Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut changed = 0;
    for route in routes {
        for backend in &route.backends {
            if backend.host.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            match lookup(backend.host.clone(), backend.port).await {
                Ok(addresses) => {
                    if follow(route, backend, &addresses) {
                        changed += 1;
                    }
                }
                Err(error) => tracing::warn!(
                    route = %route.name,
                    upstream = %backend.label,
                    %error,
                    "cannot resolve the upstream again; keeping its address"
                ),
            }
        }
    }
    changed
}

fn follow(route: &CompiledRoute, backend: &UpstreamBackend, addresses: &[SocketAddr]) -> bool {
    let current = backend.peer.load();
    let Some(current_address) = current._address.as_inet().copied() else {
        return false;
    };
    let Some(&next) = addresses.first() else {
        return false;
    };
    if addresses.contains(&current_address) {
        return false;
    }
    let mut peer = HttpPeer::clone(&current);
    peer._address = pingora::protocols::l4::socket::SocketAddr::Inet(next);
    backend.peer.store(Arc::new(peer));
    tracing::info!(
        route = %route.name,
        upstream = %backend.label,
        from = %current_address,
        to = %next,
        "upstream address changed"
    );
    true
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// One route `api` on `/` to `url`, with no provider.
    fn route_to(url: &str) -> std::sync::Arc<CompiledRoute> {
        crate::routing::route_for_tests(&format!(
            "routes:\n  - {{ name: api, match: {{ path_prefix: / }}, upstream: {{ url: \"{url}\" }} }}\n"
        ))
    }

    fn address_of(route: &CompiledRoute) -> SocketAddr {
        *route.backends[0].peer.load()._address.as_inet().unwrap()
    }

    fn answers(
        addresses: io::Result<Vec<SocketAddr>>,
    ) -> impl Fn(String, u16) -> std::future::Ready<io::Result<Vec<SocketAddr>>> {
        let addresses = addresses.map_err(|e| e.to_string());
        move |_, _| {
            std::future::ready(
                addresses
                    .clone()
                    .map_err(|message| io::Error::new(io::ErrorKind::NotFound, message)),
            )
        }
    }

    #[tokio::test]
    async fn a_host_that_moved_gets_its_new_address() {
        let route = route_to("http://localhost:9000");
        let moved: SocketAddr = "10.1.2.3:9000".parse().unwrap();
        let changed = refresh([route.as_ref()].into_iter(), answers(Ok(vec![moved]))).await;
        assert_eq!(changed, 1);
        assert_eq!(address_of(&route), moved);
        // The rest of the peer (SNI, timeouts) is kept.
        assert_eq!(route.backends[0].peer.load().sni, "localhost");
    }

    #[tokio::test]
    async fn an_address_still_among_the_answers_is_kept() {
        let route = route_to("http://localhost:9000");
        let before = address_of(&route);
        let other: SocketAddr = "10.1.2.3:9000".parse().unwrap();
        let changed = refresh(
            [route.as_ref()].into_iter(),
            answers(Ok(vec![other, before])),
        )
        .await;
        assert_eq!(changed, 0);
        assert_eq!(address_of(&route), before);
    }

    #[tokio::test]
    async fn a_failed_or_empty_lookup_keeps_the_address() {
        let route = route_to("http://localhost:9000");
        let before = address_of(&route);
        let failed = io::Error::new(io::ErrorKind::NotFound, "no such host");
        assert_eq!(
            refresh([route.as_ref()].into_iter(), answers(Err(failed))).await,
            0
        );
        assert_eq!(
            refresh([route.as_ref()].into_iter(), answers(Ok(vec![]))).await,
            0
        );
        assert_eq!(address_of(&route), before);
    }

    #[tokio::test]
    async fn an_address_literal_is_not_looked_up() {
        let route = route_to("http://127.0.0.1:9000");
        let lookups = AtomicUsize::new(0);
        let lookup = |_: String, _: u16| {
            lookups.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(vec!["10.1.2.3:9000".parse().unwrap()]))
        };
        assert_eq!(refresh([route.as_ref()].into_iter(), lookup).await, 0);
        assert_eq!(lookups.load(Ordering::Relaxed), 0);
    }
}
