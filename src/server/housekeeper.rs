//! The housekeeper thread of a worker process: signals, timers (deadlines of connections,
//! queue-timeout, request-timeout), recycling, the graceful stop, and the I/O of the
//! connections while every thread is stuck in a request.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::{lock, rss_bytes, Job, Runner, Shared};

/// How often the housekeeper looks at the timers.
const TICK: Duration = Duration::from_millis(100);
/// While a replacement takes over, kept connections are served this long (one that goes
/// idle meanwhile is closed then); afterwards a kept connection closes after its next
/// response, so that a worker process under load drains in bounded time.
const DRAIN_KEPT: Duration = Duration::from_secs(2);
/// How often the status page's "max listen queue" samples the kernel's accept queues (like
/// php-fpm's process manager, once a second).
const LISTEN_QUEUE_SAMPLE: Duration = Duration::from_secs(1);
/// The most kept connections a process sheds at once ([`Keeper::shed`]).
const SHED_MOST: usize = 16;
/// How long a process that shed kept connections waits before it sheds more.
const SHED_PAUSE: Duration = Duration::from_secs(1);
/// How long a kept connection must have waited for a request before it is closed for the
/// other processes of the group ([`Keeper::shed`]).
const SHED_IDLE: Duration = Duration::from_millis(100);
/// How long a process holds more than its share before it sheds busier kept connections.
const SHED_BUSY_AFTER: Duration = Duration::from_secs(1);

/// After this long without a request running, the housekeeper goes back to looking once a
/// tick (the next request tells it, a wake-up). So it looks at most 200 times a second, and a
/// process serving few requests pays about four looks per request.
const QUIET: Duration = Duration::from_millis(20);

/// Why a worker process stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The gateway stops (SIGTERM, SIGINT).
    Now,
    /// The supervisor started a replacement (SIGHUP: a reload).
    Replaced,
    /// It recycles itself (its supervisor starts the replacement).
    Recycle,
}

