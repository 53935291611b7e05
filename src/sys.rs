//! Operating-system calls beyond std, through `nix` (and signal-hook for signals). The five
//! `unsafe` blocks left are `fork`, the shared mapping of the status scoreboard, glibc's
//! `mallopt`, a read into a buffer's unfilled room and the ownership of a descriptor received
//! from another process, which no crate makes safe.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::epoll::EpollTimeout;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

fn os(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// Calls listen(2) again on a bound, listening socket to set its backlog (std uses 128; a
/// small backlog is a known source of 502s under bursts).
pub fn relisten(l: &impl AsFd, backlog: u32) -> io::Result<()> {
    let backlog =
        nix::sys::socket::Backlog::new(backlog.min(i32::MAX as u32) as i32).map_err(os)?;
    nix::sys::socket::listen(l, backlog).map_err(os)
}

/// Tunes glibc's allocator for a worker process before its threads start; a setting the
/// environment makes (glibc's `MALLOC_*` variables) is left to it.
///
/// - One arena for the whole process (`MALLOC_ARENA_MAX`). A worker's request threads each
///   got an arena of their own, and each kept the megabyte buffers of the uploads it had read
///   resident (1 MiB uploads at 2 processes x 4 threads: 62 MiB RSS, 51 with one arena, at the
///   same CPU per request: the GIL serialises most allocations anyway).
/// - Fixed thresholds (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`): blocks up to 2 MiB
///   come from the heap, and its top goes back to the system once 4 MiB are free there.
///   glibc's own moving thresholds gave the heap back after nearly every 1 MiB upload and
///   took it again for the next one, page faults included (1 MiB uploads over SCGI at 1x1:
///   15–25% more backend CPU than with these, in two alternating pairs).
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: mallopt only changes tunables of glibc's allocator; M_ARENA_MAX,
        // M_MMAP_THRESHOLD and M_TRIM_THRESHOLD are documented parameters, and no other thread
        // allocates yet.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") && unset("MALLOC_TRIM_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
            }
        }
    }
}

/// read(2) from `fd` into the unfilled room of `buf` (its capacity past its length), at most
/// `max` bytes; the bytes read extend `buf`. Unlike a read into a `&mut [u8]`, the room needs
/// no zeroing first: a request body collected before its app runs is read straight into the
/// buffer that holds it, without a copy through another buffer.
pub fn read_to_room(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let room = buf.spare_capacity_mut();
    let want = room.len().min(max);
    // SAFETY: read(2) writes at most `want` bytes at the start of `room`, memory `buf` owns
    // and that is borrowed mutably here (its spare capacity, at least `want` bytes long). It
    // returns how many it wrote (or -1): exactly those bytes are then initialised, and the
    // length grows by that count only, within the capacity.
    unsafe {
        let n = libc::read(fd.as_raw_fd(), room.as_mut_ptr().cast(), want);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        buf.set_len(buf.len() + n);
        Ok(n)
    }
}

/// Sends descriptor `fd` with one byte, `tag`, over the datagram socket `to` (SCM_RIGHTS),
/// without waiting: the receiver gets its own descriptor of the same open file.
pub fn send_fd(
    to: &std::os::unix::net::UnixDatagram,
    tag: u8,
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let fds = [fd.as_raw_fd()];
    let data = [tag];
    let iov = [io::IoSlice::new(&data)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<UnixAddr>(to.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT, None).map_err(os)?;
    Ok(())
}

/// Receives, without waiting, one descriptor sent by [`send_fd`] and its tag; `None` when
/// none waits. A message without a descriptor is skipped.
pub fn recv_fd(
    from: &std::os::unix::net::UnixDatagram,
) -> io::Result<Option<(u8, std::os::fd::OwnedFd)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::{AsRawFd, FromRawFd};
    loop {
        let mut data = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut data)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = match recvmsg::<UnixAddr>(from.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => msg,
            Err(nix::Error::EAGAIN) => return Ok(None),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(os(e)),
        };
        let mut got = None;
        for c in msg.cmsgs().map_err(os)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel installed `fd` in this process for this message
                    // (SCM_RIGHTS): a new descriptor that nothing else here owns or closes, so
                    // the OwnedFd made of it is its only owner. Extra ones are owned (and so
                    // closed) the same way.
                    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                    got.get_or_insert(owned);
                }
            }
        }
        let tag = data[0];
        if let Some(fd) = got {
            return Ok(Some((tag, fd)));
        }
    }
}

