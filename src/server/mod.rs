//! The event loop: listeners, connections, protocol decoding and dispatch. It never touches
//! Python; workers talk back through [`crate::exchange`] and wake it with a [`Notifier`].

mod listener;

pub use listener::{Addr, Listener, ListenerSpec, Proto};

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use protocol::fastcgi::{self, encode};
use protocol::{cgi, scgi, Limits, Protocol, RequestHead};
use slab::Slab;
use std::os::fd::AsRawFd;

use crate::exchange::{Framing, Job, Notifier, Output, RequestIo};
use crate::pool::Queue;
use crate::router::Router;
use listener::Stream;

/// Unparsed input one connection may hold (a whole FastCGI record, or an SCGI header block).
const MAX_PENDING_INPUT: usize = fastcgi::MAX_RECORD_LEN + 64 * 1024;

pub struct ServerConfig {
    pub limits: Limits,
    pub threads: usize,
    pub graceful_timeout: Duration,
    pub recycle: Recycle,
    /// Set by SIGTERM/SIGINT before the loop ran (while the interpreter started).
    pub stop_early: Arc<AtomicBool>,
}

/// When a worker process stops accepting and exits, for the supervisor to start a new one.
#[derive(Default)]
pub struct Recycle {
    pub maximum_requests: Option<u64>,
    pub restart_after: Option<Duration>,
    pub inactivity_timeout: Option<Duration>,
    pub reload_on_rss_bytes: Option<u64>,
    /// Set by another thread (the request watchdog) to recycle now.
    pub now: Arc<AtomicBool>,
}

impl Recycle {
    fn any(&self) -> bool {
        self.maximum_requests.is_some()
            || self.restart_after.is_some()
            || self.inactivity_timeout.is_some()
            || self.reload_on_rss_bytes.is_some()
    }
}

/// Resident memory of this process, from /proc/self/statm.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::sys::page_size())
}

enum Mode {
    /// Waiting for the first byte (a listener that accepts both protocols).
    Detect,
    FastCgi {
        conn: fastcgi::Connection,
        requests: HashMap<u16, Arc<RequestIo>>,
    },
    Scgi {
        dec: scgi::Decoder,
        request: Option<Arc<RequestIo>>,
    },
}

/// A connection's unparsed input. Memory is taken only while bytes are pending: an idle
/// keep-alive connection holds no buffer.
#[derive(Default)]
struct ReadBuf {
    data: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    const INITIAL: usize = 8 * 1024;

    /// Room to read into, growing the buffer (up to the input limit) when it is nearly full.
    fn spare(&mut self) -> &mut [u8] {
        if self.data.len() - self.len < 4096 {
            let size = (self.data.len() * 2).clamp(Self::INITIAL, MAX_PENDING_INPUT);
            if size > self.data.len() {
                self.data.resize(size, 0);
            }
        }
        &mut self.data[self.len..]
    }

    fn filled(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// Drops the first `n` bytes; releases the memory when nothing is left.
    fn consume(&mut self, n: usize) {
        self.data.copy_within(n..self.len, 0);
        self.len -= n;
        if self.len == 0 {
            self.data = Vec::new();
        }
    }
}

struct Conn {
    stream: Stream,
    rbuf: ReadBuf,
    mode: Mode,
    out: Arc<Output>,
    /// Reading stopped because a request's body queue is full.
    paused: bool,
    write_interest: bool,
    /// Close once the output is flushed.
    closing: bool,
}

/// Why a connection ends.
enum Close {
    Done,
    Gone,
    Error(String),
}

pub struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    notifier: Arc<Notifier>,
    dispatch: Dispatch,
    config: ServerConfig,
    fcgi_config: fastcgi::Config,
    signals: signal_hook_mio::v1_0::Signals,
    /// The listeners, behind one exclusive-wakeup epoll (see `sys::ExclusiveAccept`).
    accept_set: Option<crate::sys::ExclusiveAccept>,
    /// An accept failed for want of resources: look again shortly.
    accept_retry: bool,
    draining_since: Option<Instant>,
    started: Instant,
}

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const ACCEPT: Token = Token(usize::MAX - 3);
const CONN_BASE: usize = 1 << 20;

