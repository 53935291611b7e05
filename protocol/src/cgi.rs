//! The protocol-neutral request head both decoders produce, and CGI-style response heads.

use std::ops::Range;

/// One request's CGI params as bytes, in wire order.
///
/// The raw params block is copied once, from the read buffer into `buf`; names and values are
/// ranges into it, so building a head allocates twice (the block and the index) whatever the
/// number of params.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    buf: Vec<u8>,
    pairs: Vec<(Range<u32>, Range<u32>)>,
}

impl RequestHead {
    /// An empty head, to be filled with [`RequestHead::push`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A head over a raw block and the (name, value) ranges into it. The ranges must lie within
    /// `buf` (the decoders guarantee it).
    pub(crate) fn from_parts(buf: Vec<u8>, pairs: Vec<(Range<u32>, Range<u32>)>) -> Self {
        debug_assert!(pairs
            .iter()
            .all(|(n, v)| n.end as usize <= buf.len() && v.end as usize <= buf.len()));
        RequestHead { buf, pairs }
    }

    /// Appends one param (used by clients and by tests; decoders build heads in one piece).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let n0 = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let n1 = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        let v1 = self.buf.len() as u32;
        self.pairs.push((n0..n1, n1..v1));
    }

    /// Number of params.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The value of the first param called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of `name` as UTF-8 text, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All params in wire order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.pairs.iter().map(move |(n, v)| {
            (
                &self.buf[n.start as usize..n.end as usize],
                &self.buf[v.start as usize..v.end as usize],
            )
        })
    }

    /// CONTENT_LENGTH: `None` when absent or empty (the body then ends with its stream),
    /// `Some(Err(()))` when present but not a decimal number, or given twice with different
    /// values (which one the body has would be a guess).
    pub fn content_length(&self) -> Option<Result<u64, ()>> {
        let mut values = self.iter().filter(|(n, _)| *n == b"CONTENT_LENGTH");
        let (_, first) = values.next()?;
        if values.any(|(_, v)| v != first) {
            return Some(Err(()));
        }
        match first {
            b"" => None,
            v => Some(parse_decimal(v).ok_or(())),
        }
    }

    /// Sum of the lengths of all names and values.
    pub fn params_bytes(&self) -> usize {
        self.pairs
            .iter()
            .map(|(n, v)| (n.end - n.start + v.end - v.start) as usize)
            .sum()
    }
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

/// A non-empty string of ASCII digits as a number (no sign, no spaces, no overflow).
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

/// Appends a CGI-style response head: `Status: <status>`, each header, and the blank line.
/// This is the form both FastCGI (inside STDOUT) and SCGI responses take.
pub fn encode_response_head<'h>(
    status: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    out: &mut Vec<u8>,
) {
    encode_head(b"Status: ", status, headers, out);
}

/// Appends `prefix` and `status` as the first line, each header, and the blank line: a
/// CGI-style head (`Status: `) or an HTTP one (`HTTP/1.1 `).
pub(crate) fn encode_head<'h>(
    prefix: &[u8],
    status: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed CGI-style response head (as a client of the gateway sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The numeric status (from `Status:`, or 200; 302 when only `Location` is given).
    pub status: u16,
    /// The reason phrase after the code, if any.
    pub reason: String,
    /// Headers other than `Status`, in order.
    pub headers: Vec<(String, String)>,
}

/// Parses a CGI response head at the start of `input`. Returns the head and the number of bytes
/// it took (through the blank line), or `None` if the blank line has not arrived yet. Lines may
/// end with CRLF or LF. An HTTP status line (`HTTP/1.x 200 OK`) is accepted in place of `Status:`.
pub fn parse_response_head(input: &[u8]) -> Option<Result<(ResponseHead, usize), &'static str>> {
    let mut pos = 0;
    let mut status = None;
    let mut reason = String::new();
    let mut headers = Vec::new();
    loop {
        let nl = input[pos..].iter().position(|&b| b == b'\n')?;
        let line = &input[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(line);
        if pos == nl + 1 && line.starts_with("HTTP/") {
            let mut parts = line.splitn(3, ' ');
            parts.next();
            let code = parts.next().and_then(|c| c.parse().ok());
            let Some(code) = code else {
                return Some(Err("bad HTTP status line"));
            };
            status = Some(code);
            reason = parts.next().unwrap_or("").to_string();
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Some(Err("header line without ':'"));
        };
        let value = value.trim().to_string();
        if name.eq_ignore_ascii_case("status") {
            let mut parts = value.splitn(2, ' ');
            let Some(code) = parts.next().and_then(|c| c.parse().ok()) else {
                return Some(Err("bad Status header"));
            };
            status = Some(code);
            reason = parts.next().unwrap_or("").to_string();
        } else {
            headers.push((name.to_string(), value));
        }
    }
    let status = status.unwrap_or_else(|| {
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("location"))
        {
            302
        } else {
            200
        }
    });
    Some(Ok((
        ResponseHead {
            status,
            reason,
            headers,
        },
        pos,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_lookup_and_content_length() {
        let mut h = RequestHead::new();
        h.push(b"CONTENT_LENGTH", b"12");
        h.push(b"REQUEST_METHOD", b"POST");
        assert_eq!(h.get(b"REQUEST_METHOD"), Some(&b"POST"[..]));
        assert_eq!(h.content_length(), Some(Ok(12)));
        assert_eq!(h.len(), 2);
        let mut e = RequestHead::new();
        e.push(b"CONTENT_LENGTH", b"");
        assert_eq!(e.content_length(), None);
        let mut bad = RequestHead::new();
        bad.push(b"CONTENT_LENGTH", b"-1");
        assert_eq!(bad.content_length(), Some(Err(())));
        // Given twice: the same value is that value, two values are an error.
        h.push(b"CONTENT_LENGTH", b"12");
        assert_eq!(h.content_length(), Some(Ok(12)));
        h.push(b"CONTENT_LENGTH", b"13");
        assert_eq!(h.content_length(), Some(Err(())));
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), None);
        assert_eq!(parse_decimal(b"1 "), None);
        assert_eq!(parse_decimal(b""), None);
    }

    #[test]
    fn response_head_round_trip() {
        let mut out = Vec::new();
        encode_response_head(
            b"404 Not Found",
            [(&b"Content-Type"[..], &b"text/plain"[..])],
            &mut out,
        );
        out.extend_from_slice(b"body");
        let (head, n) = parse_response_head(&out).unwrap().unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.reason, "Not Found");
        assert_eq!(
            head.headers,
            vec![("Content-Type".into(), "text/plain".into())]
        );
        assert_eq!(&out[n..], b"body");
        assert!(parse_response_head(b"Status: 200 OK\r\n").is_none());
        let (h, _) = parse_response_head(b"Location: /x\n\n").unwrap().unwrap();
        assert_eq!(h.status, 302);
    }
}