/// What fork(2) returned.
pub enum Forked {
    Child,
    Parent(i32),
}

/// fork(2). The caller must run no other thread (the supervisor has none; `check` forks
/// before it starts Python), so the child is a faithful copy that may go on running Rust code.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the calling process is single-threaded (see above), so the child does not
    // inherit locks held by threads that do not exist in it.
    match unsafe { nix::unistd::fork() }.map_err(os)? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
    }
}

/// `n` zeroed 64-bit words of memory shared with every process forked after this call
/// (`MAP_SHARED | MAP_ANONYMOUS`), seen as atomics. Never unmapped: it lives as long as the
/// process. (memmap2's `map_anon` is `MAP_PRIVATE`: a fork would copy it, not share it.)
pub fn shared_words(n: usize) -> io::Result<&'static [std::sync::atomic::AtomicU64]> {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let len = std::num::NonZeroUsize::new(n.max(1) * 8).expect("not zero");
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a new anonymous mapping (no address hint) aliases no Rust object. It is
    // page-aligned (more than AtomicU64 needs), `n` words long, zero-filled (a valid
    // AtomicU64) and never unmapped, so a shared 'static slice of atomics over it is valid.
    // Other processes touch it only through atomic operations too, which is how atomics are
    // shared between processes.
    unsafe {
        let p = mmap_anonymous(None, len, prot, MapFlags::MAP_SHARED).map_err(os)?;
        Ok(std::slice::from_raw_parts(
            p.as_ptr().cast::<std::sync::atomic::AtomicU64>(),
            n.max(1),
        ))
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

fn exit_of(status: WaitStatus) -> Option<(i32, Exit)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), Exit::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), Exit::Signal(sig as i32))),
        _ => None,
    }
}

/// Reaps one exited child without waiting: `None` when no child has exited.
pub fn try_wait_any() -> Option<(i32, Exit)> {
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(status) => match exit_of(status) {
                Some(exit) => return Some(exit),
                // Stopped or continued: not an exit; look at the next child.
                None => continue,
            },
        }
    }
}

/// Waits for one child to end.
pub fn wait(pid: i32) -> Exit {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
            Ok(status) => match exit_of(status) {
                Some((_, exit)) => return exit,
                None => continue,
            },
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Exit::Code(-1),
        }
    }
}

