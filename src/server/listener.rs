//! Listening sockets (TCP or Unix) and the connections they accept.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Where to listen: `HOST:PORT` or `unix:PATH`, or a listening socket the gateway was
/// started with (systemd socket activation, or standard input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// The inherited socket at this index of [`inherited`], with its descriptor number.
    Inherited {
        index: usize,
        fd: i32,
    },
}

impl Addr {
    pub fn parse(s: &str) -> Result<Addr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Addr::Tcp(a));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .map(Addr::Tcp)
                .ok_or_else(|| format!("{s} resolves to no address")),
            Err(e) => Err(format!("{s} is neither HOST:PORT nor unix:PATH ({e})")),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Inherited { index, fd } => {
                let what = inherited().get(*index).map_or("?", |i| i.origin.as_str());
                write!(f, "fd {fd} ({what})")
            }
        }
    }
}

/// A listening socket the gateway was started with.
pub struct Inherited {
    /// The descriptor number it had.
    pub fd: i32,
    /// Its LISTEN_FDNAMES name, if any.
    pub name: Option<String>,
    /// "systemd socket `NAME`" or "standard input".
    pub origin: String,
    socket: Mutex<Option<StdListener>>,
}

enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

static INHERITED: OnceLock<Vec<Inherited>> = OnceLock::new();

/// The listening sockets passed to the gateway: by systemd (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`), or as standard input (the FastCGI convention of lighttpd's `bin-path`,
/// spawn-fcgi and mod_fcgid). Read once, at the first call.
pub fn inherited() -> &'static [Inherited] {
    INHERITED.get_or_init(adopt)
}

fn adopt() -> Vec<Inherited> {
    let mut found = Vec::new();
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    for i in 0..fds.len() {
        let fd = 3 + i as i32;
        let name = names.get(i).filter(|n| !n.is_empty()).cloned();
        let socket = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => Some(StdListener::Tcp(l)),
            _ => match fds.take_unix_listener(i) {
                Ok(Some(l)) => Some(StdListener::Unix(l)),
                _ => {
                    crate::warn!("fd {fd} passed by systemd is not a listening stream socket");
                    None
                }
            },
        };
        if let Some(socket) = socket {
            found.push(Inherited {
                fd,
                origin: format!("systemd socket `{}`", name.as_deref().unwrap_or("unnamed")),
                name,
                socket: Mutex::new(Some(socket)),
            });
        }
    }
    if let Some(socket) = stdin_listener() {
        found.push(Inherited {
            fd: 0,
            name: None,
            origin: "standard input".into(),
            socket: Mutex::new(Some(socket)),
        });
    }
    found
}

/// Standard input, when it is a listening socket (a copy of it).
fn stdin_listener() -> Option<StdListener> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike};
    use std::os::fd::AsRawFd;
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return None;
    }
    let family = getsockname::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd())
        .ok()?
        .family();
    let owned = fd.try_clone_to_owned().ok()?;
    match family {
        Some(AddressFamily::Unix) => Some(StdListener::Unix(owned.into())),
        Some(AddressFamily::Inet | AddressFamily::Inet6) => Some(StdListener::Tcp(owned.into())),
        _ => None,
    }
}

impl Inherited {
    /// The protocol its name asks for: `fastcgi`, `scgi`, `uwsgi`, else told apart per
    /// connection.
    pub fn proto(&self) -> Proto {
        match self.name.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("fastcgi" | "fcgi") => Proto::FastCgi,
            Some("scgi") => Proto::Scgi,
            Some("uwsgi") => Proto::Uwsgi,
            _ if self.fd == 0 => Proto::FastCgi,
            _ => Proto::Auto,
        }
    }
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    FastCgi,
    Scgi,
    Uwsgi,
    /// Any of them, told apart by the first byte of each connection.
    Auto,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::FastCgi => "FastCGI",
            Proto::Scgi => "SCGI",
            Proto::Uwsgi => "uwsgi",
            Proto::Auto => "FastCGI+SCGI+uwsgi",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: Addr,
    pub proto: Proto,
    /// Mode of a Unix socket file (e.g. 0o660).
    pub mode: u32,
    pub backlog: u32,
    /// Owner (uid, gid) for a Unix socket file, when set.
    pub owner: Option<(Option<u32>, Option<u32>)>,
    /// TCP clients allowed to connect (None: any).
    pub allow: Option<crate::config::settings::AllowList>,
}

enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub struct Listener {
    pub spec: ListenerSpec,
    inner: Inner,
    /// Connections refused by the allow-list since the last log line, and when that was.
    refused: u64,
    refused_logged: Option<std::time::Instant>,
    /// Whether dropping this listener removes its Unix socket file (not in worker processes,
    /// which share the supervisor's socket).
    owner: bool,
}

impl Listener {
    /// Binds the socket, with a clear message on failure. A stale Unix socket file is
    /// replaced only if it is a socket nobody listens on.
    pub fn bind(spec: ListenerSpec) -> Result<Listener, String> {
        let inner = match &spec.addr {
            Addr::Inherited { index, .. } => {
                let taken = inherited()
                    .get(*index)
                    .and_then(|i| i.socket.lock().unwrap_or_else(|e| e.into_inner()).take());
                let socket = taken.ok_or_else(|| format!("{} is already in use", spec.addr))?;
                match socket {
                    StdListener::Tcp(l) => {
                        l.set_nonblocking(true)
                            .map_err(|e| format!("{}: {e}", spec.addr))?;
                        Inner::Tcp(TcpListener::from_std(l))
                    }
                    StdListener::Unix(l) => {
                        l.set_nonblocking(true)
                            .map_err(|e| format!("{}: {e}", spec.addr))?;
                        Inner::Unix(UnixListener::from_std(l))
                    }
                }
            }
            Addr::Tcp(a) => {
                let std =
                    bind_tcp(*a, spec.backlog).map_err(|e| format!("cannot listen on {a}: {e}"))?;
                Inner::Tcp(TcpListener::from_std(std))
            }
            Addr::Unix(path) => {
                if stale_socket(path)? {
                    std::fs::remove_file(path).map_err(|e| {
                        format!("cannot replace stale socket {}: {e}", path.display())
                    })?;
                }
                let l = std::os::unix::net::UnixListener::bind(path)
                    .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
                crate::sys::relisten(&l, spec.backlog)
                    .map_err(|e| format!("unix:{}: {e}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(spec.mode))
                    .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
                if let Some((uid, gid)) = spec.owner {
                    std::os::unix::fs::chown(path, uid, gid)
                        .map_err(|e| format!("cannot set the owner of {}: {e}", path.display()))?;
                }
                l.set_nonblocking(true)
                    .map_err(|e| format!("unix:{}: {e}", path.display()))?;
                Inner::Unix(UnixListener::from_std(l))
            }
        };
        let owner = !matches!(spec.addr, Addr::Inherited { .. });
        Ok(Listener {
            spec,
            inner,
            refused: 0,
            refused_logged: None,
            owner,
        })
    }

    /// For `wsgi-gateway check`: whether `bind` would succeed, without leaving a socket.
    pub fn check(spec: &ListenerSpec) -> Result<(), String> {
        match &spec.addr {
            Addr::Inherited { .. } => Ok(()),
            Addr::Tcp(a) => std::net::TcpListener::bind(a)
                .map(drop)
                .map_err(|e| format!("cannot listen on {a}: {e}")),
            Addr::Unix(path) => {
                if stale_socket(path)? {
                    return Ok(());
                }
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                let dir = dir.unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    return Err(format!(
                        "cannot listen on unix:{}: {} is not a directory",
                        path.display(),
                        dir.display()
                    ));
                }
                std::os::unix::net::UnixListener::bind(path)
                    .map(|_| {
                        let _ = std::fs::remove_file(path);
                    })
                    .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))
            }
        }
    }

    /// The listening socket's descriptor.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match &self.inner {
            Inner::Tcp(l) => l.as_fd(),
            Inner::Unix(l) => l.as_fd(),
        }
    }

    /// The next connection; `None` when its client is not in the allow-list (it is closed
    /// at once, before it can send a byte to the app).
    pub fn accept(&mut self) -> io::Result<Option<Stream>> {
        match &self.inner {
            Inner::Tcp(l) => {
                let (s, peer) = l.accept()?;
                if let Some(allow) = &self.spec.allow {
                    if !allow.allows(peer.ip()) {
                        drop(s);
                        self.refused(peer);
                        return Ok(None);
                    }
                }
                let _ = s.set_nodelay(true);
                Ok(Some(Stream::Tcp(s)))
            }
            Inner::Unix(l) => Ok(Some(Stream::Unix(l.accept()?.0))),
        }
    }

    /// One log line per 10 s at most about refused clients.
    fn refused(&mut self, peer: SocketAddr) {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
        self.refused += 1;
        if self.refused_logged.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        let others = self.refused - 1;
        crate::warn!(
            "refused a connection from {} on {}: not in allow-from ({}){}",
            peer.ip(),
            self.spec.addr,
            self.spec
                .allow
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            if others > 0 {
                format!("; {others} more refused since the last such line")
            } else {
                String::new()
            }
        );
        self.refused = 0;
        self.refused_logged = Some(std::time::Instant::now());
    }
}

