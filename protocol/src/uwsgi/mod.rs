//! uwsgi: one packet per request — a 4-byte header (modifier1, a little-endian u16 datasize,
//! modifier2) and `datasize` bytes of vars (each a little-endian u16 key length, the key, a
//! u16 value length, the value) — then exactly CONTENT_LENGTH body bytes. One request per
//! connection. Only modifier1 0 (a WSGI request) with modifier2 0 is accepted.
//!
//! The response is raw HTTP: a status line, not a CGI `Status:` header
//! ([`encode_response_head`], or [`cgi_to_http_head`] for a CGI-style head already built).
//!
//! The decoder yields the same events as the SCGI one ([`Event`] is `scgi::Event`), so a
//! server can handle both with one piece of code. Unlike SCGI, a name may repeat (nginx sends
//! a header given twice as two vars, in order); only CONTENT_LENGTH must be unique. An absent
//! or empty CONTENT_LENGTH means no body.

use std::ops::Range;

use crate::{DecodeError, Limits, RequestHead};

use crate::oneshot::Machine;
pub use crate::oneshot::{Decoded, Event};

/// Length of the packet header.
pub const HEADER_LEN: usize = 4;
/// The only modifier1 accepted: a WSGI request.
pub const MODIFIER1_WSGI: u8 = 0;
/// Largest vars block a packet can announce (`datasize` is a u16).
pub const MAX_VARS_LEN: usize = 0xffff;

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub modifier1: u8,
    /// Length of the vars block that follows the header.
    pub datasize: u16,
    pub modifier2: u8,
}

/// One uwsgi connection's decoding state.
#[derive(Debug)]
pub struct Decoder(Machine);

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder(Machine::new(limits))
    }

    /// Decodes the next event from the start of `input`. Input after the body is
    /// [`DecodeError::InputAfterBody`]: a web server sends none (the caller closes after its
    /// response), unless it announced a shorter body than it sends.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        if !self.0.wants_head() {
            return self.0.body(input);
        }
        let Some((head, consumed)) = parse_header(input, &self.0.limits)? else {
            return Ok(Decoded::NONE);
        };
        let len = match head.content_length() {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(())) => return Err(DecodeError::BadContentLength),
        };
        Ok(self.0.request(head, consumed, len))
    }

    /// Whether the whole request, body included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// One var's key and value ranges relative to the input, and the bytes it took.
type VarSpan = (Range<usize>, Range<usize>, usize);

mod parse {
    use nom::multi::length_data;
    use nom::number::streaming::{le_u16, le_u8};
    use nom::Parser;

    use super::{PacketHeader, VarSpan};
    use crate::input::{Bytes, PResult};

