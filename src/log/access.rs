//! The access log: one line per request, in the combined format, as a JSON object, or by a
//! template of named fields (like nginx's `log_format`).
//!
//! The thread that served a request formats its line and appends it to a buffer shared by
//! the worker process (a short critical section, no system call); a writer thread writes the
//! buffer out in batches (every [`FLUSH`], or sooner once [`EARLY`] bytes wait), so no
//! request thread ever waits on the disk. The buffer is bounded ([`CAP`]): when the disk
//! falls that far behind, lines are dropped and counted, and the count is logged.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::RequestHead;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// How long lines wait in the buffer at most before they are written.
pub const FLUSH: Duration = Duration::from_millis(100);
/// Bytes waiting that wake the writer before [`FLUSH`].
pub const EARLY: usize = 256 * 1024;
/// Bytes the buffer holds at most; lines beyond are dropped (and counted).
pub const CAP: usize = 4 << 20;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// `-`: the standard output.
    Stdout,
    File(PathBuf),
}

/// The access log of a process group, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dest: Dest,
    pub format: Format,
}

/// How a line is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// nginx's and Apache's `combined`:
    /// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"`.
    Combined,
    /// One JSON object per line: [`JSON_FIELDS`], the referer and the user agent.
    Json,
    /// Text with `$name` or `${name}` fields.
    Template(Vec<Piece>),
}

/// A part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field(Field),
    /// `$http_NAME`: the CGI param `HTTP_NAME` (a request header).
    Header(Vec<u8>),
}

/// A field of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    TimeLocal,
    TimeIso8601,
    Msec,
    RemoteAddr,
    RemoteUser,
    Request,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Status,
    BodyBytesSent,
    BodyBytesReceived,
    RequestTime,
    DurationUs,
    QueuedUs,
    Mount,
    AppGroup,
    ProcessGroup,
    Pid,
    RequestId,
}

/// Every field a template may name, with its meaning (README's table is drawn from it).
pub const FIELDS: &[(&str, Field, &str)] = &[
    ("time_local", Field::TimeLocal, "end of the request, `28/Nov/2026:14:08:30 +0000` (UTC)"),
    ("time_iso8601", Field::TimeIso8601, "the same, `2026-11-28T14:08:30.123Z`"),
    ("msec", Field::Msec, "the same, Unix seconds with milliseconds"),
    ("remote_addr", Field::RemoteAddr, "REMOTE_ADDR"),
    ("remote_user", Field::RemoteUser, "REMOTE_USER"),
    ("request", Field::Request, "`METHOD URI PROTOCOL`"),
    ("request_method", Field::RequestMethod, "REQUEST_METHOD"),
    ("request_uri", Field::RequestUri, "REQUEST_URI (path and query)"),
    ("server_protocol", Field::ServerProtocol, "SERVER_PROTOCOL"),
    ("status", Field::Status, "the response's status (499: the client went away before any response)"),
    ("body_bytes_sent", Field::BodyBytesSent, "response body bytes sent"),
    ("body_bytes_received", Field::BodyBytesReceived, "request body bytes received"),
    ("request_time", Field::RequestTime, "seconds from the complete request head to the response's end, with milliseconds"),
    ("duration_us", Field::DurationUs, "the same in microseconds"),
    ("queued_us", Field::QueuedUs, "microseconds the request waited for a thread"),
    ("mount", Field::Mount, "the mount prefix that served it (`-`: none)"),
    ("app_group", Field::AppGroup, "its application group: `%{GLOBAL}`, `%{RESOURCE}` (a sub-interpreter of the mount's own) or a name"),
    ("process_group", Field::ProcessGroup, "the process group"),
    ("pid", Field::Pid, "the worker process"),
    ("request_id", Field::RequestId, "the request's id, as on the log lines about it: the REQUEST_ID param when the web server sends one, else PID-N"),
];

