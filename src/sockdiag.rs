//! The accept queues of listening sockets, asked of the kernel through `NETLINK_SOCK_DIAG`
//! (what `ss -l` shows as Recv-Q and Send-Q): for a socket in LISTEN state, TCP and Unix
//! alike, the kernel reports the connections waiting to be accepted and the backlog it applies.
//! Only listening sockets are dumped, so the cost does not grow with the connections.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// The kernel's `TCP_LISTEN` state, also used for listening Unix sockets.
const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
/// `inet_diag_msg`: `idiag_rqueue`, `idiag_wqueue` and `idiag_inode`.
const INET_RQUEUE: usize = 56;
const INET_WQUEUE: usize = 60;
const INET_INODE: usize = 68;
const INET_MSG_LEN: usize = 72;
/// `unix_diag_msg`: `udiag_ino`; its attributes follow at 16.
const UNIX_INO: usize = 4;
const UNIX_MSG_LEN: usize = 16;

/// A listening socket's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcceptQueue {
    /// Connections waiting to be accepted.
    pub waiting: u64,
    /// How many may wait: the backlog the kernel applies (`listen()`'s, capped by somaxconn).
    pub backlog: u64,
}

/// The accept queue of every listening TCP (IPv4, IPv6) and Unix stream socket of this network
/// namespace, by inode.
pub fn accept_queues() -> io::Result<HashMap<u64, AcceptQueue>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let mut out = HashMap::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(&fd, &inet_request(family as u8), &mut |m| {
            parse_inet(m, &mut out)
        })?;
    }
    dump(&fd, &unix_request(), &mut |m| parse_unix(m, &mut out))?;
    Ok(out)
}

fn header(payload: usize, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + payload);
    m.extend_from_slice(&((NLMSG_HDRLEN + payload) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m
}

/// `inet_diag_req_v2` for the listening TCP sockets of `family`.
fn inet_request(family: u8) -> Vec<u8> {
    let mut m = header(56, 1);
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    m
}

/// `unix_diag_req` for the listening Unix sockets, with their queue lengths.
fn unix_request() -> Vec<u8> {
    let mut m = header(24, 2);
    m.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // inode: any
    m.extend_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    m.extend_from_slice(&[0xff; 8]); // no cookie
    m
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn parse_inet(m: &[u8], out: &mut HashMap<u64, AcceptQueue>) {
    if m.len() < INET_MSG_LEN {
        return;
    }
    let (Some(rq), Some(wq), Some(ino)) = (
        u32_at(m, INET_RQUEUE),
        u32_at(m, INET_WQUEUE),
        u32_at(m, INET_INODE),
    ) else {
        return;
    };
    out.insert(
        u64::from(ino),
        AcceptQueue {
            waiting: rq.into(),
            backlog: wq.into(),
        },
    );
}

fn parse_unix(m: &[u8], out: &mut HashMap<u64, AcceptQueue>) {
    let Some(ino) = u32_at(m, UNIX_INO) else {
        return;
    };
    let mut at = UNIX_MSG_LEN;
    while let (Some(len), Some(kind)) = (u16_at(m, at), u16_at(m, at + 2)) {
        let len = usize::from(len);
        if len < 4 {
            return;
        }
        if kind == UNIX_DIAG_RQLEN {
            if let (Some(rq), Some(wq)) = (u32_at(m, at + 4), u32_at(m, at + 8)) {
                out.insert(
                    u64::from(ino),
                    AcceptQueue {
                        waiting: rq.into(),
                        backlog: wq.into(),
                    },
                );
            }
            return;
        }
        at += (len + 3) & !3;
    }
}

/// Sends one dump request and hands each answer's payload to `each`, until the dump ends.
fn dump(fd: &OwnedFd, request: &[u8], each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    sendto(
        fd.as_raw_fd(),
        request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Ok(());
        }
        let mut rest = &buf[..n];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32_at(rest, 0).unwrap_or(0) as usize;
            let kind = u16_at(rest, 4).unwrap_or(0);
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "sock_diag: a truncated message",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = u32_at(rest, NLMSG_HDRLEN).unwrap_or(0) as i32;
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY => each(&rest[NLMSG_HDRLEN..len]),
                _ => {}
            }
            rest = &rest[((len + 3) & !3).min(rest.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(fd: &impl std::os::fd::AsFd) -> u64 {
        nix::sys::stat::fstat(fd.as_fd()).unwrap().st_ino
    }

    #[test]
    fn tcp_and_unix_listeners_report_their_waiting_connections() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = std::env::temp_dir().join(format!("sockdiag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let q = accept_queues().unwrap();
        assert_eq!(q[&inode(&tcp)].waiting, 0);
        assert_eq!(q[&inode(&unix)].waiting, 0);
        assert!(q[&inode(&tcp)].backlog > 0);
        assert!(q[&inode(&unix)].backlog > 0);
        let _t: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap())
            .collect();
        let _u: Vec<_> = (0..2)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        let q = accept_queues().unwrap();
        assert_eq!(q[&inode(&tcp)].waiting, 3);
        assert_eq!(q[&inode(&unix)].waiting, 2);
        drop(tcp.accept().unwrap());
        assert_eq!(accept_queues().unwrap()[&inode(&tcp)].waiting, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
