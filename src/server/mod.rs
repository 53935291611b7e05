//! The server of one worker process. Its threads share one epoll: an idle thread waits in it,
//! and the thread that reads a complete request runs it, writes its response and goes back
//! to waiting — a request crosses no thread on its way. A connection is driven by whichever
//! thread holds its lock ([`conn`]); its protocol state is one [`session::Session`], the only
//! place responses are framed. A housekeeper thread handles the signals and the timers, and
//! does the I/O when every thread is busy for a while (so that slow or stalled peers, a
//! queue-timeout or a lingering close are served on time).
//!
//! Only idle threads wait on the listening sockets, which are registered `EPOLLEXCLUSIVE`:
//! a worker process whose threads are all busy takes no new connection, and the kernel hands
//! it to another worker process.

mod conn;
mod housekeeper;
mod listener;
pub mod session;
mod status;

pub use conn::{BodySink, Io, Outcome, WaitError};
use listener::Stream;
pub use listener::{inherited, Addr, Listener, ListenerSpec, Proto};
pub use status::StatusPage;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use protocol::{fastcgi, Protocol, RequestHead};
use slab::Slab;

use crate::log::access::{AccessLog, Entry};
use crate::log::RequestFields;
use crate::router::{Route, Router};
use conn::Conn;
use session::Session;

/// What a connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    None,
    Read,
    Write,
    ReadWrite,
}

impl Interest {
    pub fn from_flags(read: bool, write: bool) -> Interest {
        match (read, write) {
            (false, false) => Interest::None,
            (true, false) => Interest::Read,
            (false, true) => Interest::Write,
            (true, true) => Interest::ReadWrite,
        }
    }

    pub fn read(self) -> bool {
        matches!(self, Interest::Read | Interest::ReadWrite)
    }

    pub fn write(self) -> bool {
        matches!(self, Interest::Write | Interest::ReadWrite)
    }

    /// Whether an event says the peer shut down its side, or the connection failed: the end
    /// of its input lies behind whatever is left to read.
    fn peer_ended(flags: EpollFlags) -> bool {
        flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
    }

    fn of_event(flags: EpollFlags) -> Interest {
        let failed = flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
        Interest::from_flags(
            failed || flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP),
            failed || flags.contains(EpollFlags::EPOLLOUT),
        )
    }
}

/// Whether (and how) the worker process drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    No,
    /// A replacement serves: a kept connection closes after its next response (or once it
    /// stayed idle a while).
    Soft,
    /// The gateway stops: idle kept connections close at once.
    Hard,
}

/// The time limits on the wire.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A connection's request head must be complete this long after it began.
    pub header: Duration,
    /// Reading a body (or writing a response) may make no progress this long.
    pub body: Duration,
    /// A kept connection may be idle this long between requests.
    pub idle: Duration,
    /// After its response, a connection's remaining input is read this long at most.
    pub linger: Duration,
    /// A request may wait this long for a free thread (then 503).
    pub queue: Option<Duration>,
    /// In-flight requests get this long to finish when the process stops.
    pub graceful: Duration,
}

/// When a worker process stops accepting and exits, for the supervisor to start a new one.
#[derive(Default)]
pub struct Recycle {
    pub maximum_requests: Option<u64>,
    pub restart_after: Option<Duration>,
    pub inactivity_timeout: Option<Duration>,
    pub reload_on_rss_bytes: Option<u64>,
    pub request_timeout: Option<Duration>,
}

/// Limits on a running request that leave its worker process alive.
#[derive(Default, Clone, Copy)]
pub struct Watch {
    /// Log the stack of a request still running after this long, once.
    pub slowlog: Option<Duration>,
    /// Raise an exception in a request still running after this long.
    pub interrupt: Option<Duration>,
}

pub struct ServerConfig {
    pub limits: protocol::Limits,
    pub threads: usize,
    pub timeouts: Timeouts,
    /// Body bytes collected before a request takes a thread.
    pub buffer_body: usize,
    /// Body bytes the process holds at most before it stops collecting bodies.
    pub buffer_body_total: usize,
    /// Larger bodies are refused with 413 before the app runs.
    pub max_body_bytes: Option<u64>,
    /// Connections one worker process holds at most.
    pub max_connections: usize,
    /// Watch the connection while its request runs, and cancel the request when it closes.
    pub cancel_on_disconnect: bool,
    /// Hand kept connections to the other processes of the group rather than close them
    /// ([`Shared::hand_over_waiting`]).
    pub hand_over_kept: bool,
    pub watch: Watch,
    pub recycle: Recycle,
    /// Other worker processes share the listeners: while every thread is stuck, this one
    /// stops accepting so that they take the new connections.
    pub shared_listeners: bool,
    /// This process's row of its group's scoreboard: it publishes its connection count
    /// there, and leaves new connections to a process holding fewer (see
    /// [`Shared::rebalance`]).
    pub row: Option<crate::scoreboard::Row>,
    /// Set by SIGTERM/SIGINT/SIGHUP before the server ran (while the interpreter started).
    pub stop_early: Arc<AtomicBool>,
    /// Where to tell the supervisor that this worker process recycles (so that it starts
    /// the replacement at once, while this one finishes its requests).
    pub supervisor: Option<std::os::unix::net::UnixStream>,
    /// Set by SIGUSR1 (also before the server ran): the log files are to be opened again.
    pub reopen_logs: Arc<AtomicBool>,
    /// The access log, when there is one.
    pub access_log: Option<Arc<AccessLog>>,
    /// The status page (status-path) and this process's row of the scoreboard.
    pub status: Option<StatusPage>,
}

/// A request on its way through a thread: its head and route, and its I/O on the
/// connection it came on.
pub struct Request {
    server: Arc<Shared>,
    conn: Arc<Conn>,
    /// The request's id on its connection.
    id: u64,
    pub head: RequestHead,
    pub route: Route,
    /// When its head was complete.
    pub received: Instant,
    /// When it was handed over to run (it may wait for a thread after that).
    pub ready: Instant,
    /// Its number in this worker process.
    pub seq: u64,
    /// Its connection is kept for more requests (FastCGI keep-conn).
    kept: bool,
    /// Where its app runs, for the housekeeper to interrupt it.
    pub python: InPython,
}

/// Why a running request is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// It ran past interrupt-timeout.
    Timeout = 1,
    /// Its client went away (cancel-on-disconnect).
    Cancelled = 2,
}

