//! One connection: its socket, its protocol session, its buffers and the state of its
//! requests. Whichever thread holds its lock drives it: a thread that got an epoll event for
//! it, or the thread running one of its requests (which reads the body and writes the
//! response itself, so a request crosses no thread on its way).
//!
//! Life of a connection:
//! - reading a request head (the header timeout runs);
//! - a request's body is collected up to `buffer-body` bytes without holding a thread (the
//!   body timeout runs), then the request runs on the thread that completed it;
//! - the running request reads the rest of its body and writes its response directly; output
//!   the socket does not take at once waits in a bounded buffer;
//! - answered: kept for the next request (FastCGI KEEP_CONN; the idle timeout runs), or read
//!   to the end of its input and closed (lingering, bounded in time and bytes), so that the
//!   close never resets a web server that is still writing.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::cgi;

use super::listener::Stream;
use super::session::{Event, Frames, Rid, Session, FRAME_LIMIT};
use super::{Drain, Interest, Job, Request, Shared};
use crate::router::Route;

/// Unparsed input one connection may hold (a whole FastCGI record, or an SCGI header block).
pub const MAX_PENDING_INPUT: usize = protocol::fastcgi::MAX_RECORD_LEN + 64 * 1024;
/// Output a connection holds before the thread writing a response waits for the socket.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Body bytes queued for a running request before the connection is no longer read for it.
pub const BODY_HIGH_WATER: usize = 128 * 1024;
/// How long a thread that accepted a connection waits for its first request to arrive before
/// it leaves the connection to the epoll.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(10);
/// How long a stopping process keeps a connection that has sent nothing (a web server sends
/// its request as soon as it connects).
const SILENT_AT_STOP: Duration = Duration::from_secs(1);
/// What a connection without a request reads at once while the process holds
/// `buffer-body-total`: a request head (a longer one takes more reads).
const HEAD_READ: usize = 16 * 1024;
/// Body bytes a process holds beyond `buffer-body-total` for the requests of a multiplexed
/// connection while one of them waits for its own body behind theirs (see `Conn::paused`).
const MULTIPLEX_EXTRA: usize = 8 << 20;
/// How often a thread whose request's body waits behind paused input looks again whether the
/// process holds less (see [`Conn::wait_readable`]).
const PAUSED_LOOK_AGAIN: Duration = Duration::from_millis(100);
/// Input read and thrown away while lingering, at most.
pub const LINGER_MAX_BYTES: u64 = 256 << 20;

/// Why a connection's deadline is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Waiting for (the rest of) a request head.
    Header,
    /// A request's body is being collected and makes no progress.
    Body,
    /// Kept open between requests, idle.
    Idle,
    /// Answered; reading the rest of the input before closing.
    Linger,
}

thread_local! {
    /// Where a thread reads a connection's input when the connection holds none pending.
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; MAX_PENDING_INPUT]);
}

