//! The supervisor of `--processes N` (and of process groups): it holds no Python. It binds the
//! listeners, forks the worker processes (which inherit the listening sockets and start their
//! own interpreter after the fork), reaps them and acts on how they ended ([`policy`]), and
//! handles the signals: SIGTERM/SIGINT stop gracefully (a second one stops at once), SIGHUP
//! re-reads the configuration and replaces the workers without dropping requests, SIGUSR1
//! reopens the log files (its own, and each worker reopens its own).

pub mod policy;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::Signal;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1};

use crate::config::{self, ProcessGroup, Settings};
use crate::scoreboard::Board;
use crate::server::Listener;
use crate::sys::{self, Forked};
use crate::{error, info, script_check, warn, worker};
use policy::{Action, Exit, History, StopPlan, StopStep};

/// How often the supervisor looks again when nothing woke it (a missed SIGCHLD costs at most
/// this long).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// How soon to retry a fork that failed.
const FORK_RETRY: Duration = Duration::from_secs(1);
/// The epoll token of the signals (a worker's channel has its pid).
const SIGNALS: u64 = 0;
/// The epoll token of a reload's checking child (pids are positive `i32`s).
const CHECK: u64 = u64::MAX;

/// One worker position of the current configuration.
#[derive(Default)]
struct Slot {
    pid: Option<i32>,
    started: Option<Instant>,
    /// When to start the next worker here; `None` while one runs, or after giving up.
    due: Option<Instant>,
    history: History,
    /// The scoreboard row its last worker had (a respawn takes it again when it is free).
    row: Option<usize>,
}

/// One process group: its configuration, listening sockets and worker positions.
struct ProcessGroupRun {
    config: ProcessGroup,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    /// The scoreboard (for the status page, and with two workers or more for spreading kept
    /// connections), mapped before the workers are forked so that they all share it; and the
    /// row of each of its workers still alive.
    board: Option<Arc<Board>>,
    rows: HashMap<i32, usize>,
}

impl ProcessGroupRun {
    /// `board`: the scoreboard of the process group this one replaces, when it is kept.
    fn new(
        config: ProcessGroup,
        listeners: Vec<Listener>,
        now: Instant,
        board: Option<Arc<Board>>,
    ) -> ProcessGroupRun {
        let n = config.processes.unwrap_or(1);
        let wanted = config.status.is_some() || n > 1;
        let board = wanted.then(|| {
            board.or_else(|| {
                Board::new(n, config.threads)
                    .map_err(|e| {
                        error!(
                            "the scoreboard: {e}; no status page, and kept connections are \
                             not spread over the workers"
                        )
                    })
                    .ok()
            })
        });
        let board = board.flatten();
        ProcessGroupRun {
            config,
            listeners,
            board,
            rows: HashMap::new(),
            slots: (0..n)
                .map(|_| Slot {
                    due: Some(now),
                    ..Slot::default()
                })
                .collect(),
        }
    }
}

/// Workers on their way out (those of a previous configuration, or one that recycles), and
/// how far their stop went.
struct Stopping {
    pids: Vec<i32>,
    plan: StopPlan,
    /// How they are named in log lines.
    what: &'static str,
}

struct Supervisor<'a> {
    args: &'a Settings,
    epoll: Epoll,
    /// The supervisor's end of each worker's channel (a worker that recycles says so at once).
    channels: HashMap<i32, UnixStream>,
    groups: Vec<ProcessGroupRun>,
    /// The supervisor's signals (taken out in a forked worker).
    signals: Option<sys::Signals>,
    /// pid → (group, slot) of current workers.
    current: HashMap<i32, (usize, usize)>,
    /// Workers of previous configurations, each batch stopping on its own plan.
    retiring: Vec<Stopping>,
    /// The whole gateway is stopping.
    stopping: Option<StopPlan>,
    /// A reload whose scripts are being checked.
    checking: Option<Checking>,
}

/// What `fork_child` returned.
enum Child {
    /// In the child: the listening sockets it kept.
    Child(Vec<Listener>),
    Parent(i32),
}

/// A reload waiting for the check of its scripts (what `wsgi-gateway check` does), made by a
/// child process per process group, one after the other, while the supervisor goes on.
struct Reload {
    configs: Vec<ProcessGroup>,
    /// The group to check next.
    next: usize,
    problems: Vec<String>,
    deadline: Instant,
}

