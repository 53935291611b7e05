//! The CGI response head of `start_response(status, headers)`, made in Rust for the common
//! case. Only a head that is certainly valid is made here; anything else (a bad status, a
//! header name that is not a token, a hop-by-hop header, a line break, text beyond latin-1, a
//! Content-Length that is not plain digits) is left to gateway.py's checks, which give the
//! app its precise error. So this code may refuse more than gateway.py, never accept more.

/// Headers a WSGI app may not set (PEP 3333), lowercase.
const HOP_BY_HOP: [&[u8]; 8] = [
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether `b` may appear in a header name (RFC 9110's `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `text` as latin-1; false when a character is beyond U+00FF, or is CR or LF.
fn push_latin1(text: &str, out: &mut Vec<u8>) -> bool {
    if text.is_ascii() {
        if text.bytes().any(|b| b == b'\r' || b == b'\n') {
            return false;
        }
        out.extend_from_slice(text.as_bytes());
        return true;
    }
    for c in text.chars() {
        let Ok(b) = u8::try_from(u32::from(c)) else {
            return false;
        };
        if b == b'\r' || b == b'\n' {
            return false;
        }
        out.push(b);
    }
    true
}

/// Writes `Status: STATUS\r\n`, the headers and the blank line to `out`. `Some(length)`: the
/// head is valid, with its Content-Length if it has one; `None`: let gateway.py check it
/// (`out` then holds garbage).
pub fn build<'h>(
    status: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    out: &mut Vec<u8>,
) -> Option<Option<u64>> {
    let s = status.as_bytes();
    let status_ok = s.len() >= 4
        && (b'1'..=b'9').contains(&s[0])
        && s[1].is_ascii_digit()
        && s[2].is_ascii_digit()
        && s[3] == b' ';
    if !status_ok {
        return None;
    }
    out.extend_from_slice(b"Status: ");
    if !push_latin1(status, out) {
        return None;
    }
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    for (name, value) in headers {
        let n = name.as_bytes();
        if n.is_empty() || !n.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(n)) {
            return None;
        }
        if n.eq_ignore_ascii_case(b"content-length") {
            let digits = value.trim_matches(|c: char| c.is_ascii_whitespace());
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // No more than Python's int can be handed (i64), so that the caller's conversion
            // cannot wrap.
            length = Some(
                digits
                    .parse::<u64>()
                    .ok()
                    .filter(|&l| l <= i64::MAX as u64)?,
            );
        }
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        if !push_latin1(value, out) {
            return None;
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, headers: &[(&str, &str)]) -> Option<(Vec<u8>, Option<u64>)> {
        let mut out = Vec::new();
        build(status, headers.iter().copied(), &mut out).map(|l| (out, l))
    }

    #[test]
    fn a_valid_head_is_made_with_its_length() {
        let (h, len) = head(
            "200 OK",
            &[("Content-Type", "text/plain"), ("Content-Length", " 13 ")],
        )
        .unwrap();
        assert_eq!(
            h,
            b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length:  13 \r\n\r\n"
        );
        assert_eq!(len, Some(13));
        assert_eq!(head("204 No Content", &[]).unwrap().1, None);
        // Latin-1 text is written as latin-1 bytes.
        let (h, _) = head("200 OK", &[("X-Name", "caf\u{e9}")]).unwrap();
        assert!(h.windows(5).any(|w| w == b"caf\xe9\r"));
        assert_eq!(
            head("599 \u{e9}", &[]).unwrap().0[..14],
            *b"Status: 599 \xe9\r"
        );
    }

    #[test]
    fn anything_doubtful_is_left_to_the_python_checks() {
        for status in ["OK", "200", "099 x", "20 OK", "2000 OK", "200 a\r\nb"] {
            assert!(head(status, &[]).is_none(), "{status:?}");
        }
        for h in [
            ("Bad Name", "x"),
            ("", "x"),
            ("X-A:", "x"),
            ("Connection", "close"),
            ("transfer-ENCODING", "chunked"),
            ("X-Split", "a\r\nInjected: 1"),
            ("X-Split", "a\nb"),
            ("X-Wide", "\u{20ac}"),
            ("Content-Length", "-5"),
            ("Content-Length", "1_000"),
            ("Content-Length", "+3"),
            ("Content-Length", ""),
            ("Content-Length", "99999999999999999999999"),
        ] {
            assert!(head("200 OK", &[h]).is_none(), "{h:?}");
        }
    }
}
