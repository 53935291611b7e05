//! What the event loop and the worker threads share: a connection's output buffer and a
//! request's body queue. Both are bounded; the side that would overfill one waits (a worker,
//! with the GIL released) or stops reading (the loop), so a slow client or a slow app applies
//! back-pressure instead of growing memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use protocol::fastcgi::{encode, ProtocolStatus};
use protocol::RequestHead;

use crate::router::Route;

/// Output buffered for one connection before a worker has to wait for the loop to write it.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Body bytes queued for one request before the loop stops reading its connection.
pub const BODY_HIGH_WATER: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding a lock left plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes the event loop on behalf of a connection (by its token).
pub struct Notifier {
    waker: mio::Waker,
    pending: Mutex<Vec<usize>>,
}

impl Notifier {
    pub fn new(waker: mio::Waker) -> Self {
        Notifier {
            waker,
            pending: Mutex::new(Vec::new()),
        }
    }

    pub fn notify(&self, token: usize) {
        let mut pending = lock(&self.pending);
        let first = pending.is_empty();
        pending.push(token);
        drop(pending);
        if first {
            // A failed wake means the loop is gone (shutting down); nothing to do.
            let _ = self.waker.wake();
        }
    }

    /// Takes the tokens notified since the last call.
    pub fn take(&self) -> Vec<usize> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

#[derive(Default)]
pub struct OutState {
    pub buf: Vec<u8>,
    /// FastCGI request ids whose END_REQUEST is in `buf`.
    pub finished: Vec<u16>,
    /// An SCGI response (the only request of its connection) is complete.
    pub scgi_done: bool,
    /// The response was cut off: close the connection without finishing it.
    pub abort: bool,
    /// The connection is gone; writers fail.
    pub closed: bool,
    notified: bool,
}

/// One connection's output, filled by workers (whole records) and drained by the loop.
pub struct Output {
    token: usize,
    notifier: Arc<Notifier>,
    state: Mutex<OutState>,
    drained: Condvar,
}

impl Output {
    pub fn new(token: usize, notifier: Arc<Notifier>) -> Self {
        Output {
            token,
            notifier,
            state: Mutex::new(OutState::default()),
            drained: Condvar::new(),
        }
    }

