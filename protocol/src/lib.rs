//! Sans-IO codecs for the two gateway protocols web servers speak to application servers:
//! FastCGI 1.0 ([`fastcgi`]) and SCGI ([`scgi`]).
//!
//! Bytes go in, events come out; nothing here owns a socket, a thread or a clock. Both decoders
//! produce the same protocol-neutral [`RequestHead`], so the rest of a server does not care
//! which protocol a request arrived on. Short input is never an error: a decoder that needs more
//! bytes consumes nothing and says so. Every buffer is bounded by a documented limit in
//! [`Limits`]; exceeding one, or any malformed input, is a [`DecodeError`], after which the
//! caller closes that one connection.
#![forbid(unsafe_code)]

pub mod cgi;
mod error;
pub mod fastcgi;
pub mod scgi;

pub use cgi::RequestHead;
pub use error::DecodeError;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    FastCgi,
    Scgi,
}

/// Tells FastCGI from SCGI by the first byte of a connection, so one listener can accept both:
/// every FastCGI connection starts with a record header whose version byte is 1, every SCGI
/// connection with the first (non-zero) digit of a netstring length. Anything else is garbage.
pub fn detect(first_byte: u8) -> Option<Protocol> {
    match first_byte {
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
    /// its length prefixes, or the SCGI netstring payload). Default 1 MiB.
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
        assert_eq!(detect(0), None);
    }
}