/// A connection's unparsed input. Memory is taken only while bytes are pending: an idle
/// keep-alive connection holds no buffer.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    const INITIAL: usize = 8 * 1024;
    const MIN_ROOM: usize = 4 * 1024;

    /// Room to read into, growing the buffer (up to the input limit) when it is nearly full.
    fn spare(&mut self) -> &mut [u8] {
        if self.data.len() - self.len < Self::MIN_ROOM {
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

    /// Keeps bytes read elsewhere (the rest of a read that was not decoded yet).
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.data.len() - self.len < bytes.len() {
            let size = (self.len + bytes.len()).max(Self::INITIAL);
            self.data.resize(size, 0);
        }
        self.data[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
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

/// Body bytes the worker process holds (collected, or queued for their apps): past
/// `buffer-body-total`, bodies are no longer collected. What a body was sent, not the room
/// reserved for it: a stalled upload holds what it sent.
static BODY_HELD: AtomicUsize = AtomicUsize::new(0);
/// The capacity of those bodies' buffers: room is reserved for an announced body only as far
/// as `buffer-body-total` allows.
static BODY_RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Whether the process holds `buffer-body-total` of bodies: new ones are not collected.
fn bodies_full(sh: &Shared) -> bool {
    BODY_HELD.load(Ordering::Relaxed) >= sh.config.buffer_body_total
}

/// Counts a chunk's bytes and capacity in (`add`) or out of the process's body memory.
fn account(chunk: &[u8], capacity: usize, add: bool) {
    if add {
        BODY_HELD.fetch_add(chunk.len(), Ordering::Relaxed);
        BODY_RESERVED.fetch_add(capacity, Ordering::Relaxed);
    } else {
        BODY_HELD.fetch_sub(chunk.len(), Ordering::Relaxed);
        BODY_RESERVED.fetch_sub(capacity, Ordering::Relaxed);
    }
}

/// A request's body on its way to the app.
#[derive(Default)]
pub struct Body {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already handed out.
    front_pos: usize,
    /// Bytes queued.
    queued: usize,
    /// Bytes received in all.
    received: u64,
    /// The body is complete.
    eof: bool,
}

impl Body {
    /// Pieces smaller than this are joined into one chunk.
    const JOIN: usize = 64 * 1024;
    /// The most room a chunk is given ahead of the bytes that will fill it.
    const RESERVE: usize = 1024 * 1024;

    /// Queues body bytes; `expected`: the body's announced length (CONTENT_LENGTH) when room
    /// may be reserved for it; `total`: buffer-body-total.
    fn push(&mut self, data: &[u8], expected: Option<u64>, total: usize) {
        let before = self.received;
        self.queued += data.len();
        self.received += data.len() as u64;
        match self.chunks.back_mut() {
            // Small pieces (FastCGI records cut by reads) are joined, as are the pieces of a
            // body with room reserved for it.
            Some(last)
                if last.capacity() - last.len() >= data.len()
                    || last.len() + data.len() <= Self::JOIN =>
            {
                let cap = last.capacity();
                last.extend_from_slice(data);
                BODY_HELD.fetch_add(data.len(), Ordering::Relaxed);
                BODY_RESERVED.fetch_add(last.capacity() - cap, Ordering::Relaxed);
            }
            _ => {
                // Room for the rest of an announced body (up to RESERVE), so that a body
                // collected before the app runs is one piece, handed over in one copy; only
                // as far as buffer-body-total allows.
                let rest = expected.unwrap_or(0).saturating_sub(before);
                let mut room = usize::try_from(rest)
                    .unwrap_or(usize::MAX)
                    .min(Self::RESERVE);
                if BODY_RESERVED.load(Ordering::Relaxed) + room > total {
                    room = 0;
                }
                let mut chunk = Vec::with_capacity(room.max(data.len()));
                chunk.extend_from_slice(data);
                account(&chunk, chunk.capacity(), true);
                self.chunks.push_back(chunk);
            }
        }
    }

    /// Hands up to `max` bytes (any amount for 0) to `sink`; false when nothing is queued.
    fn pop(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> bool {
        let Some(front) = self.chunks.front() else {
            return false;
        };
        let avail = &front[self.front_pos..];
        if max > 0 && avail.len() > max {
            sink(&avail[..max]);
            self.front_pos += max;
            self.queued -= max;
        } else if max == 0 && self.chunks.len() > 1 {
            // Everything queued, in one piece.
            let mut all = Vec::with_capacity(self.queued);
            all.extend_from_slice(avail);
            for c in self.chunks.iter().skip(1) {
                all.extend_from_slice(c);
            }
            self.release();
            sink(&all);
            self.queued = 0;
        } else {
            sink(avail);
            self.queued -= avail.len();
            if let Some(c) = self.chunks.pop_front() {
                account(&c, c.capacity(), false);
            }
            self.front_pos = 0;
        }
        true
    }

    /// Lets go of every chunk.
    fn release(&mut self) {
        for c in self.chunks.drain(..) {
            account(&c, c.capacity(), false);
        }
        self.front_pos = 0;
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.release();
    }
}

/// Requests of this process whose bodies are being collected (see [`collecting`]).
static COLLECTING: AtomicUsize = AtomicUsize::new(0);

/// Whether a request of this process is collecting its body: its bytes may be waiting in
/// the socket for a thread to read them.
pub fn collecting() -> bool {
    COLLECTING.load(Ordering::Relaxed) > 0
}

/// Counts a request in [`COLLECTING`] for as long as it is kept.
#[derive(Debug, PartialEq, Eq)]
struct Counted(());

impl Counted {
    fn new() -> Self {
        COLLECTING.fetch_add(1, Ordering::Relaxed);
        Counted(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        COLLECTING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a request is.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Its body is being collected before it runs.
    Collecting(Counted),
    /// Handed to a thread (queued or running).
    Running,
}

/// A request of this connection, from its head until the app is done with it.
pub struct ReqState {
    /// Its own id on this connection (FastCGI request ids are reused: nginx always sends 1).
    id: u64,
    rid: Rid,
    phase: Phase,
    /// Until the request is handed over; the route is `None` when no mount serves it.
    head: Option<(protocol::RequestHead, Option<Route>)>,
    body: Body,
    content_length: Option<u64>,
    /// Its CONTENT_LENGTH is not a number, or given twice with two values (a 400).
    bad_length: bool,
    /// The response's end went out.
    ended: bool,
    /// The web server aborted it, or the connection is gone.
    aborted: bool,
    received: Instant,
    /// Its number in the worker process (its id in log lines).
    seq: u64,
    /// The response's status, once its head went out (0 before).
    status: u16,
    /// Response body bytes taken for the connection.
    sent: u64,
}

/// The connection's only request when nothing but its input can come next (no other request,
/// no undecoded input, not answered and lingering or closing): then a read may go straight
/// into a buffer of its body (see [`Direct`]).
fn sole_request(st: &ConnState) -> Option<&ReqState> {
    match &st.reqs[..] {
        [r] if st.rbuf.len == 0 && st.lingering.is_none() && !st.closing => Some(r),
        _ => None,
    }
}

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The response's status; 0 when none went out.
    pub status: u16,
    /// Response body bytes.
    pub sent: u64,
    /// Request body bytes.
    pub received: u64,
}

/// The connection's state, under its lock.
pub struct ConnState {
    stream: Option<Arc<Stream>>,
    session: Session,
    rbuf: ReadBuf,
    out: Vec<u8>,
    out_pos: usize,
    reqs: Vec<ReqState>,
    /// Registered with the epoll (edge-triggered, for input and output, once and for all).
    registered: bool,
    /// Threads waiting on the condition variable.
    waiters: usize,
    /// Input may be waiting in the socket that nobody read (readiness is edge-triggered: it
    /// is read when the connection next wants input).
    unread: bool,
    /// A thread running a request reads the socket itself: others keep off.
    reader: bool,
    /// A thread running a request waits for the socket to take output: others keep off.
    writer: bool,
    /// Heads decoded on this connection.
    heads: u64,
    /// Any input read from this connection yet.
    received: bool,
    timer: Option<Timer>,
    /// When `timer` was set (milliseconds, as [`Shared::now_ms`]).
    timer_since: u64,
    /// Answered and reading the rest of the input before the close: bytes read meanwhile.
    lingering: Option<u64>,
    /// The id of the next request.
    next_id: u64,
    /// Close as soon as the output is out, without reading the rest of the input.
    closing: bool,
    /// Closes right after its current response, for the other processes of the group (see
    /// [`Shared::shed_busy`]).
    shed: bool,
    /// An app read the socket itself (input it left is read when its request is done).
    direct: bool,
    /// The web server shut down its side: reads go on to the end of the input even after a
    /// short one. (Readiness is edge-triggered: an end that came with the last bytes makes no
    /// event of its own, and a connection that stopped at a short read would wait for a
    /// timeout: a half-closed upload for the body timeout, a kept connection the client
    /// closed after its response for the idle timeout.)
    peer_ended: bool,
}

/// Whether a kept connection waits for its next request, with nothing of the last one left
/// to read or write.
fn waiting(st: &ConnState) -> bool {
    st.reqs.is_empty()
        && st.out_pos == st.out.len()
        && st.rbuf.len == 0
        && st.lingering.is_none()
        && st.timer == Some(Timer::Idle)
}

/// Since when an open kept connection has waited for its next request (as `timer_since`),
/// if it does and no thread reads or writes its socket: one the housekeeper may close or
/// hand to another process.
fn idle_since(st: &ConnState) -> Option<u64> {
    let free = st.stream.is_some() && !st.reader && !st.writer;
    (free && waiting(st)).then_some(st.timer_since)
}

/// A read straight into a buffer of request `id`'s body (the bytes an app's body read returns,
/// or the room of a body being collected): where its body bytes lie in the input, in order
/// (see [`Conn::decode_in_place`]).
struct Direct {
    id: u64,
    ranges: Vec<(usize, usize)>,
}

/// A side of the socket one thread at a time uses without the connection's lock.
#[derive(Clone, Copy)]
enum Role {
    /// Reads the socket (`ConnState::reader`).
    Reader,
    /// Waits for room and writes (`ConnState::writer`).
    Writer,
}

impl Role {
    fn of(self, st: &mut ConnState) -> &mut bool {
        match self {
            Role::Reader => &mut st.reader,
            Role::Writer => &mut st.writer,
        }
    }
}

/// What an app's body read is handed: a copy of bytes, or room to read into.
pub trait BodySink {
    /// Takes (a copy of) `data`; an empty slice is the body's end.
    fn put(&mut self, data: &[u8]);
    /// Room for `n` bytes, written in place; `None` when it cannot be had.
    fn room(&mut self, n: usize) -> Option<&mut [u8]>;
    /// The first `n` bytes of the room are the bytes read.
    fn commit(&mut self, n: usize);
    /// Bytes taken so far.
    fn filled(&self) -> usize;
}

/// The most a direct read takes when the app asks for any amount.
const DIRECT_READ: usize = 64 * 1024;
/// The most one direct read takes.
const DIRECT_READ_MAX: usize = 1024 * 1024;
/// A direct read this large is made with the GIL released and without the connection's lock
/// (see [`Conn::recv`]).
const UNLOCKED_READ: usize = 32 * 1024;

/// A connection.
pub struct Conn {
    pub token: u64,
    state: Mutex<ConnState>,
    /// Threads waiting for this connection: body data, room for output, the reader role.
    cond: Condvar,
    /// When the current timer fires, in milliseconds of the server's clock; 0: none.
    deadline: AtomicU64,
}

/// What a thread running a request gets when it cannot go on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io<T> {
    Ready(T),
    /// Nothing now: wait (with the GIL released) and try again.
    Wait,
    /// The client or the connection is gone.
    Gone,
}

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    Gone,
    TimedOut,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding a lock left plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    pub fn new(token: u64, stream: Stream, session: Session) -> Conn {
        Conn {
            token,
            state: Mutex::new(ConnState {
                stream: Some(Arc::new(stream)),
                session,
                rbuf: ReadBuf::default(),
                out: Vec::new(),
                out_pos: 0,
                reqs: Vec::new(),
                registered: false,
                waiters: 0,
                unread: false,
                reader: false,
                writer: false,
                heads: 0,
                received: false,
                timer: None,
                timer_since: 0,
                lingering: None,
                next_id: 0,
                closing: false,
                shed: false,
                direct: false,
                peer_ended: false,
            }),
            cond: Condvar::new(),
            deadline: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        lock(&self.state)
    }

    /// The deadline of the current timer (milliseconds of the server's clock), 0 for none.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline.load(Ordering::Relaxed)
    }

    /// A new connection: read what arrived with it and act on it. Requests ready to run are
    /// pushed to `ready`.
    ///
    /// A web server writes its request right after it connects; when it has not arrived yet,
    /// the accepting thread waits for it a moment (`wait`). Meanwhile it is busy, not waiting
    /// in the epoll, so a worker process does not accept more connections than it has threads
    /// to serve them (the kernel hands the others to a worker process with idle threads).
    /// Without `wait` (a stopping process taking its backlog, each connection in turn), a
    /// request not yet arrived is left to the epoll.
    pub fn start(self: &Arc<Self>, sh: &Arc<Shared>, ready: &mut Vec<Job>, wait: bool) {
        let mut st = self.lock();
        self.set_timer(&mut st, sh, Some(Timer::Header));
        self.read_input(&mut st, sh, ready);
        if wait && ready.is_empty() && st.heads == 0 && st.rbuf.len == 0 {
            if let Some(stream) = st.stream.clone() {
                drop(st);
                let arrived = stream.poll(true, FIRST_BYTES_WAIT);
                st = self.lock();
                if arrived {
                    self.read_input(&mut st, sh, ready);
                }
            }
        }
        self.settle(&mut st, sh);
    }

    /// An epoll event for this connection.
    ///
    /// Readiness is edge-triggered: input is read here when the connection waits for it
    /// (a head, a body being collected, the rest of a body while lingering, a kept
    /// connection's next request). Otherwise a thread running one of its requests reads
    /// it when its app asks (it always tries the socket before it waits), so nothing is lost.
    ///
    /// `ended`: the web server shut down its side (or the connection failed). Its end then
    /// lies behind whatever input is left, and is read too (see `ConnState::peer_ended`).
    pub fn on_event(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        ev: Interest,
        ended: bool,
        ready: &mut Vec<Job>,
    ) {
        let mut st = self.lock();
        if st.stream.is_none() {
            return;
        }
        st.peer_ended |= ended;
        if ended && !st.reader && self.watched_while_paused(&st, sh) {
            self.peer_closed(&mut st, sh);
            return;
        }
        if ev.write() && !st.writer {
            self.flush(&mut st, sh);
        }
        if ev.read() {
            if self.wants_read(&st, sh) {
                self.read_input(&mut st, sh, ready);
            } else {
                st.unread = true;
            }
        }
        self.settle(&mut st, sh);
    }

    /// Reads the connection for the body it collects, as its readiness would (see
    /// `Shared::collect_ready`); false once no body is being collected on it.
    pub fn read_collecting(self: &Arc<Self>, sh: &Arc<Shared>, ready: &mut Vec<Job>) -> bool {
        let mut st = self.lock();
        if st.stream.is_none() || !st.reqs.iter().any(|r| r.collecting()) {
            return false;
        }
        if self.wants_read(&st, sh) {
            self.read_input(&mut st, sh, ready);
            self.settle(&mut st, sh);
        }
        st.stream.is_some() && st.reqs.iter().any(|r| r.collecting())
    }

    /// Closes the connection if it is kept and has waited for a request for at least `idle`,
    /// after reading any that came meanwhile: a process that holds more than its share of its
    /// group's connections sheds them this way (see [`Shared::shed_idle`]). True if it closed.
    pub fn shed_if_idle(self: &Arc<Self>, sh: &Arc<Shared>, idle: Duration) -> bool {
        let mut st = self.lock();
        let Some(since) = idle_since(&st) else {
            return false;
        };
        if sh.now_ms() < since + idle.as_millis() as u64 {
            return false;
        }
        let mut ready = Vec::new();
        self.read_input(&mut st, sh, &mut ready);
        let came = !ready.is_empty();
        sh.push_jobs(ready);
        if came || idle_since(&st).is_none() {
            return false;
        }
        self.close(&mut st, sh);
        true
    }

    /// Hands a kept FastCGI connection that waits for a request to another worker process
    /// of the group: `send` gets the socket's descriptor and a tag for its kind (b't' TCP,
    /// b'u' Unix), and sends it (see [`Shared::hand_over_waiting`]); this process then lets
    /// go of it without a close the web server could see (the other process holds the same
    /// open socket). A request the web server sent meanwhile stays in the socket, for the
    /// other process. False (and nothing changed) if it does not wait, or the send failed.
    pub fn hand_over(
        &self,
        sh: &Arc<Shared>,
        send: impl FnOnce(u8, std::os::fd::BorrowedFd<'_>) -> io::Result<()>,
    ) -> bool {
        use std::os::fd::AsFd;
        let mut st = self.lock();
        if idle_since(&st).is_none() || !st.session.is_fastcgi() {
            return false;
        }
        // Nobody else may hold the socket either (this one's close would otherwise shut it
        // down, for the other process too).
        let Some(stream) = st.stream.as_ref().filter(|s| Arc::strong_count(s) == 1) else {
            return false;
        };
        let tag = match **stream {
            Stream::Tcp(_) => b't',
            Stream::Unix(_) => b'u',
        };
        if let Err(e) = send(tag, stream.as_fd()) {
            crate::debug!("handing a kept connection to another worker: {e}");
            return false;
        }
        // Out of this process's epoll first: the socket stays open in the other process, and
        // an epoll watches an open socket, not a descriptor.
        if st.registered {
            sh.unregister(&**stream);
        }
        self.close(&mut st, sh);
        true
    }

    /// Since when a kept connection has waited for a request (milliseconds, as
    /// [`Shared::now_ms`]); `None` if it does not wait.
    pub fn waiting_since(&self) -> Option<u64> {
        idle_since(&self.lock())
    }

    /// Marks a kept connection to close right after its current response, or its next one
    /// (see [`Shared::shed_busy`]); false if it closes anyway.
    pub fn shed_after_response(&self, sh: &Arc<Shared>) -> bool {
        let mut st = self.lock();
        if st.stream.is_none() || st.shed || !self.kept_after(&st, sh) {
            return false;
        }
        st.shed = true;
        true
    }

    /// The timer fired (the housekeeper saw the deadline pass).
    pub fn expire(self: &Arc<Self>, sh: &Arc<Shared>, now_ms: u64) {
        let mut st = self.lock();
        let due = self.deadline_ms();
        if st.stream.is_none() || due == 0 || due > now_ms {
            return;
        }
        let timeouts = &sh.config.timeouts;
        match st.timer {
            None => {}
            Some(Timer::Header) if sh.stopping() && !st.received => {
                crate::info!("stopping: closing a connection that has sent nothing");
                self.close(&mut st, sh);
            }
            Some(Timer::Header) => {
                crate::warn!(
                    "closing a connection that sent no complete request head within the \
                     header timeout ({:?})",
                    timeouts.header
                );
                self.close(&mut st, sh);
            }
            Some(Timer::Idle) => {
                crate::debug!("closing a kept connection idle for {:?}", timeouts.idle);
                self.close(&mut st, sh);
            }
            Some(Timer::Linger) => {
                crate::debug!(
                    "closing a connection still sending input {:?} after its response \
                     (linger timeout)",
                    timeouts.linger
                );
                self.close(&mut st, sh);
            }
            Some(Timer::Body) => {
                // A request whose body stalled before it ran: 408, and its input is not
                // waited for.
                let stalled: Vec<ReqState> = st.reqs.extract_if(.., |r| r.collecting()).collect();
                for r in stalled {
                    let text = "Request Timeout: the request body stalled\n";
                    if let Some((head, route)) = &r.head {
                        crate::request_log!(
                            warn,
                            sh.log_fields(head, route.as_ref(), r.seq, None),
                            "a request body made no progress for {:?} (body timeout): 408",
                            timeouts.body
                        );
                        sh.log_refusal(&r, head, route.as_ref(), 408, text);
                    }
                    respond(&mut st, r.rid, 408, text);
                }
                // The web server is not sending: closing once the 408 is out, without
                // lingering, is right.
                st.closing = true;
                self.settle(&mut st, sh);
            }
        }
    }

    /// While stopping: a kept connection idle between requests is closed (at once when the
    /// whole gateway stops; after `after` while a replacement takes over: a web server that
    /// still uses it is served, and the connection closes after that response). A connection
    /// that has sent nothing yet gets `after`, or [`SILENT_AT_STOP`], to send its request,
    /// not the whole header timeout: it would hold the stopping process until its graceful
    /// timeout.
    pub fn close_if_idle(self: &Arc<Self>, sh: &Arc<Shared>, after: Option<Duration>) {
        let mut st = self.lock();
        if st.stream.is_none() {
            return;
        }
        if !st.received {
            self.shorten_deadline(&st, sh, after.unwrap_or(SILENT_AT_STOP));
            return;
        }
        if !waiting(&st) {
            return;
        }
        match after {
            Some(after) => self.shorten_deadline(&st, sh, after),
            None => {
                // A request the web server sent may wait in the socket, not yet read (its
                // thread busy): it is read first. `settle` then runs it, or waits for the rest
                // of one that has begun, and otherwise closes the connection (nothing is kept
                // after a response while the gateway stops).
                if !st.reader {
                    let mut ready = Vec::new();
                    self.read_input(&mut st, sh, &mut ready);
                    sh.push_jobs(ready);
                }
                self.settle(&mut st, sh);
            }
        }
    }

    /// Brings the connection's deadline forward to `after` from now (never later).
    fn shorten_deadline(&self, st: &ConnState, sh: &Arc<Shared>, after: Duration) {
        let at = sh.now_ms() + after.as_millis() as u64;
        if self.deadline_ms() > at {
            self.set_deadline(st, sh, at);
        }
    }

    fn set_timer(&self, st: &mut ConnState, sh: &Arc<Shared>, timer: Option<Timer>) {
        if st.timer == timer && timer != Some(Timer::Body) {
            return;
        }
        st.timer = timer;
        st.timer_since = sh.now_ms();
        let t = &sh.config.timeouts;
        let after = match timer {
            None => None,
            Some(Timer::Header) => Some(t.header),
            Some(Timer::Body) => Some(t.body),
            Some(Timer::Idle) => Some(t.idle),
            Some(Timer::Linger) => Some(t.linger),
        };
        let at = after.map_or(0, |d| st.timer_since + d.as_millis() as u64 + 1);
        self.set_deadline(st, sh, at);
    }

    /// Sets the deadline, and notes it for the housekeeper while the connection is open (a
    /// closed one may have left its table key to another).
    fn set_deadline(&self, st: &ConnState, sh: &Arc<Shared>, at: u64) {
        self.deadline.store(at, Ordering::Relaxed);
        if st.stream.is_some() {
            sh.index_deadline(self.token, at);
        }
    }

    /// Reads what the socket holds (until it would block, or the connection wants no more
    /// for now) and decodes it. How much one read round takes is bounded by the state: a head
    /// by the input limit, a collected body by buffer-body, a running request's body by its
    /// queue, lingering by its byte limit.
    fn read_input(self: &Arc<Self>, st: &mut ConnState, sh: &Arc<Shared>, ready: &mut Vec<Job>) {
        self.read_input_for(st, sh, ready, None);
    }

    /// [`Conn::read_input`] for the thread of request `wanting` (see [`Conn::paused`]).
    fn read_input_for(
        self: &Arc<Self>,
        st: &mut ConnState,
        sh: &Arc<Shared>,
        ready: &mut Vec<Job>,
        wanting: Option<u64>,
    ) {
        st.unread = false;
        loop {
            let Some(stream) = st.stream.clone() else {
                return;
            };
            if self.paused(st, sh, wanting) {
                st.unread = true;
                return;
            }
            if st.rbuf.len >= MAX_PENDING_INPUT {
                crate::warn!("closing a connection: request head too large");
                self.close(st, sh);
                return;
            }
            // With nothing pending, read into this thread's buffer and keep only what is
            // left undecoded: a connection holds input memory only between reads.
            let read = if let Some(want) = self.body_room(st) {
                self.read_into_body(st, sh, ready, &stream, want)
            } else if st.rbuf.len == 0 {
                SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    // While the process holds buffer-body-total, a connection without a
                    // request reads about a head: a body after it is not collected, and stays
                    // with the web server (see `paused`).
                    let room = if st.reqs.is_empty() && bodies_full(sh) {
                        HEAD_READ
                    } else {
                        scratch.len()
                    };
                    let n = stream.read(&mut scratch[..room])?;
                    if n > 0 {
                        let used = self.decode(st, sh, ready, &scratch[..n], None);
                        if let Some(used) = used {
                            st.rbuf.append(&scratch[used..n]);
                        }
                    }
                    Ok((n, room))
                })
            } else {
                let spare = st.rbuf.spare();
                let room = spare.len();
                stream.read(spare).map(|n| {
                    st.rbuf.len += n;
                    if n > 0 {
                        let buf = std::mem::take(&mut st.rbuf);
                        let used = self.decode(st, sh, ready, buf.filled(), None);
                        st.rbuf = buf;
                        st.rbuf.consume(used.unwrap_or(st.rbuf.len));
                    }
                    (n, room)
                })
            };
            let (n, room) = match read {
                Ok((0, _)) => {
                    let answered_after = !sh.config.cancel_on_disconnect
                        && st.reqs.iter().any(|r| !r.ended)
                        && !st.session.input_pending();
                    if answered_after {
                        // A half close: the web server (or client) sent all its requests
                        // and waits for their answers. They go out, then the connection
                        // closes. (With cancel-on-disconnect the end of the input is the
                        // client going away: a close cannot be told from a half close.)
                        st.closing = true;
                        return;
                    }
                    self.peer_closed(st, sh);
                    return;
                }
                Ok(r) => {
                    st.received = true;
                    r
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.peer_closed(st, sh);
                    return;
                }
            };
            if st.stream.is_none() {
                return;
            }
            if st.lingering.is_some_and(|read| read > LINGER_MAX_BYTES) {
                return;
            }
            if n < room && !st.peer_ended {
                return;
            }
        }
    }

    /// How much of the socket can be read straight into the room reserved for a body being
    /// collected (see [`Body::push`]): SCGI and uwsgi, where nothing but that body can come
    /// and its announced length says how much is left. Read through this thread's buffer,
    /// each of its bytes would be copied once more.
    fn body_room(&self, st: &ConnState) -> Option<usize> {
        if st.session.is_fastcgi() {
            return None;
        }
        let r = sole_request(st)?;
        if !r.collecting() || r.body.eof || r.aborted || r.ended {
            return None;
        }
        let rest = usize::try_from(r.body_rest()?).unwrap_or(usize::MAX);
        let last = r.body.chunks.back()?;
        let room = last.capacity() - last.len();
        if rest == 0 || room < rest.min(ReadBuf::MIN_ROOM) {
            return None;
        }
        Some(room.min(rest))
    }

    /// Reads up to `want` bytes into the room of the body being collected (see
    /// [`Conn::body_room`]) and decodes them where they lie; what is read and `want`, as
    /// the read into the thread's buffer returns them.
    fn read_into_body(
        self: &Arc<Self>,
        st: &mut ConnState,
        sh: &Arc<Shared>,
        ready: &mut Vec<Job>,
        stream: &Stream,
        want: usize,
    ) -> io::Result<(usize, usize)> {
        use std::os::fd::AsFd;
        let id = st.reqs[0].id;
        // Out of the queue while it is filled (its bytes and capacity stay counted in the
        // process's body memory); the connection's lock is held throughout, as it was when
        // `body_room` saw the chunk.
        let mut chunk = st.reqs[0]
            .body
            .chunks
            .pop_back()
            .expect("body_room saw the chunk");
        let start = chunk.len();
        let read = crate::sys::read_to_room(stream.as_fd(), &mut chunk, want);
        let n = chunk.len() - start;
        let added = if n > 0 {
            self.decode_in_place(st, sh, ready, id, &mut chunk[start..])
                .unwrap_or(0)
        } else {
            0
        };
        chunk.truncate(start + added);
        match st.reqs.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.body.queued += added;
                BODY_HELD.fetch_add(added, Ordering::Relaxed);
                r.body.chunks.push_back(chunk);
            }
            // Refused or closed while its bytes were decoded: what the chunk held is no
            // longer counted.
            None => account(&chunk[..start], chunk.capacity(), false),
        }
        read.map(|_| (n, want))
    }

    /// Whether a running request's queued body is full: the connection is not read for it
    /// until its app catches up. Only while more of that body is to come (a complete body
    /// holds no more by reading on, and the connection stays watched for aborts and the peer
    /// going away). Full is [`BODY_HIGH_WATER`], or, for the only request of a connection while
    /// the process holds `buffer-body-total`, any byte: the rest of its body stays with the web
    /// server until its app reads it.
    ///
    /// `wanting`: the request whose thread reads because its app waits for its body, and
    /// none of it is queued. On a multiplexed FastCGI connection its body may come behind the
    /// records of requests whose queues are full and whose apps may not run before it is
    /// done (a process of one thread): that thread reads on past them, while the process
    /// holds less than `buffer-body-total` and [`MULTIPLEX_EXTRA`] of bodies.
    fn paused(&self, st: &ConnState, sh: &Shared, wanting: Option<u64>) -> bool {
        if let Some(id) = wanting {
            let starved = st.reqs.iter().any(|r| r.id == id && r.body.queued == 0);
            let room = sh.config.buffer_body_total.saturating_add(MULTIPLEX_EXTRA);
            if starved && BODY_HELD.load(Ordering::Relaxed) < room {
                return false;
            }
        }
        let most = if st.reqs.len() == 1 && bodies_full(sh) {
            1
        } else {
            BODY_HIGH_WATER
        };
        st.reqs
            .iter()
            .any(|r| r.phase == Phase::Running && !r.body.eof && r.body.queued >= most)
    }

    /// The web server closed the connection (or it failed): whatever runs on it is gone.
    fn peer_closed(&self, st: &mut ConnState, sh: &Arc<Shared>) {
        for r in &mut st.reqs {
            r.aborted = true;
        }
        self.close(st, sh);
    }

    /// Decodes `input` and acts on every event; returns the bytes consumed, `None` when the
    /// connection closed. With `direct`, that request's body bytes are left in place (their
    /// ranges noted) rather than queued.
    fn decode(
        self: &Arc<Self>,
        st: &mut ConnState,
        sh: &Arc<Shared>,
        ready: &mut Vec<Job>,
        input: &[u8],
        mut direct: Option<&mut Direct>,
    ) -> Option<usize> {
        let mut pos = 0;
        let mut reply = Vec::new();
        let mut progress = false;
        // One clock read per call: when its requests came and when they became ready.
        let mut now = None;
        let result = loop {
            let ConnState {
                session,
                reqs,
                heads,
                lingering,
                next_id,
                ..
            } = &mut *st;
            let (used, event) = match session.decode(&input[pos..], &mut reply) {
                Ok(step) => step,
                Err(e) => break Err(e.0),
            };
            if used == 0 && event.is_none() {
                break Ok(());
            }
            pos += used;
            if let Some(l) = lingering {
                // Answered: input is read to its end and thrown away.
                *l += used as u64;
                continue;
            }
            match event {
                None => {}
                Some(Event::Request { rid, head }) => {
                    *heads += 1;
                    *next_id += 1;
                    let at = *now.get_or_insert_with(Instant::now);
                    reqs.push(ReqState::new(*next_id, rid, head, sh, at));
                }
                Some(Event::Body { rid, data }) => {
                    if let Some(r) = reqs.iter_mut().find(|r| r.rid == rid && !r.ended) {
                        if let Some(d) = direct.as_deref_mut().filter(|d| d.id == r.id) {
                            // Read into the app's buffer: left where it is.
                            let at = data.as_ptr() as usize - input.as_ptr() as usize;
                            d.ranges.push((at, data.len()));
                            r.took(data.len());
                            progress = true;
                            continue;
                        }
                        // Room is reserved for a body that is collected (a body that streams
                        // is held a piece at a time).
                        let expected = r.content_length.filter(|_| r.collecting());
                        r.body.push(data, expected, sh.config.buffer_body_total);
                        r.took(0);
                        progress = true;
                    }
                }
                Some(Event::BodyEnd { rid }) => {
                    if let Some(r) = reqs.iter_mut().find(|r| r.rid == rid && !r.ended) {
                        r.body.eof = true;
                        progress = true;
                    }
                }
                Some(Event::Abort { rid }) => {
                    if let Some(r) = reqs.iter_mut().find(|r| r.rid == rid && !r.ended) {
                        r.aborted = true;
                    }
                }
            }
        };
        if !reply.is_empty() {
            st.out.extend_from_slice(&reply);
        }
        if let Err(e) = result {
            crate::warn!("closing a connection: {e}");
            for r in &mut st.reqs {
                r.aborted = true;
            }
            self.close(st, sh);
            return None;
        }
        if st.lingering.is_some() {
            return Some(pos);
        }
        self.refuse_bad_requests(st, sh);
        // Requests whose body is complete run now; so do those whose body is larger than is
        // buffered (announced, or as much as is buffered has arrived): they stream.
        let buffer = sh.config.buffer_body as u64;
        // Past buffer-body-total, bodies are not collected: their requests wait for a thread
        // like any other, and their bodies stay in the socket until their apps read them.
        let full = bodies_full(sh);
        let kept = st.session.keeps_open();
        for r in &mut st.reqs {
            let larger = r.content_length.is_some_and(|len| len > buffer);
            let complete = r.body.eof || larger || r.body.received >= buffer || full;
            if r.collecting() && (complete || r.aborted) {
                r.phase = Phase::Running;
                let Some((head, Some(route))) = r.head.take() else {
                    unreachable!("refused requests were removed")
                };
                ready.push(Arc::new(Request {
                    server: sh.clone(),
                    conn: self.clone(),
                    id: r.id,
                    head,
                    route,
                    received: r.received,
                    python: Default::default(),
                    ready: *now.get_or_insert_with(Instant::now),
                    seq: r.seq,
                    kept,
                }));
            }
        }
        if progress || !ready.is_empty() {
            self.notify(st);
        }
        let collecting = st.reqs.iter().any(|r| r.collecting());
        if collecting {
            sh.note_collecting(self.token);
        }
        let timer = if collecting {
            Some(Timer::Body)
        } else if pos < input.len() && st.reqs.is_empty() {
            Some(Timer::Header)
        } else {
            None
        };
        if timer.is_some() || st.reqs.iter().any(|r| r.phase == Phase::Running) {
            self.set_timer(st, sh, timer);
        }
        Some(pos)
    }

    /// Heads the gateway answers itself, before any app runs: no mount (404), a bad
    /// CONTENT_LENGTH (400), a body over max-body-bytes (413).
    fn refuse_bad_requests(&self, st: &mut ConnState, sh: &Arc<Shared>) {
        let mut i = 0;
        while i < st.reqs.len() {
            let r = &st.reqs[i];
            let refusal = match &r.head {
                Some((_, None)) => Some((404, "Not Found\n".to_string())),
                Some(_) if r.bad_length => Some((
                    400,
                    "Bad Request: CONTENT_LENGTH is not a number of bytes\n".to_string(),
                )),
                Some(_) => match (r.content_length, sh.config.max_body_bytes) {
                    (Some(len), Some(max)) if len > max => Some((
                        413,
                        format!("Content Too Large: the body of {len} bytes is over {max}\n"),
                    )),
                    _ => None,
                },
                None => None,
            };
            match refusal {
                Some((status, text)) => {
                    let r = st.reqs.remove(i);
                    if let Some((head, route)) = &r.head {
                        if status != 404 {
                            crate::request_log!(
                                warn,
                                sh.log_fields(head, route.as_ref(), r.seq, None),
                                "request refused before the app runs: {status} {}",
                                text.trim_end()
                            );
                        }
                        sh.log_refusal(&r, head, route.as_ref(), status, &text);
                    }
                    respond(st, r.rid, status, &text);
                }
                None => i += 1,
            }
        }
    }

    /// Writes pending output; on failure the connection is closed.
    fn flush(&self, st: &mut ConnState, sh: &Arc<Shared>) {
        let Some(stream) = st.stream.clone() else {
            return;
        };
        while st.out_pos < st.out.len() {
            match stream.write(&st.out[st.out_pos..]) {
                Ok(0) => {
                    self.peer_closed(st, sh);
                    return;
                }
                Ok(n) => st.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.peer_closed(st, sh);
                    return;
                }
            }
        }
        let was_full = st.out.len() - st.out_pos >= OUTPUT_HIGH_WATER;
        if st.out_pos == st.out.len() {
            st.out.clear();
            st.out_pos = 0;
        }
        if was_full || st.out.is_empty() {
            self.notify(st);
        }
    }

    /// After any change: answered connections are closed, kept or read to their end; the
    /// socket is armed for what the connection waits for.
    fn settle(self: &Arc<Self>, st: &mut ConnState, sh: &Arc<Shared>) {
        if st.stream.is_none() {
            return;
        }
        if !st.writer && st.out_pos < st.out.len() {
            self.flush(st, sh);
            if st.stream.is_none() {
                return;
            }
        }
        if st.unread && self.wants_read(st, sh) {
            let mut ready = Vec::new();
            self.read_input(st, sh, &mut ready);
            sh.push_jobs(ready);
            if st.stream.is_none() {
                return;
            }
        }
        let out_pending = st.out_pos < st.out.len();
        if st.reqs.is_empty() && !out_pending && st.out.capacity() > 0 {
            // A connection waiting for its next request holds no buffer. A streamed response
            // keeps its buffer while it runs (freeing and growing it again at every drain cost
            // a page fault per page and copies).
            st.out = Vec::new();
            st.out_pos = 0;
        }
        if st.reqs.is_empty() && !out_pending {
            let input = st.session.input_pending();
            if st.closing {
                self.close(st, sh);
                return;
            }
            if let Some(read) = st.lingering {
                if !input {
                    self.close(st, sh);
                    return;
                }
                if read > LINGER_MAX_BYTES {
                    crate::debug!(
                        "closing a connection that sent {read} bytes after its response \
                         (over {LINGER_MAX_BYTES})"
                    );
                    self.close(st, sh);
                    return;
                }
            } else if st.heads > 0 || st.session.fastcgi_done() {
                // (So does a FastCGI connection without KEEP_CONN whose request the protocol
                // ended by itself: refused, or aborted before its head was whole.)
                // While the worker process stops (or sheds this connection), a kept connection
                // closes right after a response: the end of the response and the close arrive
                // together, and nginx drops a cached connection that is already closed when it
                // puts it back (FastCGI has no way to tell the web server that a connection
                // ends; nginx ignores `Connection: close` on FastCGI responses).
                let keep = self.kept_after(st, sh);
                if st.session.request_arriving() {
                    // The next request began arriving (FastCGI keep-conn): it has the header
                    // timeout, and it is served also when the connection was to close after
                    // this response (closing now would answer it with nothing, or with a
                    // reset); the connection closes after its response then.
                    self.set_timer(st, sh, Some(Timer::Header));
                } else if keep {
                    if input {
                        // An unread body is read and dropped before the next request.
                        self.set_timer(st, sh, Some(Timer::Linger));
                    } else if st.rbuf.len == 0 {
                        self.set_timer(st, sh, Some(Timer::Idle));
                    }
                } else if input {
                    // The web server is still sending this request's input: the end of the
                    // response goes out (a half close: it may stop sending and close), the
                    // rest of the input is read and dropped until it ends or the web server
                    // closes, then the connection closes (a close with unread input would
                    // reset it, which nginx and Apache report as a failed request).
                    self.linger(st, sh);
                } else {
                    self.close(st, sh);
                    return;
                }
            }
        }
        // The connection stays open: the epoll tells when it can go on (unless it is only
        // waiting for a running request that reads and writes for itself).
        let watch = self.wants_read(st, sh) || out_pending || self.watched_while_paused(st, sh);
        if !st.registered && watch {
            let Some(stream) = &st.stream else {
                return;
            };
            if let Err(e) = sh.register(stream, self.token) {
                crate::error!("watching a connection: {e}");
                self.close(st, sh);
                return;
            }
            st.registered = true;
        }
    }

    /// Whether the connection is kept after its current requests (not while the process
    /// stops, nor once it is shed: [`Shared::shed_busy`]).
    fn kept_after(&self, st: &ConnState, sh: &Arc<Shared>) -> bool {
        st.session.keeps_open() && sh.drain() != Drain::Hard && !st.closing && !st.shed
    }

    /// Whether the connection's input is paused (see [`Conn::paused`]) and its end still
    /// matters: under cancel-on-disconnect the end is the client going away, and nobody reads
    /// a paused connection until its app catches up, so the epoll reports it (`on_event`).
    /// Such a connection is watched even when it paused before it was first watched (its
    /// body came with it).
    fn watched_while_paused(&self, st: &ConnState, sh: &Shared) -> bool {
        sh.config.cancel_on_disconnect && self.paused(st, sh, None)
    }

    fn wants_read(&self, st: &ConnState, sh: &Arc<Shared>) -> bool {
        if st.reader || st.closing || self.paused(st, sh, None) {
            return false;
        }
        if st.lingering.is_some() || st.reqs.is_empty() {
            return true;
        }
        if st.reqs.iter().any(|r| r.collecting()) {
            return true;
        }
        // Requests run: their threads read when they need the body. The connection is
        // watched meanwhile where more can arrive on it (FastCGI multiplexing, aborts) or
        // where a disconnect cancels the request.
        st.session.keeps_open() || sh.config.cancel_on_disconnect
    }

    /// Half-closes the connection (the web server reads the end of what it was sent) and reads
    /// on, throwing the input away, until the web server closes or the linger timeout; then it
    /// closes.
    fn linger(&self, st: &mut ConnState, sh: &Arc<Shared>) {
        if let Some(stream) = &st.stream {
            stream.shutdown_write();
        }
        st.lingering = Some(0);
        self.set_timer(st, sh, Some(Timer::Linger));
    }

    /// Closes the connection: every request on it is gone; threads waiting on it wake.
    fn close(&self, st: &mut ConnState, sh: &Arc<Shared>) {
        let Some(stream) = st.stream.take() else {
            return;
        };
        // A thread polling the socket holds its own reference: wake it.
        if Arc::strong_count(&stream) > 1 {
            stream.shutdown();
        }
        drop(stream);
        for r in &mut st.reqs {
            r.aborted = true;
        }
        st.rbuf = ReadBuf::default();
        st.out = Vec::new();
        st.out_pos = 0;
        st.timer = None;
        self.deadline.store(0, Ordering::Relaxed);
        sh.index_deadline(self.token, 0);
        sh.forget_conn(self.token);
        self.notify(st);
    }
}

