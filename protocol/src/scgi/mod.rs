//! SCGI: a netstring header block (`LEN:` name NUL value NUL ... `,`) whose first header is
//! CONTENT_LENGTH, a `SCGI: 1` header, then exactly CONTENT_LENGTH body bytes. One request per
//! connection; the response is CGI-style ([`crate::cgi::encode_response_head`]) and ends when
//! the application side closes the connection.

use std::ops::Range;

use crate::cgi::parse_decimal;
use crate::{DecodeError, Limits, RequestHead};

/// What the decoder saw. Body data is borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The header block is complete; its CONTENT_LENGTH was checked.
    Request { head: RequestHead },
    /// A piece of the body.
    Body(&'a [u8]),
    /// The body is complete (right after `Request` when CONTENT_LENGTH is 0).
    End,
}

/// Bytes consumed and, possibly, an event; zero and `None` means more input is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Body { remaining: u64 },
    Done,
}

/// One SCGI connection's decoding state.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: State,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            state: State::Header,
        }
    }

    /// Decodes the next event from the start of `input`. Bytes after the body are never
    /// consumed (a web server sends none; the caller closes after its response).
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let none = Decoded {
            consumed: 0,
            event: None,
        };
        match self.state {
            State::Header => {
                let Some((head, consumed)) = parse_header_block(input, &self.limits)? else {
                    return Ok(none);
                };
                let len = match head.content_length() {
                    Some(Ok(n)) => n,
                    _ => return Err(DecodeError::BadContentLength),
                };
                self.state = State::Body { remaining: len };
                Ok(Decoded {
                    consumed,
                    event: Some(Event::Request { head }),
                })
            }
            State::Body { remaining: 0 } => {
                self.state = State::Done;
                Ok(Decoded {
                    consumed: 0,
                    event: Some(Event::End),
                })
            }
            State::Body { remaining } => {
                if input.is_empty() {
                    return Ok(none);
                }
                let n = remaining.min(input.len() as u64) as usize;
                self.state = State::Body {
                    remaining: remaining - n as u64,
                };
                Ok(Decoded {
                    consumed: n,
                    event: Some(Event::Body(&input[..n])),
                })
            }
            State::Done => Ok(none),
        }
    }

    /// Whether the whole request, body included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// Parses the netstring header block at the start of `input` into a head: `Ok(None)` when it
/// is incomplete, else the head and the bytes the netstring took.
pub fn parse_header_block(
    input: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, DecodeError> {
    // Enough digits for the largest allowed length, and not one more.
    let max_digits = limits.max_params_bytes.max(1).ilog10() as usize + 1;
    // The error for a bad prefix must not depend on how much of it has arrived: a byte that is
    // not a digit is reported as such whether the input stops right after it or goes on.
    let Some(colon) = input.iter().take(max_digits + 1).position(|&b| b == b':') else {
        let window = &input[..input.len().min(max_digits + 1)];
        if !window.iter().all(u8::is_ascii_digit) {
            return Err(DecodeError::BadNetstring("length is not a decimal number"));
        }
        if input.len() > max_digits {
            return Err(DecodeError::ParamsTooLarge {
                limit: limits.max_params_bytes,
            });
        }
        return Ok(None);
    };
    let digits = &input[..colon];
    let len = parse_decimal(digits)
        .ok_or(DecodeError::BadNetstring("length is not a decimal number"))? as usize;
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(DecodeError::BadNetstring("length has a leading zero"));
    }
    if len > limits.max_params_bytes {
        return Err(DecodeError::ParamsTooLarge {
            limit: limits.max_params_bytes,
        });
    }
    let end = colon + 1 + len;
    if input.len() <= end {
        return Ok(None);
    }
    if input[end] != b',' {
        return Err(DecodeError::BadNetstring(
            "missing ',' after the header block",
        ));
    }
    let block = input[colon + 1..end].to_vec();
    let head = decode_pairs(block, limits)?;
    Ok(Some((head, end + 1)))
}