/// The Python thread running a request's app (set and cleared holding the GIL of its
/// interpreter, so that an interrupt sent under that GIL reaches this request and no other).
#[derive(Default)]
pub struct InPython {
    /// `threading.get_ident()` of the thread while the app runs; 0 otherwise.
    pub ident: AtomicU64,
    /// Which of the runner's interpreters runs it.
    pub interp: AtomicU64,
    /// The interrupt sent (0: none).
    pub interrupted: std::sync::atomic::AtomicU8,
    /// Its stack was logged by the slow log.
    pub slow_logged: AtomicBool,
    /// Its outcome is known (`Host::settle`): no interrupt any more.
    pub settled: AtomicBool,
}

impl InPython {
    pub fn interrupted(&self) -> Option<Interrupt> {
        match self.interrupted.load(Ordering::SeqCst) {
            1 => Some(Interrupt::Timeout),
            2 => Some(Interrupt::Cancelled),
            _ => None,
        }
    }
}

/// A request ready to run.
pub type Job = Arc<Request>;

impl Request {
    /// Frames and writes response bytes (the head with the first call); `Ready(n)`: `n` body
    /// bytes were taken; `Wait`: call [`Request::wait_writable`] (with the GIL released).
    /// `unlocked` runs a wait for the socket (with the GIL released, from Python).
    pub fn send(
        &self,
        head: &[u8],
        body: &[u8],
        done: bool,
        unlocked: &mut dyn FnMut(&mut dyn FnMut()),
    ) -> Io<usize> {
        self.conn
            .send(&self.server, self.id, head, body, done, unlocked)
    }

    pub fn wait_writable(&self) -> Result<(), WaitError> {
        self.server.before_blocking();
        self.conn.wait_writable(&self.server)
    }

    /// Up to `max` body bytes (any amount for 0), handed to `sink`; an empty slice at the
    /// end. `Wait`: call [`Request::wait_readable`].
    /// `unlocked` runs a large read from the socket (with the GIL released, from Python).
    pub fn recv(
        &self,
        max: usize,
        sink: &mut dyn BodySink,
        unlocked: &mut dyn FnMut(&mut dyn FnMut()),
    ) -> Io<()> {
        self.conn.recv(&self.server, self.id, max, sink, unlocked)
    }

    /// Body bytes not yet handed to the app; `None` when the body's length is not known.
    pub fn body_left(&self) -> Option<u64> {
        self.conn.body_left(self.id)
    }

    /// Waits for body bytes, up to the body timeout.
    pub fn wait_readable(&self) -> Result<(), WaitError> {
        let timeout = self.server.config.timeouts.body;
        // The status page shows the thread as Reading while it waits.
        let scored = self.server.config.status.as_ref().zip(thread_index());
        if let Some((s, t)) = scored {
            s.row.set_state(t, crate::scoreboard::State::Reading);
        }
        self.server.before_blocking();
        let r = self.conn.wait_readable(&self.server, self.id, timeout);
        if let Some((s, t)) = scored {
            s.row.set_state(t, crate::scoreboard::State::Running);
        }
        r
    }

    /// How long a body read or a response write may make no progress.
    pub fn body_timeout(&self) -> Duration {
        self.server.config.timeouts.body
    }

    /// Whether the client went away (or the web server aborted the request).
    pub fn is_gone(&self) -> bool {
        self.conn.is_gone(self.id)
    }

    /// Answers with a response the gateway makes itself.
    pub fn respond(&self, status: u16, text: &str) {
        self.conn.respond(&self.server, self.id, status, text);
    }

    /// The app is done: see [`Conn::finish`].
    fn finish(&self, complete: bool) -> Outcome {
        self.conn.finish(&self.server, self.id, complete)
    }

    /// The fields of log lines about this request.
    pub fn log_fields(&self) -> RequestFields {
        self.server
            .log_fields(&self.head, Some(&self.route), self.seq, thread_index())
    }
}

thread_local! {
    /// The number of the request thread this is (`None` on other threads).
    static THREAD_INDEX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The number of the request thread this is, if it is one.
pub fn thread_index() -> Option<usize> {
    THREAD_INDEX.with(|t| t.get())
}

/// What runs requests: the Python side, seen from the server.
pub trait Runner: Send + Sync + 'static {
    /// A thread's own state (its Python thread states).
    type Thread;
    fn thread(&self) -> Self::Thread;
    /// Runs a request to its end; returns whether its response is complete (false: it was
    /// cut off, and its connection is closed so the web server sees it).
    fn run(&self, thread: &mut Self::Thread, req: &Job) -> bool;
    /// Called on a thread that was idle a while.
    fn idle(&self, _thread: &mut Self::Thread) {}
    /// The stacks of every thread, for `req` over its time limit (read from `req`'s
    /// interpreter: a thread that spins in it yields the GIL to a waiter of its own
    /// interpreter).
    fn stacks(&self, thread: &mut Self::Thread, req: &Job) -> String;
    /// The stack of the Python thread `ident`, which runs `req`.
    fn stack_of(&self, thread: &mut Self::Thread, req: &Job, ident: u64) -> String;
    /// Raises the interrupt's exception in the thread running `req`'s app; false when it no
    /// longer runs Python.
    fn interrupt(&self, thread: &mut Self::Thread, req: &Job, why: Interrupt) -> bool;
}

const QUEUE_TOKEN: u64 = u64::MAX;
const STOP_TOKEN: u64 = u64::MAX - 1;
const LISTENER_BASE: u64 = 1 << 63;
/// An idle thread wakes this often (to let go of interpreters replaced by a reload).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// The most events a thread takes from one wait (a process of one thread).
const BATCH: usize = 16;
/// How long the threads of a process may all be busy, or in reserve, with nobody waiting in
/// the epoll, before the housekeeper wakes a thread in reserve to wait there (see
/// `thread_main`).
/// (CPython's own GIL switch interval is as long: a request that needs the GIL waits as long.)
pub(crate) const PROMOTE_AFTER: Duration = Duration::from_millis(5);
/// A process holding more connections than another of its group by more than this (or
/// than its number of threads, if more) leaves new ones to that process.
const BALANCE_SLACK: usize = 2;

struct Listeners {
    list: Vec<Listener>,
    /// In the epoll now.
    watched: bool,
    /// Taken off because the connection limit was reached.
    at_limit: bool,
    /// Taken off while every thread is stuck (by the housekeeper).
    paused: bool,
    limit_logged: bool,
}

struct Table {
    conns: Slab<Arc<Conn>>,
    next_gen: u64,
}