/// The fields of a JSON line, by their keys (`time` is `time_iso8601`); the referer and the
/// user agent follow.
pub const JSON_FIELDS: &[(&str, Field)] = &[
    ("time", Field::TimeIso8601),
    ("remote_addr", Field::RemoteAddr),
    ("remote_user", Field::RemoteUser),
    ("request_method", Field::RequestMethod),
    ("request_uri", Field::RequestUri),
    ("server_protocol", Field::ServerProtocol),
    ("status", Field::Status),
    ("body_bytes_sent", Field::BodyBytesSent),
    ("body_bytes_received", Field::BodyBytesReceived),
    ("duration_us", Field::DurationUs),
    ("queued_us", Field::QueuedUs),
    ("mount", Field::Mount),
    ("app_group", Field::AppGroup),
    ("process_group", Field::ProcessGroup),
    ("pid", Field::Pid),
    ("request_id", Field::RequestId),
];

impl Format {
    /// `combined`, `json`, or a template with `$fields`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "combined" => Ok(Format::Combined),
            "json" => Ok(Format::Json),
            t if t.contains('$') => parse_template(t).map(Format::Template),
            _ => Err(format!(
                "{s:?} is not combined, json or a template with $fields (e.g. \
                 '$remote_addr $status $duration_us')"
            )),
        }
    }
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = match rest.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => return Err(format!("unclosed ${{ in {t:?}")),
            },
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        let piece = if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
            Piece::Header(format!("HTTP_{}", header.to_ascii_uppercase()).into_bytes())
        } else if let Some((_, f, _)) = FIELDS.iter().find(|(n, _, _)| *n == name) {
            Piece::Field(*f)
        } else {
            let known: Vec<&str> = FIELDS.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "unknown field ${name} in {t:?}; known: ${}, and $http_NAME for a request \
                 header",
                known.join(", $")
            ));
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
        rest = after;
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// One request, as the server saw it.
pub struct Entry<'a> {
    pub head: &'a RequestHead,
    /// The mount prefix that served it (`/` for the root), empty when none did.
    pub mount: &'a str,
    /// Its application group's name, empty when no mount served it.
    pub app_group: &'a str,
    /// The response's status; 0 when none went out.
    pub status: u16,
    pub body_bytes_sent: u64,
    pub body_bytes_received: u64,
    /// From the complete request head to the response's end.
    pub duration: Duration,
    /// Waiting for a thread.
    pub queued: Duration,
    /// The request's number in its worker process (for its id).
    pub seq: u64,
}

/// The params a line uses, found in one pass over the head (the request id as
/// [`super::request_id`] makes it).
#[derive(Default)]
struct Params<'a> {
    remote_addr: &'a [u8],
    remote_user: &'a [u8],
    method: &'a [u8],
    uri: &'a [u8],
    protocol: &'a [u8],
    request_id: &'a [u8],
    referer: &'a [u8],
    user_agent: &'a [u8],
}

