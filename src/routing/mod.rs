//! Routes: each config route compiled once ([`route`]) and matched by host (exact,
//! case-insensitive) and longest path prefix on segment boundaries, decided once per
//! request with no allocation.

mod route;

use std::sync::Arc;

#[cfg(test)]
pub use route::route_for_tests;
pub use route::{
    Admission, CallerHeaders, CompiledRoute, RouteBuildError, RouteCredential, UpstreamBackend,
};

/// Anything a route can be matched by.
pub trait Matchable {
    fn host(&self) -> Option<&str>;
    fn path_prefix(&self) -> &str;
}

pub struct Router<R> {
    /// Longest prefix first; among equal prefixes, host-specific routes first.
    routes: Vec<Entry<R>>,
}

struct Entry<R> {
    route: Arc<R>,
    /// A prefix `/x/` also takes the path `/x` (the directory itself), unless another route
    /// has the prefix `/x`: otherwise `/x` would fall to a shorter route, without this
    /// route's checks, while many upstreams serve the same directory for it.
    takes_bare_directory: bool,
}

impl<R: Matchable> Router<R> {
    pub fn new(routes: Vec<Arc<R>>) -> Self {
        let mut routes = routes;
        routes.sort_by(|a, b| {
            b.path_prefix()
                .len()
                .cmp(&a.path_prefix().len())
                .then_with(|| b.host().is_some().cmp(&a.host().is_some()))
        });
        let prefixes: Vec<String> = routes.iter().map(|r| r.path_prefix().to_owned()).collect();
        let routes = routes
            .into_iter()
            .map(|route| {
                let directory = route
                    .path_prefix()
                    .strip_suffix('/')
                    .filter(|d| !d.is_empty());
                let takes_bare_directory =
                    directory.is_some_and(|d| !prefixes.iter().any(|p| p == d));
                Entry {
                    route,
                    takes_bare_directory,
                }
            })
            .collect();
        Router { routes }
    }

    /// Every route, in matching order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<R>> {
        self.routes.iter().map(|entry| &entry.route)
    }

    /// `host` is the request's host without port, any case, and `path` its canonical path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<R>> {
        self.routes
            .iter()
            .find(|entry| {
                let route = &entry.route;
                let host_matches = match route.host() {
                    None => true,
                    Some(wanted) => host.is_some_and(|host| host.eq_ignore_ascii_case(wanted)),
                };
                host_matches
                    && (prefix_matches(route.path_prefix(), path)
                        || (entry.takes_bare_directory
                            && path.len() + 1 == route.path_prefix().len()
                            && route.path_prefix().starts_with(path)))
            })
            .map(|entry| &entry.route)
    }
}

/// `/api` matches `/api`, `/api/x` and `/api?q`, not `/apix`; `/api/` matches `/api/x`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// The host of a `Host` header value or an authority, as routes match it: port removed,
/// brackets of an IPv6 literal kept out, and a trailing dot (`api.example.`, the same name
/// fully qualified) dropped.
pub fn host_without_port(authority: &str) -> &str {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestRoute {
        name: &'static str,
        host: Option<&'static str>,
        prefix: &'static str,
    }

    impl Matchable for TestRoute {
        fn host(&self) -> Option<&str> {
            self.host
        }
        fn path_prefix(&self) -> &str {
            self.prefix
        }
    }

    fn router() -> Router<TestRoute> {
        let route = |name, host, prefix| Arc::new(TestRoute { name, host, prefix });
        Router::new(vec![
            route("root", None, "/"),
            route("api", None, "/api"),
            route("api-v2", None, "/api/v2/"),
            route("api-on-host", Some("reports.example"), "/api"),
        ])
    }

    fn found(host: Option<&str>, path: &str) -> Option<&'static str> {
        router().find(host, path).map(|route| route.name)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        assert_eq!(found(None, "/api/v2/users"), Some("api-v2"));
        assert_eq!(found(None, "/api/v1/users"), Some("api"));
        assert_eq!(found(None, "/api"), Some("api"));
        assert_eq!(found(None, "/apix"), Some("root"));
    }

    #[test]
    fn host_specific_routes_win_over_any_host() {
        assert_eq!(
            found(Some("Reports.Example"), "/api/x"),
            Some("api-on-host")
        );
        assert_eq!(found(Some("other.example"), "/api/x"), Some("api"));
    }

    #[test]
    fn no_route_without_a_catch_all() {
        let router = Router::new(vec![Arc::new(TestRoute {
            name: "a",
            host: None,
            prefix: "/a/",
        })]);
        assert!(router.find(None, "/b").is_none());
    }

    #[test]
    fn host_port_is_dropped() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("example.com.:80"), "example.com");
    }

    #[test]
    fn a_directory_prefix_also_takes_the_directory_itself() {
        assert_eq!(found(None, "/api/v2"), Some("api-v2"));
        let route = |name, prefix| {
            Arc::new(TestRoute {
                name,
                host: None,
                prefix,
            })
        };
        // Unless a route names that path exactly.
        let router = Router::new(vec![
            route("dir", "/x/"),
            route("exact", "/x"),
            route("root", "/"),
        ]);
        assert_eq!(router.find(None, "/x").map(|r| r.name), Some("exact"));
        assert_eq!(router.find(None, "/x/y").map(|r| r.name), Some("dir"));
        assert_eq!(router.find(None, "/").map(|r| r.name), Some("root"));
    }
}