/// What the threads of a worker process share.
pub struct Shared {
    epoll: Epoll,
    pub config: ServerConfig,
    router: Arc<Router>,
    fcgi: fastcgi::Config,
    table: Mutex<Table>,
    listeners: Mutex<Listeners>,
    queue: Mutex<VecDeque<Job>>,
    /// Connections whose bodies are being collected, by token (see `collect_ready`).
    collectors: Mutex<Vec<u64>>,
    queue_fd: EventFd,
    stop_fd: EventFd,
    /// Wakes the housekeeper before its next tick.
    kick_fd: EventFd,
    clock: Instant,
    stopping: AtomicBool,
    /// A replacement takes over (a reload or a recycle), rather than the whole gateway
    /// stopping.
    replaced: AtomicBool,
    /// Every thread may exit.
    finished: AtomicBool,
    /// Idle threads (waiting in the epoll or in reserve), and how many times one became idle.
    idle: AtomicUsize,
    idle_epoch: AtomicU64,
    /// A thread waits in the epoll (at most one does; see `thread_main`), and how many times
    /// one began to.
    poller: AtomicBool,
    polls: AtomicU64,
    /// Idle threads in reserve, woken one at a time.
    reserve: Mutex<usize>,
    reserve_cv: Condvar,
    /// The housekeeper looks every PROMOTE_AFTER whether a thread in reserve must poll
    /// (requests ran lately), rather than every tick.
    keeper_fast: AtomicBool,
    /// A listener had a connection waiting when it was last looked at: a thread that becomes
    /// free looks again before anything else.
    backlog: AtomicBool,
    /// Requests running.
    running: AtomicUsize,
    served: AtomicU64,
    last_request_ms: AtomicU64,
    /// Each connection's deadline (as [`conn::Conn::deadline_ms`]) by its table key, kept
    /// apart from the connections: the housekeeper's scan for passed deadlines reads this one
    /// array, without the table's lock, instead of every connection's memory under it (with
    /// 10,000 idle kept connections that scan took a tenth of a worker's CPU). Keys past its
    /// end (past max-connections + 1024) are scanned the slow way.
    deadlines: Box<[AtomicU64]>,
    /// The listeners are out of the epoll while another process of the group holds fewer
    /// connections (changed under the listeners' lock, read without it).
    yielding: AtomicBool,
    /// How many connections this process holds over what makes it shed kept connections
    /// (see [`Shared::rebalance`]).
    excess: AtomicUsize,
    /// Set by the housekeeper every tick: a process of one thread working through the
    /// requests of one wait does the I/O that is ready before its next request (see
    /// `thread_main`).
    io_due: AtomicBool,
    /// A request thread panicked outside an app call (a bug): the worker recycles itself.
    thread_failed: AtomicBool,
    /// Requests numbered so far (their ids in log lines).
    seq: AtomicU64,
    pid: u32,
    /// What each thread runs, for the request-timeout watchdog.
    slots: Vec<Mutex<Option<(Instant, Job)>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn os(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

impl Shared {
    fn new(
        listeners: Vec<Listener>,
        router: Arc<Router>,
        config: ServerConfig,
    ) -> io::Result<Shared> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(os)?;
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let queue_fd = EventFd::from_value_and_flags(0, flags).map_err(os)?;
        let stop_fd = EventFd::from_value_and_flags(0, flags).map_err(os)?;
        let kick_fd = EventFd::from_value_and_flags(0, flags).map_err(os)?;
        // Edge-triggered: each queued request wakes one idle thread (and the housekeeper's I/O
        // round, which runs no request, is not woken again and again by waiting ones).
        let queue_ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, QUEUE_TOKEN);
        epoll.add(&queue_fd, queue_ev).map_err(os)?;
        epoll
            .add(&stop_fd, EpollEvent::new(EpollFlags::EPOLLIN, STOP_TOKEN))
            .map_err(os)?;
        let fcgi = fastcgi::Config {
            limits: config.limits,
            multiplex: true,
            max_conns: config.max_connections as u32,
            max_reqs: config.threads as u32,
        };
        let threads = config.threads;
        let sh = Shared {
            epoll,
            router,
            fcgi,
            table: Mutex::new(Table {
                conns: Slab::new(),
                next_gen: 1,
            }),
            listeners: Mutex::new(Listeners {
                list: listeners,
                watched: false,
                at_limit: false,
                paused: false,
                limit_logged: false,
            }),
            queue: Mutex::new(VecDeque::new()),
            collectors: Mutex::new(Vec::new()),
            queue_fd,
            stop_fd,
            kick_fd,
            clock: Instant::now(),
            stopping: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            idle: AtomicUsize::new(0),
            idle_epoch: AtomicU64::new(0),
            poller: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            reserve: Mutex::new(0),
            reserve_cv: Condvar::new(),
            keeper_fast: AtomicBool::new(false),
            backlog: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            io_due: AtomicBool::new(false),
            thread_failed: AtomicBool::new(false),
            yielding: AtomicBool::new(false),
            excess: AtomicUsize::new(0),
            deadlines: (0..config.max_connections + 1024)
                .map(|_| AtomicU64::new(0))
                .collect(),
            seq: AtomicU64::new(0),
            pid: std::process::id(),
            slots: (0..threads).map(|_| Mutex::new(None)).collect(),
            config,
        };
        sh.relisten(&mut lock(&sh.listeners))?;
        Ok(sh)
    }

    /// Milliseconds since the server started (the clock of deadlines).
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn drain(&self) -> Drain {
        match (self.stopping(), self.replaced.load(Ordering::Relaxed)) {
            (false, _) => Drain::No,
            (true, true) => Drain::Soft,
            (true, false) => Drain::Hard,
        }
    }

    /// Takes a connection's socket out of the epoll (one handed to another process, which
    /// keeps it open: see [`Conn::hand_over`]).
    fn unregister(&self, fd: &impl AsFd) {
        if let Err(e) = self.epoll.delete(fd) {
            crate::debug!("taking a connection out of the epoll: {e}");
        }
    }

    /// Registers a connection's socket with the shared epoll, edge-triggered for input and
    /// output: it is never modified afterwards (closing the socket removes it).
    fn register(&self, fd: &impl AsFd, token: u64) -> io::Result<()> {
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        self.epoll
            .add(fd, EpollEvent::new(flags, token))
            .map_err(os)
    }

