//! Logging setup: text or JSON lines on stderr.
//!
//! - Text has ANSI colours only when stderr is a terminal and `NO_COLOR` is unset, so files and
//!   journald get plain text.
//! - JSON is one object per line with `timestamp` (RFC 3339, UTC), `level`, `target`,
//!   `message` and the event's fields at the top level; numbers stay numbers, and a field
//!   logged as a list (`server_names = ?names`) is a real JSON array, not a string.
//! - Logging never takes the process down: a line that cannot be written (stderr piped into a
//!   reader that went away, a crashed log shipper) is dropped and counted in
//!   `originguard_log_dropped_total`, and tracing-subscriber's own fallback (`eprintln!`, which
//!   panics when stderr is gone) is off.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(|| DroppingStderr);
    let _ = match log.format {
        LogFormat::Text => builder.with_ansi(colour()).try_init(),
        LogFormat::Json => builder.event_format(Json).try_init(),
    };
}

/// Colour only for a person at a terminal (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// stderr, where a failed write is dropped and counted instead of reported.
struct DroppingStderr;

impl std::io::Write for DroppingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            crate::metrics::LOG_DROPPED.inc();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The JSON line format (see the module doc).
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut map = Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        map.insert("timestamp".into(), Value::String(now));
        map.insert("level".into(), Value::String(meta.level().as_str().into()));
        event.record(&mut Fields(&mut map));
        map.insert("target".into(), Value::String(meta.target().into()));
        writeln!(writer, "{}", Value::Object(map))
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().into(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // A list logged with `?` (`["a", "b"]`) becomes an array; anything else a string.
        let value = match text.starts_with('[') {
            true => match serde_json::from_str::<Value>(&text) {
                Ok(array @ Value::Array(_)) => array,
                _ => Value::String(text),
            },
            false => Value::String(text),
        };
        self.0.insert(field.name().into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_arrays_numbers_are_numbers() {
        use tracing_subscriber::layer::SubscriberExt;
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(Json)
                .with_writer(move || Capture(sink.clone())),
        );
        tracing::subscriber::with_default(subscriber, || {
            let names = vec!["a.example".to_string(), "*.b.example".to_string()];
            let peer: std::net::SocketAddr = "[::1]:443".parse().expect("addr");
            tracing::info!(server_names = ?names, duration_ms = 1.25, count = 3u64, %peer, "hello");
        });
        let text = String::from_utf8(buffer.lock().expect("lock").clone()).expect("utf-8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["server_names"], serde_json::json!(["a.example", "*.b.example"]));
        assert_eq!(line["duration_ms"], serde_json::json!(1.25));
        assert_eq!(line["count"], serde_json::json!(3));
        assert_eq!(line["peer"], serde_json::json!("[::1]:443"));
        assert_eq!(line["message"], serde_json::json!("hello"));
        assert_eq!(line["level"], serde_json::json!("INFO"));
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
