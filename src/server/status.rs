//! The status page (`status-path`), php-fpm's `pm.status_path`: the gateway answers it itself,
//! whatever the mounts, from the process group's [`crate::scoreboard`], for clients whose
//! REMOTE_ADDR is in `status-allow`. Formats as php-fpm's: plain text, `?json`, `?xml`,
//! `?html`, `?openmetrics`, each with `?full` for one entry per worker thread.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::SystemTime;

use protocol::cgi;

use super::{Io, Request, Shared};
use crate::config::settings::AllowList;
use crate::scoreboard::{Row, Running, SlotSnap, Snapshot, State};

/// What a worker process needs to answer the status page.
pub struct StatusPage {
    /// Clients (REMOTE_ADDR) allowed to read it.
    pub allow: AllowList,
    /// The process group's name (php-fpm's pool).
    pub pool: String,
    /// This process's row of the group's scoreboard.
    pub row: Row,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Xml,
    Html,
    OpenMetrics,
}

impl StatusPage {
    /// Records the start of a request on thread `thread`; `busy`: the threads of this process
    /// running one now, this one included.
    pub fn begin(&self, thread: usize, head: &protocol::RequestHead, busy: usize) -> Running {
        let uri = head.get(b"REQUEST_URI").unwrap_or_default();
        let len = head.content_length().and_then(Result::ok).unwrap_or(0);
        let method = head.get(b"REQUEST_METHOD").unwrap_or(b"GET");
        self.row.begin(thread, method, uri, len, busy)
    }
}

/// The format and `full` asked for in a query string (`json&full`, `full&xml`...).
pub fn parse_query(query: &[u8]) -> (Format, bool) {
    let mut format = Format::Text;
    let mut full = false;
    for item in query.split(|&b| b == b'&') {
        let key = item.split(|&b| b == b'=').next().unwrap_or_default();
        match key {
            b"json" => format = Format::Json,
            b"xml" => format = Format::Xml,
            b"html" => format = Format::Html,
            b"openmetrics" => format = Format::OpenMetrics,
            b"full" => full = true,
            _ => {}
        }
    }
    (format, full)
}

/// The listen-queue figures of a worker process's listeners, from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections waiting to be accepted now.
    pub queue: u64,
    /// How many may wait: the backlog the kernel applies.
    pub len: u64,
}

impl Shared {
    /// The accept queues of this process group's listening sockets, from the kernel
    /// (sock_diag: the same figures for TCP and Unix sockets).
    pub(super) fn listen_queue(&self) -> ListenQueue {
        let queues = crate::sockdiag::accept_queues().unwrap_or_else(|e| {
            crate::debug!("sock_diag: {e}; the listen queue is reported as 0");
            Default::default()
        });
        let l = super::lock(&self.listeners);
        let mut q = ListenQueue::default();
        for listener in &l.list {
            let Ok(st) = nix::sys::stat::fstat(listener.fd().as_fd()) else {
                continue;
            };
            match queues.get(&st.st_ino) {
                Some(a) => {
                    q.queue += a.waiting;
                    q.len += a.backlog;
                }
                None => q.len += u64::from(listener.spec.backlog),
            }
        }
        q
    }