    /// Puts the listeners in the epoll, or takes them out, as `l` says.
    fn relisten(&self, l: &mut Listeners) -> io::Result<()> {
        let yielding = self.yielding.load(Ordering::Relaxed);
        let on = !(l.at_limit || l.paused || yielding || self.stopping());
        self.set_listeners(l, on)
    }

    /// Puts the listeners in the epoll (or takes them out).
    fn set_listeners(&self, l: &mut Listeners, on: bool) -> io::Result<()> {
        if l.watched == on {
            return Ok(());
        }
        if let Some(row) = &self.config.row {
            row.set_open(on);
        }
        for (i, listener) in l.list.iter().enumerate() {
            if on {
                let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
                let ev = EpollEvent::new(flags, LISTENER_BASE + i as u64);
                self.epoll.add(listener.fd(), ev).map_err(os)?;
            } else {
                self.epoll.delete(listener.fd()).map_err(os)?;
            }
        }
        l.watched = on;
        Ok(())
    }

    /// The connection of a token, if it is still open.
    pub fn conn(&self, token: u64) -> Option<Arc<Conn>> {
        let t = lock(&self.table);
        let c = t.conns.get((token & 0xffff_ffff) as usize)?;
        (c.token == token).then(|| c.clone())
    }

    /// Notes connection `token`'s deadline for the housekeeper's scan.
    fn index_deadline(&self, token: u64, at: u64) {
        if let Some(d) = self.deadlines.get((token & 0xffff_ffff) as usize) {
            d.store(at, Ordering::Relaxed);
        }
    }

    /// The connections whose deadline passed by `now`.
    fn due_conns(&self, now: u64) -> Vec<Arc<Conn>> {
        let due = |d: u64| d != 0 && d <= now;
        let keys: Vec<usize> = (self.deadlines.iter().enumerate())
            .filter(|(_, d)| due(d.load(Ordering::Relaxed)))
            .map(|(k, _)| k)
            .collect();
        let t = lock(&self.table);
        let mut conns: Vec<_> = keys
            .iter()
            .filter_map(|&k| t.conns.get(k).cloned())
            .collect();
        conns.extend(
            (self.deadlines.len()..t.conns.capacity())
                .filter_map(|k| t.conns.get(k))
                .filter(|c| due(c.deadline_ms()))
                .cloned(),
        );
        conns
    }

    /// A closed connection leaves the table.
    fn forget_conn(&self, token: u64) {
        let len = {
            let mut t = lock(&self.table);
            let key = (token & 0xffff_ffff) as usize;
            if t.conns.get(key).is_some_and(|c| c.token == token) {
                t.conns.remove(key);
            }
            t.conns.len()
        };
        if len < self.config.max_connections {
            let mut l = lock(&self.listeners);
            if l.at_limit && !self.stopping() {
                l.at_limit = false;
                let _ = self.relisten(&mut l);
            }
        }
        self.rebalance(len);
    }

    /// Publishes that this process holds `conns` connections (for the status page, and for
    /// the other processes of its group). While another process that takes new connections
    /// holds fewer, by more than the slack, this one takes its listeners out of the epoll; by
    /// more than twice the slack, it also closes kept connections that wait for a request
    /// (at the housekeeper's tick, [`Shared::shed_idle`]), and the web server opens new ones
    /// when it needs them, which the others take (see [`crate::scoreboard`]).
    fn rebalance(&self, conns: usize) {
        let Some(row) = &self.config.row else {
            return;
        };
        row.set_conns(conns);
        let slack = self.config.threads.max(BALANCE_SLACK);
        let fewest = row.fewest_elsewhere();
        let over = |by: usize| fewest.map_or(0, |f| conns.saturating_sub(f + by));
        self.excess.store(over(2 * slack), Ordering::Relaxed);
        let yielding = over(slack) > 0;
        if yielding == self.yielding.load(Ordering::Relaxed) {
            return;
        }
        let mut l = lock(&self.listeners);
        self.yielding.store(yielding, Ordering::Relaxed);
        let _ = self.relisten(&mut l);
    }

    /// How many kept connections this process should shed now for the other processes of its
    /// group: half of what it holds over the limit, rounded up (each one the web server opens
    /// again goes to another process, which then holds one more).
    pub fn to_shed(&self) -> usize {
        self.excess.load(Ordering::Relaxed).div_ceil(2)
    }

    /// Closes up to `most` kept connections that have waited for a request for `idle` or
    /// longer, those that waited longest first, for the other processes of the group (see
    /// [`Shared::rebalance`]); how many it closed. The housekeeper paces this, and calls
    /// [`Shared::shed_busy`] when too few connections wait.
    ///
    /// Waiting connections are closed, not connections right after their response: nginx
    /// keeps its free connections last-used first, so a connection it just got a response on
    /// is the next it sends a request to, and a close that crosses that request fails it (a
    /// POST is not retried: 502; 1 MiB uploads through nginx keep-conn at 2 x 4 threads and 64
    /// connections failed in 1 `bench/run` round of 5 s in 30 that way, and in 6 of 24 once
    /// bodies were collected sooner). A connection that waited longest is the last nginx
    /// takes, and nginx sees its close while it waits there.
    pub fn shed_idle(self: &Arc<Self>, most: usize, idle: Duration) -> usize {
        let mut shed = 0;
        for c in self.waiting_conns(idle) {
            if shed == most {
                break;
            }
            if c.shed_if_idle(self, idle) {
                shed += 1;
            }
        }
        if shed > 0 {
            crate::debug!("closed {shed} waiting kept connection(s) for the other processes");
        }
        shed
    }

    /// Marks up to `most` kept connections to close right after their current or next
    /// response, for the other processes of the group; how many. This is for a web server
    /// that keeps every connection busy, so that too few wait long enough to be shed by
    /// [`Shared::shed_idle`]; the close can cross the web server's next request (see there).
    pub fn shed_busy(self: &Arc<Self>, most: usize) -> usize {
        let mut shed = 0;
        for c in self.open_conns() {
            if shed == most {
                break;
            }
            if c.shed_after_response(self) {
                shed += 1;
            }
        }
        if shed > 0 {
            crate::debug!("{shed} busy kept connection(s) close after their response, for the other processes");
        }
        shed
    }

    /// The kept connections that have waited for a request for `idle` or longer, those that
    /// waited longest first.
    fn waiting_conns(&self, idle: Duration) -> Vec<Arc<Conn>> {
        let until = self.now_ms().saturating_sub(idle.as_millis() as u64);
        let mut waiting: Vec<(u64, Arc<Conn>)> = (self.open_conns().into_iter())
            .filter_map(|c| Some((c.waiting_since()?, c)))
            .filter(|&(since, _)| since <= until)
            .collect();
        waiting.sort_unstable_by_key(|&(since, _)| since);
        waiting.into_iter().map(|(_, c)| c).collect()
    }