/// Frames a response the gateway makes itself (no app ran) into the connection's output.
fn respond(st: &mut ConnState, rid: Rid, status: u16, text: &str) {
    let mut head = Vec::new();
    let len = text.len().to_string();
    let status_line = format!("{status} {}", reason(status));
    cgi::encode_response_head(
        status_line.as_bytes(),
        [
            (&b"Content-Type"[..], &b"text/plain; charset=utf-8"[..]),
            (b"Content-Length", len.as_bytes()),
        ],
        &mut head,
    );
    let mut frames = Frames::new();
    st.session
        .frame(rid, &head, text.as_bytes(), true, &mut frames);
    frames.copy_rest(0, &mut st.out);
}

/// The status of a CGI response head (`Status: 200 OK` first, as the gateway's Python half
/// writes it; 200 without one, as CGI says).
fn status_of(head: &[u8]) -> u16 {
    match head.strip_prefix(b"Status: ") {
        Some([a, b, c, ..]) if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => 200,
    }
}

/// The reason phrase of the statuses the gateway makes.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl ReqState {
    fn collecting(&self) -> bool {
        matches!(self.phase, Phase::Collecting(_))
    }

    /// Body bytes still to come, by its announced length; `None` when none was announced.
    fn body_rest(&self) -> Option<u64> {
        self.content_length
            .map(|len| len.saturating_sub(self.body.received))
    }

    /// `n` more body bytes arrived (already counted when queued); the body ends with its
    /// announced length.
    fn took(&mut self, n: usize) {
        self.body.received += n as u64;
        if self
            .content_length
            .is_some_and(|len| self.body.received >= len)
        {
            self.body.eof = true;
        }
    }

    fn new(
        id: u64,
        rid: Rid,
        head: protocol::RequestHead,
        sh: &Arc<Shared>,
        received: Instant,
    ) -> ReqState {
        let route = sh.router.route(&head);
        let length = head.content_length();
        let content_length = length.and_then(Result::ok);
        let mut body = Body::default();
        // Nothing will come but the stream's end: the request is complete now.
        body.eof = content_length == Some(0);
        ReqState {
            id,
            rid,
            phase: Phase::Collecting(Counted::new()),
            head: Some((head, route)),
            body,
            content_length,
            bad_length: matches!(length, Some(Err(()))),
            ended: false,
            aborted: false,
            received,
            seq: sh.seq.fetch_add(1, Ordering::Relaxed) + 1,
            status: 0,
            sent: 0,
        }
    }
}

