//! Log output: JSON lines by default, human-readable text on request. pingora's own `log`
//! records are bridged into the same stream.
//!
//! No level prints a credential. The libraries tollgate runs on print raw requests at
//! debug and trace: pingora the head it writes upstream (injected token included), the
//! caller's head and a head that failed to parse, bytes and all; request bodies too. So
//! every target outside tollgate's own is capped at `info`, whatever `RUST_LOG` asks for:
//! `RUST_LOG=trace` makes tollgate itself verbose, never a library's dump of the wire.

mod access_json;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The most a library's target may log.
const LIBRARY_CEILING: Level = Level::INFO;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let wanted = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The ceiling admits any level (for tollgate's targets), so its hint is TRACE and the
    // combined hint is RUST_LOG's. Without a hint the combination has none, `log`'s max
    // level becomes TRACE, and every debug line pingora writes is built and then dropped:
    // about 12,000 instructions a request.
    let ceiling = filter_fn(within_ceiling).with_max_level_hint(LevelFilter::TRACE);
    let filter = wanted.and(ceiling);
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let layer = match format {
        LogFormat::Json => output
            .event_format(access_json::AccessJson::new())
            .fmt_fields(JsonFields::new())
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => output.compact().with_filter(filter).boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(layer)
        .with(crate::tls::failures::layer())
        .try_init();
    if let Err(error) = result {
        eprintln!("logging was already set up: {error}");
    }
}

/// tollgate's own targets log at any level; every other target at most at `info`, and the
/// MCP SDK at `warn` (its `info` lines are three per stateless request, none of them news).
fn within_ceiling(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    if target == "rmcp" || target.starts_with("rmcp::") {
        return *metadata.level() <= Level::WARN;
    }
    is_own_target(target) || *metadata.level() <= LIBRARY_CEILING
}

fn is_own_target(target: &str) -> bool {
    target == access_json::ACCESS_TARGET
        || target == "mcp"
        || target == "tollgate"
        || target.starts_with("tollgate::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_filter_keeps_the_level_hint_of_rust_log() {
        use tracing_subscriber::layer::Filter;
        let wanted = EnvFilter::new("warn");
        let ceiling = filter_fn(within_ceiling).with_max_level_hint(LevelFilter::TRACE);
        let combined = wanted.and(ceiling);
        let hint = <_ as Filter<tracing_subscriber::Registry>>::max_level_hint(&combined);
        assert_eq!(hint, Some(LevelFilter::WARN));
    }

    #[test]
    fn only_tollgate_targets_pass_below_info() {
        assert!(is_own_target("tollgate::proxy"));
        assert!(is_own_target("access"));
        assert!(!is_own_target("pingora_core::protocols::http::v1::client"));
        assert!(!is_own_target("tollgatex"));
        assert!(Level::WARN <= LIBRARY_CEILING);
        assert!(Level::DEBUG > LIBRARY_CEILING);
    }
}