    /// The connections open now.
    fn open_conns(&self) -> Vec<Arc<conn::Conn>> {
        lock(&self.table)
            .conns
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// A worker process that started without a row of its scoreboard (every row was held)
    /// takes the one its supervisor gave it since, and publishes there whether it listens.
    pub fn seat(&self) {
        let Some(row) = &self.config.row else {
            return;
        };
        if row.seated() || !row.seat(std::process::id()) {
            return;
        }
        crate::info!("this worker has its row of the scoreboard now: it shows on the status page");
        let l = lock(&self.listeners);
        row.set_open(l.watched);
    }

    /// Connections open now.
    fn conn_count(&self) -> usize {
        lock(&self.table).conns.len()
    }

    /// A thread that finished a request of a kept connection takes a connection waiting in a
    /// listen queue before it looks at the epoll: that connection has waited longest. (The
    /// epoll reports a listener once per round of ready connections, so with kept connections
    /// busy a listen queue would drain one connection per round, and its last connection wait
    /// for all of them.) Without kept connections the epoll's order is kept: idle threads, of
    /// this process or another, take new connections first. Returns whether it took one.
    fn accept_waiting(self: &Arc<Self>, ready: &mut Vec<Job>) -> bool {
        if !self.backlog.load(Ordering::Relaxed) {
            return false;
        }
        let count = {
            let l = lock(&self.listeners);
            if !l.watched {
                return false;
            }
            l.list.len()
        };
        for i in 0..count {
            if self.accept(i, ready, true) {
                return true;
            }
        }
        self.backlog.store(false, Ordering::Relaxed);
        false
    }

    /// Accepts every connection waiting on the listeners (up to max-connections) and acts on
    /// what came with each, as a thread would, without waiting for a request that has not
    /// arrived (such a connection is left to the epoll, as any other).
    pub fn take_backlog(self: &Arc<Self>) {
        let mut ready = Vec::new();
        let n = lock(&self.listeners).list.len();
        for i in 0..n {
            while self.accept(i, &mut ready, false) {}
        }
        self.push_jobs(ready);
    }

    /// Accepts one connection on listener `i` and reads what came with it (`wait`: waiting a
    /// moment for it, see [`Conn::start`]); false when none was waiting, or when the process
    /// holds max-connections (a listener event taken before the limit was reached is not
    /// acted on).
    fn accept(self: &Arc<Self>, i: usize, ready: &mut Vec<Job>, wait: bool) -> bool {
        let (stream, proto) = {
            let mut l = lock(&self.listeners);
            if l.at_limit {
                return false;
            }
            let Some(listener) = l.list.get_mut(i) else {
                return false;
            };
            let proto = listener.spec.proto;
            match listener.accept() {
                Ok(Some(s)) => (s, proto),
                Ok(None) => return false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // EMFILE and friends: the listener stays ready; an idle thread retries
                    // after a short pause instead of spinning.
                    crate::error!("accept on {}: {e}", listener.spec.addr);
                    l.at_limit = true;
                    let _ = self.relisten(&mut l);
                    return false;
                }
            }
        };
        self.backlog.store(true, Ordering::Relaxed);
        let protocol = match proto {
            Proto::FastCgi => Some(Protocol::FastCgi),
            Proto::Scgi => Some(Protocol::Scgi),
            Proto::Uwsgi => Some(Protocol::Uwsgi),
            Proto::Auto => None,
        };
        self.admit(stream, protocol, ready, wait);
        true
    }

    /// Takes a new connection into the table and acts on what came with it (see
    /// [`Shared::accept`]).
    fn admit(
        self: &Arc<Self>,
        stream: Stream,
        protocol: Option<Protocol>,
        ready: &mut Vec<Job>,
        wait: bool,
    ) {
        let session = Session::new(protocol, self.config.limits, self.fcgi.clone());
        let (conn, conns) = {
            let mut t = lock(&self.table);
            let key = t.conns.vacant_key() as u64;
            let token = (t.next_gen << 32 | key) & !LISTENER_BASE;
            let conn = Arc::new(Conn::new(token, stream, session));
            t.conns.insert(conn.clone());
            t.next_gen = (t.next_gen + 1) & 0x7fff_ffff;
            if t.next_gen == 0 {
                t.next_gen = 1;
            }
            if t.conns.len() >= self.config.max_connections {
                let mut l = lock(&self.listeners);
                if !l.at_limit {
                    if !l.limit_logged {
                        crate::warn!(
                            "{} connections: the connection limit (max-connections) is \
                             reached; new connections wait in the listen backlog (logged once)",
                            t.conns.len()
                        );
                        l.limit_logged = true;
                    }
                    l.at_limit = true;
                    let _ = self.relisten(&mut l);
                }
            }
            (conn, t.conns.len())
        };
        self.rebalance(conns);
        conn.start(self, ready, wait);
    }

    /// Takes the kept connections other processes of the group handed to this one (see
    /// [`Shared::hand_over_waiting`]), as new FastCGI connections: a request that came
    /// meanwhile is in the socket, and until the next one comes the connection has the
    /// header timeout (as a new connection; a kept one waits for the keepalive timeout).
    pub fn adopt_handed(self: &Arc<Self>) {
        let Some(row) = &self.config.row else {
            return;
        };
        let mut ready = Vec::new();
        loop {
            let (tag, fd) = match row.handed() {
                Ok(Some(handed)) => handed,
                Ok(None) => break,
                Err(e) => {
                    crate::error!("taking a connection from another worker: {e}");
                    break;
                }
            };
            let stream = match tag {
                b't' => Stream::Tcp(mio::net::TcpStream::from_std(fd.into())),
                b'u' => Stream::Unix(mio::net::UnixStream::from_std(fd.into())),
                _ => continue,
            };
            crate::debug!("took a kept connection from another worker of the group");
            self.admit(stream, Some(Protocol::FastCgi), &mut ready, false);
        }
        self.push_jobs(ready);
    }

