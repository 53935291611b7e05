use std::fmt;

/// Why a decoder refused its input. After any of these the connection cannot be trusted to be
/// in sync, so the caller closes it (and only it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A FastCGI record header whose version byte is not 1.
    BadVersion(u8),
    /// A FastCGI record that is not valid where it appeared (type, request id and reason).
    UnexpectedRecord {
        record_type: u8,
        request_id: u16,
        reason: &'static str,
    },
    /// A malformed BEGIN_REQUEST body.
    BadBeginRequest,
    /// Name-value pairs that do not parse (FastCGI lengths or SCGI NUL framing).
    BadParams(&'static str),
    /// The params block is larger than `Limits::max_params_bytes`.
    ParamsTooLarge { limit: usize },
    /// More pairs than `Limits::max_params_pairs`.
    TooManyParams { limit: usize },
    /// A malformed SCGI netstring (length digits, leading zero, missing ':' or ',').
    BadNetstring(&'static str),
    /// SCGI: CONTENT_LENGTH missing, not first, or not a decimal number. uwsgi: CONTENT_LENGTH
    /// present, not empty and not a decimal number.
    BadContentLength,
    /// SCGI: the `SCGI` header is missing or not `1`.
    MissingScgiHeader,
    /// SCGI and uwsgi: CONTENT_LENGTH appears twice (other names may repeat).
    DuplicateHeader,
    /// SCGI and uwsgi: input after the body's CONTENT_LENGTH bytes (the web server announced a
    /// shorter body than it sends, so the body the request got was cut short).
    InputAfterBody,
    /// uwsgi: a packet whose modifiers are not 0 and 0 (a WSGI request), the only kind served.
    UnsupportedModifier { modifier1: u8, modifier2: u8 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadVersion(v) => write!(f, "FastCGI record with version {v}, expected 1"),
            DecodeError::UnexpectedRecord {
                record_type,
                request_id,
                reason,
            } => write!(
                f,
                "unexpected FastCGI record type {record_type} for request {request_id}: {reason}"
            ),
            DecodeError::BadBeginRequest => write!(f, "malformed FastCGI BEGIN_REQUEST body"),
            DecodeError::BadParams(why) => write!(f, "malformed params: {why}"),
            DecodeError::ParamsTooLarge { limit } => {
                write!(f, "request params exceed the limit of {limit} bytes")
            }
            DecodeError::TooManyParams { limit } => {
                write!(f, "request has more than {limit} params")
            }
            DecodeError::BadNetstring(why) => write!(f, "malformed SCGI netstring: {why}"),
            DecodeError::BadContentLength => write!(
                f,
                "CONTENT_LENGTH is not a number (or, for SCGI, missing or not first)"
            ),
            DecodeError::MissingScgiHeader => write!(f, "SCGI header 'SCGI: 1' missing"),
            DecodeError::DuplicateHeader => write!(f, "request head repeats CONTENT_LENGTH"),
            DecodeError::InputAfterBody => write!(
                f,
                "input after the request's CONTENT_LENGTH bytes of body: the web server \
                 announced a shorter body than it sends (nginx 1.22 does with \
                 scgi_request_buffering off)"
            ),
            DecodeError::UnsupportedModifier {
                modifier1,
                modifier2,
            } => write!(
                f,
                "uwsgi packet with modifier1 {modifier1} and modifier2 {modifier2}: only 0 and 0 \
                 (a WSGI request) are served; remove uwsgi_modifier1/uwsgi_modifier2 from the \
                 web server's configuration"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}