impl Listener {
    /// In a worker process: the socket file belongs to the supervisor.
    pub fn disown(&mut self) {
        self.owner = false;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (Addr::Unix(path), true) = (&self.spec.addr, self.owner) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether a Unix socket path holds a stale socket (one nobody listens on); an error when it
/// holds anything else, or a live socket.
fn stale_socket(path: &std::path::Path) -> Result<bool, String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(false);
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "cannot listen on unix:{}: the path exists and is not a socket",
            path.display()
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "cannot listen on unix:{}: another process is listening there",
            path.display()
        ));
    }
    Ok(true)
}

fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    // std listens with a backlog of 128; listen(2) may be called again to raise it.
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    crate::sys::relisten(&l, backlog)?;
    Ok(l)
}

/// An accepted connection, shared (as `&Stream`) by the threads that read and write it.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    pub fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    /// Waits up to `timeout` for the socket to be readable (or writable); true when it is
    /// (or has failed: the next read or write says how).
    pub fn poll(&self, read: bool, timeout: std::time::Duration) -> bool {
        use nix::poll::{PollFd, PollFlags};
        let flags = if read {
            PollFlags::POLLIN
        } else {
            PollFlags::POLLOUT
        };
        let mut fds = [PollFd::new(self.as_fd(), flags)];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let t = nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX);
        loop {
            match nix::poll::poll(&mut fds, t) {
                Ok(n) => return n > 0,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return true,
            }
        }
    }

    /// Shuts the sending direction: the peer reads the end of the stream.
    pub fn shutdown_write(&self) {
        let _already = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Shuts both directions: a thread waiting on the socket wakes.
    pub fn shutdown(&self) {
        let _already = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Addr::parse("127.0.0.1:9000"),
            Ok(Addr::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            Addr::parse("unix:/run/gw.sock"),
            Ok(Addr::Unix("/run/gw.sock".into()))
        );
        assert!(Addr::parse("unix:").is_err());
        assert!(Addr::parse("nonsense").is_err());
    }

    #[test]
    fn refuses_a_path_that_is_not_a_socket() {
        let path = std::env::temp_dir().join(format!("gw-listener-{}", std::process::id()));
        std::fs::write(&path, "").unwrap();
        let spec = ListenerSpec {
            addr: Addr::Unix(path.clone()),
            proto: Proto::FastCgi,
            mode: 0o660,
            backlog: 511,
            owner: None,
            allow: None,
        };
        let err = Listener::bind(spec.clone()).err().unwrap();
        assert!(err.contains("not a socket"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let l = Listener::bind(spec.clone()).unwrap();
        let err = Listener::bind(spec.clone()).err().unwrap();
        assert!(err.contains("another process"), "{err}");
        drop(l);
        assert!(!path.exists(), "the socket file is removed on drop");
    }
}
