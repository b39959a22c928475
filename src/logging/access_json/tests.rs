use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use super::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::ErrorKind::Other)?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

/// Every kind of field the access line has, with text that needs escaping.
fn log_events() {
    let absent: Option<&str> = None;
    tracing::info!(
        target: "access",
        request_id = "00000000000000000001",
        method = %http::Method::POST,
        path = "/a \"quoted\"\\path\n\t\u{1}é",
        status = 502u16,
        duration_ms = 12.345_f64,
        tiny = 0.000_000_1_f64,
        retried = true,
        refused = absent,
        error = Some("ConnectRefused"),
        signed = -3i64,
        debug = ?vec!["x"],
    );
    tracing::warn!(target: "tollgate::other", value = 1, "not an access line");
}

fn output(stock: bool) -> Vec<serde_json::Value> {
    let captured = Captured::default();
    let layer = tracing_subscriber::fmt::layer().with_writer(captured.clone());
    if stock {
        let layer = layer.json().flatten_event(true).with_current_span(false);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log_events);
    } else {
        let layer = layer
            .event_format(AccessJson::new())
            .fmt_fields(JsonFields::new());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log_events);
    }
    captured.lines()
}

#[test]
fn lines_are_the_stock_json_but_for_the_time() {
    let mut ours = output(false);
    let mut stock = output(true);
    assert_eq!(ours.len(), 2);
    for line in ours.iter_mut().chain(stock.iter_mut()) {
        let time = line["timestamp"].take();
        let time = time.as_str().unwrap().to_owned();
        // 2026-11-30T11:19:48.123456Z
        assert_eq!(time.len(), 27, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    }
    assert_eq!(ours, stock);
    assert_eq!(ours[0]["path"], "/a \"quoted\"\\path\n\t\u{1}é");
    assert_eq!(ours[0]["duration_ms"], 12.345);
    assert!(ours[0].get("refused").is_none());
}

#[test]
fn the_time_is_the_stock_timers() {
    use tracing_subscriber::fmt::time::FormatTime;
    let stock = || {
        let mut text = String::new();
        let timer = tracing_subscriber::fmt::time::SystemTime;
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    };
    // Ours is taken between two stock readings, so its minute is one of theirs even when
    // a minute turns over in between.
    let before = stock();
    let mut ours = String::new();
    write_timestamp(&mut Writer::new(&mut ours), SystemTime::now()).unwrap();
    let after = stock();
    assert_eq!(ours.len(), before.len());
    assert!(
        ours[..16] == before[..16] || ours[..16] == after[..16],
        "{ours} / {before} / {after}"
    );
}

#[test]
fn dates_are_civil_dates() {
    for (seconds, expected) in [
        (0, "1970-01-01T00:00:00"),
        (951_782_400, "2000-02-29T00:00:00"),
        (1_700_000_000, "2023-11-14T22:13:20"),
        (4_102_444_799, "2099-12-31T23:59:59"),
        (4_107_542_400, "2100-03-01T00:00:00"),
    ] {
        let mut text = String::new();
        write_date_time(&mut text, seconds).unwrap();
        assert_eq!(text, expected);
    }
}