/// Runs until the worker process may exit; returns the deadline for its threads to finish.
pub fn run<R: Runner>(sh: &Arc<Shared>, runner: &R, mut signals: crate::sys::Signals) -> Instant {
    let own = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => {
            crate::error!("housekeeper: {e}");
            return Instant::now();
        }
    };
    // A connection handed to this process (Shared::adopt_handed) wakes it, as a kick does.
    let door = sh.config.row.as_ref().and_then(|r| r.door());
    for fd in [signals.fd(), sh.kick_fd.as_fd()].into_iter().chain(door) {
        if let Err(e) = own.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0)) {
            crate::error!("housekeeper: {e}");
        }
    }
    let mut keeper = Keeper {
        sh: sh.clone(),
        started: Instant::now(),
        stop_since: None,
        stop: None,
        last_epoch: u64::MAX,
        last_served: u64::MAX,
        overdue_reported: false,
        shed_at: None,
        over_since: None,
    };
    let mut thread = None;
    if sh.config.stop_early.load(Ordering::SeqCst) {
        // A signal that came after the pipe was set up both set the flag and is in the
        // pipe: the same stop, not a second one (which would stop the process at once).
        let _same = signals.pending();
        crate::info!("stop asked for while starting: not accepting");
        keeper.begin_stop(Stop::Now);
    }
    let mut events = [EpollEvent::empty(); 4];
    let mut last_sample = Instant::now();
    let mut next_tick = Instant::now() + TICK;
    let (mut last_polls, mut last_busy) = (0, Instant::now());
    loop {
        // Between ticks, while requests run, a look every PROMOTE_AFTER whether a thread in
        // reserve must take the epoll (see server::thread_main).
        let fast = sh.keeper_fast.load(Ordering::SeqCst);
        let to_tick = next_tick.saturating_duration_since(Instant::now());
        let wait = if fast {
            to_tick.min(super::PROMOTE_AFTER)
        } else {
            to_tick
        };
        let woken = own
            .wait(&mut events, crate::sys::epoll_timeout(Some(wait)))
            .unwrap_or(0);
        let _ = sh.kick_fd.read();
        if fast {
            sh.promote(&mut last_polls);
            if sh.running.load(Ordering::SeqCst) > 0 {
                last_busy = Instant::now();
            } else if last_busy.elapsed() >= QUIET {
                sh.keeper_fast.store(false, Ordering::SeqCst);
            }
        } else if sh.keeper_fast.load(Ordering::SeqCst) {
            // Told by a request that began: looking from now on.
            last_busy = Instant::now();
            last_polls = sh.polls.load(Ordering::SeqCst);
        }
        if woken == 0 && Instant::now() < next_tick {
            continue;
        }
        next_tick = Instant::now() + TICK;
        sh.io_due.store(true, Ordering::Relaxed);
        // The other processes' connections came and went meanwhile, and some may have been
        // handed to this one.
        sh.seat();
        sh.adopt_handed();
        sh.rebalance(sh.conn_count());
        for sig in signals.pending() {
            if sig == signal_hook::consts::SIGUSR1 {
                // The flag set by the same signal reopens the logs, below.
                continue;
            }
            let replaced = sig == signal_hook::consts::SIGHUP;
            if let Some(draining) = keeper.stop {
                if replaced {
                    // Already draining (recycling, or replaced by an earlier reload): a
                    // reload changes nothing for this worker.
                    continue;
                }
                if draining != Stop::Now {
                    // The gateway stops while this worker drains (its supervisor passes the
                    // stop on to every worker): a stop, not a second signal. Its in-flight
                    // requests still finish within the graceful timeout it began with.
                    crate::info!(
                        "{}: stopping; already draining, in-flight requests go on",
                        crate::sys::signal_name(sig)
                    );
                    keeper.stop = Some(Stop::Now);
                    sh.replaced.store(false, Ordering::SeqCst);
                    continue;
                }
                crate::warn!(
                    "second signal {}: stopping now",
                    crate::sys::signal_name(sig)
                );
                std::process::exit(1);
            }
            if replaced && sh.config.supervisor.is_none() {
                crate::warn!(
                    "SIGHUP: this gateway runs without a supervisor (--processes): it cannot \
                     reload itself; restart it, or run it with --processes"
                );
                continue;
            }
            crate::info!(
                "{}: {}; no longer accepting, waiting up to {:?} for in-flight requests",
                crate::sys::signal_name(sig),
                if replaced {
                    "replaced by a new worker"
                } else {
                    "stopping"
                },
                sh.config.timeouts.graceful
            );
            keeper.begin_stop(if replaced { Stop::Replaced } else { Stop::Now });
        }
        if sh.config.reopen_logs.swap(false, Ordering::SeqCst) {
            crate::log::reopen();
            if let Some(access) = &sh.config.access_log {
                access.reopen();
            }
        }
        keeper.expire_connections();
        keeper.expire_queue();
        if let Some(status) = &sh.config.status {
            if last_sample.elapsed() >= LISTEN_QUEUE_SAMPLE {
                last_sample = Instant::now();
                status.row.board().saw_listen_queue(sh.listen_queue().queue);
            }
        }
        keeper.watch_running(runner, &mut thread);
        if let Some(limit) = sh.config.recycle.request_timeout {
            keeper.watch_requests(runner, &mut thread, limit);
        }
        if keeper.stop_since.is_none() {
            if let Some(reason) = keeper.recycle_reason() {
                crate::info!("recycling this worker: {reason}");
                keeper.begin_stop(Stop::Recycle);
            }
        }
        if keeper.stop_since.is_none() {
            keeper.shed();
        }
        if let Some(since) = keeper.stop_since {
            if since.elapsed() >= DRAIN_KEPT && sh.replaced.swap(false, Ordering::SeqCst) {
                crate::debug!("kept connections now close after their next response");
            }
            keeper.close_idle();
            let done = lock(&sh.table).conns.is_empty()
                && sh.running.load(Ordering::SeqCst) == 0
                && lock(&sh.queue).is_empty();
            let deadline = since + sh.config.timeouts.graceful;
            if done || Instant::now() >= deadline {
                if !done {
                    crate::warn!(
                        "graceful timeout ({:?}) passed with {} connection(s) still busy; \
                         stopping",
                        sh.config.timeouts.graceful,
                        lock(&sh.table).conns.len()
                    );
                } else {
                    crate::info!("all connections closed; stopping");
                }
                sh.finish();
                return if done {
                    deadline.max(Instant::now())
                } else {
                    Instant::now()
                };
            }
        }
        keeper.serve_if_stuck();
    }
}