impl Server {
    pub fn new(
        listeners: Vec<Listener>,
        router: Arc<Router>,
        jobs: Arc<Queue>,
        config: ServerConfig,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let fds: Vec<_> = listeners.iter().map(Listener::fd).collect();
        let accept_set = crate::sys::ExclusiveAccept::new(&fds)?;
        poll.registry().register(
            &mut SourceFd(&accept_set.as_raw_fd()),
            ACCEPT,
            Interest::READABLE,
        )?;
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let fcgi_config = fastcgi::Config {
            limits: config.limits,
            multiplex: true,
            max_conns: 4096,
            max_reqs: config.threads as u32,
        };
        let notifier = Arc::new(Notifier::new(waker));
        Ok(Server {
            poll,
            listeners,
            conns: Slab::new(),
            dispatch: Dispatch {
                router,
                jobs,
                notifier: notifier.clone(),
                served: 0,
                last_request: Instant::now(),
            },
            notifier,
            config,
            fcgi_config,
            signals,
            accept_set: Some(accept_set),
            accept_retry: false,
            draining_since: None,
            started: Instant::now(),
        })
    }

    /// Serves until SIGTERM/SIGINT, then stops accepting and waits (up to the graceful
    /// timeout) for in-flight requests to finish.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        if self.config.stop_early.load(Ordering::SeqCst) {
            crate::info!("stop asked for while starting: not accepting");
            self.stop_accepting();
        }
        loop {
            let timeout = match self.draining_since {
                Some(_) => Some(Duration::from_millis(100)),
                None if self.accept_retry => Some(Duration::from_millis(100)),
                None if self.config.recycle.any() => Some(Duration::from_secs(1)),
                None => None,
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    SIGNALS => self.on_signal(),
                    ACCEPT => self.accept_ready(),
                    Token(t) => {
                        let key = t - CONN_BASE;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            // A peer that closed must be read to the end: its EOF may have
                            // arrived with the last data, in the same readiness edge.
                            let to_end = event.is_read_closed() || event.is_error();
                            self.on_readable(key, to_end);
                        }
                        if event.is_writable() {
                            self.flush(key);
                        }
                    }
                }
            }
            for t in self.notifier.take() {
                self.on_notified(t - CONN_BASE);
            }
            if std::mem::take(&mut self.accept_retry) {
                self.accept_ready();
            }
            if self.draining_since.is_none() {
                if let Some(reason) = self.recycle_reason() {
                    crate::info!("recycling this worker: {reason}");
                    self.stop_accepting();
                }
            }
            if let Some(since) = self.draining_since {
                self.close_idle();
                if self.conns.is_empty() {
                    crate::info!("all connections closed; stopping");
                    return Ok(());
                }
                if since.elapsed() >= self.config.graceful_timeout {
                    crate::warn!(
                        "graceful timeout ({:?}) passed with {} connection(s) still busy; stopping",
                        self.config.graceful_timeout,
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn on_signal(&mut self) {
        for sig in self.signals.pending() {
            if self.draining_since.is_some() {
                crate::warn!("second signal {sig}: stopping now");
                std::process::exit(1);
            }
            crate::info!(
                "signal {sig}: no longer accepting; waiting up to {:?} for in-flight requests",
                self.config.graceful_timeout
            );
            self.stop_accepting();
        }
    }

    fn recycle_reason(&self) -> Option<String> {
        let r = &self.config.recycle;
        if r.now.load(Ordering::Relaxed) {
            return Some("a request timed out".into());
        }
        let d = &self.dispatch;
        if r.maximum_requests.is_some_and(|max| d.served >= max) {
            return Some(format!("served {} requests (maximum-requests)", d.served));
        }
        if r.restart_after.is_some_and(|t| self.started.elapsed() >= t) {
            return Some("restart-interval reached".into());
        }
        if r.inactivity_timeout
            .is_some_and(|t| d.last_request.elapsed() >= t)
        {
            return Some("no request within inactivity-timeout".into());
        }
        if let Some(limit) = r.reload_on_rss_bytes {
            if let Some(rss) = rss_bytes().filter(|&rss| rss > limit) {
                return Some(format!(
                    "resident memory {} MiB is over reload-on-rss ({} MiB)",
                    rss >> 20,
                    limit >> 20
                ));
            }
        }
        None
    }

    fn stop_accepting(&mut self) {
        if let Some(set) = self.accept_set.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&set.as_raw_fd()));
        }
        // Closing the sockets here (not only deregistering) matters with worker processes:
        // connections waiting in the shared backlog go to the other workers.
        self.listeners.clear();
        self.draining_since = Some(Instant::now());
    }

    /// While draining: connections with nothing in flight are closed.
    fn close_idle(&mut self) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let busy = match &c.mode {
                    Mode::Detect => false,
                    Mode::FastCgi { conn, .. } => conn.active_count() > 0,
                    Mode::Scgi { request, .. } => request.is_some(),
                };
                !busy && !c.write_interest
            })
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.close(key, Close::Done);
        }
    }

    fn accept_ready(&mut self) {
        let ready = match &self.accept_set {
            Some(set) => set.ready(),
            None => return,
        };
        for i in ready {
            self.accept(i);
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let accepted = match self.listeners[index].accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: log and try again shortly.
                    crate::error!("accept on {}: {e}", self.listeners[index].spec.addr);
                    self.accept_retry = true;
                    return;
                }
            };
            let mode = match self.listeners[index].spec.proto {
                Proto::Auto => Mode::Detect,
                Proto::FastCgi => self.fastcgi_mode(),
                Proto::Scgi => self.scgi_mode(),
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let token = Token(CONN_BASE + key);
            entry.insert(Conn {
                stream: accepted,
                rbuf: ReadBuf::default(),
                mode,
                out: Arc::new(Output::new(token.0, self.notifier.clone())),
                paused: false,
                write_interest: false,
                closing: false,
            });
            // The request is usually there already: read it before the first poll round.
            // Registering afterwards reports whatever arrives in between.
            if let Err(close) = self.read_and_decode(key, false) {
                self.close(key, close);
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if let Err(e) = conn
                .stream
                .register(self.poll.registry(), token, Interest::READABLE)
            {
                crate::error!("register connection: {e}");
                self.close(key, Close::Gone);
                continue;
            }
            self.flush(key);
        }
    }

    fn fastcgi_mode(&self) -> Mode {
        Mode::FastCgi {
            conn: fastcgi::Connection::new(self.fcgi_config.clone()),
            requests: HashMap::new(),
        }
    }

    fn scgi_mode(&self) -> Mode {
        Mode::Scgi {
            dec: scgi::Decoder::new(self.config.limits),
            request: None,
        }
    }

    fn on_readable(&mut self, key: usize, to_end: bool) {
        let result = self.read_and_decode(key, to_end);
        match result {
            Ok(()) => self.flush(key),
            Err(close) => self.close(key, close),
        }
    }

    /// Reads what the socket holds and decodes it. Without `to_end`, a short read ends the
    /// burst (edge-triggered readiness reports the next bytes); with it, reading goes on until
    /// the socket would block or reports its end.
    fn read_and_decode(&mut self, key: usize, to_end: bool) -> Result<(), Close> {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return Ok(());
            };
            if conn.paused || conn.closing {
                return Ok(());
            }
            if conn.rbuf.len >= MAX_PENDING_INPUT {
                return Err(Close::Error("request head too large".into()));
            }
            let spare = conn.rbuf.spare();
            let room = spare.len();
            let n = match conn.stream.read(spare) {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(Close::Gone),
                },
            };
            if n == 0 {
                return Err(Close::Gone);
            }
            conn.rbuf.len += n;
            self.decode(key)?;
            if n < room && !to_end {
                // The socket had no more: edge-triggered readiness reports the next bytes.
                return Ok(());
            }
        }
    }

    /// Decodes everything buffered on a connection and acts on the events.
    fn decode(&mut self, key: usize) -> Result<(), Close> {
        let conn = &mut self.conns[key];
        if let Mode::Detect = conn.mode {
            let Some(&first) = conn.rbuf.filled().first() else {
                return Ok(());
            };
            conn.mode = match protocol::detect(first) {
                Some(Protocol::FastCgi) => Mode::FastCgi {
                    conn: fastcgi::Connection::new(self.fcgi_config.clone()),
                    requests: HashMap::new(),
                },
                Some(Protocol::Scgi) => Mode::Scgi {
                    dec: scgi::Decoder::new(self.config.limits),
                    request: None,
                },
                None => {
                    return Err(Close::Error(format!(
                        "neither FastCGI nor SCGI (first byte 0x{first:02x})"
                    )))
                }
            };
        }
        let token = CONN_BASE + key;
        let Conn {
            rbuf,
            mode,
            out,
            paused,
            closing,
            ..
        } = conn;
        let mut pos = 0;
        let mut reply = Vec::new();
        let result = loop {
            if *paused {
                break Ok(());
            }
            let input = &rbuf.filled()[pos..];
            match mode {
                Mode::Detect => unreachable!("detected above"),
                Mode::FastCgi { conn, requests } => {
                    let d = match conn.decode(input, &mut reply) {
                        Ok(d) => d,
                        Err(e) => break Err(Close::Error(e.to_string())),
                    };
                    if d.consumed == 0 && d.event.is_none() {
                        break Ok(());
                    }
                    pos += d.consumed;
                    match d.event {
                        Some(fastcgi::Event::Request { id, head, .. }) => {
                            let framing = Framing::FastCgi(id);
                            match self.dispatch.start(token, head, out, framing) {
                                Some(io) => {
                                    requests.insert(id, io);
                                }
                                None => {
                                    not_found(framing, &mut reply);
                                    encode::end_request(
                                        id,
                                        0,
                                        fastcgi::ProtocolStatus::RequestComplete,
                                        &mut reply,
                                    );
                                    conn.finish(id);
                                }
                            }
                        }
                        Some(fastcgi::Event::Stdin { id, data }) => {
                            if let Some(io) = requests.get(&id) {
                                *paused |= io.push(data);
                            }
                        }
                        Some(fastcgi::Event::StdinEnd { id }) => {
                            if let Some(io) = requests.get(&id) {
                                io.end();
                            }
                        }
                        Some(fastcgi::Event::Abort { id }) => {
                            if let Some(io) = requests.get(&id) {
                                io.abort();
                            }
                        }
                        Some(fastcgi::Event::Data { .. } | fastcgi::Event::DataEnd { .. })
                        | None => {}
                    }
                }
                Mode::Scgi { dec, request } => {
                    let d = match dec.decode(input) {
                        Ok(d) => d,
                        Err(e) => break Err(Close::Error(e.to_string())),
                    };
                    if d.consumed == 0 && d.event.is_none() {
                        break Ok(());
                    }
                    pos += d.consumed;
                    match d.event {
                        Some(scgi::Event::Request { head }) => {
                            if let Some(io) = self.dispatch.start(token, head, out, Framing::Scgi) {
                                *request = Some(io);
                            } else {
                                out.push_now(|s| {
                                    s.buf.extend_from_slice(&reply);
                                    not_found(Framing::Scgi, &mut s.buf);
                                    s.scgi_done = true;
                                });
                                reply.clear();
                                *closing = true;
                                break Ok(());
                            }
                        }
                        Some(scgi::Event::Body(data)) => {
                            if let Some(io) = request {
                                *paused |= io.push(data);
                            }
                        }
                        Some(scgi::Event::End) => {
                            if let Some(io) = request {
                                io.end();
                            }
                        }
                        None => {}
                    }
                }
            }
        };
        rbuf.consume(pos);
        if !reply.is_empty() {
            out.push_now(|s| s.buf.extend_from_slice(&reply));
        }
        result
    }

    fn on_notified(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.paused {
            let full = match &conn.mode {
                Mode::FastCgi { requests, .. } => requests.values().any(|r| !r.has_room()),
                Mode::Scgi { request, .. } => request.as_ref().is_some_and(|r| !r.has_room()),
                Mode::Detect => false,
            };
            if !full {
                conn.paused = false;
                if let Err(close) = self
                    .decode(key)
                    .and_then(|()| self.read_and_decode(key, true))
                {
                    self.close(key, close);
                    return;
                }
            }
        }
        self.flush(key);
    }

    /// Writes what workers produced; handles finished requests and closes when done.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Conn {
            stream, out, mode, ..
        } = conn;
        let (result, finished, scgi_done, abort, pending) = out.drain_with(|s| {
            let mut result = Ok(());
            let mut written = 0;
            while written < s.buf.len() {
                match stream.write(&s.buf[written..]) {
                    Ok(0) => {
                        result = Err(io::ErrorKind::WriteZero.into());
                        break;
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            result = Err(e);
                        }
                        break;
                    }
                }
            }
            s.buf.drain(..written);
            if s.buf.is_empty() && s.buf.capacity() > 64 * 1024 {
                // A big response is out: an idle keep-alive connection keeps no big buffer.
                s.buf = Vec::new();
            }
            (
                result,
                std::mem::take(&mut s.finished),
                s.scgi_done,
                s.abort,
                !s.buf.is_empty(),
            )
        });
        if let Mode::FastCgi { conn: fc, requests } = mode {
            for id in finished {
                fc.finish(id);
                requests.remove(&id);
            }
        }
        if let Err(e) = result {
            let _ = e;
            self.close(key, Close::Gone);
            return;
        }
        if abort {
            self.close(key, Close::Error("response cut off".into()));
            return;
        }
        let conn = &mut self.conns[key];
        let done = match &conn.mode {
            Mode::FastCgi { conn: fc, .. } => !fc.keep_conn() && fc.active_count() == 0,
            Mode::Scgi { .. } => scgi_done,
            Mode::Detect => false,
        };
        if !pending && (done || conn.closing) {
            self.close(key, Close::Done);
            return;
        }
        if pending != conn.write_interest {
            conn.write_interest = pending;
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(CONN_BASE + key);
            if conn
                .stream
                .reregister(self.poll.registry(), token, interest)
                .is_err()
            {
                self.close(key, Close::Gone);
            }
        }
    }

    fn close(&mut self, key: usize, why: Close) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Close::Error(msg) = &why {
            crate::warn!("closing connection: {msg}");
        }
        // No deregistration: closing the socket (dropping `conn`) removes it from epoll, and
        // the slot's token is not reused before that.
        conn.out.close();
        match conn.mode {
            Mode::FastCgi { requests, .. } => requests.values().for_each(|r| r.abort()),
            Mode::Scgi {
                request: Some(r), ..
            } => r.abort(),
            _ => {}
        }
    }
}

