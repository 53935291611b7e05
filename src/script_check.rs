//! The check of a process group's scripts (each compiles and defines its callable), by an
//! interpreter of the group's python-home in a child process: what `wsgi-gateway check`
//! reports, and what a SIGHUP checks before it replaces the workers.

use std::time::Duration;

use crate::config::ProcessGroup;
use crate::python;
use crate::supervisor::policy::code;

/// The problems of the scripts of `config`'s mounts, checked in a child process forked here
/// (the caller runs no Python, and no other thread: see [`crate::sys::fork`]). Empty when all
/// is well.
pub fn script_problems(config: &ProcessGroup) -> Vec<String> {
    use crate::sys::{self, Forked};
    use std::io::Read;
    let (mut ours, theirs) = match std::os::unix::net::UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return vec![format!("cannot check the scripts: {e}")],
    };
    match sys::fork() {
        Err(e) => vec![format!("cannot check the scripts: {e}")],
        Ok(Forked::Child) => {
            drop(ours);
            check_and_exit(config, theirs)
        }
        Ok(Forked::Parent(pid)) => {
            drop(theirs);
            let _ = ours.set_read_timeout(Some(CHECK_TIMEOUT));
            let mut got = Vec::new();
            let read = ours.read_to_end(&mut got);
            if read.is_err() {
                sys::kill(pid, signal_hook::consts::SIGKILL);
            }
            sys::wait(pid);
            match read {
                Ok(_) => decode_problems(&got),
                Err(_) => vec![CHECK_TOO_LONG.to_string()],
            }
        }
    }
}

/// In a child forked to check `config`'s scripts: checks them, writes the problems to `out`
/// (see [`decode_problems`]) and exits.
pub fn check_and_exit(config: &ProcessGroup, mut out: std::os::unix::net::UnixStream) -> ! {
    use std::io::Write;
    let problems = match python::start(&config.python.home) {
        Err(e) => vec![e],
        Ok(main) => {
            let p = main.with_gil(|gil| crate::wsgi::check_scripts(gil, &config.mounts));
            main.finalize();
            p
        }
    };
    let mut text = problems.join("\0").into_bytes();
    text.push(CHECK_DONE);
    let code = if out.write_all(&text).is_ok() {
        code::OK
    } else {
        code::INTERNAL
    };
    std::process::exit(code)
}

/// The problems a checking child wrote (see [`check_and_exit`]); one problem when it ended
/// before it had written them all.
pub fn decode_problems(got: &[u8]) -> Vec<String> {
    let Some((&CHECK_DONE, text)) = got.split_last() else {
        return vec!["checking the scripts failed: its process ended early".to_string()];
    };
    String::from_utf8_lossy(text)
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The last byte a checking child writes, once it has written every problem.
const CHECK_DONE: u8 = 1;

/// How long checking a group's scripts may take (starting its interpreter, then compiling).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The problem of a check that took longer.
pub const CHECK_TOO_LONG: &str =
    "checking the scripts did not finish within a minute (starting the python-home's interpreter \
     hangs?)";