struct Keeper {
    sh: Arc<Shared>,
    started: Instant,
    stop_since: Option<Instant>,
    /// Why it stops, once it does.
    stop: Option<Stop>,
    last_epoch: u64,
    /// Requests served at the last tick.
    last_served: u64,
    overdue_reported: bool,
    /// Kept connections were shed (at this time) and the others' counts may not show yet the
    /// connections the web server opened again (see [`Keeper::shed`]).
    shed_at: Option<Instant>,
    /// Since when this process holds more than its share (see [`Keeper::shed`]).
    over_since: Option<Instant>,
}

impl Keeper {
    /// Stops accepting (the listeners close, so queued connections go to the other worker
    /// processes) and lets in-flight requests finish. A recycling worker tells its
    /// supervisor first, which starts its replacement at once.
    fn begin_stop(&mut self, stop: Stop) {
        if self.stop_since.is_some() {
            return;
        }
        self.sh.replaced.store(stop != Stop::Now, Ordering::SeqCst);
        if stop == Stop::Recycle {
            if let Some(supervisor) = &self.sh.config.supervisor {
                use std::io::Write;
                let _gone = (&*supervisor).write_all(b"r");
            }
        }
        self.stop_since = Some(Instant::now());
        self.stop = Some(stop);
        self.sh.stopping.store(true, Ordering::SeqCst);
        let _ = self.sh.set_listeners(&mut lock(&self.sh.listeners), false);
        if stop == Stop::Now {
            // The gateway stops: connections already in the listen backlog (waiting for a
            // thread) are taken and served, since closing the last copy of a listening socket
            // resets them. (A replaced or recycling worker leaves them to its replacement.)
            self.sh.take_backlog();
        }
        lock(&self.sh.listeners).list.clear();
    }

    /// Connections whose deadline passed.
    fn expire_connections(&self) {
        let now = self.sh.now_ms();
        for c in self.sh.due_conns(now) {
            c.expire(&self.sh, now);
        }
    }

    /// queue-timeout: a request waiting for a thread past the limit gets its 503 now.
    fn expire_queue(&self) {
        let Some(limit) = self.sh.config.timeouts.queue else {
            return;
        };
        let late: Vec<Job> = {
            let mut q = lock(&self.sh.queue);
            let (late, keep): (Vec<Job>, Vec<Job>) =
                q.drain(..).partition(|j| j.received.elapsed() > limit);
            q.extend(keep);
            late
        };
        for job in late {
            self.sh.refuse_late(&job, job.received.elapsed(), limit);
        }
    }