    /// Hands up to `most` kept connections that wait for a request, those that waited longest
    /// first, to the process of the group that holds the fewest connections. Unlike a close,
    /// the web server sees nothing: its next request on the connection goes to the other
    /// process (see [`Conn::hand_over`]). `Ok`: every waiting one it could take was handed;
    /// `Err`: it cannot hand over (`hand-over-kept` is off, or a send failed), with how many
    /// it handed.
    pub fn hand_over_waiting(self: &Arc<Self>, most: usize) -> Result<usize, usize> {
        let row = self
            .config
            .row
            .as_ref()
            .filter(|_| self.config.hand_over_kept);
        let Some((row, to)) = row.and_then(|r| Some((r, r.fewest_row_elsewhere()?.0))) else {
            return Err(0);
        };
        let (mut handed, mut failed) = (0, false);
        for c in self.waiting_conns(Duration::ZERO) {
            if handed == most {
                break;
            }
            let send = |tag, fd: std::os::fd::BorrowedFd<'_>| {
                let sent = row.hand_over(to, tag, fd);
                failed |= sent.is_err();
                sent
            };
            if c.hand_over(self, send) {
                handed += 1;
            } else if failed {
                break;
            }
        }
        if handed > 0 {
            crate::debug!("handed {handed} kept connection(s) to another worker of the group");
        }
        if failed {
            Err(handed)
        } else {
            Ok(handed)
        }
    }

    /// Acts on one epoll event.
    fn dispatch(self: &Arc<Self>, ev: EpollEvent, ready: &mut Vec<Job>) {
        match ev.data() {
            QUEUE_TOKEN => {
                // Edge-triggered: the counter is only reset here.
                let _ = self.queue_fd.read();
            }
            STOP_TOKEN => {}
            t if t & LISTENER_BASE != 0 => {
                // A process of one thread that owns its listeners takes every connection
                // waiting (up to BATCH) while each brings a whole request: one wait then
                // serves them all. It stops at a request whose body is still arriving (an
                // upload), which is better served before more are taken. Otherwise one, so
                // that idle threads and other processes take the others.
                let most = if self.config.threads == 1 && !self.config.shared_listeners {
                    BATCH
                } else {
                    1
                };
                for _ in 0..most {
                    let before = ready.len();
                    if !self.accept((t - LISTENER_BASE) as usize, ready, true)
                        || ready.len() == before
                    {
                        break;
                    }
                }
            }
            t => {
                if let Some(conn) = self.conn(t) {
                    let flags = ev.events();
                    let ended = Interest::peer_ended(flags);
                    conn.on_event(self, Interest::of_event(flags), ended, ready);
                }
            }
        }
    }

    /// Waits up to `timeout` for events of the shared epoll, acts on them and queues the
    /// requests they complete for the threads.
    fn dispatch_ready(self: &Arc<Self>, timeout: EpollTimeout) -> io::Result<()> {
        let mut events = [EpollEvent::empty(); 16];
        let n = self.epoll.wait(&mut events, timeout).map_err(os)?;
        let mut ready = Vec::new();
        for ev in &events[..n] {
            self.dispatch(*ev, &mut ready);
        }
        self.push_jobs(ready);
        Ok(())
    }

    /// Notes that connection `token` collects a body (see [`Shared::collect_ready`]).
    pub(crate) fn note_collecting(&self, token: u64) {
        let mut c = lock(&self.collectors);
        if !c.contains(&token) {
            c.push(token);
        }
    }

    /// Reads the connections whose bodies are being collected, before the thread takes other
    /// work. The epoll hands its ready connections out in the order they became ready, so a
    /// body's next bytes waited behind the new requests of kept connections, which the free
    /// threads took one at a time: each of the body's reads (a socketful) waited for about one
    /// request per kept connection to start (1 MiB uploads at 2x4, 64 kept connections:
    /// collecting a body took up to 145 ms, at p99 72 ms). Only these connections are read:
    /// taking every ready event instead also took new connections into a busy process, which
    /// then held more than its share of the group's.
    fn collect_ready(self: &Arc<Self>) {
        if !conn::collecting() {
            return;
        }
        let tokens = lock(&self.collectors).clone();
        let mut ready = Vec::new();
        for token in tokens {
            let still = self
                .conn(token)
                .is_some_and(|c| c.read_collecting(self, &mut ready));
            if !still {
                lock(&self.collectors).retain(|&t| t != token);
            }
        }
        self.push_jobs(ready);
    }

    /// Queues requests for other threads.
    fn push_jobs(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len();
        enqueue(&mut lock(&self.queue), jobs);
        for _ in 0..n {
            let _ = self.queue_fd.write(1);
        }
        if !self.poller.load(Ordering::SeqCst) {
            // Nobody waits in the epoll to be woken by the queue: a thread in reserve takes
            // them.
            self.unpark(n);
        }
    }

    /// Waits in reserve until woken (or `timeout`); whether it timed out.
    fn park(&self, timeout: Duration) -> bool {
        let mut parked = lock(&self.reserve);
        *parked += 1;
        let (mut parked, waited) = self
            .reserve_cv
            .wait_timeout(parked, timeout)
            .unwrap_or_else(|e| e.into_inner());
        *parked -= 1;
        waited.timed_out()
    }

    /// Wakes up to `n` threads in reserve.
    fn unpark(&self, n: usize) {
        let parked = *lock(&self.reserve);
        for _ in 0..n.min(parked) {
            self.reserve_cv.notify_one();
        }
    }

    /// A thread running a request is about to wait for its connection (a body, room for its
    /// response): with nobody in the epoll, a thread in reserve takes it now rather than
    /// after PROMOTE_AFTER.
    fn before_blocking(&self) {
        if !self.poller.load(Ordering::SeqCst) {
            self.unpark(1);
        }
    }

    /// For the housekeeper, every PROMOTE_AFTER while requests run: when no thread took the
    /// epoll since the last look and none waits there, one in reserve does.
    pub(crate) fn promote(&self, last_polls: &mut u64) {
        let polls = self.polls.load(Ordering::SeqCst);
        if polls == *last_polls && !self.poller.load(Ordering::SeqCst) {
            self.unpark(1);
        }
        *last_polls = polls;
    }

    /// Every thread may exit: wakes those in reserve.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        let _parked = lock(&self.reserve);
        self.reserve_cv.notify_all();
    }

    fn pop_job(&self) -> Option<Job> {
        lock(&self.queue).pop_front()
    }

    /// Runs one request on this thread.
    fn run_job<R: Runner>(&self, runner: &R, thread: &mut R::Thread, index: usize, job: Job) {
        if let Some(limit) = self.config.timeouts.queue {
            let waited = job.received.elapsed();
            if waited > limit {
                self.refuse_late(&job, waited, limit);
                return;
            }
        }
        let busy = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        if self.config.threads > 1
            && !self.keeper_fast.load(Ordering::Relaxed)
            && !self.keeper_fast.swap(true, Ordering::SeqCst)
        {
            // The first request after a quiet while: the housekeeper starts looking every
            // PROMOTE_AFTER whether another thread must take the epoll.
            let _ = self.kick_fd.write(1);
        }
        let mut scored = self
            .config
            .status
            .as_ref()
            .map(|s| s.begin(index, &job.head, busy));
        let watched = self.config.recycle.request_timeout.is_some()
            || self.config.watch.slowlog.is_some()
            || self.config.watch.interrupt.is_some()
            || self.config.cancel_on_disconnect;
        if watched {
            *lock(&self.slots[index]) = Some((Instant::now(), job.clone()));
        }
        // When a thread took it: the access log's queue time.
        let started = self.config.access_log.as_ref().map(|_| Instant::now());
        let complete = catch_unwind(AssertUnwindSafe(|| match job.route.status {
            true => self.answer_status(&job, scored.take()),
            false => runner.run(thread, &job),
        }));
        if watched {
            *lock(&self.slots[index]) = None;
        }
        if let (Some(s), Some(_)) = (&self.config.status, &scored) {
            s.row.set_state(index, crate::scoreboard::State::Finishing);
        }
        let outcome = job.finish(complete.unwrap_or(false));
        if let (Some(s), Some(r)) = (&self.config.status, scored) {
            s.row.end(r);
        }
        if let (Some(log), Some(started)) = (&self.config.access_log, started) {
            self.log_access(log, &job, outcome, started);
        }
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.recycle.maximum_requests == Some(served) {
            // Recycling starts now, not at the housekeeper's next tick.
            let _ = self.kick_fd.write(1);
        }
        if self.config.recycle.inactivity_timeout.is_some() {
            self.last_request_ms.store(self.now_ms(), Ordering::Relaxed);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// queue-timeout: 503 for a request that waited too long for a thread.
    fn refuse_late(&self, job: &Job, waited: Duration, limit: Duration) {
        crate::request_log!(
            warn,
            self.log_fields(&job.head, Some(&job.route), job.seq, None),
            "{}: waited {:.1}s for a free thread (queue-timeout {}): 503",
            request_label(job),
            waited.as_secs_f64(),
            crate::config::settings::Seconds(limit)
        );
        job.respond(
            503,
            "Service Unavailable: every thread is busy; try again later\n",
        );
        let outcome = job.finish(true);
        if let Some(log) = &self.config.access_log {
            self.log_access(log, job, outcome, Instant::now());
        }
    }

    /// The access log line of a request that ran (or waited too long): `started` is when a
    /// thread took it.
    fn log_access(&self, log: &AccessLog, job: &Request, outcome: Outcome, started: Instant) {
        let (mount, app_group) = self.mount_names(Some(&job.route));
        log.log(&Entry {
            head: &job.head,
            mount,
            app_group,
            status: outcome.status,
            body_bytes_sent: outcome.sent,
            body_bytes_received: outcome.received,
            duration: job.received.elapsed(),
            queued: started.saturating_duration_since(job.ready),
            seq: job.seq,
        });
    }

    /// The mount prefix and application group name of a route (empty for none).
    fn mount_names(&self, route: Option<&Route>) -> (&str, &str) {
        match route {
            Some(r) => {
                let m = self.router.mount(r.mount);
                (m.shown_prefix(), m.group.name())
            }
            None => ("", ""),
        }
    }

    /// The fields of log lines about a request.
    fn log_fields(
        &self,
        head: &RequestHead,
        route: Option<&Route>,
        seq: u64,
        thread: Option<usize>,
    ) -> RequestFields {
        let (mount, app_group) = self.mount_names(route);
        let (method, uri) = method_and_uri(head, route);
        RequestFields {
            id: crate::log::request_id(head, self.pid, seq),
            method: String::from_utf8_lossy(method).into_owned(),
            uri: String::from_utf8_lossy(&uri).into_owned(),
            mount: mount.to_string(),
            app_group: app_group.to_string(),
            thread: thread.map(|t| t as u64),
        }
    }
}

/// A request's method and URI (REQUEST_URI, else the path the route was found for).
fn method_and_uri<'a>(head: &'a RequestHead, route: Option<&Route>) -> (&'a [u8], Vec<u8>) {
    let method = head.get(b"REQUEST_METHOD").unwrap_or(b"GET");
    let uri = head.get(b"REQUEST_URI").unwrap_or_default();
    let uri = match route {
        Some(r) if uri.is_empty() => [&r.script_name[..], &r.path_info[..]].concat(),
        _ => uri.to_vec(),
    };
    (method, uri)
}