impl Shared {
    /// The access log line of a request the gateway answered before any app ran.
    fn log_refusal(
        &self,
        r: &ReqState,
        head: &protocol::RequestHead,
        route: Option<&Route>,
        status: u16,
        text: &str,
    ) {
        let Some(log) = &self.config.access_log else {
            return;
        };
        let (mount, app_group) = self.mount_names(route);
        log.log(&crate::log::access::Entry {
            head,
            mount,
            app_group,
            status,
            body_bytes_sent: text.len() as u64,
            body_bytes_received: r.body.received,
            duration: r.received.elapsed(),
            queued: Duration::ZERO,
            seq: r.seq,
        });
    }
}

// ---- the side of the thread running a request ----

impl Conn {
    /// Frames response bytes of request `id` and writes what the socket takes; the rest waits in
    /// the connection's output. `Ready(n)`: `n` body bytes were taken (the head with the
    /// first call); `Wait`: the output is full, call [`Conn::wait_writable`].
    pub fn send(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        id: u64,
        head: &[u8],
        body: &[u8],
        done: bool,
        unlocked: &mut dyn FnMut(&mut dyn FnMut()),
    ) -> Io<usize> {
        let mut st = self.lock();
        let Some(stream) = st.stream.clone() else {
            return Io::Gone;
        };
        let Some(r) = st.reqs.iter().find(|r| r.id == id) else {
            return Io::Gone;
        };
        if r.aborted || r.ended {
            return Io::Gone;
        }
        let rid = r.rid;
        if st.out.len() - st.out_pos >= OUTPUT_HIGH_WATER {
            return Io::Wait;
        }
        let take = body.len().min(FRAME_LIMIT);
        let end = done && take == body.len();
        let mut frames = Frames::new();
        st.session.frame(rid, head, &body[..take], end, &mut frames);
        if let Some(r) = st.reqs.iter_mut().find(|r| r.id == id) {
            r.ended |= end;
            r.sent += take as u64;
            if !head.is_empty() {
                r.status = status_of(head);
            }
        }
        if st.out_pos == st.out.len() && !st.writer {
            let Ok(n) = write_frames(&stream, &frames, 0) else {
                self.peer_closed(&mut st, sh);
                return Io::Gone;
            };
            if n < frames.len() && st.reqs.len() == 1 {
                // The socket is full: wait for room (with the GIL released) and write the
                // rest from the app's own buffer, as a blocking write would, instead of
                // copying it. Output other requests of the connection make meanwhile is
                // queued behind (the writer role keeps others from flushing).
                let written;
                (st, written) = self.without_lock(st, Role::Writer, || {
                    self.write_rest(sh, &stream, &frames, n, unlocked)
                });
                if written.is_err() {
                    self.peer_closed(&mut st, sh);
                    return Io::Gone;
                }
                if st.out_pos < st.out.len() {
                    self.flush(&mut st, sh);
                }
            } else if n < frames.len() {
                frames.copy_rest(n, &mut st.out);
            }
            if end
                && st.out_pos == st.out.len()
                && st.reqs.len() == 1
                && st.session.keeps_open()
                && !self.kept_after(&st, sh)
                && !st.session.request_arriving()
            {
                // A kept connection closes after this response (the worker stops, or sheds
                // it): the close follows its end at once (not after the app's clean-up), so
                // that nginx reads the close with the end and does not reuse the connection.
                // What comes after is read and dropped, never run: a request sent before the
                // web server saw the close gets no answer, as it would from a closed
                // connection, and can be sent again elsewhere.
                self.linger(&mut st, sh);
            }
        } else {
            frames.copy_rest(0, &mut st.out);
            if !st.writer {
                self.flush(&mut st, sh);
            }
        }
        if st.stream.is_none() {
            return Io::Gone;
        }
        Io::Ready(take)
    }

