//! The scoreboard of a process group: a region of memory the supervisor maps before it forks,
//! so that every worker process sees every other. It holds 64-bit atomic words only (see
//! [`crate::sys::shared_words`]): group counters, per process its connection count, and per
//! worker thread a slot that only that thread writes. The status page reads all of it; the
//! connection counts also spread kept connections over the processes ([`Row::fewest_elsewhere`]).
//! A group has one with a status page, or with two processes or more.
//!
//! Kept connections: the worker processes of a group wait on the same listening sockets, and
//! the kernel hands a new connection to the first of them (in the order they registered) that
//! has a thread waiting, and a kept connection (FastCGI keep-conn) stays where it went. Counted
//! during Flask runs at 2 processes × 4 threads behind nginx, one worker held 64 sockets and
//! the other 8, or 9 and 63, while requests on the fuller one waited for its threads and the
//! other's were free. So a process publishes in its row how many connections it holds, whether
//! it takes new ones, and when it last published; the server (`Shared::rebalance`) leaves its
//! listeners to a process that holds fewer, and when it holds many more hands kept connections
//! that wait for a request to it: each row has a Unix datagram socket pair (made with the
//! board, so every worker has all of them) over which a socket passes to the row's process
//! ([`Row::hand_over`]). A row not written for a second (a process stopped or frozen) does
//! not count.
//!
//! A process takes a *row* (its pid and one slot per thread). There are twice as many rows as
//! processes, so that a worker that recycles keeps its row while its replacement, which starts
//! before it exits, takes another: every slot has one writer at a time. A worker that crashed
//! leaves its row to its replacement, with its running slots set back to idle by the supervisor.
//! Reloads in quick succession while workers drain can start a worker while every row is held:
//! it starts unseated ([`Board::unseated`]), and the supervisor gives it the row of the first
//! worker that drained and exited ([`Row::seat`]).
//!
//! The per-request cost is two short runs of relaxed atomic stores and three read-modify-writes
//! on the group counters; a slot's request text is written under a sequence number so that a
//! reader never shows half of one URI and half of another.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of a request URI kept (longer ones are cut).
pub const URI_BYTES: usize = 128;
/// Bytes of a request method kept.
pub const METHOD_BYTES: usize = 8;

// The group header.
const H_START: usize = 0;
const H_ACCEPTED: usize = 1;
const H_ACTIVE: usize = 2;
const H_MAX_ACTIVE: usize = 3;
const H_MAX_CHILDREN: usize = 4;
const H_SLOW: usize = 5;
const H_MAX_LISTEN_QUEUE: usize = 6;
const HEADER: usize = 8;

// A row: a worker process.
const R_PID: usize = 0;
const R_STARTED: usize = 1;
/// Connections the process holds open.
const R_CONNS: usize = 2;
/// 1 while the process takes new connections (its listeners are in its epoll).
const R_OPEN: usize = 3;
/// When the process last published its connections (milliseconds of CLOCK_MONOTONIC, the
/// same clock in every process).
const R_BEAT: usize = 4;
const ROW_HEADER: usize = 5;

/// A process that published nothing for this long (its housekeeper publishes every tick,
/// 100 ms) is not counted: it may be stopped or frozen, and a process that yielded to it
/// would leave new connections waiting for it.
const STALE_MS: u64 = 1000;

/// Milliseconds of CLOCK_MONOTONIC.
fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

// A slot: a worker thread.
const S_SEQ: usize = 0;
const S_STATE: usize = 1;
const S_REQUESTS: usize = 2;
const S_START_US: usize = 3;
const S_LAST_US: usize = 4;
const S_CONTENT_LENGTH: usize = 5;
const S_METHOD: usize = 6;
const S_URI_LEN: usize = 7;
const S_LAST_CPU_US: usize = 8;
const S_URI: usize = 9;
const SLOT: usize = S_URI + URI_BYTES / 8;

const IDLE: u64 = 1;
const RUNNING: u64 = 2;
const READING: u64 = 3;
const FINISHING: u64 = 4;

/// Whether a slot's state word is one of a request's (slots start zeroed: idle).
fn busy(state: u64) -> bool {
    state >= RUNNING
}