    #[inline]
    fn header(input: Bytes<'_>) -> PResult<'_, PacketHeader> {
        let (rest, (modifier1, datasize, modifier2)) = (le_u8, le_u16, le_u8).parse(input)?;
        Ok((
            rest,
            PacketHeader {
                modifier1,
                datasize,
                modifier2,
            },
        ))
    }

    pub(super) fn packet_header(input: &[u8]) -> Option<PacketHeader> {
        header(Bytes(input)).ok().map(|(_, h)| h)
    }

    /// A var: a u16-length-prefixed key, then a u16-length-prefixed value.
    #[inline]
    fn var(input: Bytes<'_>) -> PResult<'_, (Bytes<'_>, Bytes<'_>)> {
        (length_data(le_u16), length_data(le_u16)).parse(input)
    }

    /// One var at the start of `input`, or `None` if the input ends inside it.
    pub(super) fn parse_var(input: &[u8]) -> Option<VarSpan> {
        let (rest, (key, value)) = var(Bytes(input)).ok()?;
        let end = input.len() - rest.0.len();
        let value_start = end - value.0.len();
        let key_start = 2;
        Some((key_start..key_start + key.0.len(), value_start..end, end))
    }
}

/// Parses the 4-byte packet header at the start of `input`, `None` until all four bytes are
/// there. The modifiers are not checked here.
pub fn parse_packet_header(input: &[u8]) -> Option<PacketHeader> {
    parse::packet_header(input)
}

/// Parses the packet (header and vars) at the start of `input` into a head: `Ok(None)` when it
/// is incomplete, else the head and the bytes the packet took. The modifiers and the vars size
/// limit are checked as soon as the 4 header bytes are there; CONTENT_LENGTH is checked to be
/// unique (its value is checked by [`Decoder`]).
pub fn parse_header(
    input: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, DecodeError> {
    let Some(header) = parse_packet_header(input) else {
        return Ok(None);
    };
    if (header.modifier1, header.modifier2) != (MODIFIER1_WSGI, 0) {
        return Err(DecodeError::UnsupportedModifier {
            modifier1: header.modifier1,
            modifier2: header.modifier2,
        });
    }
    let len = usize::from(header.datasize);
    if len > limits.max_params_bytes {
        return Err(DecodeError::ParamsTooLarge {
            limit: limits.max_params_bytes,
        });
    }
    let end = HEADER_LEN + len;
    if input.len() < end {
        return Ok(None);
    }
    let head = decode_vars(input[HEADER_LEN..end].to_vec(), limits)?;
    Ok(Some((head, end)))
}

fn decode_vars(block: Vec<u8>, limits: &Limits) -> Result<RequestHead, DecodeError> {
    let mut pairs: Vec<(Range<u32>, Range<u32>)> = Vec::with_capacity(32);
    let mut content_length = 0;
    let mut pos = 0;
    while pos < block.len() {
        let (key, value, used) = parse::parse_var(&block[pos..]).ok_or(DecodeError::BadParams(
            "var truncated at the end of the packet",
        ))?;
        if key.is_empty() {
            return Err(DecodeError::BadParams("empty name"));
        }
        if pairs.len() == limits.max_params_pairs {
            return Err(DecodeError::TooManyParams {
                limit: limits.max_params_pairs,
            });
        }
        if block[pos + key.start..pos + key.end] == *b"CONTENT_LENGTH" {
            content_length += 1;
            if content_length > 1 {
                return Err(DecodeError::DuplicateHeader);
            }
        }
        let at = |r: Range<usize>| (r.start + pos) as u32..(r.end + pos) as u32;
        pairs.push((at(key), at(value)));
        pos += used;
    }
    Ok(RequestHead::from_parts(block, pairs))
}

/// Appends one var (key and value, each with its u16 length). Panics if either is longer than
/// 65535 bytes (a caller bug).
pub fn encode_var(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    for s in [key, value] {
        let len = u16::try_from(s.len()).expect("uwsgi key or value longer than 65535 bytes");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s);
    }
}

/// Appends a request packet (client side): modifiers 0 and 0, CONTENT_LENGTH first with
/// `body_len`, then the given params, which must not include CONTENT_LENGTH. Panics if the
/// vars exceed 65535 bytes (a caller bug).
pub fn encode_request<'p>(
    body_len: u64,
    params: impl IntoIterator<Item = (&'p [u8], &'p [u8])>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&[MODIFIER1_WSGI, 0, 0, 0]);
    encode_var(b"CONTENT_LENGTH", body_len.to_string().as_bytes(), out);
    for (key, value) in params {
        encode_var(key, value, out);
    }
    let datasize =
        u16::try_from(out.len() - start - HEADER_LEN).expect("uwsgi vars longer than 65535 bytes");
    out[start + 1..start + 3].copy_from_slice(&datasize.to_le_bytes());
}

/// Appends an HTTP/1.1 response head: `HTTP/1.1 <status>`, each header, and the blank line.
/// This is what a uwsgi response starts with (the web server reads it as an HTTP response).
pub fn encode_response_head<'h>(
    status: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    out: &mut Vec<u8>,
) {
    crate::cgi::encode_head(b"HTTP/1.1 ", status, headers, out);
}

