//! FastCGI 1.0: record framing ([`record`]), name-value params ([`params`]), the per-connection
//! state machine of the application side ([`Connection`]) and the encoders ([`encode`]).

mod conn;
pub mod encode;
pub mod params;
pub mod record;

pub use conn::{Config, Connection, Decoded, Event};
pub use record::{parse_header, parse_record, Header, Record};

pub const VERSION_1: u8 = 1;
/// Length of a record header.
pub const HEADER_LEN: usize = 8;
/// Largest record content.
pub const MAX_CONTENT_LEN: usize = 0xffff;
/// Longest possible record on the wire (header, content and padding).
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const RESPONDER: u16 = 1;
pub const AUTHORIZER: u16 = 2;
pub const FILTER: u16 = 3;

/// BEGIN_REQUEST flag: keep the connection open after this request.
pub const KEEP_CONN: u8 = 1;

/// END_REQUEST protocol status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProtocolStatus {
    RequestComplete = 0,
    CantMpxConn = 1,
    Overloaded = 2,
    UnknownRole = 3,
}
