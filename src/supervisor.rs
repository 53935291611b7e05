//! The supervisor of `--processes N`: it holds no Python. It binds the listeners, forks the
//! worker processes (which inherit the listening sockets and start their own interpreter after
//! the fork), reaps and classifies their exits, respawns them with a back-off when they keep
//! failing, and handles the signals: SIGTERM/SIGINT stop gracefully (a second one stops at
//! once), SIGHUP re-reads the configuration and replaces the workers without dropping requests.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM};
use signal_hook::SigId;

use crate::config::{self, ProcessGroup, Settings};
use crate::server::Listener;
use crate::sys::{self, Exit, Forked};
use crate::{error, info, warn, worker};

/// A worker that lived shorter than this and failed counts as failing to start.
const QUICK_FAILURE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After the graceful timeout, how long before remaining workers are killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// One worker position of the current generation.
#[derive(Default)]
struct Slot {
    pid: Option<i32>,
    started: Option<Instant>,
    /// When to start the next worker here (a back-off after failures).
    due: Option<Instant>,
    failures: u32,
}

/// The supervisor's signals: a flag per signal and a wake-up pipe for its poll. The handlers
/// are unregistered in each forked worker, which installs its own.
struct SignalWake {
    reader: mio::net::UnixStream,
    _writer: std::os::unix::net::UnixStream,
    flags: Vec<(i32, Arc<AtomicBool>)>,
    ids: Vec<SigId>,
}

impl SignalWake {
    fn new(signals: &[i32]) -> std::io::Result<SignalWake> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let mut flags = Vec::new();
        let mut ids = Vec::new();
        for &sig in signals {
            let flag = Arc::new(AtomicBool::new(false));
            ids.push(signal_hook::flag::register(sig, flag.clone())?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                writer.try_clone()?,
            )?);
            flags.push((sig, flag));
        }
        Ok(SignalWake {
            reader: mio::net::UnixStream::from_std(reader),
            _writer: writer,
            flags,
            ids,
        })
    }

    /// The signals that arrived since the last call.
    fn pending(&mut self) -> Vec<i32> {
        let mut buf = [0u8; 64];
        while matches!(self.reader.read(&mut buf), Ok(n) if n > 0) {}
        self.flags
            .iter()
            .filter(|(_, f)| f.swap(false, Ordering::SeqCst))
            .map(|(s, _)| *s)
            .collect()
    }

    /// In a forked worker: the supervisor's handlers must not run there.
    fn unregister(&self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
    }
}

/// One process group: its configuration, listening sockets and worker positions.
struct GroupRun {
    config: ProcessGroup,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
}

impl GroupRun {
    fn new(config: ProcessGroup, listeners: Vec<Listener>, now: Instant) -> GroupRun {
        let n = config.processes.unwrap_or(1);
        GroupRun {
            config,
            listeners,
            slots: (0..n)
                .map(|_| Slot {
                    due: Some(now),
                    ..Slot::default()
                })
                .collect(),
        }
    }
}

struct Supervisor<'a> {
    args: &'a Settings,
    groups: Vec<GroupRun>,
    signals: SignalWake,
    /// pid → (group, slot) of current workers.
    current: HashMap<i32, (usize, usize)>,
    /// Workers of a previous configuration, draining after a reload.
    old: HashMap<i32, Instant>,
    stopping: Option<Instant>,
}

pub fn run(args: &Settings, groups: Vec<(ProcessGroup, Vec<Listener>)>) -> ExitCode {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            error!("supervisor: {e}");
            return ExitCode::from(1);
        }
    };
    let mut signals = match SignalWake::new(&[SIGTERM, SIGINT, SIGHUP, SIGCHLD]) {
        Ok(s) => s,
        Err(e) => {
            error!("supervisor: signals: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = poll
        .registry()
        .register(&mut signals.reader, Token(0), Interest::READABLE)
    {
        error!("supervisor: {e}");
        return ExitCode::from(1);
    }
    let name = groups[0]
        .0
        .lifecycle
        .display_name
        .clone()
        .unwrap_or_else(|| "wsgi-gw".into());
    sys::set_process_name(&format!("{name}: super"));
    let now = Instant::now();
    let groups: Vec<GroupRun> = groups
        .into_iter()
        .map(|(c, l)| GroupRun::new(c, l, now))
        .collect();
    let n: usize = groups.iter().map(|g| g.slots.len()).sum();
    let mut sup = Supervisor {
        args,
        groups,
        signals,
        current: HashMap::new(),
        old: HashMap::new(),
        stopping: None,
    };
    info!("supervisor started: {n} worker process(es)");
    let mut events = Events::with_capacity(16);
    loop {
        sup.start_due();
        if let Some(since) = sup.stopping {
            if sup.current.is_empty() && sup.old.is_empty() {
                info!("all workers stopped; supervisor exits");
                return ExitCode::SUCCESS;
            }
            if since.elapsed() > sup.graceful_timeout() + KILL_GRACE {
                warn!("workers still running after the graceful timeout: killing them");
                sup.kill_all(SIGKILL);
            }
        }
        sup.kill_stale_old();
        let timeout = sup.next_timeout();
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                error!("supervisor: {e}");
                return ExitCode::from(1);
            }
        }
        let pending = sup.signals.pending();
        for sig in pending {
            match sig {
                SIGCHLD => {}
                SIGHUP => sup.reload(),
                _ => sup.stop(sig),
            }
        }
        sup.reap();
    }
}