/// Converts the CGI-style response head at the start of `cgi` (`Status: 200 OK\r\n`, headers,
/// blank line; what [`crate::cgi::encode_response_head`] writes) into an HTTP/1.1 head
/// appended to `out` (`HTTP/1.1 200 OK\r\n`, the other headers in order, blank line).
///
/// Returns `None` while the blank line has not arrived, else the bytes of `cgi` the head took
/// (the body follows them) or why it is not a valid head. Lines may end with CRLF or LF; the
/// output uses CRLF. Without a `Status` header the status is `200 OK`, or `302 Found` when a
/// `Location` header is present (RFC 3875, 6.2.3 and 6.2.4). A head that already starts with
/// an HTTP status line is copied as it is. On an error `out` is left as it was.
pub fn cgi_to_http_head(cgi: &[u8], out: &mut Vec<u8>) -> Option<Result<usize, &'static str>> {
    let start = out.len();
    let result = convert_head(cgi, out);
    if !matches!(result, Some(Ok(_))) {
        out.truncate(start);
    }
    result
}

fn convert_head(cgi: &[u8], out: &mut Vec<u8>) -> Option<Result<usize, &'static str>> {
    // First pass: find the end of the head and the status; nothing is written until the whole
    // head is known to be there and valid.
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    loop {
        let nl = cgi[pos..].iter().position(|&b| b == b'\n')?;
        let line = &cgi[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let mut status: Option<&[u8]> = None;
    let mut location = false;
    let mut status_line = None;
    for (i, line) in lines.iter().enumerate() {
        if i == 0 && line.starts_with(b"HTTP/") {
            status_line = Some(*line);
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Some(Err("folded header line"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Some(Err("header line without ':'"));
        };
        let name = &line[..colon];
        if name.is_empty() {
            return Some(Err("header line with an empty name"));
        }
        if name.eq_ignore_ascii_case(b"status") {
            if status.is_some() || status_line.is_some() {
                return Some(Err("more than one status"));
            }
            let value = line[colon + 1..].trim_ascii();
            let valid = value.len() >= 3
                && value[..3].iter().all(u8::is_ascii_digit)
                && value[0] != b'0'
                && (value.len() == 3 || value[3] == b' ');
            if !valid {
                return Some(Err("Status is not a 3-digit code and a reason"));
            }
            status = Some(value);
        } else if name.eq_ignore_ascii_case(b"location") {
            location = true;
        }
    }
    match (status_line, status) {
        (Some(line), _) => out.extend_from_slice(line),
        (None, Some(s)) => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(s);
            if s.len() == 3 {
                // The space before the (empty) reason phrase is not optional.
                out.push(b' ');
            }
        }
        (None, None) if location => out.extend_from_slice(b"HTTP/1.1 302 Found"),
        (None, None) => out.extend_from_slice(b"HTTP/1.1 200 OK"),
    }
    out.extend_from_slice(b"\r\n");
    let skip = usize::from(status_line.is_some());
    for line in &lines[skip..] {
        if !(line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"status:")) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Some(Ok(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8], limits: Limits) -> Result<Vec<String>, DecodeError> {
        let mut d = Decoder::new(limits);
        let mut input = wire;
        let mut events = Vec::new();
        loop {
            let step = d.decode(input)?;
            if step.consumed == 0 && step.event.is_none() {
                return Ok(events);
            }
            if let Some(e) = step.event {
                events.push(format!("{e:?}"));
            }
            input = &input[step.consumed..];
        }
    }

    /// A packet with the given modifiers around a raw vars block.
    fn packet(modifier1: u8, modifier2: u8, vars: &[u8]) -> Vec<u8> {
        let mut v = vec![modifier1];
        v.extend_from_slice(&(vars.len() as u16).to_le_bytes());
        v.push(modifier2);
        v.extend_from_slice(vars);
        v
    }

    fn vars(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (k, val) in pairs {
            encode_var(k, val, &mut v);
        }
        v
    }

    #[test]
    fn decodes_a_post_with_its_body() {
        let mut wire = Vec::new();
        encode_request(
            5,
            [
                (&b"REQUEST_METHOD"[..], &b"POST"[..]),
                (b"HTTP_COOKIE", b"a=1"),
                (b"HTTP_COOKIE", b"b=2"),
            ],
            &mut wire,
        );
        assert_eq!(wire[..4], [0, wire.len() as u8 - 4, 0, 0]);
        wire.extend_from_slice(b"hello");
        let events = decode_all(&wire, Limits::default()).unwrap();
        assert_eq!(
            events,
            [
                r#"Request { head: {"CONTENT_LENGTH": "5", "REQUEST_METHOD": "POST", "HTTP_COOKIE": "a=1", "HTTP_COOKIE": "b=2"} }"#,
                "Body([104, 101, 108, 108, 111])",
                "End",
            ]
        );
    }

    #[test]
    fn absent_or_empty_content_length_is_no_body() {
        for wire in [
            packet(0, 0, &vars(&[(b"REQUEST_METHOD", b"GET")])),
            packet(0, 0, &vars(&[(b"CONTENT_LENGTH", b"")])),
            packet(0, 0, b""),
        ] {
            let events = decode_all(&wire, Limits::default()).unwrap();
            assert_eq!(events.len(), 2, "{events:?}");
            assert_eq!(events[1], "End");
        }
    }

    #[test]
    fn malformed_packets_are_errors() {
        let small = Limits {
            max_params_bytes: 16,
            ..Limits::default()
        };
        let three = vars(&[(b"A", b"1"), (b"B", b"2"), (b"C", b"3")]);
        let cases: Vec<(Vec<u8>, Limits, DecodeError)> = vec![
            (
                packet(5, 0, b""),
                Limits::default(),
                DecodeError::UnsupportedModifier {
                    modifier1: 5,
                    modifier2: 0,
                },
            ),
            (
                packet(0, 1, b""),
                Limits::default(),
                DecodeError::UnsupportedModifier {
                    modifier1: 0,
                    modifier2: 1,
                },
            ),
            (
                packet(0, 0, &vars(&[(b"CONTENT_LENGTH", b"-1")])),
                Limits::default(),
                DecodeError::BadContentLength,
            ),
            (
                packet(
                    0,
                    0,
                    &vars(&[(b"CONTENT_LENGTH", b"1"), (b"CONTENT_LENGTH", b"1")]),
                ),
                Limits::default(),
                DecodeError::DuplicateHeader,
            ),
            (
                packet(0, 0, &vars(&[(b"", b"x")])),
                Limits::default(),
                DecodeError::BadParams("empty name"),
            ),
            (
                packet(0, 0, &[1, 0, b'A', 1]),
                Limits::default(),
                DecodeError::BadParams("var truncated at the end of the packet"),
            ),
            (
                packet(0, 0, &[5, 0, b'A']),
                Limits::default(),
                DecodeError::BadParams("var truncated at the end of the packet"),
            ),
            (
                packet(0, 0, &[0; 17]),
                small,
                DecodeError::ParamsTooLarge { limit: 16 },
            ),
            (
                packet(0, 0, &three),
                Limits {
                    max_params_pairs: 2,
                    ..Limits::default()
                },
                DecodeError::TooManyParams { limit: 2 },
            ),
        ];
        for (wire, limits, err) in &cases {
            assert_eq!(decode_all(wire, *limits).as_ref(), Err(err), "{wire:?}");
        }
    }

    #[test]
    fn limits_and_modifiers_are_checked_before_the_vars_arrive() {
        let small = Limits {
            max_params_bytes: 16,
            ..Limits::default()
        };
        assert_eq!(
            decode_all(&[0, 17, 0, 0], small),
            Err(DecodeError::ParamsTooLarge { limit: 16 })
        );
        assert!(decode_all(&[30, 0, 0, 0], small).is_err());
        assert_eq!(decode_all(&[30, 0, 0], small), Ok(vec![]));
    }

    #[test]
    fn short_input_needs_more() {
        let mut wire = Vec::new();
        encode_request(5, [(&b"A"[..], &b"b"[..])], &mut wire);
        for n in 0..wire.len() {
            let mut d = Decoder::new(Limits::default());
            assert_eq!(d.decode(&wire[..n]).unwrap().consumed, 0);
        }
    }

    #[test]
    fn input_after_the_body_is_an_error() {
        let mut wire = Vec::new();
        encode_request(0, [], &mut wire);
        let n = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut d = Decoder::new(Limits::default());
        assert_eq!(d.decode(&wire).unwrap().consumed, n);
        assert_eq!(d.decode(&wire[n..]).unwrap().event, Some(Event::End));
        assert!(d.is_done());
        assert_eq!(d.decode(&wire[n..]), Err(DecodeError::InputAfterBody));
        let rest = d.decode(b"").unwrap();
        assert_eq!((rest.consumed, rest.event), (0, None));
    }

    fn convert(cgi: &[u8]) -> Option<Result<(String, usize), &'static str>> {
        let mut out = b"before|".to_vec();
        let r = cgi_to_http_head(cgi, &mut out);
        if !matches!(r, Some(Ok(_))) {
            assert_eq!(out, b"before|", "out untouched on {r:?}");
        }
        r.map(|r| r.map(|n| (String::from_utf8(out[7..].to_vec()).unwrap(), n)))
    }

    #[test]
    fn cgi_heads_become_http_heads() {
        let mut cgi = Vec::new();
        crate::cgi::encode_response_head(
            b"404 Not Found",
            [(&b"Content-Type"[..], &b"text/plain"[..]), (b"X-A", b"1")],
            &mut cgi,
        );
        let n = cgi.len();
        cgi.extend_from_slice(b"body");
        assert_eq!(
            convert(&cgi),
            Some(Ok((
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\n".into(),
                n
            )))
        );
        let mut direct = Vec::new();
        encode_response_head(
            b"404 Not Found",
            [(&b"Content-Type"[..], &b"text/plain"[..]), (b"X-A", b"1")],
            &mut direct,
        );
        assert_eq!(convert(&cgi).unwrap().unwrap().0.as_bytes(), direct);

        let cases: [(&[u8], &str); 5] = [
            (
                b"X: 1\nstatus:  201 Created \n\n",
                "HTTP/1.1 201 Created\r\nX: 1\r\n\r\n",
            ),
            (b"Status: 204\r\n\r\n", "HTTP/1.1 204 \r\n\r\n"),
            (
                b"Content-Type: text/html\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
            ),
            (
                b"Location: /x\n\n",
                "HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n",
            ),
            (
                b"HTTP/1.0 500 Oops\nA: b\n\n",
                "HTTP/1.0 500 Oops\r\nA: b\r\n\r\n",
            ),
        ];
        for (cgi, http) in cases {
            assert_eq!(convert(cgi), Some(Ok((http.into(), cgi.len()))), "{cgi:?}");
        }
    }

    #[test]
    fn bad_or_incomplete_cgi_heads() {
        assert_eq!(convert(b"Status: 200 OK\r\nA: 1\r\n"), None);
        assert_eq!(convert(b""), None);
        for (cgi, why) in [
            (
                &b"Status: 20 OK\n\n"[..],
                "Status is not a 3-digit code and a reason",
            ),
            (
                b"Status: 200OK\n\n",
                "Status is not a 3-digit code and a reason",
            ),
            (b"Status: 200 OK\nStatus: 201 X\n\n", "more than one status"),
            (b"A: 1\n folded\n\n", "folded header line"),
            (b"no colon\n\n", "header line without ':'"),
            (b": empty\n\n", "header line with an empty name"),
        ] {
            assert_eq!(convert(cgi), Some(Err(why)), "{cgi:?}");
        }
    }
}