fn decode_pairs(block: Vec<u8>, limits: &Limits) -> Result<RequestHead, DecodeError> {
    if block.last().is_some_and(|&b| b != 0) {
        return Err(DecodeError::BadParams("header block does not end with NUL"));
    }
    let mut pairs: Vec<(Range<u32>, Range<u32>)> = Vec::with_capacity(32);
    let mut pos = 0;
    while pos < block.len() {
        let field = |start: usize| {
            block[start..]
                .iter()
                .position(|&b| b == 0)
                .map(|n| start..start + n)
        };
        let name = field(pos).ok_or(DecodeError::BadParams("unterminated name"))?;
        let value = field(name.end + 1).ok_or(DecodeError::BadParams("name without a value"))?;
        if name.is_empty() {
            return Err(DecodeError::BadParams("empty name"));
        }
        if pairs.len() == limits.max_params_pairs {
            return Err(DecodeError::TooManyParams {
                limit: limits.max_params_pairs,
            });
        }
        pos = value.end + 1;
        pairs.push((
            name.start as u32..name.end as u32,
            value.start as u32..value.end as u32,
        ));
    }
    let name_of = |r: &Range<u32>| &block[r.start as usize..r.end as usize];
    match pairs.first() {
        Some((n, v)) if name_of(n) == b"CONTENT_LENGTH" && parse_decimal(name_of(v)).is_some() => {}
        _ => return Err(DecodeError::BadContentLength),
    }
    if !pairs
        .iter()
        .any(|(n, v)| name_of(n) == b"SCGI" && name_of(v) == b"1")
    {
        return Err(DecodeError::MissingScgiHeader);
    }
    let mut names: Vec<&[u8]> = pairs.iter().map(|(n, _)| name_of(n)).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(DecodeError::DuplicateHeader);
    }
    Ok(RequestHead::from_parts(block, pairs))
}

/// Appends a request's netstring header block (client side). CONTENT_LENGTH is written first
/// with `body_len`, then `SCGI: 1`; the given params must include neither.
pub fn encode_request<'p>(
    body_len: u64,
    params: impl IntoIterator<Item = (&'p [u8], &'p [u8])>,
    out: &mut Vec<u8>,
) {
    let mut block = Vec::new();
    let len = body_len.to_string();
    let fixed: [(&[u8], &[u8]); 2] = [(b"CONTENT_LENGTH", len.as_bytes()), (b"SCGI", b"1")];
    let params: Vec<(&[u8], &[u8])> = params.into_iter().collect();
    for &(name, value) in fixed.iter().chain(params.iter()) {
        block.extend_from_slice(name);
        block.push(0);
        block.extend_from_slice(value);
        block.push(0);
    }
    out.extend_from_slice(block.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&block);
    out.push(b',');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Result<Vec<String>, DecodeError> {
        let mut d = Decoder::new(Limits::default());
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

    #[test]
    fn spec_example() {
        let wire = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/deepthought\x00,What is the answer to life?";
        let events = decode_all(wire).unwrap();
        assert_eq!(events.len(), 3);
        assert!(events[0].contains("\"REQUEST_URI\": \"/deepthought\""));
        assert_eq!(events[1], "Body([87, 104, 97, 116, 32, 105, 115, 32, 116, 104, 101, 32, 97, 110, 115, 119, 101, 114, 32, 116, 111, 32, 108, 105, 102, 101, 63])");
        assert_eq!(events[2], "End");
    }

    #[test]
    fn client_encoding_round_trips() {
        let mut wire = Vec::new();
        encode_request(0, [(&b"PATH_INFO"[..], &b""[..])], &mut wire);
        let events = decode_all(&wire).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], "End");
    }

    fn netstring(block: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", block.len()).into_bytes();
        v.extend_from_slice(block);
        v.push(b',');
        v
    }

    #[test]
    fn malformed_headers_are_errors() {
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (
                b"01:x,".to_vec(),
                DecodeError::BadNetstring("length has a leading zero"),
            ),
            (
                b"1x:".to_vec(),
                DecodeError::BadNetstring("length is not a decimal number"),
            ),
            (
                b"4:ab\x00\x00;".to_vec(),
                DecodeError::BadNetstring("missing ',' after the header block"),
            ),
            (netstring(b"SCGI\x001\x00"), DecodeError::BadContentLength),
            (
                netstring(b"CONTENT_LENGTH\x00-1\x00SCGI\x001\x00"),
                DecodeError::BadContentLength,
            ),
            (
                netstring(b"CONTENT_LENGTH\x000\x00"),
                DecodeError::MissingScgiHeader,
            ),
            (
                netstring(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00SCGI\x001\x00"),
                DecodeError::DuplicateHeader,
            ),
            (
                netstring(b"CONTENT_LENGTH\x000\x00SCGI"),
                DecodeError::BadParams("header block does not end with NUL"),
            ),
            (
                b"99999999999:".to_vec(),
                DecodeError::ParamsTooLarge { limit: 1 << 20 },
            ),
        ];
        for (wire, err) in &cases {
            assert_eq!(
                decode_all(wire).as_ref(),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
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
}