impl<'a> Params<'a> {
    fn of(head: &'a RequestHead) -> Params<'a> {
        let mut p = Params::default();
        for (name, value) in head.iter() {
            let slot = match name {
                b"REMOTE_ADDR" => &mut p.remote_addr,
                b"REMOTE_USER" => &mut p.remote_user,
                b"REQUEST_METHOD" => &mut p.method,
                b"REQUEST_URI" => &mut p.uri,
                b"SERVER_PROTOCOL" => &mut p.protocol,
                b"REQUEST_ID" => &mut p.request_id,
                b"HTTP_REFERER" => &mut p.referer,
                b"HTTP_USER_AGENT" => &mut p.user_agent,
                _ => continue,
            };
            *slot = value;
        }
        p
    }
}

/// The second the clock strings of this thread were made for, and the strings.
struct Clock {
    sec: u64,
    local: String,
    iso: String,
}

const TIME_LOCAL: &[BorrowedFormatItem<'_>] =
    format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
const TIME_ISO: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

thread_local! {
    /// The line being made, and the time strings of the current second (made once a second
    /// per thread).
    static SCRATCH: RefCell<(Vec<u8>, Clock)> = const {
        RefCell::new((Vec::new(), Clock { sec: u64::MAX, local: String::new(), iso: String::new() }))
    };
}

impl Clock {
    fn at(&mut self, sec: u64) {
        if self.sec == sec {
            return;
        }
        let t = time::OffsetDateTime::from_unix_timestamp(sec as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        self.local = t.format(TIME_LOCAL).unwrap_or_default();
        self.iso = t.format(TIME_ISO).unwrap_or_default();
        self.sec = sec;
    }
}

/// The buffer shared by the request threads and the writer.
struct Buf {
    data: Vec<u8>,
    dropped: u64,
    reopen: bool,
    stop: bool,
}

struct Shared {
    buf: Mutex<Buf>,
    cond: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker process's access log.
pub struct AccessLog {
    format: Format,
    process_group: String,
    pid: u32,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Where the writer writes.
enum Out {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Out {
    fn open(dest: &Dest) -> io::Result<Out> {
        Ok(match dest {
            Dest::Stdout => Out::Stdout,
            Dest::File(path) => Out::File {
                file: open_append(path)?,
                path: path.clone(),
            },
        })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Out::Stdout => io::stdout().lock().write_all(data),
            Out::File { file, .. } => file.write_all(data),
        }
    }

    fn reopen(&mut self) {
        if let Out::File { path, file } = self {
            match open_append(path) {
                Ok(f) => {
                    *file = f;
                    crate::info!("SIGUSR1: reopened the access log {}", path.display());
                }
                Err(e) => crate::error!(
                    "SIGUSR1: cannot reopen the access log {}: {e}; still writing to the old file",
                    path.display()
                ),
            }
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
}

impl AccessLog {
    /// Opens the log (as the user the worker process runs as at that moment) and starts its
    /// writer thread.
    pub fn open(config: &Config, process_group: &str) -> io::Result<AccessLog> {
        let out = Out::open(&config.dest)?;
        let shared = Arc::new(Shared {
            buf: Mutex::new(Buf {
                data: Vec::new(),
                dropped: 0,
                reopen: false,
                stop: false,
            }),
            cond: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_out(&shared, out))?
        };
        Ok(AccessLog {
            format: config.format.clone(),
            process_group: process_group.to_string(),
            pid: std::process::id(),
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Logs one request: formats its line and hands it to the writer.
    pub fn log(&self, e: &Entry<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SCRATCH.with(|s| {
            let (line, clock) = &mut *s.borrow_mut();
            line.clear();
            clock.at(now.as_secs());
            self.format_line(line, clock, now, e);
            self.push(line);
        });
    }

    fn push(&self, line: &[u8]) {
        let mut b = lock(&self.shared.buf);
        if b.data.len() + line.len() > CAP {
            b.dropped += 1;
            return;
        }
        let before = b.data.len();
        b.data.extend_from_slice(line);
        let after = b.data.len();
        drop(b);
        // The writer sleeps with nothing to write, or waits to gather a batch: wake it when
        // the first line arrives, or when the batch is big enough (a notification costs a
        // system call: not for every line).
        if before == 0 || (before < EARLY && after >= EARLY) {
            self.shared.cond.notify_one();
        }
    }

    /// SIGUSR1: the writer opens the file again before its next write.
    pub fn reopen(&self) {
        lock(&self.shared.buf).reopen = true;
        self.shared.cond.notify_one();
    }

    /// Writes out what is buffered and stops the writer.
    pub fn close(&self) {
        lock(&self.shared.buf).stop = true;
        self.shared.cond.notify_one();
        if let Some(w) = lock(&self.writer).take() {
            let _ = w.join();
        }
    }

    fn format_line(&self, out: &mut Vec<u8>, clock: &Clock, now: Duration, e: &Entry<'_>) {
        let p = Params::of(e.head);
        let ctx = Ctx {
            log: self,
            e,
            p: &p,
            clock,
            now,
        };
        match &self.format {
            Format::Combined => {
                for (i, f) in [Field::RemoteAddr, Field::RemoteUser]
                    .into_iter()
                    .enumerate()
                {
                    ctx.text(out, f);
                    out.extend_from_slice(if i == 0 { b" - " } else { b" [" });
                }
                ctx.text(out, Field::TimeLocal);
                out.extend_from_slice(b"] \"");
                ctx.text(out, Field::Request);
                out.extend_from_slice(b"\" ");
                ctx.text(out, Field::Status);
                out.push(b' ');
                ctx.text(out, Field::BodyBytesSent);
                out.extend_from_slice(b" \"");
                escaped(out, or_dash(p.referer));
                out.extend_from_slice(b"\" \"");
                escaped(out, or_dash(p.user_agent));
                out.extend_from_slice(b"\"\n");
            }
            Format::Json => {
                out.push(b'{');
                for (i, (name, f)) in JSON_FIELDS.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                    ctx.json(out, *f);
                }
                for (name, v) in [
                    ("http_referer", p.referer),
                    ("http_user_agent", p.user_agent),
                ] {
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                    json_str(out, v);
                }
                out.extend_from_slice(b"}\n");
            }
            Format::Template(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                        Piece::Field(f) => ctx.text(out, *f),
                        Piece::Header(name) => {
                            let v = e.head.get(name).unwrap_or_default();
                            if v.is_empty() {
                                out.push(b'-');
                            } else {
                                escaped(out, v);
                            }
                        }
                    }
                }
                out.push(b'\n');
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: waits for lines, gathers them for up to [`FLUSH`], writes them in one
/// go; reopens the file when asked (after writing what came before); reports dropped lines
/// and failed writes (once per run of failures).
fn write_out(shared: &Shared, mut out: Out) {
    let mut batch = Vec::new();
    let mut failing = false;
    loop {
        let (dropped, reopen, stop) = {
            let mut b = lock(&shared.buf);
            while b.data.is_empty() && !b.reopen && !b.stop {
                b = shared.cond.wait(b).unwrap_or_else(|e| e.into_inner());
            }
            if !b.stop && !b.reopen && b.data.len() < EARLY {
                b = shared
                    .cond
                    .wait_timeout(b, FLUSH)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut b.data, &mut batch);
            let dropped = std::mem::take(&mut b.dropped);
            (dropped, std::mem::take(&mut b.reopen), b.stop)
        };
        // What was logged before the reopen goes to the old file.
        if !batch.is_empty() {
            match out.write_all(&batch) {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    crate::error!("writing the access log: {e}; its lines are lost until it works");
                }
                Err(_) => {}
            }
            batch.clear();
            if batch.capacity() > 2 * EARLY {
                batch = Vec::new();
            }
        }
        if reopen {
            out.reopen();
        }
        if dropped > 0 {
            crate::warn!(
                "access log: {dropped} line(s) dropped: {CAP} bytes were waiting for the disk"
            );
        }
        if stop {
            let b = lock(&shared.buf);
            if b.data.is_empty() {
                return;
            }
        }
    }
}

/// What a field is made from.
struct Ctx<'a> {
    log: &'a AccessLog,
    e: &'a Entry<'a>,
    p: &'a Params<'a>,
    clock: &'a Clock,
    now: Duration,
}

/// A field's value: bytes from the request, or a number.
enum Val<'a> {
    Bytes(&'a [u8]),
    Num(u64),
    /// Something to format.
    Made,
}

impl Ctx<'_> {
    fn value(&self, f: Field) -> Val<'_> {
        let e = self.e;
        match f {
            Field::RemoteAddr => Val::Bytes(self.p.remote_addr),
            Field::RemoteUser => Val::Bytes(self.p.remote_user),
            Field::RequestMethod => Val::Bytes(self.p.method),
            Field::RequestUri => Val::Bytes(self.p.uri),
            Field::ServerProtocol => Val::Bytes(self.p.protocol),
            Field::Mount => Val::Bytes(e.mount.as_bytes()),
            Field::AppGroup => Val::Bytes(e.app_group.as_bytes()),
            Field::ProcessGroup => Val::Bytes(self.log.process_group.as_bytes()),
            Field::Status => Val::Num(u64::from(if e.status == 0 { 499 } else { e.status })),
            Field::BodyBytesSent => Val::Num(e.body_bytes_sent),
            Field::BodyBytesReceived => Val::Num(e.body_bytes_received),
            Field::DurationUs => Val::Num(e.duration.as_micros() as u64),
            Field::QueuedUs => Val::Num(e.queued.as_micros() as u64),
            Field::Pid => Val::Num(u64::from(self.log.pid)),
            Field::RequestId if !self.p.request_id.is_empty() => Val::Bytes(self.p.request_id),
            Field::TimeLocal => Val::Bytes(self.clock.local.as_bytes()),
            Field::RequestId
            | Field::TimeIso8601
            | Field::Msec
            | Field::Request
            | Field::RequestTime => Val::Made,
        }
    }

    /// Writes what [`Ctx::value`] leaves to be made.
    fn make(&self, out: &mut Vec<u8>, f: Field) {
        let mut n = itoa::Buffer::new();
        match f {
            Field::RequestId => {
                out.extend_from_slice(n.format(self.log.pid).as_bytes());
                out.push(b'-');
                out.extend_from_slice(n.format(self.e.seq).as_bytes());
            }
            Field::TimeIso8601 => {
                out.extend_from_slice(self.clock.iso.as_bytes());
                millis(out, self.now.subsec_millis());
                out.push(b'Z');
            }
            Field::Msec => {
                out.extend_from_slice(n.format(self.now.as_secs()).as_bytes());
                millis(out, self.now.subsec_millis());
            }
            Field::RequestTime => {
                out.extend_from_slice(n.format(self.e.duration.as_secs()).as_bytes());
                millis(out, self.e.duration.subsec_millis());
            }
            Field::Request => {
                escaped(out, or_dash(self.p.method));
                out.push(b' ');
                escaped(out, or_dash(self.p.uri));
                out.push(b' ');
                escaped(out, or_dash(self.p.protocol));
            }
            _ => {}
        }
    }

    /// A field as text: escaped like nginx (`"`, `\` and bytes outside printable ASCII as
    /// `\xHH`), `-` when empty.
    fn text(&self, out: &mut Vec<u8>, f: Field) {
        match self.value(f) {
            Val::Bytes(b) => escaped(out, or_dash(b)),
            Val::Num(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            Val::Made => self.make(out, f),
        }
    }

    /// A field as a JSON value: a number, a string, or null when empty.
    fn json(&self, out: &mut Vec<u8>, f: Field) {
        match self.value(f) {
            Val::Bytes(b) => json_str(out, b),
            Val::Num(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            Val::Made => {
                let mut s = Vec::with_capacity(32);
                self.make(&mut s, f);
                json_str(out, &s);
            }
        }
    }
}

fn or_dash(b: &[u8]) -> &[u8] {
    if b.is_empty() {
        b"-"
    } else {
        b
    }
}

/// `.mmm`
fn millis(out: &mut Vec<u8>, ms: u32) {
    out.push(b'.');
    out.push(b'0' + (ms / 100) as u8);
    out.push(b'0' + (ms / 10 % 10) as u8);
    out.push(b'0' + (ms % 10) as u8);
}

fn escaped(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            out.extend_from_slice(&[b'\\', b'x', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        } else {
            out.push(c);
        }
    }
}

/// A JSON string of `b` (bytes that are not UTF-8 become U+FFFD), `null` when empty.
fn json_str(out: &mut Vec<u8>, b: &[u8]) {
    if b.is_empty() {
        out.extend_from_slice(b"null");
        return;
    }
    let s = String::from_utf8_lossy(b);
    let _ = serde_json::to_writer(&mut *out, &*s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> RequestHead {
        let mut h = RequestHead::new();
        for (n, v) in pairs {
            h.push(n.as_bytes(), v.as_bytes());
        }
        h
    }

    fn line(format: &str, e: &Entry<'_>) -> String {
        let log = AccessLog {
            format: Format::parse(format).unwrap(),
            process_group: "main".into(),
            pid: 42,
            shared: Arc::new(Shared {
                buf: Mutex::new(Buf {
                    data: Vec::new(),
                    dropped: 0,
                    reopen: false,
                    stop: false,
                }),
                cond: Condvar::new(),
            }),
            writer: Mutex::new(None),
        };
        let mut clock = Clock {
            sec: u64::MAX,
            local: String::new(),
            iso: String::new(),
        };
        let now = Duration::from_millis(1_795_478_400_123);
        clock.at(now.as_secs());
        let mut out = Vec::new();
        log.format_line(&mut out, &clock, now, e);
        String::from_utf8(out).unwrap()
    }

    fn entry(h: &RequestHead) -> Entry<'_> {
        Entry {
            head: h,
            mount: "/app",
            app_group: "%{GLOBAL}",
            status: 200,
            body_bytes_sent: 13,
            body_bytes_received: 5,
            duration: Duration::from_micros(1_234_567),
            queued: Duration::from_micros(89),
            seq: 7,
        }
    }

    #[test]
    fn combined() {
        let h = head(&[
            ("REMOTE_ADDR", "10.0.0.1"),
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/app/x?q=\"1\""),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("HTTP_USER_AGENT", "curl/8"),
        ]);
        assert_eq!(
            line("combined", &entry(&h)),
            "10.0.0.1 - - [24/Nov/2026:00:00:00 +0000] \"POST /app/x?q=\\x221\\x22 HTTP/1.1\" \
             200 13 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn json_has_every_field() {
        let h = head(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/é")]);
        let mut e = entry(&h);
        e.status = 0;
        let v: serde_json::Value = serde_json::from_str(&line("json", &e)).unwrap();
        assert_eq!(v["time"], "2026-11-24T00:00:00.123Z");
        assert_eq!(v["request_uri"], "/é");
        assert_eq!(v["status"], 499);
        assert_eq!(v["duration_us"], 1_234_567);
        assert_eq!(v["queued_us"], 89);
        assert_eq!(v["request_id"], "42-7");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["remote_addr"], serde_json::Value::Null);
        for (name, _) in JSON_FIELDS {
            assert!(v.get(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn templates() {
        let h = head(&[("HTTP_X_FORWARDED_FOR", "1.2.3.4"), ("REQUEST_ID", "abc")]);
        assert_eq!(
            line(
                "$status ${duration_us}us $http_x_forwarded_for $http_x_none $request_id $msec \
                 $request_time",
                &entry(&h)
            ),
            "200 1234567us 1.2.3.4 - abc 1795478400.123 1.234\n"
        );
        assert!(Format::parse("$nope")
            .unwrap_err()
            .contains("unknown field $nope"));
        assert!(Format::parse("${status").is_err());
        assert!(Format::parse("common").is_err());
    }

    #[test]
    fn lines_are_dropped_and_counted_when_full() {
        let log = AccessLog {
            format: Format::Combined,
            process_group: "main".into(),
            pid: 1,
            shared: Arc::new(Shared {
                buf: Mutex::new(Buf {
                    data: Vec::new(),
                    dropped: 0,
                    reopen: false,
                    stop: false,
                }),
                cond: Condvar::new(),
            }),
            writer: Mutex::new(None),
        };
        let line = vec![b'x'; CAP / 2 + 1];
        log.push(&line);
        log.push(&line);
        let b = lock(&log.shared.buf);
        assert_eq!((b.data.len(), b.dropped), (line.len(), 1));
    }
}
