//! How an event becomes a line: text (`TIME [level] wsgi-gateway[PID] {fields}: message`, one
//! line per line of the message) or one JSON object. Time formatting is the `time` crate's.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::Format;

/// `2026-11-28T14:08:30.123Z`
const TIMESTAMP: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Writes every event that passes the filter to stderr.
pub struct Lines;

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let time = timestamp();
        let pid = std::process::id();
        let mut out = String::with_capacity(128 + fields.message.len());
        match super::format() {
            Format::Text => text(&mut out, &time, *meta.level(), pid, &fields),
            Format::Json => json(&mut out, &time, *meta.level(), pid, meta.target(), &fields),
        }
        // One write for the whole event, so that lines of several processes and threads
        // sharing the file do not interleave.
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

pub fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(TIMESTAMP)
        .unwrap_or_default()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// An event's message and its other fields, in order.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, Value)>,
}

enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others
                .push((field.name(), Value::Str(value.to_string())));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others
                .push((field.name(), Value::Str(format!("{value:?}"))));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.others.push((field.name(), Value::Int(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.others.push((field.name(), Value::UInt(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.others.push((field.name(), Value::Float(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.others.push((field.name(), Value::Bool(value)));
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) if needs_quotes(s) => write!(f, "{s:?}"),
            Value::Str(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::UInt(n) => write!(f, "{n}"),
            Value::Float(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '{' | '}' | '='))
}

/// `TIME [level] wsgi-gateway[PID] {k=v ...}: line`, for each line of the message; lines
/// after the first carry only the request id (when there is one), so that a traceback's
/// lines can be found by it.
fn text(out: &mut String, time: &str, level: Level, pid: u32, fields: &Fields) {
    let message = fields.message.trim_end();
    let request_id = fields.others.iter().find(|(k, _)| *k == "request_id");
    for (i, line) in message.split('\n').enumerate() {
        let _ = write!(out, "{time} [{}] wsgi-gateway[{pid}]", level_name(level));
        let shown: &[(&str, Value)] = match (i, request_id) {
            (0, _) => &fields.others,
            (_, Some(id)) => std::slice::from_ref(id),
            (_, None) => &[],
        };
        if !shown.is_empty() {
            out.push_str(" {");
            for (j, (k, v)) in shown.iter().enumerate() {
                if j > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{k}={v}");
            }
            out.push('}');
        }
        out.push_str(": ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
}

/// `{"time":..,"level":..,"pid":..,"target":..,"message":..,<fields>}`
fn json(out: &mut String, time: &str, level: Level, pid: u32, target: &str, fields: &Fields) {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
    let _ = write!(
        out,
        "{{\"time\":{},\"level\":\"{}\",\"pid\":{pid},\"target\":{},\"message\":{}",
        s(time),
        level_name(level),
        s(target),
        s(fields.message.trim_end())
    );
    for (k, v) in &fields.others {
        let _ = write!(out, ",{}:", s(k));
        let _ = match v {
            Value::Str(v) => write!(out, "{}", s(v)),
            Value::Int(n) => write!(out, "{n}"),
            Value::UInt(n) => write!(out, "{n}"),
            Value::Float(n) if n.is_finite() => write!(out, "{n}"),
            Value::Float(_) => write!(out, "null"),
            Value::Bool(b) => write!(out, "{b}"),
        };
    }
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, others: Vec<(&'static str, Value)>) -> Fields {
        Fields {
            message: message.into(),
            others,
        }
    }

    #[test]
    fn text_lines_carry_the_prefix_and_the_request_id() {
        let f = fields(
            "GET /x: Traceback\n  File \"a\"\nValueError: no\n",
            vec![
                ("request_id", Value::Str("7-1".into())),
                ("uri", Value::Str("/x y".into())),
                ("thread", Value::UInt(2)),
            ],
        );
        let mut out = String::new();
        text(&mut out, "T", Level::ERROR, 7, &f);
        assert_eq!(
            out,
            "T [error] wsgi-gateway[7] {request_id=7-1 uri=\"/x y\" thread=2}: GET /x: Traceback\n\
             T [error] wsgi-gateway[7] {request_id=7-1}:   File \"a\"\n\
             T [error] wsgi-gateway[7] {request_id=7-1}: ValueError: no\n"
        );
        let mut out = String::new();
        text(&mut out, "T", Level::INFO, 7, &fields("started", vec![]));
        assert_eq!(out, "T [info] wsgi-gateway[7]: started\n");
    }

    #[test]
    fn json_is_one_object_with_typed_fields() {
        let f = fields(
            "a \"quoted\"\nsecond line",
            vec![
                ("request_id", Value::Str("7-1".into())),
                ("thread", Value::UInt(2)),
            ],
        );
        let mut out = String::new();
        json(&mut out, "T", Level::WARN, 7, "wsgi_gateway::wsgi", &f);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["message"], "a \"quoted\"\nsecond line");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["thread"], 2);
        assert_eq!(v["request_id"], "7-1");
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let t = timestamp();
        assert_eq!(t.len(), "2026-11-28T14:08:30.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }
}