    /// Answers a request for the status page; true: its response is complete.
    /// Answers a status request. Its own row (`scored`) ends once the page is made, before
    /// the page goes out: a client's next status request never sees this one still running.
    pub(super) fn answer_status(&self, job: &Request, scored: Option<Running>) -> bool {
        let Some(page) = &self.config.status else {
            job.respond(404, "Not Found\n");
            return true;
        };
        let allowed = job
            .head
            .get(b"REMOTE_ADDR")
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_some_and(|ip| page.allow.allows(ip));
        if !allowed {
            if let Some(r) = scored {
                page.row.end(r);
            }
            job.respond(
                403,
                "Forbidden: this address may not read the status page\n",
            );
            return true;
        }
        let query = match job.head.get(b"QUERY_STRING") {
            Some(q) => q.to_vec(),
            None => {
                let uri = job.head.get(b"REQUEST_URI").unwrap_or_default();
                let at = uri.iter().position(|&b| b == b'?');
                at.map_or_else(Vec::new, |i| uri[i + 1..].to_vec())
            }
        };
        let (format, full) = parse_query(&query);
        let snap = page.row.board().snapshot();
        let mut lq = self.listen_queue();
        let max_listen_queue = page.row.board().saw_listen_queue(lq.queue);
        lq.len = lq.len.max(lq.queue);
        let view = View {
            pool: &page.pool,
            snap: &snap,
            listen: lq,
            max_listen_queue,
            now: SystemTime::now(),
        };
        let (body, content_type) = render(&view, format, full);
        if let Some(r) = scored {
            page.row.end(r);
        }
        let mut head = Vec::new();
        let len = body.len().to_string();
        cgi::encode_response_head(
            b"200 OK",
            [
                (&b"Content-Type"[..], content_type.as_bytes()),
                (b"Content-Length", len.as_bytes()),
                (b"Cache-Control", b"no-cache, no-store, must-revalidate"),
                (b"Expires", b"Thu, 01 Jan 1970 00:00:00 GMT"),
            ],
            &mut head,
        );
        let (mut head, mut body) = (&head[..], body.as_bytes());
        loop {
            match job.send(head, body, true, &mut |wait| wait()) {
                Io::Ready(n) => {
                    head = b"";
                    body = &body[n..];
                    if body.is_empty() {
                        return true;
                    }
                }
                Io::Wait => {
                    if job.wait_writable().is_err() {
                        return false;
                    }
                }
                Io::Gone => return false,
            }
        }
    }
}

/// Everything a status page shows.
pub struct View<'a> {
    pub pool: &'a str,
    pub snap: &'a Snapshot,
    pub listen: ListenQueue,
    pub max_listen_queue: u64,
    pub now: SystemTime,
}

/// A top-level field: php-fpm's name, its JSON/XML name, its OpenMetrics name and kind (for
/// numbers), its value.
type Field = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    Value,
);

/// One value of the page, in php-fpm's order.
enum Value {
    Int(u64),
    Str(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Str(s) => s.clone(),
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// php-fpm's date format, `%d/%b/%Y:%H:%M:%S %z`, in UTC.
fn date(secs: u64) -> String {
    let fmt = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| secs.to_string())
}

impl View<'_> {
    fn idle(&self) -> u64 {
        let total = self.total();
        total.saturating_sub(self.active())
    }

    fn active(&self) -> u64 {
        let running = self.threads().filter(|(_, t)| t.state != State::Idle);
        running.count() as u64
    }

    fn total(&self) -> u64 {
        self.threads().count() as u64
    }

    fn threads(&self) -> impl Iterator<Item = (u32, &SlotSnap)> {
        self.snap
            .procs
            .iter()
            .flat_map(|p| p.threads.iter().map(move |t| (p.pid, t)))
    }

    /// The top-level fields: (php-fpm name, JSON/XML name, OpenMetrics name and kind, value).
    fn fields(&self) -> Vec<Field> {
        let s = self.snap;
        let now = unix_secs(self.now);
        vec![
            ("pool", "pool", None, Value::Str(self.pool.to_string())),
            (
                "process manager",
                "process-manager",
                None,
                Value::Str("static".into()),
            ),
            ("start time", "start-time", None, Value::Int(s.start)),
            (
                "start since",
                "start-since",
                Some(("start_since", "gauge")),
                Value::Int(now.saturating_sub(s.start)),
            ),
            (
                "accepted conn",
                "accepted-conn",
                Some(("accepted_connections", "counter")),
                Value::Int(s.accepted),
            ),
            (
                "listen queue",
                "listen-queue",
                Some(("listen_queue", "gauge")),
                Value::Int(self.listen.queue),
            ),
            (
                "max listen queue",
                "max-listen-queue",
                Some(("max_listen_queue", "gauge")),
                Value::Int(self.max_listen_queue),
            ),
            (
                "listen queue len",
                "listen-queue-len",
                Some(("listen_queue_length", "gauge")),
                Value::Int(self.listen.len),
            ),
            (
                "idle processes",
                "idle-processes",
                Some(("idle_processes", "gauge")),
                Value::Int(self.idle()),
            ),
            (
                "active processes",
                "active-processes",
                Some(("active_processes", "gauge")),
                Value::Int(self.active()),
            ),
            (
                "total processes",
                "total-processes",
                Some(("total_processes", "gauge")),
                Value::Int(self.total()),
            ),
            (
                "max active processes",
                "max-active-processes",
                Some(("max_active_processes", "gauge")),
                Value::Int(s.max_active),
            ),
            (
                "max children reached",
                "max-children-reached",
                Some(("max_children_reached", "counter")),
                Value::Int(s.max_children_reached),
            ),
            (
                "slow requests",
                "slow-requests",
                Some(("slow_requests", "counter")),
                Value::Int(s.slow_requests),
            ),
            (
                "connections",
                "connections",
                Some(("connections", "gauge")),
                Value::Int(s.procs.iter().map(|p| p.conns).sum()),
            ),
        ]
    }

