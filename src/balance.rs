//! Connections spread over the worker processes of a process group.
//!
//! The worker processes of a group wait on the same listening sockets, and the kernel hands a
//! new connection to the first of them (in the order they registered) that has a thread
//! waiting. A process that is often idle therefore takes most connections, and with kept
//! connections (FastCGI keep-conn) it keeps them: measured with Flask at 2 processes × 4
//! threads behind nginx, one process held 47 kept connections and the other 17, and the
//! requests on the busy one waited for its threads while the other's were free.
//!
//! So the processes of a group publish, in a region of memory the supervisor maps before it
//! forks, how many connections each holds and whether it takes new ones
//! ([`Seat::fewest_elsewhere`]). A process holding more than another that takes new ones, by
//! more than a slack, leaves its listeners to the others; by more than twice the slack, it
//! also closes kept connections after their response (nginx opens a new one, which another
//! process takes). It looks again as its connections open and close, and at every
//! housekeeper tick (see `server::Shared::rebalance`).
//!
//! Each process takes a *seat*, a cache line of 64-bit atomic words (see
//! [`crate::sys::shared_words`]) that only it writes. There are twice as many seats as
//! processes, so that a worker that recycles keeps its seat while its replacement, which
//! starts before it exits, takes another. The supervisor frees the seat of a process it
//! reaps (a crashed one included), and a seat that was not written for a second (a process
//! stopped or frozen) does not count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

// A seat's words.
const S_PID: usize = 0;
const S_CONNS: usize = 1;
/// 1 while the process takes new connections (its listeners are in its epoll).
const S_OPEN: usize = 2;
/// When the process last published (milliseconds of CLOCK_MONOTONIC, the same clock in
/// every process).
const S_BEAT: usize = 3;
/// Words per seat: one cache line, so that two processes never write the same line.
const SEAT: usize = 8;
/// A process that published nothing for this long (its housekeeper publishes every tick,
/// 100 ms) is not counted: it may be stopped or frozen, and a process that yielded to it
/// would leave new connections waiting for it.
const STALE_MS: u64 = 1000;

/// Milliseconds of CLOCK_MONOTONIC.
fn now_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// The seats of one process group.
pub struct Board {
    words: &'static [AtomicU64],
    seats: usize,
}

impl Board {
    /// A board for a group of `processes` (mapped shared: call before forking).
    pub fn new(processes: usize) -> std::io::Result<Arc<Board>> {
        let seats = processes.max(1) * 2;
        let words = crate::sys::shared_words(seats * SEAT)?;
        Ok(Arc::new(Board { words, seats }))
    }

    /// Whether the board has seats for a group of `processes`.
    pub fn fits(&self, processes: usize) -> bool {
        self.seats >= processes * 2
    }

    fn word(&self, seat: usize, w: usize) -> &AtomicU64 {
        &self.words[seat * SEAT + w]
    }

    /// Takes a free seat for process `pid` (none free: this process does not balance).
    pub fn take(self: &Arc<Self>, pid: u32) -> Option<Seat> {
        (0..self.seats).find_map(|seat| {
            let w = self.word(seat, S_PID);
            w.compare_exchange(0, u64::from(pid), Ordering::SeqCst, Ordering::SeqCst)
                .ok()?;
            self.word(seat, S_CONNS).store(0, Ordering::Relaxed);
            self.word(seat, S_OPEN).store(0, Ordering::SeqCst);
            self.word(seat, S_BEAT).store(now_ms(), Ordering::Relaxed);
            Some(Seat {
                board: self.clone(),
                seat,
            })
        })
    }

    /// Frees the seat of a process that is gone.
    pub fn free(&self, pid: u32) {
        for seat in 0..self.seats {
            if self.word(seat, S_PID).load(Ordering::SeqCst) == u64::from(pid) {
                self.word(seat, S_OPEN).store(0, Ordering::SeqCst);
                self.word(seat, S_CONNS).store(0, Ordering::Relaxed);
                self.word(seat, S_PID).store(0, Ordering::SeqCst);
            }
        }
    }
}

/// A process's seat on its group's board.
pub struct Seat {
    board: Arc<Board>,
    seat: usize,
}

impl Seat {
    /// Publishes how many connections this process holds (and that it is alive).
    pub fn set_conns(&self, n: usize) {
        let b = &self.board;
        b.word(self.seat, S_CONNS)
            .store(n as u64, Ordering::Relaxed);
        b.word(self.seat, S_BEAT).store(now_ms(), Ordering::Relaxed);
    }

    /// Publishes whether this process takes new connections.
    pub fn set_open(&self, open: bool) {
        self.board
            .word(self.seat, S_OPEN)
            .store(u64::from(open), Ordering::Relaxed);
    }

    /// The fewest connections another process of the group holds that takes new ones and
    /// published lately (`None`: no other process does).
    pub fn fewest_elsewhere(&self) -> Option<usize> {
        let b = &self.board;
        let now = now_ms();
        (0..b.seats)
            .filter(|&s| s != self.seat)
            .filter(|&s| b.word(s, S_PID).load(Ordering::Relaxed) != 0)
            .filter(|&s| b.word(s, S_OPEN).load(Ordering::Relaxed) == 1)
            .filter(|&s| now.saturating_sub(b.word(s, S_BEAT).load(Ordering::Relaxed)) < STALE_MS)
            .map(|s| b.word(s, S_CONNS).load(Ordering::Relaxed) as usize)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processes_that_take_connections_count() {
        let board = Board::new(3).unwrap();
        let a = board.take(100).unwrap();
        let b = board.take(200).unwrap();
        a.set_conns(10);
        a.set_open(true);
        // b holds none but takes none either.
        assert_eq!(a.fewest_elsewhere(), None);
        b.set_open(true);
        assert_eq!(a.fewest_elsewhere(), Some(0));
        b.set_conns(6);
        assert_eq!(a.fewest_elsewhere(), Some(6));
        assert_eq!(b.fewest_elsewhere(), Some(10));
        let c = board.take(300).unwrap();
        c.set_conns(2);
        c.set_open(true);
        assert_eq!(a.fewest_elsewhere(), Some(2));
        c.set_open(false);
        assert_eq!(a.fewest_elsewhere(), Some(6));
        // b published nothing for a while (stopped, frozen): not counted until it does.
        let beat = board.word(b.seat, S_BEAT);
        beat.store(
            beat.load(Ordering::Relaxed).saturating_sub(STALE_MS),
            Ordering::Relaxed,
        );
        assert_eq!(a.fewest_elsewhere(), None);
        b.set_conns(6);
        assert_eq!(a.fewest_elsewhere(), Some(6));
        // b is gone: its seat is free.
        board.free(200);
        assert_eq!(a.fewest_elsewhere(), None);
    }

    #[test]
    fn a_replacement_takes_another_seat_and_seats_run_out() {
        let board = Board::new(1).unwrap();
        let old = board.take(1).unwrap();
        let new = board.take(2).unwrap();
        assert_ne!(old.seat, new.seat);
        assert!(board.take(3).is_none());
        board.free(1);
        let third = board.take(3).unwrap();
        assert_eq!(third.seat, old.seat);
    }
}
