//! The few raw system calls std does not offer.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Calls listen(2) again on a bound, listening socket to set its backlog (std uses 128; a
/// small backlog is a known source of 502s under bursts).
pub fn relisten(l: &impl AsRawFd, backlog: u32) -> io::Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: listen(2) on a file descriptor we own; no memory is passed.
    if unsafe { libc::listen(l.as_raw_fd(), backlog) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What fork(2) returned.
pub enum Forked {
    Child,
    Parent(i32),
}

/// fork(2). The caller must hold no threads (the supervisor has none), so the child is a
/// faithful copy that may go on running Rust code.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions; the single-threaded caller makes the
    // child's state consistent.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Reaps one exited child without waiting: `None` when no child has exited.
pub fn try_wait_any() -> Option<(i32, Exit)> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status into our local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let exit = if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    };
    Some((pid, exit))
}

/// Waits for one child to end.
pub fn wait(pid: i32) -> Exit {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status into our local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r != pid {
        return Exit::Code(-1);
    }
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    }
}

/// Sends a signal to a process; errors (already gone) are ignored.
pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Sets the thread name shown by ps/top (`comm`, 15 bytes at most).
pub fn set_process_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `buf`.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// A signal's name for log lines.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        other => format!("signal {other}"),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A user and group to run as, looked up once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

fn cstring(s: &str) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(s).map_err(|_| format!("{s:?} contains NUL"))
}

impl Identity {
    /// Resolves names (or numeric ids); the group defaults to the user's primary group.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
        let (uid, user_gid) = match user {
            None => (
                // SAFETY: getuid/getgid have no preconditions.
                unsafe { libc::getuid() },
                unsafe { libc::getgid() },
            ),
            Some(name) => {
                let c = cstring(name)?;
                // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once
                // (the supervisor is single-threaded).
                let pw = unsafe { libc::getpwnam(c.as_ptr()) };
                if pw.is_null() {
                    return Err(format!("user {name:?} does not exist"));
                }
                // SAFETY: non-NULL result of getpwnam.
                unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
            }
        };
        let gid = match group {
            None => user_gid,
            Some(name) => {
                let c = cstring(name)?;
                // SAFETY: as for getpwnam.
                let gr = unsafe { libc::getgrnam(c.as_ptr()) };
                if gr.is_null() {
                    return Err(format!("group {name:?} does not exist"));
                }
                // SAFETY: non-NULL result of getgrnam.
                unsafe { (*gr).gr_gid }
            }
        };
        Ok(Identity {
            user: user.map(str::to_owned),
            uid,
            gid,
        })
    }

    /// Drops root for this process: supplementary groups, group, then user.
    pub fn become_it(&self) -> io::Result<()> {
        // SAFETY: plain system calls on integers and a NUL-terminated name.
        unsafe {
            if let Some(user) = &self.user {
                let c = std::ffi::CString::new(user.as_str()).map_err(io::Error::other)?;
                if libc::initgroups(c.as_ptr(), self.gid) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setgid(self.gid) != 0 || libc::setuid(self.uid) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Sets the process umask.
pub fn set_umask(mask: u32) {
    // SAFETY: umask has no preconditions.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// An epoll instance holding the listening sockets with `EPOLLEXCLUSIVE`. Registered in a
/// worker's own poll, it makes the kernel wake one of the workers sharing a socket for each
/// new connection instead of all of them (no thundering herd).
pub struct ExclusiveAccept {
    fd: std::os::fd::OwnedFd,
}

impl ExclusiveAccept {
    pub fn new(listeners: &[RawFd]) -> io::Result<ExclusiveAccept> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 returns a new descriptor, which we own from here on.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        for (i, &listener) in listeners.iter().enumerate() {
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
                u64: i as u64,
            };
            // SAFETY: valid descriptors and a valid event struct.
            if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, listener, &mut event) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(ExclusiveAccept { fd })
    }

    /// The indices of the listeners with connections waiting (without blocking).
    pub fn ready(&self) -> Vec<usize> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        // SAFETY: the buffer holds 16 events; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), 16, 0) };
        events[..n.max(0) as usize]
            .iter()
            .map(|e| {
                let index = e.u64;
                index as usize
            })
            .collect()
    }
}

impl AsRawFd for ExclusiveAccept {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// In a worker process: be sent SIGTERM when the supervisor dies, however it dies (so workers
/// never outlive it holding the sockets). Returns false when the supervisor is already gone.
pub fn die_with_parent(parent: i32) -> bool {
    // SAFETY: prctl with integer arguments; getppid has no preconditions.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::getppid() == parent
    }
}

/// This process's id.
pub fn pid() -> i32 {
    std::process::id() as i32
}

fn term_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Holds SIGTERM and SIGINT back (they stay pending) until `unblock_stop_signals`: around a
/// fork, so that a worker cannot lose a stop before it watches for one.
pub fn block_stop_signals() {
    let set = term_signal_set();
    // SAFETY: changes this thread's signal mask with a valid set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

pub fn unblock_stop_signals() {
    let set = term_signal_set();
    // SAFETY: as above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}