    /// request-timeout: a request running too long is logged with the Python stack of every
    /// thread, then the worker is recycled (its other requests get the graceful timeout).
    /// The slow log, interrupt-timeout and cancel-on-disconnect: each acts once on a running
    /// request and leaves the worker process alive.
    fn watch_running<R: Runner>(&mut self, runner: &R, thread: &mut Option<R::Thread>) {
        let sh = &self.sh;
        let watch = sh.config.watch;
        if watch.slowlog.is_none() && watch.interrupt.is_none() && !sh.config.cancel_on_disconnect {
            return;
        }
        let running: Vec<(usize, Duration, Job)> = sh
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let slot = lock(s);
                let (since, job) = slot.as_ref()?;
                Some((i, since.elapsed(), job.clone()))
            })
            .collect();
        for (i, ran, job) in running {
            let py = &job.python;
            let ident = py.ident.load(Ordering::SeqCst);
            if ident == 0 || py.interrupted().is_some() {
                continue;
            }
            if watch.slowlog.is_some_and(|t| ran >= t)
                && !py.slow_logged.swap(true, Ordering::SeqCst)
            {
                let thread = thread.get_or_insert_with(|| runner.thread());
                let stack = runner.stack_of(thread, &job, ident);
                if let Some(status) = &sh.config.status {
                    status.row.board().slow_request();
                }
                crate::warn!(
                    "{}: still running after {:.1}s on thread {i} (slowlog-timeout {}); its \
                     Python stack:\n{stack}",
                    super::request_label(&job),
                    ran.as_secs_f64(),
                    crate::config::settings::Seconds(watch.slowlog.unwrap_or_default())
                );
            }
            // A settled request (its response whole or failed, its close() running) is not
            // interrupted; `interrupt` checks again under the GIL.
            let why = if py.settled.load(Ordering::SeqCst) {
                None
            } else if watch.interrupt.is_some_and(|t| ran >= t) {
                Some(super::Interrupt::Timeout)
            } else if sh.config.cancel_on_disconnect && job.is_gone() {
                Some(super::Interrupt::Cancelled)
            } else {
                None
            };
            if let Some(why) = why {
                let thread = thread.get_or_insert_with(|| runner.thread());
                if runner.interrupt(thread, &job, why) {
                    match why {
                        super::Interrupt::Timeout => crate::warn!(
                            "{}: running for {:.1}s, over interrupt-timeout ({}): interrupted",
                            super::request_label(&job),
                            ran.as_secs_f64(),
                            crate::config::settings::Seconds(watch.interrupt.unwrap_or_default())
                        ),
                        super::Interrupt::Cancelled => crate::info!(
                            "{}: the client went away after {:.1}s: request cancelled",
                            super::request_label(&job),
                            ran.as_secs_f64()
                        ),
                    }
                }
            }
        }
    }

    fn watch_requests<R: Runner>(
        &mut self,
        runner: &R,
        thread: &mut Option<R::Thread>,
        limit: Duration,
    ) {
        if self.overdue_reported {
            return;
        }
        let overdue: Vec<(usize, Duration, Job)> = self
            .sh
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let slot = lock(s);
                let (since, job) = slot.as_ref()?;
                (since.elapsed() > limit).then(|| (i, since.elapsed(), job.clone()))
            })
            .collect();
        if overdue.is_empty() {
            return;
        }
        self.overdue_reported = true;
        let thread = thread.get_or_insert_with(|| runner.thread());
        let stacks = runner.stacks(thread, &overdue[0].2);
        for (i, running, job) in &overdue {
            crate::request_log!(
                error,
                self.sh
                    .log_fields(&job.head, Some(&job.route), job.seq, Some(*i)),
                "{}: running for {:.1}s on thread {i}, over request-timeout ({}); recycling \
                 this worker",
                super::request_label(job),
                running.as_secs_f64(),
                crate::config::settings::Seconds(limit)
            );
        }
        crate::error!("Python stacks of this worker:\n{stacks}");
        crate::info!("recycling this worker: a request timed out");
        self.begin_stop(Stop::Recycle);
    }

    fn recycle_reason(&self) -> Option<String> {
        let sh = &self.sh;
        let r = &sh.config.recycle;
        if sh.thread_failed.load(Ordering::SeqCst) {
            return Some("a request thread failed".into());
        }
        let served = sh.served.load(Ordering::Relaxed);
        if r.maximum_requests.is_some_and(|max| served >= max) {
            return Some(format!("served {served} requests (maximum-requests)"));
        }
        if r.restart_after.is_some_and(|t| self.started.elapsed() >= t) {
            return Some("restart-interval reached".into());
        }
        if let Some(t) = r.inactivity_timeout {
            let last = sh.last_request_ms.load(Ordering::Relaxed);
            let idle = Duration::from_millis(sh.now_ms().saturating_sub(last));
            if idle >= t && sh.running.load(Ordering::SeqCst) == 0 {
                return Some("no request within inactivity-timeout".into());
            }
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

    /// While this process holds more than its share of its group's connections: sheds kept
    /// connections, up to half of what it holds over the limit (the tick's rebalance counted
    /// the others anew). After a close it waits for [`SHED_PAUSE`] before it sheds again:
    /// until the web server opened connections again and the others took them, their counts
    /// still look low (without the pause, a process with 10 connections and another with none
    /// shed 10, not 3).
    ///
    /// It hands connections that wait for a request to the process that holds the fewest
    /// (`Shared::hand_over_waiting`), at every tick: the web server sees nothing. Only where
    /// that fails does it close connections: those that waited for a request for [`SHED_IDLE`]
    /// or more, and when too few did and it has held too many for [`SHED_BUSY_AFTER`], the
    /// rest right after their response, which can cross the web server's next request (see
    /// `Shared::shed_idle`; closing instead connections that waited for any time, those that
    /// waited longest first, failed more uploads than that: 8 `bench/run` rounds in 12
    /// against 3 in 24).
    fn shed(&mut self) {
        let most = self.sh.to_shed().min(SHED_MOST);
        if most == 0 {
            self.over_since = None;
            return;
        }
        let over_since = *self.over_since.get_or_insert_with(Instant::now);
        if self.shed_at.is_some_and(|at| at.elapsed() < SHED_PAUSE) {
            return;
        }
        // Handed connections are counted at once by the process that takes them, and those
        // that wait now are all handed: the next tick hands more, and nothing closes.
        let Err(handed) = self.sh.hand_over_waiting(most) else {
            return;
        };
        let mut closed = self.sh.shed_idle(most - handed, SHED_IDLE);
        if handed + closed < most && over_since.elapsed() >= SHED_BUSY_AFTER {
            closed += self.sh.shed_busy(most - handed - closed);
        }
        if closed > 0 {
            self.shed_at = Some(Instant::now());
        }
    }

    /// While stopping: kept connections that wait for nothing of the app are closed (when a
    /// replacement takes over, once they stayed idle a while), and connections that have sent
    /// nothing get a short deadline (see `Conn::close_if_idle`).
    fn close_idle(&self) {
        let conns = self.sh.open_conns();
        let after = match self.sh.drain() {
            super::Drain::Soft => Some(DRAIN_KEPT),
            _ => None,
        };
        for c in conns {
            c.close_if_idle(&self.sh, after);
        }
    }

    /// When every thread has been busy since the last tick and none finished a request, the
    /// housekeeper does the I/O of
    /// the connections for one tick: bodies are collected, finished responses flushed,
    /// lingering connections read, and requests queued (where queue-timeout answers them on
    /// time). With other worker processes on the same sockets it stops accepting meanwhile.
    fn serve_if_stuck(&mut self) {
        let sh = &self.sh;
        let epoch = sh.idle_epoch.load(Ordering::SeqCst);
        let served = sh.served.load(Ordering::Relaxed);
        // Threads that go from one request to the next are not stuck: new connections then
        // wait in the kernel's queue for them, not in this process's memory.
        let stuck = sh.idle.load(Ordering::SeqCst) == 0
            && epoch == self.last_epoch
            && served == self.last_served;
        self.last_epoch = epoch;
        self.last_served = served;
        if !stuck {
            return;
        }
        let pause = sh.config.shared_listeners && !sh.stopping();
        if pause {
            let mut l = lock(&sh.listeners);
            l.paused = true;
            let _ = sh.relisten(&mut l);
        }
        let until = Instant::now() + TICK;
        while Instant::now() < until && sh.idle.load(Ordering::SeqCst) == 0 {
            let left = until.saturating_duration_since(Instant::now());
            if sh
                .dispatch_ready(crate::sys::epoll_timeout(Some(left)))
                .is_err()
            {
                break;
            }
        }
        if pause {
            let mut l = lock(&sh.listeners);
            l.paused = false;
            let _ = sh.relisten(&mut l);
        }
    }
}
