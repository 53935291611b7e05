//! The supervisor's decisions as pure functions of what happened and when: how a worker
//! process ended ([`classify`]), what to do about it ([`decide`]), and how a stop escalates
//! ([`StopPlan`]). Nothing here forks, signals or reads a clock.

use std::time::{Duration, Instant};

use crate::sys;

/// A worker that failed sooner than this after its start counts as failing to start.
pub const QUICK_FAILURE: Duration = Duration::from_secs(10);
/// The first back-off after repeated quick failures; it doubles with each further one.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After the graceful timeout and a second SIGTERM, how long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The exit codes of a worker process (README, "Process groups and the supervisor").
pub mod code {
    /// Stopped or recycled gracefully.
    pub const OK: i32 = 0;
    /// An internal error (its event loop failed).
    pub const INTERNAL: i32 = 1;
    /// It cannot apply its configuration (e.g. switch user): starting it again cannot help.
    pub const CONFIG: i32 = 2;
    /// The interpreter or the application could not be loaded.
    pub const LOAD: i32 = 3;
}

/// How a worker process ended, as the supervisor tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Ended because the supervisor asked it to (stop, reload).
    Stopped,
    /// Exited 0 on its own: recycled (maximum-requests, restart-interval...).
    Recycled,
    /// Could not load its interpreter or application.
    FailedToLoad,
    /// Cannot apply its configuration.
    ConfigError,
    /// Killed by SIGKILL the supervisor did not send: the kernel's OOM killer, or an operator.
    Killed,
    /// Killed by another signal (SIGSEGV, SIGABRT...): a crash.
    Crashed { signal: i32 },
    /// Exited with another code.
    Failed { code: i32 },
}

/// Classifies an exit status; `requested`: the supervisor had asked this worker to stop.
pub fn classify(status: sys::Exit, requested: bool) -> Exit {
    match status {
        _ if requested => Exit::Stopped,
        sys::Exit::Code(code::OK) => Exit::Recycled,
        sys::Exit::Code(code::LOAD) => Exit::FailedToLoad,
        sys::Exit::Code(code::CONFIG) => Exit::ConfigError,
        sys::Exit::Code(code) => Exit::Failed { code },
        sys::Exit::Signal(s) if s == nix::libc::SIGKILL => Exit::Killed,
        sys::Exit::Signal(signal) => Exit::Crashed { signal },
    }
}

impl Exit {
    /// For log lines: "was recycled", "failed to load ...".
    pub fn describe(self) -> String {
        match self {
            Exit::Stopped => "stopped".into(),
            Exit::Recycled => "recycled".into(),
            Exit::FailedToLoad => "failed to load its interpreter or application".into(),
            Exit::ConfigError => "could not apply its configuration".into(),
            Exit::Killed => {
                "was killed by SIGKILL (the kernel's OOM killer, or an operator)".into()
            }
            Exit::Crashed { signal } => format!("crashed ({})", sys::signal_name(signal)),
            Exit::Failed { code } => format!("exited with code {code}"),
        }
    }
}

/// A worker position's recent history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Failures in a row, each within [`QUICK_FAILURE`] of its start.
    pub failures: u32,
}

/// What to do about a worker position whose process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: it was asked to stop.
    None,
    /// Start a new worker at this time (now, or after a back-off).
    Respawn { at: Instant },
    /// Starting it again cannot help: leave the position empty and say why.
    GiveUp { reason: String },
}

/// Decides about a worker that started at `started` and ended at `now` with `exit`;
/// updates the position's history.
pub fn decide(history: &mut History, exit: Exit, started: Instant, now: Instant) -> Action {
    let lived = now.saturating_duration_since(started);
    match exit {
        Exit::Stopped => Action::None,
        Exit::Recycled => {
            history.failures = 0;
            Action::Respawn { at: now }
        }
        Exit::ConfigError => Action::GiveUp {
            reason: "it cannot apply its configuration (see its error above); fix it and \
                     restart the gateway"
                .into(),
        },
        Exit::FailedToLoad | Exit::Killed | Exit::Crashed { .. } | Exit::Failed { .. } => {
            history.failures = if lived < QUICK_FAILURE {
                history.failures + 1
            } else {
                1
            };
            Action::Respawn {
                at: now + backoff(history.failures),
            }
        }
    }
}

/// The wait before the next start after `failures` quick failures in a row: none for the
/// first, then 0.5 s, 1 s, 2 s... up to a minute.
pub fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let doublings = (failures - 2).min(16);
    (BACKOFF_BASE * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The steps of stopping workers: SIGTERM (finish in-flight requests, up to the graceful
/// timeout), then SIGTERM again (stop now), then, [`KILL_GRACE`] later, SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopStep {
    Graceful,
    Term,
    Kill,
}

/// A stop under way, from `since` with a graceful timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPlan {
    pub since: Instant,
    pub graceful: Duration,
    /// The last step taken.
    pub done: StopStep,
}

impl StopPlan {
    pub fn new(since: Instant, graceful: Duration) -> StopPlan {
        StopPlan {
            since,
            graceful,
            done: StopStep::Graceful,
        }
    }