    /// Writes `frames` after their first `done` bytes, waiting for the socket to take them
    /// (each wait through `unlocked`, which runs it with the GIL released), up to the body
    /// timeout between two writes. The connection's lock is not held meanwhile.
    fn write_rest(
        &self,
        sh: &Arc<Shared>,
        stream: &Stream,
        frames: &Frames<'_>,
        mut done: usize,
        unlocked: &mut dyn FnMut(&mut dyn FnMut()),
    ) -> Result<(), WaitError> {
        let timeout = sh.config.timeouts.body;
        let mut deadline = Instant::now() + timeout;
        while done < frames.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            let mut writable = false;
            unlocked(&mut || writable = stream.poll(false, left));
            if !writable {
                continue;
            }
            match write_frames(stream, frames, done) {
                Ok(0) => {}
                Ok(n) => {
                    done += n;
                    deadline = Instant::now() + timeout;
                }
                Err(_) => return Err(WaitError::Gone),
            }
        }
        Ok(())
    }

    /// Waits (up to the body timeout) until the output has room again, writing it out.
    pub fn wait_writable(&self, sh: &Arc<Shared>) -> Result<(), WaitError> {
        let timeout = sh.config.timeouts.body;
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let Some(stream) = st.stream.clone() else {
                return Err(WaitError::Gone);
            };
            if st.out.len() - st.out_pos < OUTPUT_HIGH_WATER {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            if st.writer {
                st = self.wait(st, left);
                continue;
            }
            let writable;
            (st, writable) = self.without_lock(st, Role::Writer, || stream.poll(false, left));
            if writable {
                self.flush(&mut st, sh);
            }
        }
    }

    /// Up to `max` body bytes of request `id` (any amount for 0) handed to `sink`; an empty slice at
    /// the body's end. Reads the socket itself when nobody else does; a large read straight
    /// into the sink's room goes through `unlocked` (which runs it with the GIL released).
    /// `Wait`: call [`Conn::wait_readable`].
    pub fn recv(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        id: u64,
        max: usize,
        sink: &mut dyn BodySink,
        unlocked: &mut dyn FnMut(&mut dyn FnMut()),
    ) -> Io<()> {
        let mut st = self.lock();
        for attempt in 0..2 {
            let Some(r) = st.reqs.iter_mut().find(|r| r.id == id) else {
                return Io::Gone;
            };
            if r.body.pop(max, &mut |data| sink.put(data)) {
                let resume = r.body.queued < BODY_HIGH_WATER / 2;
                if resume && attempt == 0 {
                    self.settle(&mut st, sh);
                    // A thread waiting behind this full queue (multiplexing) may go on.
                    self.notify(&st);
                }
                return Io::Ready(());
            }
            if r.body.eof || r.ended {
                // After the response's end the rest of the body is not read for the app.
                sink.put(&[]);
                return Io::Ready(());
            }
            if r.aborted || st.stream.is_none() {
                return Io::Gone;
            }
            if attempt == 1 || st.reader {
                break;
            }
            // Nobody reads this connection now: read what arrived, into the app's own buffer
            // when nothing but this request's body can come.
            if let Some((stream, want)) = self.direct_read(&st, id, max) {
                if let Some(buf) = sink.room(want) {
                    let read;
                    if buf.len() >= UNLOCKED_READ {
                        // A long copy: with the GIL released (through `unlocked`) and without
                        // the connection's lock.
                        (st, read) = self.without_lock(st, Role::Reader, || {
                            let mut read = Ok(0);
                            unlocked(&mut || read = stream.read(buf));
                            read
                        });
                    } else {
                        read = stream.read(buf);
                    }
                    match self.took_direct(&mut st, sh, id, read, buf) {
                        Some(filled) if filled > 0 => {
                            sink.commit(filled);
                            return Io::Ready(());
                        }
                        // Nothing for this request (the socket had nothing, or only other
                        // records), or the connection is gone: look again.
                        _ => continue,
                    }
                }
            }
            let mut ready = Vec::new();
            self.read_input_for(&mut st, sh, &mut ready, Some(id));
            sh.push_jobs(ready);
        }
        Io::Wait
    }

    /// Whether the socket can be read straight into the buffer the app's body read returns
    /// (`sink`'s room): when the input can only be request `id`'s body (its body queue is
    /// empty, no other request is on the connection and no undecoded input is pending). Then
    /// the stream and how much to read. SCGI and uwsgi bodies then take no copy but the
    /// kernel's; FastCGI record headers and padding are decoded where they lie and cut out in
    /// place (see [`Conn::took_direct`]).
    fn direct_read(&self, st: &ConnState, id: u64, max: usize) -> Option<(Arc<Stream>, usize)> {
        let r = sole_request(st)?;
        if r.id != id || r.phase != Phase::Running || r.body.queued > 0 || r.body.eof {
            return None;
        }
        let stream = st.stream.clone()?;
        let mut want = if max > 0 {
            max.min(DIRECT_READ_MAX)
        } else {
            DIRECT_READ
        };
        if !st.session.is_fastcgi() {
            // SCGI and uwsgi: the body is all that is left; not more than it.
            match r.body_rest() {
                Some(0) => return None,
                Some(rest) => want = want.min(usize::try_from(rest).unwrap_or(usize::MAX)),
                None => {}
            }
        }
        Some((stream, want))
    }

    /// Acts on a direct read of request `id` into `buf` (see [`Conn::decode_in_place`]): how
    /// many body bytes it gave, at the front of `buf` (0: none yet), `None` when the
    /// connection is gone or failed.
    fn took_direct(
        self: &Arc<Self>,
        st: &mut ConnState,
        sh: &Arc<Shared>,
        id: u64,
        read: io::Result<usize>,
        buf: &mut [u8],
    ) -> Option<usize> {
        // Closed while the read ran unlocked: nothing to decode.
        st.stream.as_ref()?;
        let n = match read {
            Ok(0) => {
                self.peer_closed(st, sh);
                return None;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Some(0);
            }
            Err(_) => {
                self.peer_closed(st, sh);
                return None;
            }
        };
        // More may wait in the socket (readiness is edge-triggered): the app reads it, or the
        // connection once the request is done (see `finish`).
        st.direct = true;
        let mut ready = Vec::new();
        let filled = self.decode_in_place(st, sh, &mut ready, id, &mut buf[..n]);
        sh.push_jobs(ready);
        filled
    }

    /// Decodes input a read put straight into a buffer of request `id`'s body (`buf`, see
    /// [`Direct`]; the decoder passes a FastCGI record's content on as it arrives), keeps
    /// what is left undecoded for the next read (a record header the read ended inside,
    /// another request's record), and moves the body bytes together at the front of `buf`:
    /// how many there are; `None` when the input broke the protocol (the connection closed).
    fn decode_in_place(
        self: &Arc<Self>,
        st: &mut ConnState,
        sh: &Arc<Shared>,
        ready: &mut Vec<Job>,
        id: u64,
        buf: &mut [u8],
    ) -> Option<usize> {
        let mut direct = Direct {
            id,
            ranges: Vec::new(),
        };
        let used = self.decode(st, sh, ready, buf, Some(&mut direct))?;
        if st.stream.is_some() {
            st.rbuf.append(&buf[used..]);
        }
        let mut filled = 0;
        for (at, len) in direct.ranges {
            if at != filled {
                buf.copy_within(at..at + len, filled);
            }
            filled += len;
        }
        Some(filled)
    }

    /// Body bytes of request `id` not yet handed to its app; `None` when its length is not
    /// known.
    pub fn body_left(&self, id: u64) -> Option<u64> {
        let st = self.lock();
        let r = st.reqs.iter().find(|r| r.id == id)?;
        let handed = r.body.received - r.body.queued as u64;
        r.content_length.map(|len| len.saturating_sub(handed))
    }

    /// Waits (up to `timeout`) for input of request `id`, reading the socket itself unless another
    /// thread does.
    pub fn wait_readable(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        id: u64,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let Some(r) = st.reqs.iter().find(|r| r.id == id) else {
                return Err(WaitError::Gone);
            };
            if r.body.queued > 0 || r.body.eof || r.ended {
                return Ok(());
            }
            let Some(stream) = st.stream.clone() else {
                return Err(WaitError::Gone);
            };
            if r.aborted {
                return Err(WaitError::Gone);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            // Another thread reads it: until it has.
            if st.reader {
                st = self.wait(st, left);
                continue;
            }
            // Paused for this request too (the socket may be readable, with nothing to read
            // for it): until an app takes from a full queue of this connection, or, looking
            // again now and then, until the process holds less (another connection's
            // requests free bodies without telling this one).
            if self.paused(&st, sh, Some(id)) {
                st = self.wait(st, left.min(PAUSED_LOOK_AGAIN));
                continue;
            }
            let readable;
            (st, readable) = self.without_lock(st, Role::Reader, || stream.poll(true, left));
            if readable {
                // The caller reads it (into the app's own buffer where it can).
                return Ok(());
            }
            self.settle(&mut st, sh);
        }
    }

    /// The app is done with request `id`: a response whose end did not go out is ended
    /// (`complete`), or cut off by closing the connection, so that the web server sees it
    /// truncated. Its unread body is read and thrown away. Returns how the request ended.
    pub fn finish(self: &Arc<Self>, sh: &Arc<Shared>, id: u64, complete: bool) -> Outcome {
        let mut st = self.lock();
        let Some(i) = st.reqs.iter().position(|r| r.id == id) else {
            return Outcome::default();
        };
        let r = st.reqs.remove(i);
        let outcome = Outcome {
            status: r.status,
            sent: r.sent,
            received: r.body.received,
        };
        if st.stream.is_some() && !r.ended {
            if complete || r.aborted {
                let mut frames = Frames::new();
                st.session.frame(r.rid, b"", b"", true, &mut frames);
                frames.copy_rest(0, &mut st.out);
            } else {
                st.session.forget(r.rid);
                self.close(&mut st, sh);
                return outcome;
            }
        }
        if std::mem::take(&mut st.direct) {
            // The app read the socket itself, consuming its readiness: what it left is read
            // now (edge-triggered, it would not be signalled again).
            st.unread = true;
        }
        self.settle(&mut st, sh);
        outcome
    }

    /// Whether the client of request `id` went away (or the web server aborted it).
    pub fn is_gone(&self, id: u64) -> bool {
        let st = self.lock();
        st.stream.is_none()
            || st
                .reqs
                .iter()
                .find(|r| r.id == id)
                .is_none_or(|r| r.aborted)
    }

    /// Answers request `id` with a response the gateway makes itself (503, 500...).
    pub fn respond(self: &Arc<Self>, sh: &Arc<Shared>, id: u64, status: u16, text: &str) {
        let mut st = self.lock();
        if st.stream.is_none() {
            return;
        }
        let Some(r) = st.reqs.iter_mut().find(|r| r.id == id) else {
            return;
        };
        if r.ended || r.aborted {
            return;
        }
        r.ended = true;
        r.status = status;
        r.sent = text.len() as u64;
        let rid = r.rid;
        respond(&mut st, rid, status, text);
        self.settle(&mut st, sh);
    }

    fn wait<'a>(
        &self,
        mut st: MutexGuard<'a, ConnState>,
        at_most: Duration,
    ) -> MutexGuard<'a, ConnState> {
        st.waiters += 1;
        let mut st = self
            .cond
            .wait_timeout(st, at_most)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        st.waiters -= 1;
        st
    }

    /// Runs `f` without the connection's lock, holding `role` meanwhile (other threads keep
    /// off that side of the socket: they wait on the connection), then wakes those waiting.
    fn without_lock<'s, R>(
        &'s self,
        mut st: MutexGuard<'s, ConnState>,
        role: Role,
        f: impl FnOnce() -> R,
    ) -> (MutexGuard<'s, ConnState>, R) {
        *role.of(&mut st) = true;
        drop(st);
        let r = f();
        st = self.lock();
        *role.of(&mut st) = false;
        self.notify(&st);
        (st, r)
    }

    /// Wakes the threads waiting on this connection, if any (a notification costs a system
    /// call even when nobody waits).
    fn notify(&self, st: &ConnState) {
        if st.waiters > 0 {
            self.cond.notify_all();
        }
    }
}

/// One vectored write of a frame set; `Ok(0)` when the socket takes nothing now.
fn write_frames(stream: &Stream, frames: &Frames<'_>, skip: usize) -> io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(8);
    frames.io_slices_from(skip, &mut slices);
    if slices.is_empty() {
        // Nothing to write (the end of an SCGI or uwsgi response is its close): no call.
        return Ok(0);
    }
    loop {
        match stream.write_vectored(&slices) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn a_response_head_s_status_is_its_three_digits_else_200() {
        assert_eq!(status_of(b"Status: 404 Not Found\r\n\r\n"), 404);
        assert_eq!(status_of(b"Status: 200 OK\r\n"), 200);
        assert_eq!(status_of(b"Status: 599"), 599);
        assert_eq!(status_of(b"Content-Type: text/plain\r\n\r\n"), 200);
        assert_eq!(status_of(b"Status: 4x4 Odd\r\n"), 200);
        assert_eq!(status_of(b"Status: 40"), 200);
    }
}
