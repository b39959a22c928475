//! Config: YAML in, one validated [`Config`] out, or every error with its key path.
//!
//! The file is read into a YAML tree, secret references are expanded in place, then each
//! section is typed separately so that one bad provider does not hide the errors of the
//! next, and finally cross-references (route → provider) are checked.

mod error;
pub mod inbound;
mod kinds;
mod listeners;
pub(crate) mod mcp;
mod model;
mod providers;
mod raw;
mod references;
mod routes;
mod store;
mod values;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use references::expand as expand_references;

use error::{join, Errors};
use raw::RawServer;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// Under Kubernetes' default 30 s termination grace period.
pub const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const MAX_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// pingora's own default (128) is below the connection counts a gateway sees: at 256
/// concurrent callers it closed and reopened about 100 upstream connections a second.
pub const DEFAULT_UPSTREAM_POOL_SIZE: usize = 1024;
const MAX_UPSTREAM_POOL_SIZE: usize = 1 << 20;
/// A shorter admin token could be guessed.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read config file {}: {error}", path.display()),
        )])
    })?;
    parse_in(&text, path.parent().unwrap_or_else(|| Path::new(".")))
}

/// Validates config text; every problem found is reported, each with its key path. Where
/// a message would quote a value that came from a `${env:...}` or `${file:...}`
/// reference, it shows the reference instead.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_in(text, Path::new("."))
}

/// [`parse`], with the files that `mcp.import` names found relative to `base_dir` (the
/// config file's folder).
pub fn parse_in(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut tree: Value = serde_yaml_ng::from_str(text).map_err(|error| {
        ConfigErrors(vec![ConfigError::new("", format!("invalid YAML: {error}"))])
    })?;
    let mut errors = Errors::default();
    let mut expanded = references::Expanded::default();
    references::expand_tree(&mut tree, "", &mut errors, &mut expanded);
    let result = validate_tree(tree, errors, &mut expanded, base_dir);
    result.map_err(|errors| expanded.redact(errors))
}

fn validate_tree(
    tree: Value,
    mut errors: Errors,
    expanded: &mut references::Expanded,
    base_dir: &Path,
) -> Result<Config, ConfigErrors> {
    let mut top = match tree {
        Value::Mapping(map) => map,
        Value::Null => Mapping::new(),
        _ => {
            errors.push(
                "",
                "the config must be a mapping with server, providers, routes",
            );
            return Err(errors.into_errors());
        }
    };
    let server_value = top.remove("server");
    let providers_value = top.remove("providers");
    let routes_value = top.remove("routes");
    let mcp_value = top.remove("mcp");
    for (key, _) in top {
        errors.push(
            references::key_name(&key),
            "unknown key (expected server, providers, routes, mcp)",
        );
    }

    let mut server = server_value
        .and_then(|value| typed::<RawServer>(value, "server", &mut errors))
        .unwrap_or_default();
    let raw_mcp_server = server.mcp.take();
    let mut server = validate_server(server, &mut errors);
    let mut raw_mcp = mcp::raw_section(mcp_value, &mut errors);
    let imported = mcp::run_imports(&mut raw_mcp, base_dir, &mut errors, expanded);
    let wants_mcp = raw_mcp
        .tools
        .as_ref()
        .is_some_and(|tools| !tools.is_empty())
        || !imported.tools.is_empty()
        || raw_mcp.inbound.is_some();
    let mut taken: Vec<_> = server.listen.iter().map(|l| l.address).collect();
    taken.push(server.admin);
    server.mcp = mcp::listener(raw_mcp_server, wants_mcp, &taken, &mut errors);
    if server.mcp.is_some()
        && !server.listen.is_empty()
        && server.listen.iter().all(|listener| listener.tls.is_some())
    {
        errors.push(
            "server.mcp",
            "tool calls go through a plain (not TLS) proxy listener on loopback: add one to server.listen, e.g. \"127.0.0.1:8080\"",
        );
    }
    let providers =
        providers::validate_all(providers_value, imported.providers, &mut errors, expanded);
    let provider_names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let per_caller: Vec<&str> = providers
        .iter()
        .filter(|p| p.per_caller.is_some())
        .map(|p| p.name.as_str())
        .collect();
    let known = routes::KnownProviders {
        all: &provider_names,
        per_caller: &per_caller,
    };
    let routes = routes::validate_all(
        routes_value,
        imported.routes,
        &known,
        &server.listen,
        &mut errors,
    );
    let mcp = mcp::validate(raw_mcp, imported.tools, &routes, &providers, &mut errors);

    errors.into_result(Config {
        server,
        providers,
        routes,
        mcp,
    })
}