    /// When the next step is due, if any.
    pub fn next_at(&self) -> Option<(StopStep, Instant)> {
        match self.done {
            StopStep::Graceful => Some((StopStep::Term, self.since + self.graceful)),
            StopStep::Term => Some((StopStep::Kill, self.since + self.graceful + KILL_GRACE)),
            StopStep::Kill => None,
        }
    }

    /// The step to take now, if one is due (and records it as taken).
    pub fn step(&mut self, now: Instant) -> Option<StopStep> {
        let (step, at) = self.next_at()?;
        if now < at {
            return None;
        }
        self.done = step;
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGSEGV: i32 = 11;
    const SIGKILL: i32 = 9;

    #[test]
    fn exits_are_classified_by_code_and_signal() {
        let cases = [
            (sys::Exit::Code(0), false, Exit::Recycled),
            (sys::Exit::Code(0), true, Exit::Stopped),
            (sys::Exit::Signal(SIGKILL), true, Exit::Stopped),
            (sys::Exit::Code(3), false, Exit::FailedToLoad),
            (sys::Exit::Code(2), false, Exit::ConfigError),
            (sys::Exit::Code(1), false, Exit::Failed { code: 1 }),
            (sys::Exit::Signal(SIGKILL), false, Exit::Killed),
            (
                sys::Exit::Signal(SIGSEGV),
                false,
                Exit::Crashed { signal: SIGSEGV },
            ),
        ];
        for (status, requested, want) in cases {
            assert_eq!(classify(status, requested), want, "{status:?} {requested}");
        }
    }

    /// A worker position over a sequence of exits: (exit, seconds it lived) → action.
    #[test]
    fn decisions_over_a_table_of_cases() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        struct Case {
            name: &'static str,
            history: u32,
            exit: Exit,
            lived: Duration,
            want: Result<Duration, &'static str>,
            failures_after: u32,
        }
        let respawn_in = Ok;
        let cases = [
            Case {
                name: "clean recycle",
                history: 3,
                exit: Exit::Recycled,
                lived: secs(3600),
                want: respawn_in(Duration::ZERO),
                failures_after: 0,
            },
            Case {
                name: "crash after a long life",
                history: 4,
                exit: Exit::Crashed { signal: SIGSEGV },
                lived: secs(600),
                want: respawn_in(Duration::ZERO),
                failures_after: 1,
            },
            Case {
                name: "second crash in a crash loop",
                history: 1,
                exit: Exit::Crashed { signal: SIGSEGV },
                lived: secs(1),
                want: respawn_in(ms(500)),
                failures_after: 2,
            },
            Case {
                name: "crash loop, fifth failure",
                history: 4,
                exit: Exit::Failed { code: 1 },
                lived: secs(2),
                want: respawn_in(secs(4)),
                failures_after: 5,
            },
            Case {
                name: "crash loop, capped",
                history: 30,
                exit: Exit::FailedToLoad,
                lived: ms(100),
                want: respawn_in(MAX_BACKOFF),
                failures_after: 31,
            },
            Case {
                name: "failed load at start",
                history: 0,
                exit: Exit::FailedToLoad,
                lived: ms(300),
                want: respawn_in(Duration::ZERO),
                failures_after: 1,
            },
            Case {
                name: "killed by the OOM killer",
                history: 0,
                exit: Exit::Killed,
                lived: secs(900),
                want: respawn_in(Duration::ZERO),
                failures_after: 1,
            },
            Case {
                name: "configuration error at start",
                history: 0,
                exit: Exit::ConfigError,
                lived: ms(50),
                want: Err("cannot apply its configuration"),
                failures_after: 0,
            },
        ];
        for c in cases {
            let mut h = History {
                failures: c.history,
            };
            let now = t0 + c.lived;
            let action = decide(&mut h, c.exit, t0, now);
            match (&action, &c.want) {
                (Action::Respawn { at }, Ok(delay)) => {
                    assert_eq!(*at, now + *delay, "{}", c.name)
                }
                (Action::GiveUp { reason }, Err(needle)) => {
                    assert!(reason.contains(needle), "{}: {reason}", c.name)
                }
                _ => panic!("{}: got {action:?}, want {:?}", c.name, c.want),
            }
            assert_eq!(h.failures, c.failures_after, "{}", c.name);
        }
        let mut h = History::default();
        assert_eq!(decide(&mut h, Exit::Stopped, t0, t0), Action::None);
    }

    #[test]
    fn a_stop_escalates_on_time() {
        let t0 = Instant::now();
        let mut plan = StopPlan::new(t0, Duration::from_secs(30));
        assert_eq!(plan.step(t0 + Duration::from_secs(29)), None);
        assert_eq!(
            plan.step(t0 + Duration::from_secs(30)),
            Some(StopStep::Term)
        );
        assert_eq!(plan.step(t0 + Duration::from_secs(31)), None);
        assert_eq!(
            plan.next_at(),
            Some((StopStep::Kill, t0 + Duration::from_secs(30) + KILL_GRACE))
        );
        assert_eq!(
            plan.step(t0 + Duration::from_secs(40)),
            Some(StopStep::Kill)
        );
        assert_eq!(plan.next_at(), None);
    }
}