/// A reload's group being checked: its child, and what the child wrote so far.
struct Checking {
    reload: Reload,
    pid: i32,
    pipe: UnixStream,
    got: Vec<u8>,
}

pub fn run(args: &Settings, groups: Vec<(ProcessGroup, Vec<Listener>)>) -> ExitCode {
    let started = (|| -> std::io::Result<(Epoll, sys::Signals)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let signals = sys::Signals::new(&[SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1])?;
        epoll.add(signals.fd(), EpollEvent::new(EpollFlags::EPOLLIN, SIGNALS))?;
        Ok((epoll, signals))
    })();
    let (epoll, signals) = match started {
        Ok(s) => s,
        Err(e) => {
            error!("supervisor: {e}");
            return ExitCode::from(policy::code::INTERNAL as u8);
        }
    };
    let name = display_name(&groups[0].0);
    sys::set_process_title(&format!("{name}: supervisor"));
    let now = Instant::now();
    let groups: Vec<ProcessGroupRun> = groups
        .into_iter()
        .map(|(c, l)| ProcessGroupRun::new(c, l, now, None))
        .collect();
    let n: usize = groups.iter().map(|g| g.slots.len()).sum();
    let mut sup = Supervisor {
        args,
        epoll,
        channels: HashMap::new(),
        groups,
        signals: Some(signals),
        current: HashMap::new(),
        retiring: Vec::new(),
        stopping: None,
        checking: None,
    };
    info!("supervisor started: {n} worker process(es)");
    let mut events = [EpollEvent::empty(); 4];
    loop {
        sup.start_due();
        sup.escalate();
        if sup.stopping.is_some() && sup.current.is_empty() && sup.retiring.is_empty() {
            info!("all workers stopped; supervisor exits");
            return ExitCode::SUCCESS;
        }
        if sup.stopping.is_none() && sup.current.is_empty() && sup.nothing_due() {
            error!("no worker process is left to run; the supervisor exits");
            return ExitCode::from(policy::code::CONFIG as u8);
        }
        let timeout = sup.next_wake();
        let n = match sup
            .epoll
            .wait(&mut events, sys::epoll_timeout(Some(timeout)))
        {
            Ok(n) => n,
            Err(nix::Error::EINTR) => 0,
            Err(e) => {
                error!("supervisor: {e}");
                return ExitCode::from(policy::code::INTERNAL as u8);
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                SIGNALS => {}
                CHECK => sup.check_readable(),
                pid => sup.heard_from(pid as i32),
            }
        }
        sup.handle_signals();
        sup.check_overdue();
    }
}

/// Logs why a reload is refused; the running workers serve on.
fn refuse_reload(problems: &[impl std::fmt::Display]) {
    for p in problems {
        error!("reload refused: {p}");
    }
    warn!("the running workers keep serving the previous configuration");
}

fn display_name(group: &ProcessGroup) -> String {
    group
        .lifecycle
        .display_name
        .clone()
        .unwrap_or_else(|| "wsgi-gateway".into())
}