/// Types one subtree, recording a failure under `path` plus the path inside the subtree.
pub(crate) fn typed<T: DeserializeOwned>(
    value: Value,
    path: &str,
    errors: &mut Errors,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(typed) => Some(typed),
        Err(error) => {
            let inner = error.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else {
                join(path, &inner)
            };
            errors.push(at, error.into_inner().to_string());
            None
        }
    }
}

fn validate_server(raw: RawServer, errors: &mut Errors) -> Server {
    let listen = listeners::validate_all(
        raw.listen
            .unwrap_or_else(|| vec![Value::String(DEFAULT_LISTEN.to_owned())]),
        errors,
    );
    let admin_text = raw.admin.unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
    let admin = socket_addr(&admin_text, "server.admin", errors)
        .unwrap_or_else(|| ([127, 0, 0, 1], 9901).into());
    let threads = match raw.threads {
        Some(0) => {
            errors.push("server.threads", "must be at least 1");
            1
        }
        Some(threads) => threads,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let drain_timeout = raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0);
    if drain_timeout > MAX_DRAIN_TIMEOUT {
        errors.push(
            "server.drain_timeout",
            format!("must be at most {}s", MAX_DRAIN_TIMEOUT.as_secs()),
        );
    }
    let upstream_pool_size = raw.upstream_pool_size.unwrap_or(DEFAULT_UPSTREAM_POOL_SIZE);
    if upstream_pool_size > MAX_UPSTREAM_POOL_SIZE {
        errors.push(
            "server.upstream_pool_size",
            format!("must be at most {MAX_UPSTREAM_POOL_SIZE}"),
        );
    }
    let paths = raw.paths.unwrap_or_default();
    let paths = PathPolicy {
        merge_slashes: paths.merge_slashes.unwrap_or(true),
        escaped_slashes: match paths.escaped_slashes {
            None | Some(raw::RawEscapedSlashes::Reject) => EscapedSlashes::Reject,
            Some(raw::RawEscapedSlashes::Keep) => EscapedSlashes::Keep,
        },
    };
    let headers_with_underscores = match raw.headers_with_underscores {
        None | Some(raw::RawUnderscoreHeaders::Drop) => UnderscoreHeaders::Drop,
        Some(raw::RawUnderscoreHeaders::Reject) => UnderscoreHeaders::Reject,
        Some(raw::RawUnderscoreHeaders::Allow) => UnderscoreHeaders::Allow,
    };
    if raw
        .admin_token
        .as_ref()
        .is_some_and(|token| token.expose().len() < MIN_ADMIN_TOKEN_LEN)
    {
        errors.push(
            "server.admin_token",
            format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters (a random secret)"),
        );
    }
    Server {
        listen,
        admin,
        threads,
        drain_timeout,
        upstream_pool_size,
        paths,
        headers_with_underscores,
        admin_token: raw.admin_token,
        store: store::validate(raw.store, errors),
        mcp: None,
    }
}

pub(crate) fn socket_addr(
    text: &str,
    path: &str,
    errors: &mut Errors,
) -> Option<std::net::SocketAddr> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(
                path,
                format!("`{text}` is not an address like 127.0.0.1:8080"),
            );
            None
        }
    }
}

#[cfg(test)]
mod per_caller_tests;
#[cfg(test)]
mod tests;