/// A worker thread's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Idle,
    /// Waiting for the request's body from the web server (`wsgi.input` has nothing yet).
    Reading,
    /// Running the app.
    Running,
    /// The app is done; the response's end goes out and the request is logged.
    Finishing,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Reading => "Reading",
            State::Running => "Running",
            State::Finishing => "Finishing",
        }
    }
}

/// The scoreboard of one process group.
pub struct Board {
    words: &'static [AtomicU64],
    rows: usize,
    threads: usize,
    /// A datagram socket pair per row (receiving end, sending end), made before the workers
    /// are forked so that each has all of them: a worker hands a kept connection to the
    /// process of another row by sending its descriptor to that row ([`Row::hand_over`]).
    doors: Vec<(UnixDatagram, UnixDatagram)>,
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Board {
    /// Maps a board for `processes` worker processes of `threads` threads each.
    pub fn new(processes: usize, threads: usize) -> std::io::Result<Arc<Board>> {
        let rows = processes.max(1) * 2;
        let words = crate::sys::shared_words(HEADER + rows * (ROW_HEADER + threads * SLOT))?;
        words[H_START].store(unix_us(SystemTime::now()) / 1_000_000, Relaxed);
        let doors = (0..rows)
            .map(|_| UnixDatagram::pair())
            .collect::<std::io::Result<_>>()?;
        Ok(Arc::new(Board {
            words,
            rows,
            threads,
            doors,
        }))
    }

    fn row_base(&self, row: usize) -> usize {
        HEADER + row * (ROW_HEADER + self.threads * SLOT)
    }

    fn slot_base(&self, row: usize, thread: usize) -> usize {
        self.row_base(row) + ROW_HEADER + thread * SLOT
    }

    fn w(&self, i: usize) -> &AtomicU64 {
        &self.words[i]
    }

    /// Whether this board is the size [`Board::new`] makes for `processes` x `threads`.
    pub fn fits(&self, processes: usize, threads: usize) -> bool {
        self.rows == processes.max(1) * 2 && self.threads == threads
    }

    /// The pid holding `row` (0: free).
    pub fn pid_of(&self, row: usize) -> u32 {
        self.w(self.row_base(row) + R_PID).load(Relaxed) as u32
    }

    /// A free row, preferring `wanted` (the row of the worker this one replaces); `busy` are
    /// the rows of processes still alive.
    pub fn free_row(&self, wanted: Option<usize>, busy: &[usize]) -> Option<usize> {
        let free = |r: &usize| !busy.contains(r);
        wanted
            .filter(free)
            .or_else(|| (0..self.rows).find(|r| free(r) && self.pid_of(*r) == 0))
            .or_else(|| (0..self.rows).find(free))
    }

    /// Worker process `pid` takes `row`: its threads start idle (their request counts go on).
    pub fn claim(self: &Arc<Self>, row: usize, pid: u32) -> Row {
        self.release(row);
        let base = self.row_base(row);
        self.w(base + R_STARTED)
            .store(unix_us(SystemTime::now()) / 1_000_000, Relaxed);
        self.w(base + R_CONNS).store(0, Relaxed);
        self.w(base + R_OPEN).store(0, Relaxed);
        self.w(base + R_BEAT).store(monotonic_ms(), Relaxed);
        for t in 0..self.threads {
            self.w(self.slot_base(row, t) + S_STATE)
                .store(IDLE, Relaxed);
        }
        self.w(base + R_PID).store(u64::from(pid), Release);
        Row {
            board: self.clone(),
            row: Arc::new(OnceLock::from(row)),
        }
    }

    /// The row of a worker process that started when every row was held (reloads while
    /// workers drain): it records nothing until its supervisor gives it a row that frees
    /// ([`Board::claim`] with its pid; it then finds it, [`Row::seat`]).
    pub fn unseated(self: &Arc<Self>) -> Row {
        Row {
            board: self.clone(),
            row: Arc::new(OnceLock::new()),
        }
    }

    /// The process of `row` is gone: its running slots end, and the row is free.
    pub fn release(&self, row: usize) {
        for t in 0..self.threads {
            let state = self.w(self.slot_base(row, t) + S_STATE);
            if busy(state.swap(IDLE, Relaxed)) {
                self.w(H_ACTIVE).fetch_sub(1, Relaxed);
            }
        }
        self.w(self.row_base(row) + R_OPEN).store(0, Relaxed);
        self.w(self.row_base(row) + R_PID).store(0, Release);
    }

    /// A request was logged by the slow log.
    pub fn slow_request(&self) {
        self.w(H_SLOW).fetch_add(1, Relaxed);
    }

    /// Keeps the highest listen queue seen.
    pub fn saw_listen_queue(&self, n: u64) -> u64 {
        self.w(H_MAX_LISTEN_QUEUE).fetch_max(n, Relaxed).max(n)
    }

    /// What the board says now.
    pub fn snapshot(&self) -> Snapshot {
        let mut procs = Vec::new();
        for row in 0..self.rows {
            let base = self.row_base(row);
            let pid = self.w(base + R_PID).load(Relaxed) as u32;
            if pid == 0 {
                continue;
            }
            let started = self.w(base + R_STARTED).load(Relaxed);
            let conns = self.w(base + R_CONNS).load(Relaxed);
            let threads = (0..self.threads).map(|t| self.read_slot(row, t)).collect();
            procs.push(ProcSnap {
                pid,
                started,
                conns,
                threads,
            });
        }
        Snapshot {
            start: self.w(H_START).load(Relaxed),
            accepted: self.w(H_ACCEPTED).load(Relaxed),
            max_active: self.w(H_MAX_ACTIVE).load(Relaxed),
            max_children_reached: self.w(H_MAX_CHILDREN).load(Relaxed),
            slow_requests: self.w(H_SLOW).load(Relaxed),
            procs,
        }
    }

    fn read_slot(&self, row: usize, thread: usize) -> SlotSnap {
        let b = self.slot_base(row, thread);
        let load = |i: usize| self.w(b + i).load(std::sync::atomic::Ordering::Acquire);
        // A seqlock read: retry while the writer is in the middle of an update.
        for _ in 0..100 {
            let seq = load(S_SEQ);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut uri = Vec::with_capacity(URI_BYTES);
            for i in 0..URI_BYTES / 8 {
                uri.extend_from_slice(&load(S_URI + i).to_le_bytes());
            }
            uri.truncate(load(S_URI_LEN).min(URI_BYTES as u64) as usize);
            let method = load(S_METHOD).to_le_bytes();
            let method_len = method.iter().position(|&b| b == 0).unwrap_or(METHOD_BYTES);
            let snap = SlotSnap {
                state: match load(S_STATE) {
                    RUNNING => State::Running,
                    READING => State::Reading,
                    FINISHING => State::Finishing,
                    _ => State::Idle,
                },
                requests: load(S_REQUESTS),
                start_us: load(S_START_US),
                last_us: load(S_LAST_US),
                last_cpu_us: load(S_LAST_CPU_US),
                content_length: load(S_CONTENT_LENGTH),
                method: String::from_utf8_lossy(&method[..method_len]).into_owned(),
                uri: String::from_utf8_lossy(&uri).into_owned(),
            };
            if load(S_SEQ) == seq {
                return snap;
            }
        }
        SlotSnap::default()
    }
}

/// The row of one worker process: where its threads record their requests (none yet while
/// it is unseated: see [`Board::unseated`]).
#[derive(Clone)]
pub struct Row {
    board: Arc<Board>,
    row: Arc<OnceLock<usize>>,
}

/// A request being recorded, from [`Row::begin`] to [`Row::end`].
pub struct Running {
    /// The row it is recorded in (`None`: the process had none when it began).
    row: Option<usize>,
    thread: usize,
    began: Instant,
    cpu: Duration,
}

/// CPU time used by the calling thread so far.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

impl Row {
    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Whether the process has its row.
    pub fn seated(&self) -> bool {
        self.row.get().is_some()
    }