impl Supervisor<'_> {
    fn graceful_timeout(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.config.graceful_timeout)
            .max()
            .unwrap_or_default()
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let due = self
            .groups
            .iter()
            .flat_map(|g| &g.slots)
            .filter_map(|s| s.due)
            .map(|d| d.saturating_duration_since(now))
            .min();
        let cap = Duration::from_millis(if self.stopping.is_some() || !self.old.is_empty() {
            100
        } else {
            1000
        });
        due.map_or(cap, |d| d.min(cap))
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
                        error!("cannot start worker {i}: {e}; retrying in 1s");
                        self.groups[g].slots[i].due = Some(now + Duration::from_secs(1));
                    }
                }
            }
        }
    }

    /// A worker's name in log lines: its number, and its group when there are several.
    fn worker_name(&self, g: usize, slot: usize) -> String {
        match self.groups.len() {
            1 => format!("worker {slot}"),
            _ => format!("worker {}/{slot}", self.groups[g].config.name),
        }
    }

    fn spawn(&mut self, g: usize, slot: usize) -> std::io::Result<i32> {
        let supervisor = sys::pid();
        // The worker unblocks them once it watches for them (worker::run).
        sys::block_stop_signals();
        let forked = sys::fork();
        if !matches!(forked, Ok(Forked::Child)) {
            sys::unblock_stop_signals();
        }
        match forked? {
            Forked::Parent(pid) => {
                info!("{} started (pid {pid})", self.worker_name(g, slot));
                Ok(pid)
            }
            Forked::Child => {
                // The supervisor's signal handlers write to its own pipe: drop them here.
                self.signals.unregister();
                if !sys::die_with_parent(supervisor) {
                    std::process::exit(0);
                }
                let config = &self.groups[g].config;
                let name = config
                    .lifecycle
                    .display_name
                    .as_deref()
                    .unwrap_or("wsgi-gw");
                let title = match self.groups.len() {
                    1 => format!("{name}: w{slot}"),
                    _ => format!("{name}:{}:{slot}", config.name),
                };
                sys::set_process_name(&title);
                // This worker serves its group's sockets; the other groups' are closed here.
                let mut listeners = Vec::new();
                for (i, group) in self.groups.iter_mut().enumerate() {
                    for mut l in std::mem::take(&mut group.listeners) {
                        l.disown();
                        if i == g {
                            listeners.push(l);
                        }
                    }
                }
                let code = worker::run(&self.groups[g].config, listeners, true);
                std::process::exit(i32::from(code));
            }
        }
    }

    /// Reaps every exited worker, logs why it ended and schedules its replacement.
    fn reap(&mut self) {
        while let Some((pid, exit)) = sys::try_wait_any() {
            if self.old.remove(&pid).is_some() {
                info!(
                    "worker pid {pid} of the previous configuration exited ({})",
                    describe(exit)
                );
                continue;
            }
            let Some((g, i)) = self.current.remove(&pid) else {
                continue;
            };
            let who = self.worker_name(g, i);
            let stopping = self.stopping.is_some();
            let slot = &mut self.groups[g].slots[i];
            slot.pid = None;
            let lived = slot.started.map_or(Duration::ZERO, |s| s.elapsed());
            if stopping {
                info!("{who} (pid {pid}) stopped ({})", describe(exit));
                continue;
            }
            let delay = match exit {
                Exit::Code(0) => {
                    info!("{who} (pid {pid}) recycled; starting a new one");
                    slot.failures = 0;
                    Duration::ZERO
                }
                _ => {
                    if lived < QUICK_FAILURE {
                        slot.failures += 1;
                    } else {
                        slot.failures = 1;
                    }
                    let backoff = if slot.failures <= 1 {
                        Duration::ZERO
                    } else {
                        (Duration::from_millis(500) * 2u32.pow((slot.failures - 2).min(10)))
                            .min(MAX_BACKOFF)
                    };
                    let why = match exit {
                        Exit::Code(c) if c == i32::from(worker::EXIT_LOAD) => {
                            "failed to load its interpreter or application".to_string()
                        }
                        other => describe(other),
                    };
                    error!(
                        "{who} (pid {pid}) {why} after {:.1}s; {}",
                        lived.as_secs_f64(),
                        if backoff.is_zero() {
                            "starting a new one".to_string()
                        } else {
                            format!(
                                "{} failures in a row: next start in {:.1}s",
                                slot.failures,
                                backoff.as_secs_f64()
                            )
                        }
                    );
                    backoff
                }
            };
            slot.due = Some(Instant::now() + delay);
        }
    }

    fn stop(&mut self, sig: i32) {
        if self.stopping.is_some() {
            warn!("{}: stopping now", sys::signal_name(sig));
            self.kill_all(SIGKILL);
            std::process::exit(1);
        }
        info!(
            "{}: stopping the workers gracefully (up to {:?})",
            sys::signal_name(sig),
            self.graceful_timeout()
        );
        self.stopping = Some(Instant::now());
        self.kill_all(SIGTERM);
    }

    fn kill_all(&self, signal: i32) {
        for &pid in self.current.keys().chain(self.old.keys()) {
            sys::kill(pid, signal);
        }
    }

    /// Old workers that outlived the graceful timeout after a reload are killed.
    fn kill_stale_old(&mut self) {
        let limit = self.graceful_timeout() + KILL_GRACE;
        for (&pid, since) in &self.old {
            if since.elapsed() > limit {
                warn!("worker pid {pid} of the previous configuration is still busy: killing it");
                sys::kill(pid, SIGKILL);
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
            Ok(c) => c,
            Err(problems) => {
                for p in &problems {
                    error!("reload refused: {p}");
                }
                warn!("the running workers keep serving the previous configuration");
                return;
            }
        };
        // Sockets that stay configured are kept (no connection is refused during the reload);
        // new ones are bound; the others close once the old workers are gone.
        let mut old_listeners: Vec<Listener> = self
            .groups
            .iter_mut()
            .flat_map(|g| std::mem::take(&mut g.listeners))
            .collect();
        let mut groups = Vec::new();
        let now = Instant::now();
        for config in configs {
            let mut listeners = Vec::new();
            for spec in &config.listeners {
                let kept = old_listeners
                    .iter()
                    .position(|l| l.spec.addr == spec.addr && l.spec.proto == spec.proto);
                let listener = match kept {
                    Some(i) => Ok(old_listeners.swap_remove(i)),
                    None => Listener::bind(spec.clone()),
                };
                match listener {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        error!("reload refused: {e}");
                        warn!("the running workers keep serving the previous configuration");
                        // Put every socket back where it was.
                        old_listeners.extend(listeners);
                        for g in groups.into_iter().map(|g: GroupRun| g.listeners) {
                            old_listeners.extend(g);
                        }
                        for g in &mut self.groups {
                            let mine: Vec<Listener> = old_listeners
                                .extract_if(.., |l| {
                                    g.config.listeners.iter().any(|s| s.addr == l.spec.addr)
                                })
                                .collect();
                            g.listeners = mine;
                        }
                        return;
                    }
                }
            }
            groups.push(GroupRun::new(config, listeners, now));
        }
        drop(old_listeners);
        for (pid, _) in self.current.drain() {
            sys::kill(pid, SIGTERM);
            self.old.insert(pid, now);
        }
        self.groups = groups;
        let n: usize = self.groups.iter().map(|g| g.slots.len()).sum();
        info!("SIGHUP: configuration re-read; starting {n} new worker(s), the old ones finish their requests");
    }
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(0) => "exited normally".into(),
        Exit::Code(c) => format!("exited with code {c}"),
        Exit::Signal(s) => format!("was killed by {}", sys::signal_name(s)),
    }
}