    /// One entry per worker thread: (php-fpm name, JSON/XML name, value).
    fn entries(&self) -> Vec<Vec<(&'static str, &'static str, Value)>> {
        let now = unix_secs(self.now);
        let mut out = Vec::new();
        for p in &self.snap.procs {
            for (i, t) in p.threads.iter().enumerate() {
                let start = if t.start_us == 0 {
                    p.started
                } else {
                    t.start_us / 1_000_000
                };
                out.push(vec![
                    ("pid", "pid", Value::Int(u64::from(p.pid))),
                    (
                        "process connections",
                        "process-connections",
                        Value::Int(p.conns),
                    ),
                    ("thread", "thread", Value::Int(i as u64)),
                    ("state", "state", Value::Str(t.state.name().into())),
                    ("start time", "start-time", Value::Int(start)),
                    (
                        "start since",
                        "start-since",
                        Value::Int(now.saturating_sub(start)),
                    ),
                    ("requests", "requests", Value::Int(t.requests)),
                    (
                        "request duration",
                        "request-duration",
                        Value::Int(t.duration(self.now).as_micros() as u64),
                    ),
                    (
                        "request method",
                        "request-method",
                        Value::Str(if t.method.is_empty() {
                            "-".into()
                        } else {
                            t.method.clone()
                        }),
                    ),
                    (
                        "request URI",
                        "request-uri",
                        Value::Str(if t.uri.is_empty() {
                            "-".into()
                        } else {
                            t.uri.clone()
                        }),
                    ),
                    (
                        "content length",
                        "content-length",
                        Value::Int(t.content_length),
                    ),
                    (
                        "last request cpu",
                        "last-request-cpu",
                        Value::Str(t.last_cpu_percent()),
                    ),
                ]);
            }
        }
        out
    }
}