    /// Looks for a row given to process `pid` (see [`Board::unseated`]); whether it has one.
    pub fn seat(&self, pid: u32) -> bool {
        if self.seated() {
            return true;
        }
        let b = &self.board;
        let given = (0..b.rows).find(|&r| {
            b.w(b.row_base(r) + R_PID)
                .load(std::sync::atomic::Ordering::Acquire)
                == u64::from(pid)
        });
        given.is_some_and(|r| {
            let _ = self.row.set(r);
            true
        })
    }

    /// Thread `thread` begins a request; `busy`: how many threads of this process run one now
    /// (this one included).
    pub fn begin(
        &self,
        thread: usize,
        method: &[u8],
        uri: &[u8],
        content_length: u64,
        busy: usize,
    ) -> Running {
        let b = &self.board;
        let Some(&row) = self.row.get() else {
            return Running {
                row: None,
                thread,
                began: Instant::now(),
                cpu: Duration::ZERO,
            };
        };
        let base = b.slot_base(row, thread);
        let w = |i: usize| b.w(base + i);
        let seq = w(S_SEQ).load(Relaxed);
        w(S_SEQ).store(seq + 1, Relaxed);
        std::sync::atomic::fence(Release);
        w(S_STATE).store(RUNNING, Relaxed);
        w(S_START_US).store(unix_us(SystemTime::now()), Relaxed);
        w(S_CONTENT_LENGTH).store(content_length, Relaxed);
        let mut m = [0u8; 8];
        let n = method.len().min(METHOD_BYTES);
        m[..n].copy_from_slice(&method[..n]);
        w(S_METHOD).store(u64::from_le_bytes(m), Relaxed);
        let uri = &uri[..uri.len().min(URI_BYTES)];
        w(S_URI_LEN).store(uri.len() as u64, Relaxed);
        for (i, chunk) in uri.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            w(S_URI + i).store(u64::from_le_bytes(word), Relaxed);
        }
        w(S_SEQ).store(seq + 2, Release);
        b.w(H_ACCEPTED).fetch_add(1, Relaxed);
        let active = b.w(H_ACTIVE).fetch_add(1, Relaxed) + 1;
        if active > b.w(H_MAX_ACTIVE).load(Relaxed) {
            b.w(H_MAX_ACTIVE).fetch_max(active, Relaxed);
        }
        if busy >= b.threads {
            b.w(H_MAX_CHILDREN).fetch_add(1, Relaxed);
        }
        Running {
            row: Some(row),
            thread,
            began: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// The process holds `n` connections open (and is alive).
    pub fn set_conns(&self, n: usize) {
        let b = &self.board;
        let Some(&row) = self.row.get() else {
            return;
        };
        let base = b.row_base(row);
        b.w(base + R_CONNS).store(n as u64, Relaxed);
        b.w(base + R_BEAT).store(monotonic_ms(), Relaxed);
    }

    /// Whether the process takes new connections.
    pub fn set_open(&self, open: bool) {
        let b = &self.board;
        let Some(&row) = self.row.get() else {
            return;
        };
        b.w(b.row_base(row) + R_OPEN)
            .store(u64::from(open), Relaxed);
    }

    /// The fewest connections another process of the group holds that takes new ones and
    /// published lately (`None`: no other process does).
    pub fn fewest_elsewhere(&self) -> Option<usize> {
        self.fewest_row_elsewhere().map(|(_, conns)| conns)
    }

    /// The row of that process, and its connections.
    pub fn fewest_row_elsewhere(&self) -> Option<(usize, usize)> {
        let b = &self.board;
        let now = monotonic_ms();
        let own = self.row.get().copied();
        (0..b.rows)
            .filter(|&r| Some(r) != own)
            .filter(|&r| b.w(b.row_base(r) + R_PID).load(Relaxed) != 0)
            .filter(|&r| b.w(b.row_base(r) + R_OPEN).load(Relaxed) == 1)
            .filter(|&r| now.saturating_sub(b.w(b.row_base(r) + R_BEAT).load(Relaxed)) < STALE_MS)
            .map(|r| (r, b.w(b.row_base(r) + R_CONNS).load(Relaxed) as usize))
            .min_by_key(|&(_, conns)| conns)
    }

    /// Sends a connection's descriptor, with a tag, to the process of row `to` (see
    /// [`Row::handed`]); without waiting.
    pub fn hand_over(&self, to: usize, tag: u8, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        crate::sys::send_fd(&self.board.doors[to].1, tag, fd)
    }

    /// Where connections handed to this process arrive (readable when one waits); `None`
    /// while it has no row.
    pub fn door(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.row.get().map(|&r| self.board.doors[r].0.as_fd())
    }

    /// A connection another process of the group handed to this one, with its tag; `None`
    /// when none waits (or this process has no row yet: it waits at the row it will get).
    pub fn handed(&self) -> std::io::Result<Option<(u8, OwnedFd)>> {
        match self.row.get() {
            Some(&r) => crate::sys::recv_fd(&self.board.doors[r].0),
            None => Ok(None),
        }
    }

    /// The request of [`Row::begin`] ended.
    pub fn end(&self, r: Running) {
        let b = &self.board;
        let Some(row) = r.row else {
            return;
        };
        let base = b.slot_base(row, r.thread);
        let w = |i: usize| b.w(base + i);
        let took = r.began.elapsed().as_micros() as u64;
        let cpu = thread_cpu().saturating_sub(r.cpu).as_micros() as u64;
        w(S_LAST_US).store(took, Relaxed);
        w(S_LAST_CPU_US).store(cpu, Relaxed);
        w(S_REQUESTS).store(w(S_REQUESTS).load(Relaxed) + 1, Relaxed);
        if busy(w(S_STATE).swap(IDLE, Relaxed)) {
            b.w(H_ACTIVE).fetch_sub(1, Relaxed);
        }
    }

    /// Thread `thread`, in a request, moves to `state` (Reading, Running or Finishing; a
    /// request becomes Idle only by [`Row::end`]).
    pub fn set_state(&self, thread: usize, state: State) {
        let value = match state {
            State::Reading => READING,
            State::Running => RUNNING,
            State::Finishing => FINISHING,
            State::Idle => return,
        };
        let Some(&row) = self.row.get() else {
            return;
        };
        let word = self.board.w(self.board.slot_base(row, thread) + S_STATE);
        if busy(word.load(Relaxed)) {
            word.store(value, Relaxed);
        }
    }
}

/// The board at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the board was made (Unix seconds): the process group's start.
    pub start: u64,
    pub accepted: u64,
    pub max_active: u64,
    pub max_children_reached: u64,
    pub slow_requests: u64,
    pub procs: Vec<ProcSnap>,
}

#[derive(Debug, Clone)]
pub struct ProcSnap {
    pub pid: u32,
    /// Unix seconds.
    pub started: u64,
    /// Connections it holds open.
    pub conns: u64,
    pub threads: Vec<SlotSnap>,
}

#[derive(Debug, Clone, Default)]
pub struct SlotSnap {
    pub state: State,
    /// Requests served by this slot (by this thread and those that held it before).
    pub requests: u64,
    /// When the current (or last) request began, in Unix microseconds; 0: never.
    pub start_us: u64,
    /// How long the last finished request took.
    pub last_us: u64,
    /// CPU time its thread spent on it.
    pub last_cpu_us: u64,
    pub content_length: u64,
    pub method: String,
    pub uri: String,
}

impl SlotSnap {
    /// The last finished request's CPU time over its duration, in percent (php-fpm's
    /// `last request cpu`), with two decimals; 0.00 before any.
    pub fn last_cpu_percent(&self) -> String {
        let pct = if self.last_us == 0 {
            0.0
        } else {
            self.last_cpu_us as f64 * 100.0 / self.last_us as f64
        };
        format!("{pct:.2}")
    }