/// What hands requests to the workers, and how many it handed.
struct Dispatch {
    router: Arc<Router>,
    jobs: Arc<Queue>,
    notifier: Arc<Notifier>,
    served: u64,
    last_request: Instant,
}

impl Dispatch {
    /// Routes a request and queues it for a worker; returns its body queue, or `None` when no
    /// mount serves it (the caller answers 404) or the queue is closed.
    fn start(
        &mut self,
        token: usize,
        head: RequestHead,
        out: &Arc<Output>,
        framing: Framing,
    ) -> Option<Arc<RequestIo>> {
        self.served += 1;
        self.last_request = Instant::now();
        let route = self.router.route(&head)?;
        let io = Arc::new(RequestIo::new(token, self.notifier.clone()));
        let job = Job {
            head,
            route,
            io: io.clone(),
            out: out.clone(),
            framing,
            queued_at: Instant::now(),
        };
        self.jobs.push(job).then_some(io)
    }
}

fn not_found(framing: Framing, buf: &mut Vec<u8>) {
    let body = b"Not Found\n";
    let mut head = Vec::new();
    let len = body.len().to_string();
    cgi::encode_response_head(
        b"404 Not Found",
        [
            (&b"Content-Type"[..], &b"text/plain"[..]),
            (b"Content-Length", len.as_bytes()),
        ],
        &mut head,
    );
    head.extend_from_slice(body);
    framing.encode(&head, buf);
}