/// The page's body and content type.
pub fn render(v: &View<'_>, format: Format, full: bool) -> (String, &'static str) {
    match format {
        Format::Text => (text(v, full), "text/plain; charset=utf-8"),
        Format::Json => (json(v, full), "application/json"),
        Format::Xml => (xml(v, full), "text/xml"),
        Format::Html => (html(v, full), "text/html; charset=utf-8"),
        Format::OpenMetrics => (
            openmetrics(v, full),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    }
}

fn shown(name: &str, value: &Value) -> String {
    match (name, value) {
        ("start time", Value::Int(secs)) => date(*secs),
        _ => value.text(),
    }
}

fn text(v: &View<'_>, full: bool) -> String {
    let mut out = String::new();
    for (name, _, _, value) in v.fields() {
        let _ = writeln!(out, "{:<21} {}", format!("{name}:"), shown(name, &value));
    }
    if full {
        for entry in v.entries() {
            out.push_str("\n************************\n");
            for (name, _, value) in entry {
                let _ = writeln!(out, "{:<21} {}", format!("{name}:"), shown(name, &value));
            }
        }
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Str(s) => json_str(s),
    }
}

fn json(v: &View<'_>, full: bool) -> String {
    let mut items: Vec<String> = v
        .fields()
        .iter()
        .map(|(_, key, _, value)| format!("{}:{}", json_str(key), json_value(value)))
        .collect();
    if full {
        let procs: Vec<String> = v
            .entries()
            .iter()
            .map(|e| {
                let kv: Vec<String> = e
                    .iter()
                    .map(|(_, key, value)| format!("{}:{}", json_str(key), json_value(value)))
                    .collect();
                format!("{{{}}}", kv.join(","))
            })
            .collect();
        items.push(format!("\"processes\":[{}]", procs.join(",")));
    }
    format!("{{{}}}\n", items.join(","))
}

fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(v: &View<'_>, full: bool) -> String {
    let mut out = String::from("<?xml version=\"1.0\" ?>\n<status>\n");
    for (_, key, _, value) in v.fields() {
        let _ = writeln!(out, "<{key}>{}</{key}>", escape_xml(&value.text()));
    }
    if full {
        out.push_str("<processes>\n");
        for entry in v.entries() {
            out.push_str("<process>");
            for (_, key, value) in entry {
                let _ = write!(out, "<{key}>{}</{key}>", escape_xml(&value.text()));
            }
            out.push_str("</process>\n");
        }
        out.push_str("</processes>\n");
    }
    out.push_str("</status>\n");
    out
}

fn html(v: &View<'_>, full: bool) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><title>wsgi-gateway status</title></head><body>\n\
         <table border=\"1\">\n",
    );
    for (name, _, _, value) in v.fields() {
        let _ = writeln!(
            out,
            "<tr><th>{name}</th><td>{}</td></tr>",
            escape_xml(&shown(name, &value))
        );
    }
    out.push_str("</table>\n");
    if full {
        let entries = v.entries();
        out.push_str("<table border=\"1\">\n<tr>");
        if let Some(first) = entries.first() {
            for (name, _, _) in first {
                let _ = write!(out, "<th>{name}</th>");
            }
        }
        out.push_str("</tr>\n");
        for entry in &entries {
            out.push_str("<tr>");
            for (name, _, value) in entry {
                let _ = write!(out, "<td>{}</td>", escape_xml(&shown(name, value)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// OpenMetrics text exposition: one family per top-level number, named `wsgi_gateway_*` and
/// labelled with the pool; with `full`, per-thread families labelled with pid and thread.
fn openmetrics(v: &View<'_>, full: bool) -> String {
    let pool = label_value(v.pool);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE wsgi_gateway_up gauge\n# HELP wsgi_gateway_up Whether the process group answers.\n\
         wsgi_gateway_up{{pool=\"{pool}\"}} 1"
    );
    let _ = writeln!(
        out,
        "# TYPE wsgi_gateway_start_time_seconds gauge\n\
         # HELP wsgi_gateway_start_time_seconds When the process group started (Unix time).\n\
         wsgi_gateway_start_time_seconds{{pool=\"{pool}\"}} {}",
        v.snap.start
    );
    for (name, _, metric, value) in v.fields() {
        let (Some((metric, kind)), Value::Int(n)) = (metric, value) else {
            continue;
        };
        let family = format!("wsgi_gateway_{metric}");
        let sample = if kind == "counter" {
            format!("{family}_total")
        } else {
            family.clone()
        };
        let _ = writeln!(
            out,
            "# TYPE {family} {kind}\n# HELP {family} php-fpm's \"{name}\".\n\
             {sample}{{pool=\"{pool}\"}} {n}"
        );
    }
    if full {
        let families = [
            (
                "thread_requests",
                "counter",
                "Requests served by the thread.",
            ),
            (
                "thread_running",
                "gauge",
                "Whether the thread is in a request (Reading, Running or Finishing).",
            ),
            (
                "thread_request_duration_microseconds",
                "gauge",
                "The current or last request's duration.",
            ),
        ];
        let family = "wsgi_gateway_process_connections";
        let _ = writeln!(
            out,
            "# TYPE {family} gauge\n# HELP {family} Connections the worker process holds open."
        );
        for p in &v.snap.procs {
            let _ = writeln!(
                out,
                "{family}{{pool=\"{pool}\",pid=\"{}\"}} {}",
                p.pid, p.conns
            );
        }
        for (metric, kind, help) in families {
            let family = format!("wsgi_gateway_{metric}");
            let _ = writeln!(out, "# TYPE {family} {kind}\n# HELP {family} {help}");
            for p in &v.snap.procs {
                for (i, t) in p.threads.iter().enumerate() {
                    let n = match metric {
                        "thread_requests" => t.requests,
                        "thread_running" => u64::from(t.state != State::Idle),
                        _ => t.duration(v.now).as_micros() as u64,
                    };
                    let sample = if kind == "counter" {
                        format!("{family}_total")
                    } else {
                        family.clone()
                    };
                    let _ = writeln!(
                        out,
                        "{sample}{{pool=\"{pool}\",pid=\"{}\",thread=\"{i}\"}} {n}",
                        p.pid
                    );
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::ProcSnap;

    fn view(snap: &Snapshot) -> View<'_> {
        View {
            pool: "main",
            snap,
            listen: ListenQueue {
                queue: 2,
                len: 1024,
            },
            max_listen_queue: 5,
            now: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_100),
        }
    }

    fn snap() -> Snapshot {
        let running = SlotSnap {
            state: State::Running,
            requests: 3,
            start_us: 1_700_000_099_000_000,
            method: "GET".into(),
            uri: "/a?b=\"c\"".into(),
            ..SlotSnap::default()
        };
        let finished = SlotSnap {
            requests: 7,
            last_us: 2_000,
            last_cpu_us: 1_500,
            ..SlotSnap::default()
        };
        Snapshot {
            start: 1_700_000_000,
            accepted: 10,
            max_active: 2,
            max_children_reached: 0,
            slow_requests: 1,
            procs: vec![ProcSnap {
                pid: 99,
                started: 1_700_000_000,
                conns: 3,
                threads: vec![running, finished],
            }],
        }
    }

    #[test]
    fn query_strings_choose_the_format() {
        assert_eq!(parse_query(b""), (Format::Text, false));
        assert_eq!(parse_query(b"json&full"), (Format::Json, true));
        assert_eq!(
            parse_query(b"full=1&openmetrics"),
            (Format::OpenMetrics, true)
        );
        assert_eq!(parse_query(b"xml"), (Format::Xml, false));
        assert_eq!(parse_query(b"html"), (Format::Html, false));
    }

    #[test]
    fn text_names_fields_as_php_fpm_does() {
        let s = snap();
        let (body, _) = render(&view(&s), Format::Text, true);
        assert!(body.starts_with("pool:                 main\n"), "{body}");
        assert!(
            body.contains("start time:           14/Nov/2023:22:13:20 +0000\n"),
            "{body}"
        );
        assert!(body.contains("start since:          100\n"), "{body}");
        assert!(body.contains("accepted conn:        10\n"));
        assert!(body.contains(
            "idle processes:       1\nactive processes:     1\ntotal processes:      2\n"
        ));
        assert!(body.contains("request URI:          /a?b=\"c\"\n"));
        assert!(body.contains("request duration:     1000000\n"), "{body}");
        // The idle thread's last request: 1.5 ms of CPU in 2 ms.
        assert!(body.contains("last request cpu:     75.00\n"), "{body}");
        assert!(body.contains("last request cpu:     0.00\n"), "{body}");
        assert!(body.contains("connections:          3\n"), "{body}");
        assert!(body.contains("process connections:  3\n"), "{body}");
    }

    #[test]
    fn json_and_openmetrics_are_well_formed() {
        let s = snap();
        let (body, _) = render(&view(&s), Format::Json, true);
        assert!(body.contains("\"accepted-conn\":10"), "{body}");
        assert!(
            body.contains("\"request-uri\":\"/a?b=\\\"c\\\"\""),
            "{body}"
        );
        let (body, _) = render(&view(&s), Format::OpenMetrics, false);
        assert!(body.contains("wsgi_gateway_accepted_connections_total{pool=\"main\"} 10\n"));
        assert!(body.contains("wsgi_gateway_connections{pool=\"main\"} 3\n"));
        assert!(body.ends_with("# EOF\n"));
        let (body, _) = render(&view(&s), Format::OpenMetrics, true);
        assert!(
            body.contains("wsgi_gateway_process_connections{pool=\"main\",pid=\"99\"} 3\n"),
            "{body}"
        );
    }
}
