//! The few raw system calls std does not offer.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

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
