//! Refused TLS handshakes, counted by reason in `tollgate_tls_handshake_failures_total`.
//!
//! pingora finishes a handshake before the application sees the connection, and a failed
//! one never reaches it: its only trace is pingora's own log line ("Downstream handshake
//! error from ...: ..."). So that line is where they are counted: a `tracing` layer with
//! its own filter (it admits only that target at ERROR, and so never raises the level
//! other libraries log at) reads the message and sorts it by reason. The line itself is
//! still printed, as before.

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};

/// The `log` target pingora's listener reports handshake failures under.
const LISTENING_TARGET: &str = "pingora_core::services::listening";

/// Why a handshake failed, from pingora's text of the failure (rustls's error names).
pub fn reason(message: &str) -> &'static str {
    let text = message.to_ascii_lowercase();
    let table: [(&[&str], &'static str); 6] = [
        (&["timeout", "timed out"], "timeout"),
        (
            &["peer sent no certificates", "certificaterequired"],
            "no_client_certificate",
        ),
        (&["invalid peer certificate"], "bad_client_certificate"),
        (
            &[
                "protocolversion",
                "tls12notoffered",
                "supportedversionsextensionrequired",
                "peer is incompatible",
            ],
            "protocol_version",
        ),
        (&["received fatal alert"], "alert_from_client"),
        (
            &["corrupt message", "invalidcontenttype", "invalid message"],
            "not_tls",
        ),
    ];
    for (needles, reason) in table {
        if needles.iter().any(|needle| text.contains(needle)) {
            return reason;
        }
    }
    if text.contains("eof") || text.contains("connection reset") || text.contains("closed") {
        return "closed";
    }
    "other"
}

/// The layer that counts; add it beside the output layer.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Counter.with_filter(OnlyHandshakeErrors)
}

struct Counter;

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = fields
            .log_target
            .as_deref()
            .unwrap_or(event.metadata().target());
        if target != LISTENING_TARGET || !fields.message.starts_with("Downstream handshake") {
            return;
        }
        crate::metrics::TLS_HANDSHAKE_FAILURES
            .with_label_values(&[reason(&fields.message)])
            .inc();
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    log_target: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "log.target" => self.log_target = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// Admits pingora's listener target at ERROR only. `log` records are filtered by their
/// own target (tracing-log asks with it before it dispatches them), so the interest of a
/// callsite is decided per event.
struct OnlyHandshakeErrors;

impl<S> Filter<S> for OnlyHandshakeErrors {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        meta.target() == LISTENING_TARGET && *meta.level() == tracing::Level::ERROR
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn failures_are_sorted_by_what_rustls_said() {
        let cases = [
            ("Downstream handshake error from 127.0.0.1:1: TLSHandshakeFailure context: TLS accept() failed: peer sent no certificates", "no_client_certificate"),
            ("Downstream handshake error from 127.0.0.1:1: TLS accept() failed: invalid peer certificate: UnknownIssuer", "bad_client_certificate"),
            ("Downstream handshake error: TLS accept() failed: peer is incompatible: Tls12NotOffered", "protocol_version"),
            ("Downstream handshake error: TLS accept() failed: received fatal alert: UnknownCA", "alert_from_client"),
            ("Downstream handshake error: TLS accept() failed: received corrupt message of type InvalidContentType", "not_tls"),
            ("Downstream handshake timeout", "timeout"),
            ("Downstream handshake error: TLS accept() failed: tls handshake eof", "closed"),
            ("Downstream handshake error: something new", "other"),
        ];
        for (message, expected) in cases {
            assert_eq!(reason(message), expected, "{message}");
        }
    }
}