/// `METHOD URI` of a request, for log lines.
pub fn request_label(req: &Request) -> String {
    let (method, uri) = method_and_uri(&req.head, Some(&req.route));
    format!(
        "{} {}",
        String::from_utf8_lossy(method),
        String::from_utf8_lossy(&uri)
    )
}

/// Serves until stopped (signals, or recycling): starts the threads and the housekeeper and
/// returns once they are done or the graceful timeout passed. Returns whether every thread
/// finished (only then may Python be finalised).
pub fn serve<R: Runner>(
    listeners: Vec<Listener>,
    router: Arc<Router>,
    runner: Arc<R>,
    config: ServerConfig,
) -> io::Result<bool> {
    let sh = Arc::new(Shared::new(listeners, router, config)?);
    let signals = crate::sys::Signals::new(&[
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])?;
    let threads: Vec<_> = (0..sh.config.threads)
        .map(|i| {
            let (sh, runner) = (sh.clone(), runner.clone());
            std::thread::Builder::new()
                .name(format!("request-{i}"))
                .spawn(move || {
                    keep_going(
                        || thread_main(&sh, &*runner, i),
                        || {
                            // Under a supervisor, a fresh process replaces this one; alone,
                            // the gateway goes on with the thread (stopping would be worse).
                            if sh.config.supervisor.is_some() {
                                sh.thread_failed.store(true, Ordering::SeqCst);
                                let _ = sh.kick_fd.write(1);
                            }
                        },
                    )
                })
        })
        .collect::<io::Result<_>>()?;
    let keeper = {
        let (sh, runner) = (sh.clone(), runner.clone());
        std::thread::Builder::new()
            .name("housekeeper".into())
            .spawn(move || housekeeper::run(&sh, &*runner, signals))?
    };
    let deadline = keeper.join().unwrap_or_else(|_| Instant::now());
    for t in &threads {
        while !t.is_finished() {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(true)
}

/// Queues requests in the order they came (their heads' order in the process): a request
/// whose body was collected goes ahead of those that came after it. Its connection's events
/// are often acted on after new connections were taken in the same wait: queued behind them,
/// such requests made a p99 of 29-32 ms at 1 MiB uploads over SCGI and FastCGI (1x1, 16
/// connections) against 14-15 for uWSGI, which serves connections in the order they came.
fn enqueue(queue: &mut VecDeque<Job>, jobs: Vec<Job>) {
    for job in jobs {
        let at = queue
            .iter()
            .rposition(|j| j.seq < job.seq)
            .map_or(0, |i| i + 1);
        queue.insert(at, job);
    }
}

/// Runs a request thread's loop again after a panic in it (a bug outside any app call, which
/// has a guard of its own), after `failed` (a worker under a supervisor then recycles
/// itself): the thread goes on serving the other requests the process holds, rather than
/// leaving them, or the whole process if it has one thread, without a thread.
fn keep_going(mut body: impl FnMut(), failed: impl Fn()) {
    while catch_unwind(AssertUnwindSafe(&mut body)).is_err() {
        crate::error!("a request thread failed (a bug: the panic is above); it goes on");
        failed();
    }
}

fn thread_main<R: Runner>(sh: &Arc<Shared>, runner: &R, index: usize) {
    THREAD_INDEX.with(|t| t.set(Some(index)));
    let mut thread = runner.thread();
    let mut ready: Vec<Job> = Vec::new();
    let mut events = [EpollEvent::empty(); BATCH];
    // A process of one thread takes every ready event in one wait: nobody else could serve
    // them, and one wait then serves several requests. With more threads, one event per
    // wait leaves the others to the next free thread.
    let batch = if sh.config.threads == 1 { BATCH } else { 1 };
    // The last request came on a kept connection: the next work may be a waiting connection.
    let mut after_kept = false;
    loop {
        if batch == 1 {
            // A process of more threads: bodies being collected first.
            sh.collect_ready();
        }
        if std::mem::take(&mut after_kept) && sh.accept_waiting(&mut ready) {
            let mut jobs = std::mem::take(&mut ready);
            if !jobs.is_empty() && lock(&sh.queue).is_empty() {
                let first = jobs.remove(0);
                sh.push_jobs(jobs);
                after_kept = first.kept;
                sh.run_job(runner, &mut thread, index, first);
                continue;
            }
            // Behind the requests queued already: one of those runs now (a thread takes one
            // waiting connection per request it runs, so the listen queue is not drained into
            // this process while others could serve it).
            sh.push_jobs(jobs);
        }
        if let Some(job) = sh.pop_job() {
            after_kept = job.kept;
            sh.run_job(runner, &mut thread, index, job);
            // A process of one thread does it once a housekeeper tick at most (the requests
            // queued are those of its last wait, and it waits again when they are done),
            // unless a body is being collected: its bytes arrive meanwhile, and read only
            // once the queue is empty, its request waits for every request queued after it
            // (1 MiB uploads over SCGI at 1x1, 16 connections, queued in order of arrival:
            // p99 21 ms without this read, 14-15 with it; uWSGI 13.6-14.6). With more
            // threads, a body being collected is read at the top of the loop instead
            // (`collect_ready`).
            let read_above = batch == 1 && conn::collecting();
            let io_due =
                || batch == 1 || conn::collecting() || sh.io_due.swap(false, Ordering::Relaxed);
            if !read_above && !lock(&sh.queue).is_empty() && io_due() {
                // Between two queued requests: the I/O that is ready now (bodies being
                // collected, heads, output, new connections), without waiting, so that none
                // of it waits for the queue to drain (a connection in the listen queue would
                // otherwise wait behind every request kept connections bring meanwhile). Only
                // an overloaded process gets here: an idle worker process on the same sockets
                // is still woken for a new connection, and usually takes it first.
                let _ = sh.dispatch_ready(EpollTimeout::ZERO);
            }
            continue;
        }
        if sh.finished.load(Ordering::SeqCst) {
            break;
        }
        // One idle thread waits in the epoll; the others wait in reserve. The thread that
        // takes an event runs its request itself, and with nobody in the epoll meanwhile, the
        // events that come wait there for it (or for another thread that becomes free): no
        // thread is woken for a request it then waits on the GIL for, or finds taken. A
        // thread in reserve takes the epoll when the housekeeper sees nobody took it for
        // PROMOTE_AFTER (a long request, an app waiting on I/O), or when requests are queued.
        sh.idle.fetch_add(1, Ordering::SeqCst);
        sh.idle_epoch.fetch_add(1, Ordering::SeqCst);
        let polling = sh
            .poller
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !polling {
            let timed_out = sh.park(IDLE_WAKE);
            sh.idle.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                runner.idle(&mut thread);
            }
            continue;
        }
        sh.polls.fetch_add(1, Ordering::SeqCst);
        let waited = sh.epoll.wait(
            &mut events[..batch],
            crate::sys::epoll_timeout(Some(IDLE_WAKE)),
        );
        sh.poller.store(false, Ordering::SeqCst);
        sh.idle.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(0) => runner.idle(&mut thread),
            Ok(n) => {
                for ev in &events[..n] {
                    sh.dispatch(*ev, &mut ready);
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(e) => {
                crate::error!("waiting for connections: {e}");
                std::thread::sleep(IDLE_WAKE);
            }
        }
        let mut jobs = std::mem::take(&mut ready);
        if !jobs.is_empty() {
            jobs.sort_by_key(|j| j.seq);
            let first = jobs.remove(0);
            if batch > 1 {
                // This thread runs them next (no other thread to wake).
                enqueue(&mut lock(&sh.queue), jobs);
            } else {
                sh.push_jobs(jobs);
            }
            after_kept = first.kept;
            sh.run_job(runner, &mut thread, index, first);
        }
    }
}

/// Resident memory of this process, from /proc/self/statm.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::sys::page_size())
}

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epoll.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_request_thread_goes_on_after_a_panic_and_its_worker_recycles() {
        let (runs, failures) = (Cell::new(0), Cell::new(0));
        keep_going(
            || {
                runs.set(runs.get() + 1);
                assert!(runs.get() > 2, "a bug in the loop, run {}", runs.get());
            },
            || failures.set(failures.get() + 1),
        );
        assert_eq!((runs.get(), failures.get()), (3, 2));
    }
}