    /// How long the current request has run (Running), or the last one took (Idle).
    pub fn duration(&self, now: SystemTime) -> Duration {
        match self.state {
            State::Idle => Duration::from_micros(self.last_us),
            _ => Duration::from_micros(unix_us(now).saturating_sub(self.start_us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processes_that_take_connections_count() {
        let board = Board::new(3, 1).unwrap();
        let a = board.claim(0, 100);
        let b = board.claim(1, 200);
        a.set_conns(10);
        a.set_open(true);
        // b holds none but takes none either.
        assert_eq!(a.fewest_elsewhere(), None);
        b.set_open(true);
        assert_eq!(a.fewest_elsewhere(), Some(0));
        b.set_conns(6);
        assert_eq!(a.fewest_elsewhere(), Some(6));
        assert_eq!(b.fewest_elsewhere(), Some(10));
        let c = board.claim(2, 300);
        c.set_conns(2);
        c.set_open(true);
        assert_eq!(a.fewest_elsewhere(), Some(2));
        c.set_open(false);
        assert_eq!(a.fewest_elsewhere(), Some(6));
        // b published nothing for a while (stopped, frozen): not counted until it does.
        let beat = board.w(board.row_base(1) + R_BEAT);
        beat.store(beat.load(Relaxed).saturating_sub(STALE_MS), Relaxed);
        assert_eq!(a.fewest_elsewhere(), None);
        b.set_conns(6);
        assert_eq!(a.fewest_elsewhere(), Some(6));
        // b is gone: its row is free.
        board.release(1);
        assert_eq!(a.fewest_elsewhere(), None);
        assert_eq!(board.snapshot().procs.len(), 2);
    }

    #[test]
    fn a_request_is_seen_while_it_runs_and_counted_when_it_ends() {
        let board = Board::new(2, 3).unwrap();
        let row = board.claim(1, 4242);
        let r = row.begin(2, b"POST", b"/a/b?c=d", 12, 1);
        let s = board.snapshot();
        assert_eq!((s.accepted, s.max_active), (1, 1));
        assert_eq!(board.w(H_ACTIVE).load(Relaxed), 1);
        assert_eq!(s.procs.len(), 1);
        let t = &s.procs[0].threads[2];
        assert_eq!(s.procs[0].pid, 4242);
        assert_eq!(t.state, State::Running);
        assert_eq!((t.method.as_str(), t.uri.as_str()), ("POST", "/a/b?c=d"));
        assert_eq!(t.content_length, 12);
        row.set_state(2, State::Reading);
        assert_eq!(board.snapshot().procs[0].threads[2].state, State::Reading);
        row.set_state(2, State::Finishing);
        assert_eq!(board.snapshot().procs[0].threads[2].state, State::Finishing);
        assert_eq!(board.w(H_ACTIVE).load(Relaxed), 1);
        row.end(r);
        // A state change outside a request changes nothing.
        row.set_state(2, State::Running);
        let s = board.snapshot();
        assert_eq!((s.accepted, s.max_active), (1, 1));
        assert_eq!(board.w(H_ACTIVE).load(Relaxed), 0);
        assert_eq!(s.procs[0].threads[2].requests, 1);
        assert_eq!(s.procs[0].threads[2].state, State::Idle);
    }

    #[test]
    fn an_unseated_row_records_nothing_until_it_is_given_one() {
        let board = Board::new(1, 2).unwrap();
        let row = board.unseated();
        let early = row.begin(0, b"GET", b"/early", 0, 1);
        row.set_conns(3);
        row.set_open(true);
        assert!(!row.seat(77));
        // The supervisor gives process 77 the row that freed; its request that began before
        // ends without touching it.
        board.claim(1, 77);
        assert!(row.seat(77) && row.seated());
        row.end(early);
        let r = row.begin(1, b"GET", b"/late", 0, 1);
        let s = board.snapshot();
        assert_eq!(s.accepted, 1);
        assert_eq!((s.procs.len(), s.procs[0].pid), (1, 77));
        assert_eq!(s.procs[0].threads[1].state, State::Running);
        assert_eq!(s.procs[0].threads[0].state, State::Idle);
        row.end(r);
        assert_eq!(board.w(H_ACTIVE).load(Relaxed), 0);
    }

    #[test]
    fn long_uris_are_cut_and_a_crashed_worker_leaves_no_active_request() {
        let board = Board::new(1, 1).unwrap();
        let row = board.claim(0, 7);
        let long = vec![b'x'; 300];
        let _r = row.begin(0, b"VERYLONGMETHOD", &long, 0, 1);
        row.set_state(0, State::Finishing);
        let s = board.snapshot();
        assert_eq!(s.procs[0].threads[0].uri.len(), URI_BYTES);
        assert_eq!(s.procs[0].threads[0].method, "VERYLONG");
        assert_eq!(s.max_children_reached, 1);
        board.release(0);
        let s = board.snapshot();
        assert_eq!((board.w(H_ACTIVE).load(Relaxed), s.procs.len()), (0, 0));
        assert_eq!(board.free_row(Some(0), &[]), Some(0));
        assert_eq!(board.free_row(Some(0), &[0]), Some(1));
    }

    #[test]
    fn a_forked_child_writes_what_the_parent_reads() {
        let board = Board::new(1, 1).unwrap();
        match crate::sys::fork().unwrap() {
            crate::sys::Forked::Child => {
                let row = board.claim(0, std::process::id());
                let r = row.begin(0, b"GET", b"/from-child", 0, 1);
                row.end(r);
                std::process::exit(0);
            }
            crate::sys::Forked::Parent(pid) => {
                crate::sys::wait(pid);
                let s = board.snapshot();
                assert_eq!(s.accepted, 1);
                assert_eq!(s.procs[0].pid, pid as u32);
                assert_eq!(s.procs[0].threads[0].uri, "/from-child");
            }
        }
    }
}