    /// Waits for room, then lets `f` append to the buffer and wakes the loop. Returns false
    /// (without calling `f`) when the connection is gone.
    pub fn write_with(&self, f: impl FnOnce(&mut OutState)) -> bool {
        let mut st = lock(&self.state);
        while !st.closed && st.buf.len() >= OUTPUT_HIGH_WATER {
            st = self.drained.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        self.append(st, f)
    }

    /// Appends only if there is room right now; `None` when the caller would have to wait.
    pub fn try_write_with(&self, f: impl FnOnce(&mut OutState)) -> Option<bool> {
        let st = lock(&self.state);
        if !st.closed && st.buf.len() >= OUTPUT_HIGH_WATER {
            return None;
        }
        Some(self.append(st, f))
    }

    /// Lets `f` append unless the connection is gone, and wakes the loop once per drain.
    fn append(&self, mut st: MutexGuard<'_, OutState>, f: impl FnOnce(&mut OutState)) -> bool {
        if st.closed {
            return false;
        }
        f(&mut st);
        let wake = !st.notified;
        st.notified = true;
        drop(st);
        if wake {
            self.notifier.notify(self.token);
        }
        true
    }

    /// Appends without waiting (the loop's own replies: management records, refusals).
    pub fn push_now(&self, f: impl FnOnce(&mut OutState)) {
        f(&mut lock(&self.state));
    }

    /// The loop's side: lets `f` drain the buffer (write to the socket) and wakes waiting
    /// workers when there is room again. Clears the notification flag.
    pub fn drain_with<R>(&self, f: impl FnOnce(&mut OutState) -> R) -> R {
        let mut st = lock(&self.state);
        st.notified = false;
        let before = st.buf.len();
        let r = f(&mut st);
        if st.buf.len() < before && st.buf.len() < OUTPUT_HIGH_WATER {
            self.drained.notify_all();
        }
        r
    }

    /// The connection is gone: every writer fails from now on.
    pub fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        st.buf = Vec::new();
        self.drained.notify_all();
    }
}

struct BodyState {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    eof: bool,
    /// The loop stopped reading because of this body; resume when it drains.
    paused: bool,
}

/// One request's body on its way from the loop to the app, and its abort flag.
pub struct RequestIo {
    token: usize,
    notifier: Arc<Notifier>,
    body: Mutex<BodyState>,
    arrived: Condvar,
    gone: AtomicBool,
    ended: AtomicBool,
}

impl RequestIo {
    pub fn new(token: usize, notifier: Arc<Notifier>) -> Self {
        RequestIo {
            token,
            notifier,
            body: Mutex::new(BodyState {
                chunks: VecDeque::new(),
                queued: 0,
                eof: false,
                paused: false,
            }),
            arrived: Condvar::new(),
            gone: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    /// Loop: a piece of the body arrived. Returns true when the queue is full and the loop
    /// should stop reading this connection until the app catches up.
    pub fn push(&self, data: &[u8]) -> bool {
        let mut st = lock(&self.body);
        if self.is_gone() {
            return false;
        }
        st.queued += data.len();
        st.chunks.push_back(data.to_vec());
        self.arrived.notify_one();
        st.paused = st.queued >= BODY_HIGH_WATER;
        st.paused
    }

    /// Loop: the body is complete.
    pub fn end(&self) {
        lock(&self.body).eof = true;
        self.arrived.notify_all();
    }

    /// Whether the loop may read more for this request.
    pub fn has_room(&self) -> bool {
        lock(&self.body).queued < BODY_HIGH_WATER
    }

    /// The client went away or the web server aborted the request; also used by the worker
    /// when the request is done, to drop an unread body.
    pub fn abort(&self) {
        self.gone.store(true, Ordering::Release);
        let mut st = lock(&self.body);
        st.chunks.clear();
        st.queued = 0;
        let resume = std::mem::take(&mut st.paused);
        self.arrived.notify_all();
        drop(st);
        if resume {
            self.notifier.notify(self.token);
        }
    }

    /// The response was ended together with its last bytes.
    pub fn set_ended(&self) {
        self.ended.store(true, Ordering::Release);
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Worker: up to `max` bytes (0: any amount) of body, waiting for them; empty at the end,
    /// `None` when the request is gone.
    pub fn recv(&self, max: usize) -> Option<Vec<u8>> {
        let mut st = lock(&self.body);
        loop {
            if self.is_gone() {
                return None;
            }
            if !st.chunks.is_empty() {
                break;
            }
            if st.eof {
                return Some(Vec::new());
            }
            st = self.arrived.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let mut chunk = st.chunks.pop_front().expect("not empty");
        if max > 0 && chunk.len() > max {
            let rest = chunk.split_off(max);
            st.chunks.push_front(rest);
        }
        st.queued -= chunk.len();
        let resume = st.paused && st.queued < BODY_HIGH_WATER / 2;
        if resume {
            st.paused = false;
        }
        drop(st);
        if resume {
            self.notifier.notify(self.token);
        }
        Some(chunk)
    }
}

/// How a response is framed on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    FastCgi(u16),
    Scgi,
}

impl Framing {
    /// Appends response bytes in this framing.
    pub fn encode(self, data: &[u8], buf: &mut Vec<u8>) {
        match self {
            Framing::FastCgi(id) => encode::stdout(id, data, buf),
            Framing::Scgi => buf.extend_from_slice(data),
        }
    }

    /// Ends a complete response: END_REQUEST for FastCGI, the connection's close for SCGI.
    pub fn end(self, s: &mut OutState) {
        match self {
            Framing::FastCgi(id) => {
                encode::end_request(id, 0, ProtocolStatus::RequestComplete, &mut s.buf);
                s.finished.push(id);
            }
            Framing::Scgi => s.scgi_done = true,
        }
    }
}

/// A request on its way to a worker thread.
pub struct Job {
    pub head: RequestHead,
    pub route: Route,
    pub io: Arc<RequestIo>,
    pub out: Arc<Output>,
    pub framing: Framing,
    pub queued_at: std::time::Instant,
}

impl Job {
    /// Answers without Python (404 for a missing script, 500 when its interpreter could not
    /// be made).
    pub fn respond(&self, status: &str, body: &str) {
        let mut data = Vec::new();
        let len = body.len().to_string();
        protocol::cgi::encode_response_head(
            status.as_bytes(),
            [
                (&b"Content-Type"[..], &b"text/plain; charset=utf-8"[..]),
                (b"Content-Length", len.as_bytes()),
            ],
            &mut data,
        );
        data.extend_from_slice(body.as_bytes());
        let framing = self.framing;
        if self.out.write_with(|s| {
            framing.encode(&data, &mut s.buf);
            framing.end(s);
        }) {
            self.io.set_ended();
        }
    }

    /// Ends the request: a complete response gets its end (END_REQUEST, or the close of an
    /// SCGI connection); an incomplete one has its connection aborted so the web server sees
    /// the response cut off. Any unread body is dropped.
    pub fn finish(&self, complete: bool) {
        // A request the web server aborted (ABORT_REQUEST) is still answered with END_REQUEST;
        // the connection and its other requests go on.
        let complete = complete || self.io.is_gone();
        self.io.abort();
        if self.io.is_ended() {
            return;
        }
        let framing = self.framing;
        // False means the connection is already gone: nothing to end.
        self.out.write_with(|s| match complete {
            true => framing.end(s),
            false => s.abort = true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier() -> (mio::Poll, Arc<Notifier>) {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        (poll, Arc::new(Notifier::new(waker)))
    }

    #[test]
    fn body_flows_in_order_and_pauses_the_reader() {
        let (_poll, n) = notifier();
        let io = Arc::new(RequestIo::new(3, n.clone()));
        assert!(!io.push(b"hello "));
        let big = vec![7u8; BODY_HIGH_WATER];
        assert!(io.push(&big), "full queue pauses the loop");
        io.end();
        assert_eq!(io.recv(3).unwrap(), b"hel");
        assert_eq!(io.recv(0).unwrap(), b"lo ");
        assert_eq!(io.recv(0).unwrap().len(), BODY_HIGH_WATER);
        assert_eq!(n.take(), vec![3], "draining resumes the loop");
        assert!(io.recv(0).unwrap().is_empty());
        io.abort();
        assert!(io.recv(0).is_none());
    }

    #[test]
    fn writer_waits_for_room_and_fails_when_closed() {
        let (_poll, n) = notifier();
        let out = Arc::new(Output::new(1, n.clone()));
        assert!(out.write_with(|s| s.buf.extend_from_slice(&vec![0; OUTPUT_HIGH_WATER])));
        let writer = {
            let out = out.clone();
            std::thread::spawn(move || out.write_with(|s| s.buf.push(1)))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!writer.is_finished(), "a full buffer makes the writer wait");
        out.drain_with(|s| s.buf.clear());
        assert!(writer.join().unwrap());
        out.close();
        assert!(!out.write_with(|s| s.buf.push(2)));
        assert_eq!(n.take(), vec![1, 1]);
    }
}
