//! The embedded CPython: starting and stopping it. Every raw call lives in [`ffi`].

pub mod ffi;
pub mod imports;

use std::io::ErrorKind;
use std::path::Path;

pub use ffi::{
    Gil, GilTurn, Host, InterpId, MainThread, Obj, PyErr, PyObj, PyResult, Recv, SubInterpreter,
    ThreadState,
};

use crate::venv::{self, Home};

/// Starts the interpreter for a checked python-home; returns with the GIL released.
pub fn start(home: &Home) -> Result<MainThread, String> {
    check_libpython()?;
    venv::check_base(home)?;
    let program = home.program_name();
    ffi::initialize(&ffi::InitOptions {
        program_name: &program,
        home: home.home(),
    })
    .map_err(|e| format!("the Python interpreter failed to start: {e}"))
}

/// The version of the Python the gateway was built against (`platform.python_version()`).
pub const BUILD_VERSION: &str = env!("WSGI_GATEWAY_PY_FULL_VERSION");
/// Its `sys.version`, whitespace collapsed: what `Py_GetVersion()` of its libpython says.
pub const BUILD_SYS_VERSION: &str = env!("WSGI_GATEWAY_PY_SYS_VERSION");
/// The libpython file the build linked and the binary's rpath points at (symlinks resolved).
pub const BUILD_LIBRARY: &str = env!("WSGI_GATEWAY_PY_LIBRARY");

/// Checks, before the interpreter starts, that the libpython the dynamic loader took is the
/// one the gateway was built against: same `Py_GetVersion()`, same file. When the build's
/// libpython cannot be read (a Python under a private home, a service user), the loader
/// silently takes the system's instead, and CPython then fails with a raw path dump or runs
/// another version's standard library.
pub fn check_libpython() -> Result<(), String> {
    let (version, path) = ffi::loaded_libpython();
    let version = collapse(&version);
    let loaded = path.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    let same_file = loaded
        .as_deref()
        .is_none_or(|p| p == Path::new(BUILD_LIBRARY));
    if version == BUILD_SYS_VERSION && same_file {
        return Ok(());
    }
    Err(mismatch(&version, loaded.as_deref()))
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn mismatch(version: &str, loaded: Option<&Path>) -> String {
    let shown = loaded.map_or("another libpython".into(), |p| p.display().to_string());
    let number = version.split(' ').next().unwrap_or(version);
    let head = format!(
        "this gateway was built against Python {BUILD_VERSION} ({BUILD_LIBRARY}), but the \
         dynamic loader took {shown} (Python {number})"
    );
    let prefix = venv::BUILD_PREFIX;
    let rebuild = "rebuild the gateway against a Python this user can read (set PYO3_PYTHON, \
                   e.g. PYO3_PYTHON=/usr/bin/python3)";
    match std::fs::File::open(BUILD_LIBRARY) {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => format!(
            "{head}: {BUILD_LIBRARY} is not readable by this user ({}), so the loader fell back \
             to another one; make {prefix} readable by this user (with every directory above \
             it searchable, e.g. not under a private home), or {rebuild}",
            user_name()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => format!(
            "{head}: {BUILD_LIBRARY} no longer exists (was the Python under {prefix} removed or \
             upgraded?); {rebuild}"
        ),
        _ => match std::env::var("LD_LIBRARY_PATH") {
            Ok(p) if !p.is_empty() => format!(
                "{head}: LD_LIBRARY_PATH ({p}) put another libpython first; unset it, or \
                 rebuild the gateway against the Python it names (set PYO3_PYTHON)"
            ),
            _ => format!(
                "{head}; rebuild the gateway against the Python it runs with (set PYO3_PYTHON)"
            ),
        },
    }
}

fn user_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => format!("{}, uid {uid}", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Runs `f` with the interpreter started (the build's Python), then finalises it: for unit
/// tests, one at a time (a plain `cargo test` runs them as threads of one process).
#[cfg(test)]
pub fn with_python<R>(f: impl FnOnce(&MainThread) -> R) -> R {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let main = start(&crate::venv::Home::build_default()).unwrap();
    let result = f(&main);
    assert_eq!(main.finalize(), 0);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    /// Two threads of one interpreter run requests back to back, each holding the GIL for
    /// 200 µs without letting go of it by itself (plain Rust work, no bytecode). A request
    /// asked for while the other thread holds the GIL waits; the other thread, ending its
    /// request, lets the waiter take the GIL before it starts its next one. Without the turns,
    /// it takes the GIL straight back (the waiter is still being woken), and a waiting request
    /// is overtaken by every newer request of the other thread until CPython forces a switch:
    /// about 200 times in a round here.
    ///
    /// A busy machine can keep a thread off a CPU between its requests, and then the two
    /// hardly wait for each other: such a round shows nothing either way. The test passes on
    /// the first round (of as many as fit in 10 s) in which at least half of the requests
    /// waited and a waiting request was overtaken rarely (only when the other thread looked
    /// for a waiter just before it came).
    #[test]
    fn a_thread_waiting_for_the_gil_takes_it_before_the_next_request_starts() {
        with_python(|main| takes_turns(main.interp()));
    }

    /// Runs rounds until one shows the turns, for up to 10 s (see above).
    fn takes_turns(interp: InterpId) {
        const REQUESTS: usize = 200;
        /// When a request was asked for and when it started (the GIL taken).
        type Times = (Instant, Instant);
        let turn = Arc::new(GilTurn::default());
        let round = || {
            let ready = Arc::new(Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (turn, ready) = (turn.clone(), ready.clone());
                    std::thread::spawn(move || {
                        let ts = ThreadState::new(interp, turn);
                        ready.wait();
                        (0..REQUESTS)
                            .map(|_| {
                                let asked = Instant::now();
                                ts.with_gil(|_gil| {
                                    let got = Instant::now();
                                    let end = got + Duration::from_micros(200);
                                    while Instant::now() < end {
                                        std::hint::spin_loop();
                                    }
                                    (asked, got)
                                })
                            })
                            .collect::<Vec<Times>>()
                    })
                })
                .collect();
            let runs: Vec<Vec<Times>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let (mut waited, mut overtaken) = (0, 0);
            for (mine, theirs) in [(&runs[0], &runs[1]), (&runs[1], &runs[0])] {
                for &(asked, got) in mine {
                    // The other thread's requests that started while this one waited.
                    let before = theirs.iter().filter(|&&(_, g)| asked < g && g < got);
                    if before.clone().next().is_some() {
                        waited += 1;
                    }
                    overtaken += before.filter(|&&(a, _)| a > asked).count();
                }
            }
            (waited, overtaken)
        };
        let mut rounds = Vec::new();
        let took_turns =
            |&(waited, overtaken): &(usize, usize)| waited >= REQUESTS && overtaken <= waited / 4;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !rounds.last().is_some_and(took_turns) {
            rounds.push(round());
        }
        eprintln!("(requests that waited, times overtaken) in each round: {rounds:?}");
        assert!(
            rounds.last().is_some_and(took_turns),
            "no round of {} requests took turns; (requests that waited, times overtaken) in each: \
             {rounds:?}",
            2 * REQUESTS
        );
    }
}