/// Sends a signal to a process; errors (already gone) are ignored.
pub fn kill(pid: i32, signal: i32) {
    if let Ok(sig) = Signal::try_from(signal) {
        let _gone = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// A signal's name for log lines.
pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

/// Names this process (or thread) as ps, top and /proc show it: the short `comm` (15 bytes)
/// and, for a process, its command line (what `ps aux` shows), overwritten in place within
/// the space of the original arguments.
pub fn set_process_title(title: &str) {
    let comm: Vec<u8> = title.bytes().filter(|&b| b != 0).take(15).collect();
    if let Ok(c) = CString::new(comm) {
        let _unnamed = nix::sys::prctl::set_name(&c);
    }
    // The kernel reports the command line from the memory between arg_start and arg_end
    // (fields 48 and 49 of /proc/self/stat); writing there through /proc/self/mem changes
    // what ps shows without any unsafe pointer work. Failing that, `comm` is enough.
    let _unchanged = (|| -> io::Result<()> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let after_comm = &stat[stat.rfind(')').ok_or(io::ErrorKind::InvalidData)? + 2..];
        // Fields after the command name start at field 3.
        let field = |n: usize| -> io::Result<u64> {
            after_comm
                .split(' ')
                .nth(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| io::ErrorKind::InvalidData.into())
        };
        let (start, end) = (field(48)?, field(49)?);
        let room = end.saturating_sub(start) as usize;
        if room < 2 {
            return Ok(());
        }
        let mut bytes: Vec<u8> = title.bytes().filter(|&b| b != 0).take(room - 1).collect();
        bytes.resize(room, 0);
        use std::io::{Seek, SeekFrom, Write};
        let mut mem = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/mem")?;
        mem.seek(SeekFrom::Start(start))?;
        mem.write_all(&bytes)
    })();
}

/// A copy of this process's stderr descriptor (to point fd 2 back at it later).
pub fn dup_stderr() -> io::Result<std::os::fd::OwnedFd> {
    nix::unistd::dup(io::stderr().as_fd()).map_err(os)
}

/// Points this process's stderr (fd 2) at `fd`: whatever writes to stderr afterwards, the
/// log and Python alike, writes there.
pub fn redirect_stderr(fd: &impl AsFd) -> io::Result<()> {
    nix::unistd::dup2_stderr(fd).map_err(os)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A user and Unix group to run as, looked up once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

impl Identity {
    /// Resolves names (or numeric ids); the Unix group defaults to the user's primary group.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
        let (uid, user_gid) = match user {
            None => (nix::unistd::getuid(), nix::unistd::getgid()),
            Some(name) => match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => (u.uid, u.gid),
                Ok(None) => match name.parse::<u32>() {
                    Ok(n) => (Uid::from_raw(n), nix::unistd::getgid()),
                    Err(_) => return Err(format!("user {name:?} does not exist")),
                },
                Err(e) => return Err(format!("user {name:?}: {e}")),
            },
        };
        let gid = match group {
            None => user_gid,
            Some(name) => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => g.gid,
                Ok(None) => match name.parse::<u32>() {
                    Ok(n) => Gid::from_raw(n),
                    Err(_) => return Err(format!("group {name:?} does not exist")),
                },
                Err(e) => return Err(format!("group {name:?}: {e}")),
            },
        };
        Ok(Identity {
            user: user.map(str::to_owned),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
        })
    }

    /// Drops root for this process: supplementary groups, Unix group, then user.
    pub fn become_it(&self) -> io::Result<()> {
        let gid = Gid::from_raw(self.gid);
        if let Some(user) = &self.user {
            let c = CString::new(user.as_str()).map_err(io::Error::other)?;
            nix::unistd::initgroups(&c, gid).map_err(os)?;
        }
        nix::unistd::setgid(gid).map_err(os)?;
        nix::unistd::setuid(Uid::from_raw(self.uid)).map_err(os)
    }
}

/// Sets the process umask.
pub fn set_umask(mask: u32) {
    let mode = nix::sys::stat::Mode::from_bits_truncate(mask as nix::libc::mode_t);
    nix::sys::stat::umask(mode);
}

/// In a child of the supervisor: be sent `signal` when the supervisor dies, however it dies
/// (so no child outlives it holding the sockets). Returns false when the supervisor is already
/// gone.
pub fn die_with_parent(parent: i32, signal: Signal) -> bool {
    let _unsupported = nix::sys::prctl::set_pdeathsig(signal);
    nix::unistd::getppid().as_raw() == parent
}

/// This process's id.
pub fn pid() -> i32 {
    std::process::id() as i32
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGUSR1);
    set
}

/// Holds SIGTERM, SIGINT, SIGHUP and SIGUSR1 back (they stay pending) until
/// `unblock_stop_signals`: around a fork, so that a worker cannot lose a stop (or die of a
/// SIGUSR1) before it watches for them.
pub fn block_stop_signals() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None);
}

pub fn unblock_stop_signals() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None);
}

/// The size of a memory page (for the resident set read from /proc/self/statm).
pub fn page_size() -> u64 {
    const COMMON: u64 = 4096;
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => COMMON,
    }
}

/// An epoll wait timeout from an optional duration (rounded up to whole milliseconds).
pub fn epoll_timeout(t: Option<Duration>) -> EpollTimeout {
    match t {
        None => EpollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
        }
    }
}

/// Signals delivered through a self-pipe whose read end a poll watches (signal-hook's
/// delivery; dropping it unregisters the actions).
pub struct Signals(SignalDelivery<UnixStream, SignalOnly>);

impl Signals {
    pub fn new(signals: &[i32]) -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Signals(SignalDelivery::with_pipe(
            read, write, SignalOnly, signals,
        )?))
    }

    /// The signals that arrived since the last call (each once).
    pub fn pending(&mut self) -> Vec<i32> {
        self.0.pending().collect()
    }

    /// The read end, to watch for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.get_read().as_fd()
    }
}