impl Supervisor<'_> {
    /// Acts on the signals that came, then reaps.
    fn handle_signals(&mut self) {
        let pending = self.signals.as_mut().map(sys::Signals::pending);
        for sig in pending.unwrap_or_default() {
            match sig {
                SIGCHLD => {}
                SIGHUP => self.reload(),
                SIGUSR1 => self.reopen_logs(),
                _ => self.stop(sig),
            }
        }
        self.reap();
    }

    fn graceful_timeout(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.config.graceful_timeout)
            .max()
            .unwrap_or_default()
    }

    fn nothing_due(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| &g.slots)
            .all(|s| s.due.is_none())
    }

    /// How long to sleep: until the next due start or stop step, at most [`IDLE_WAKE`].
    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let starts = self
            .groups
            .iter()
            .flat_map(|g| &g.slots)
            .filter_map(|s| s.due);
        let steps = self
            .stopping
            .iter()
            .chain(self.retiring.iter().map(|r| &r.plan))
            .filter_map(|p| p.next_at().map(|(_, at)| at));
        starts
            .chain(steps)
            .chain(self.checking.iter().map(|c| c.reload.deadline))
            .map(|at| at.saturating_duration_since(now))
            .min()
            .map_or(IDLE_WAKE, |d| d.min(IDLE_WAKE))
    }

    fn start_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for g in 0..self.groups.len() {
            for i in 0..self.groups[g].slots.len() {
                let slot = &self.groups[g].slots[i];
                if slot.pid.is_some() || slot.due.is_none_or(|d| d > now) {
                    continue;
                }
                match self.spawn(g, i) {
                    Ok(pid) => {
                        let slot = &mut self.groups[g].slots[i];
                        slot.pid = Some(pid);
                        slot.started = Some(Instant::now());
                        slot.due = None;
                        self.current.insert(pid, (g, i));
                    }
                    Err(e) => {
                        let who = self.worker_name(g, i);
                        error!("cannot start {who}: {e}; retrying in {FORK_RETRY:?}");
                        self.groups[g].slots[i].due = Some(now + FORK_RETRY);
                    }
                }
            }
        }
    }

    /// A worker's name in log lines: its number, and its process group when there are
    /// several.
    fn worker_name(&self, g: usize, slot: usize) -> String {
        match self.groups.len() {
            1 => format!("worker {slot}"),
            _ => format!("worker {}/{slot}", self.groups[g].config.name),
        }
    }

    /// Forks with the stop signals held back (the supervisor lets them through again at
    /// once). In the child, what is the supervisor's is let go: its signal actions (dropping
    /// their delivery unregisters them), its workers' channels, and the listening sockets but
    /// group `keep`'s, which it gets (disowned: a Unix socket's file stays). It is sent
    /// `death` when the supervisor dies.
    fn fork_child(&mut self, keep: Option<usize>, death: Signal) -> std::io::Result<Child> {
        let supervisor = sys::pid();
        sys::block_stop_signals();
        let forked = sys::fork();
        if !matches!(forked, Ok(Forked::Child)) {
            sys::unblock_stop_signals();
        }
        if let Forked::Parent(pid) = forked? {
            return Ok(Child::Parent(pid));
        }
        drop(self.signals.take());
        self.channels.clear();
        if !sys::die_with_parent(supervisor, death) {
            std::process::exit(policy::code::OK);
        }
        let mut listeners = Vec::new();
        for (i, group) in self.groups.iter_mut().enumerate() {
            for mut l in std::mem::take(&mut group.listeners) {
                l.disown();
                if Some(i) == keep {
                    listeners.push(l);
                }
            }
        }
        Ok(Child::Child(listeners))
    }

    fn spawn(&mut self, g: usize, slot: usize) -> std::io::Result<i32> {
        let group = &self.groups[g];
        let busy: Vec<usize> = group.rows.values().copied().collect();
        let row = (group.board.as_ref()).and_then(|b| b.free_row(group.slots[slot].row, &busy));
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        // The worker unblocks the stop signals once it watches for them (worker::run), and it
        // gets SIGTERM when the supervisor dies: it finishes its requests.
        match self.fork_child(Some(g), Signal::SIGTERM)? {
            Child::Parent(pid) => {
                info!("{} started (pid {pid})", self.worker_name(g, slot));
                if let Some(row) = row {
                    self.groups[g].rows.insert(pid, row);
                    self.groups[g].slots[slot].row = Some(row);
                }
                drop(theirs);
                let ev = EpollEvent::new(EpollFlags::EPOLLIN, pid as u64);
                if self.epoll.add(&ours, ev).is_ok() {
                    self.channels.insert(pid, ours);
                }
                Ok(pid)
            }
            Child::Child(listeners) => {
                drop(ours);
                let config = &self.groups[g].config;
                let name = display_name(config);
                sys::set_process_title(&format!("{name}:{}:{slot}", config.name));
                let board = self.groups[g].board.as_ref();
                let row = board.map(|b| match row {
                    Some(r) => b.claim(r, sys::pid() as u32),
                    None => b.unseated(),
                });
                let code = worker::run(&self.groups[g].config, listeners, Some(theirs), row);
                std::process::exit(i32::from(code));
            }
        }
    }

    /// A worker's channel is readable: it recycles (its replacement starts now, while it
    /// finishes its requests), or it is gone.
    fn heard_from(&mut self, pid: i32) {
        let mut buf = [0u8; 16];
        let said = match self.channels.get(&pid) {
            Some(ch) => (&*ch).read(&mut buf),
            None => return,
        };
        match said {
            Ok(n) if n > 0 && buf[..n].contains(&b'r') => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            _ => {
                // The worker ended (its exit is reaped on its own).
                if let Some(ch) = self.channels.remove(&pid) {
                    let _ = self.epoll.delete(&ch);
                }
                return;
            }
        }
        let Some((g, i)) = self.current.remove(&pid) else {
            return;
        };
        let now = Instant::now();
        let who = self.worker_name(g, i);
        let slot = &mut self.groups[g].slots[i];
        slot.pid = None;
        slot.history = History::default();
        if self.stopping.is_none() {
            slot.due = Some(now);
            info!(
                "{who} (pid {pid}) recycles: its replacement starts now, it finishes its requests"
            );
        }
        let graceful = self.groups[g].config.graceful_timeout;
        self.retiring.push(Stopping {
            pids: vec![pid],
            plan: StopPlan::new(now, graceful),
            what: "that recycled",
        });
    }

    /// Reaps every exited worker, logs how it ended and acts on it.
    fn reap(&mut self) {
        while let Some((pid, status)) = sys::try_wait_any() {
            for (g, group) in self.groups.iter_mut().enumerate() {
                if let (Some(row), Some(board)) = (group.rows.remove(&pid), &group.board) {
                    board.release(row);
                    // A worker that started while every row was held (reloads while workers
                    // drained) takes the row of one that drained; it finds it by its pid
                    // (Row::seat). A crashed worker's row waits for its replacement.
                    let drained = !self.current.contains_key(&pid);
                    let rowless = self
                        .current
                        .iter()
                        .find(|&(&p, &(pg, _))| drained && pg == g && !group.rows.contains_key(&p));
                    if let Some((&p, &(_, slot))) = rowless {
                        board.claim(row, p as u32);
                        group.rows.insert(p, row);
                        group.slots[slot].row = Some(row);
                    }
                }
            }
            if let Some(ch) = self.channels.remove(&pid) {
                let _ = self.epoll.delete(&ch);
            }
            if let Some(batch) = self.retiring.iter_mut().find(|r| r.pids.contains(&pid)) {
                batch.pids.retain(|&p| p != pid);
                let exit = match status {
                    sys::Exit::Code(0) => "exited".to_string(),
                    other => policy::classify(other, false).describe(),
                };
                info!("worker pid {pid} {} {exit}", batch.what);
                self.retiring.retain(|r| !r.pids.is_empty());
                continue;
            }
            let Some((g, i)) = self.current.remove(&pid) else {
                continue;
            };
            let who = self.worker_name(g, i);
            let exit = policy::classify(status, self.stopping.is_some());
            let now = Instant::now();
            let slot = &mut self.groups[g].slots[i];
            slot.pid = None;
            let started = slot.started.unwrap_or(now);
            let lived = now.saturating_duration_since(started).as_secs_f64();
            match policy::decide(&mut slot.history, exit, started, now) {
                Action::None => info!("{who} (pid {pid}) stopped"),
                Action::Respawn { at } if exit == Exit::Recycled => {
                    info!("{who} (pid {pid}) recycled; starting a new one");
                    slot.due = Some(at);
                }
                Action::Respawn { at } => {
                    let failures = slot.history.failures;
                    let next = if at <= now {
                        "starting a new one".to_string()
                    } else {
                        format!(
                            "{failures} failures in a row: next start in {:.1}s",
                            (at - now).as_secs_f64()
                        )
                    };
                    error!(
                        "{who} (pid {pid}) {} after {lived:.1}s; {next}",
                        exit.describe()
                    );
                    slot.due = Some(at);
                }
                Action::GiveUp { reason } => {
                    error!(
                        "{who} (pid {pid}) {} after {lived:.1}s; not starting it again: {reason}",
                        exit.describe()
                    );
                    slot.due = None;
                }
            }
        }
    }

    fn stop(&mut self, sig: i32) {
        if self.stopping.is_some() {
            warn!("{}: stopping now", sys::signal_name(sig));
            self.signal_all(SIGKILL);
            std::process::exit(1);
        }
        info!(
            "{}: stopping the workers gracefully (up to {:?}, then SIGTERM again, then SIGKILL \
             {:?} later)",
            sys::signal_name(sig),
            self.graceful_timeout(),
            policy::KILL_GRACE
        );
        self.cancel_check();
        self.stopping = Some(StopPlan::new(Instant::now(), self.graceful_timeout()));
        self.signal_all(SIGTERM);
        // The workers close their copies of the listening sockets as they stop accepting;
        // this one goes too, so that the sockets close: a new connection is then refused at
        // once (a web server tries its next backend) rather than queued for nobody and reset
        // at the exit.
        for g in &mut self.groups {
            g.listeners.clear();
        }
    }

    /// SIGUSR1 (logrotate): the supervisor reopens its log file and passes the signal on to
    /// every worker, which reopens its log and access log (each process has its own).
    fn reopen_logs(&self) {
        crate::log::reopen();
        self.signal_all(SIGUSR1);
    }

    fn signal_all(&self, signal: i32) {
        let retiring = self.retiring.iter().flat_map(|r| r.pids.iter());
        for &pid in self.current.keys().chain(retiring) {
            sys::kill(pid, signal);
        }
    }

    /// Takes the due steps of every stop under way.
    fn escalate(&mut self) {
        let now = Instant::now();
        let signal_of = |step| match step {
            StopStep::Graceful | StopStep::Term => SIGTERM,
            StopStep::Kill => SIGKILL,
        };
        if let Some(step) = self.stopping.as_mut().and_then(|p| p.step(now)) {
            warn!(
                "workers still running after the graceful timeout: sending {}",
                sys::signal_name(signal_of(step))
            );
            self.signal_all(signal_of(step));
        }
        for batch in &mut self.retiring {
            if let Some(step) = batch.plan.step(now) {
                let signal = signal_of(step);
                warn!(
                    "worker(s) {:?} {} still busy: sending {}",
                    batch.pids,
                    batch.what,
                    sys::signal_name(signal)
                );
                for &pid in &batch.pids {
                    sys::kill(pid, signal);
                }
            }
        }
    }

    /// SIGHUP: re-read the configuration; on success start new workers and let the old ones
    /// finish their requests. A bad configuration is refused and the workers keep serving.
    fn reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let configs = match config::load(self.args).into_result() {
            Ok((c, logging)) => {
                if let Err(e) = crate::log::configure(&logging) {
                    error!("reload: {e}; the log settings stay as they were");
                }
                c
            }
            Err(problems) => {
                refuse_reload(&problems);
                return;
            }
        };
        // The scripts too, as `wsgi-gateway check` does (new workers would serve a script
        // that does not compile with 500s): in child processes, while the supervisor goes on;
        // `apply` follows. A newer SIGHUP starts again.
        self.cancel_check();
        self.check_next(Reload {
            configs,
            next: 0,
            problems: Vec::new(),
            deadline: Instant::now() + script_check::CHECK_TIMEOUT,
        });
    }

    /// Starts the check of the next group of `r`, or ends the reload when none is left.
    fn check_next(&mut self, r: Reload) {
        let Some(config) = r.configs.get(r.next) else {
            if r.problems.is_empty() {
                self.apply(r.configs);
            } else {
                refuse_reload(&r.problems);
            }
            return;
        };
        let started = (|| -> std::io::Result<(i32, UnixStream)> {
            let (ours, theirs) = UnixStream::pair()?;
            ours.set_nonblocking(true)?;
            // The child keeps no listening socket (one would outlive a supervisor killed
            // meanwhile), its stop signals stay blocked, and it is killed with the supervisor
            // or by it.
            match self.fork_child(None, Signal::SIGKILL)? {
                Child::Child(_) => {
                    drop(ours);
                    script_check::check_and_exit(config, theirs)
                }
                Child::Parent(pid) => Ok((pid, ours)),
            }
        })();
        let (pid, pipe) = match started {
            Ok(child) => child,
            Err(e) => {
                refuse_reload(&[format!("cannot check the scripts: {e}")]);
                return;
            }
        };
        if let Err(e) = self
            .epoll
            .add(&pipe, EpollEvent::new(EpollFlags::EPOLLIN, CHECK))
        {
            sys::kill(pid, SIGKILL);
            refuse_reload(&[format!("cannot check the scripts: {e}")]);
            return;
        }
        self.checking = Some(Checking {
            reload: r,
            pid,
            pipe,
            got: Vec::new(),
        });
    }

    /// The checking child wrote, or ended.
    fn check_readable(&mut self) {
        let Some(c) = self.checking.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match (&c.pipe).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => c.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        let Some(Checking {
            mut reload,
            pipe,
            got,
            ..
        }) = self.checking.take()
        else {
            return;
        };
        let _ = self.epoll.delete(&pipe);
        reload.problems.extend(script_check::decode_problems(&got));
        reload.next += 1;
        self.check_next(reload);
    }

    /// A check past its deadline: the reload is refused.
    fn check_overdue(&mut self) {
        if self
            .checking
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.reload.deadline)
        {
            self.cancel_check();
            refuse_reload(&[script_check::CHECK_TOO_LONG]);
        }
    }

    /// Ends a check under way (its child is killed; `reap` collects it).
    fn cancel_check(&mut self) {
        if let Some(c) = self.checking.take() {
            let _ = self.epoll.delete(&c.pipe);
            sys::kill(c.pid, SIGKILL);
        }
    }

    /// The rest of a reload, once its configuration and scripts are checked.
    fn apply(&mut self, configs: Vec<ProcessGroup>) {
        // Sockets that stay configured are kept (no connection is refused during the reload);
        // new ones are bound; the others close once the old workers are gone.
        let mut old: Vec<Listener> = self
            .groups
            .iter_mut()
            .flat_map(|g| std::mem::take(&mut g.listeners))
            .collect();
        let mut groups = Vec::new();
        let now = Instant::now();
        for config in configs {
            let mut listeners = Vec::new();
            for spec in &config.listeners {
                let kept = old
                    .iter()
                    .position(|l| l.spec.addr == spec.addr && l.spec.proto == spec.proto);
                let listener = match kept {
                    Some(i) => Ok(old.swap_remove(i)),
                    None => Listener::bind(spec.clone()),
                };
                match listener {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        refuse_reload(&[e]);
                        old.extend(listeners);
                        old.extend(
                            groups
                                .into_iter()
                                .flat_map(|g: ProcessGroupRun| g.listeners),
                        );
                        self.give_back(old);
                        return;
                    }
                }
            }
            // A process group that stays, with the same size, keeps its scoreboard: the
            // status page's counters go on, and the workers being replaced are seen.
            let board = self
                .groups
                .iter()
                .find(|o| o.config.name == config.name)
                .and_then(|o| o.board.clone())
                .filter(|b| b.fits(config.processes.unwrap_or(1), config.threads));
            groups.push(ProcessGroupRun::new(config, listeners, now, board));
        }
        drop(old);
        // The rows of the workers being replaced stay theirs in a kept scoreboard until
        // they exit.
        for g in &mut groups {
            let kept = self.groups.iter_mut().find(|o| match (&o.board, &g.board) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            });
            if let Some(o) = kept {
                g.rows = std::mem::take(&mut o.rows);
            }
        }
        // SIGHUP to a worker: it is replaced (it finishes its requests, and kept connections
        // close only once the web server was told so).
        let pids: Vec<i32> = self.current.drain().map(|(pid, _)| pid).collect();
        for &pid in &pids {
            sys::kill(pid, SIGHUP);
        }
        let graceful = self.graceful_timeout();
        if !pids.is_empty() {
            self.retiring.push(Stopping {
                pids,
                plan: StopPlan::new(now, graceful),
                what: "of the previous configuration",
            });
        }
        self.groups = groups;
        let n: usize = self.groups.iter().map(|g| g.slots.len()).sum();
        info!(
            "SIGHUP: configuration re-read; starting {n} new worker(s), the old ones finish \
             their requests"
        );
    }

    /// After a refused reload: every socket back to the process group that had it.
    fn give_back(&mut self, mut listeners: Vec<Listener>) {
        for g in &mut self.groups {
            let mine: Vec<Listener> = listeners
                .extract_if(.., |l| {
                    g.config.listeners.iter().any(|s| s.addr == l.spec.addr)
                })
                .collect();
            g.listeners = mine;
        }
    }
}
