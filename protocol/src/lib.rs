//! Sans-IO codecs for the gateway protocols web servers speak to application servers:
//! FastCGI 1.0 ([`fastcgi`]), SCGI ([`scgi`]) and uwsgi ([`uwsgi`]).
//!
//! Bytes go in, events come out; nothing here owns a socket, a thread or a clock. All decoders
//! produce the same protocol-neutral [`RequestHead`], so the rest of a server does not care
//! which protocol a request arrived on. Short input is never an error: a decoder that needs more
//! bytes consumes nothing and says so. Every buffer is bounded by a documented limit in
//! [`Limits`]; exceeding one, or any malformed input, is a [`DecodeError`], after which the
//! caller closes that one connection.
#![forbid(unsafe_code)]

pub mod cgi;
mod error;
pub mod fastcgi;
mod input;
mod oneshot;
pub mod scgi;
pub mod uwsgi;

pub use cgi::RequestHead;
pub use error::DecodeError;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    FastCgi,
    Scgi,
    Uwsgi,
}

/// Tells the protocols apart by the first byte of a connection, so one listener can accept
/// all three:
///
/// | first byte | protocol | why |
/// | --- | --- | --- |
/// | `0` | uwsgi | the packet's modifier1, 0 for a WSGI request (the only kind served) |
/// | `1` | FastCGI | the record header's version byte |
/// | `b'1'..=b'9'` | SCGI | the first digit of the netstring length (no leading zero) |
///
/// Anything else is garbage (an HTTP request, a uwsgi packet for another modifier1).
pub fn detect(first_byte: u8) -> Option<Protocol> {
    match first_byte {
        uwsgi::MODIFIER1_WSGI => Some(Protocol::Uwsgi),
        fastcgi::VERSION_1 => Some(Protocol::FastCgi),
        b'1'..=b'9' => Some(Protocol::Scgi),
        _ => None,
    }
}

/// Bounds on what a decoder buffers for one connection. The defaults suit real web servers;
/// a caller may lower or raise any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_PARAMS_BYTES`: total size of one request's params block (FastCGI PARAMS stream with
    /// its length prefixes, the SCGI netstring payload, or the uwsgi vars block with its length
    /// prefixes, which can never exceed 65535 bytes). Default 1 MiB.
    pub max_params_bytes: usize,
    /// `MAX_PARAMS_PAIRS`: number of name-value pairs in one request. Default 4096.
    pub max_params_pairs: usize,
    /// `MAX_REQUESTS`: concurrently active FastCGI requests on one connection. Default 128.
    pub max_requests: usize,
}

impl Limits {
    pub const DEFAULT_MAX_PARAMS_BYTES: usize = 1 << 20;
    pub const DEFAULT_MAX_PARAMS_PAIRS: usize = 4096;
    pub const DEFAULT_MAX_REQUESTS: usize = 128;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_params_bytes: Self::DEFAULT_MAX_PARAMS_BYTES,
            max_params_pairs: Self::DEFAULT_MAX_PARAMS_PAIRS,
            max_requests: Self::DEFAULT_MAX_REQUESTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_protocol_by_first_byte() {
        assert_eq!(detect(1), Some(Protocol::FastCgi));
        assert_eq!(detect(b'7'), Some(Protocol::Scgi));
        assert_eq!(detect(b'0'), None);
        assert_eq!(detect(b'G'), None);
        assert_eq!(detect(0), Some(Protocol::Uwsgi));
        assert_eq!(detect(5), None);
    }
}
