//! SCGI: a netstring header block (`LEN:` name NUL value NUL ... `,`) whose first header is
//! CONTENT_LENGTH, a `SCGI: 1` header, then exactly CONTENT_LENGTH body bytes. One request per
//! connection; the response is CGI-style ([`crate::cgi::encode_response_head`]) and ends when
//! the application side closes the connection.

use std::ops::Range;

use crate::cgi::parse_decimal;
use crate::{DecodeError, Limits, RequestHead};

use crate::oneshot::Machine;
pub use crate::oneshot::{Decoded, Event};

/// One SCGI connection's decoding state.
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
        let Some((head, consumed)) = parse_header_block(input, &self.0.limits)? else {
            return Ok(Decoded::NONE);
        };
        let len = match head.content_length() {
            Some(Ok(n)) => n,
            _ => return Err(DecodeError::BadContentLength),
        };
        Ok(self.0.request(head, consumed, len))
    }

    /// Whether the whole request, body included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// Parses the netstring header block at the start of `input` into a head: `Ok(None)` when it
/// is incomplete, else the head and the bytes the netstring took.
pub fn parse_header_block(
    input: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, DecodeError> {
    let Some((block, consumed)) = parse::netstring(input, limits)? else {
        return Ok(None);
    };
    let pairs = parse::pairs(block, limits)?;
    let block = block.to_vec();
    check_head(block, pairs).map(|head| Some((head, consumed)))
}

mod parse {
    use std::ops::Range;

    use nom::bytes::streaming::{take, take_while_m_n};
    use nom::bytes::take_till;
    use nom::character::{char, streaming};
    use nom::Parser;

    use crate::cgi::parse_decimal;
    use crate::input::{Bytes, PResult};
    use crate::{DecodeError, Limits};

    /// A pair's name and value as ranges into its block.
    pub(super) type PairRanges = (Range<u32>, Range<u32>);

    const NOT_A_NUMBER: DecodeError = DecodeError::BadNetstring("length is not a decimal number");

    /// The netstring at the start of `input`: its payload and the bytes it took, `None` when
    /// incomplete. The error for a bad prefix does not depend on how much of it has arrived: a
    /// byte that is not a digit is reported as such whether the input stops right after it or
    /// goes on, and more digits than the largest allowed length has are "too large" as soon as
    /// the first extra one is there.
    pub(super) fn netstring<'a>(
        input: &'a [u8],
        limits: &Limits,
    ) -> Result<Option<(&'a [u8], usize)>, DecodeError> {
        let max_digits = limits.max_params_bytes.max(1).ilog10() as usize + 1;
        let too_large = DecodeError::ParamsTooLarge {
            limit: limits.max_params_bytes,
        };
        let mut digits = take_while_m_n::<_, _, ()>(0, max_digits, |b: u8| b.is_ascii_digit());
        let (rest, digits) = match digits.parse(Bytes(input)) {
            Ok(parsed) => parsed,
            Err(nom::Err::Incomplete(_)) => return Ok(None),
            Err(_) => unreachable!("zero digits are enough"),
        };
        let rest = match streaming::char::<_, ()>(':').parse(rest) {
            Ok((rest, _)) => rest,
            Err(nom::Err::Incomplete(_)) => return Ok(None),
            // The longest allowed length and a digit more: too large. Anything else: garbage.
            Err(_) if digits.0.len() == max_digits && rest.0[0].is_ascii_digit() => {
                return Err(too_large)
            }
            Err(_) => return Err(NOT_A_NUMBER),
        };
        let len = parse_decimal(digits.0).ok_or(NOT_A_NUMBER)? as usize;
        if digits.0.len() > 1 && digits.0[0] == b'0' {
            return Err(DecodeError::BadNetstring("length has a leading zero"));
        }
        if len > limits.max_params_bytes {
            return Err(too_large);
        }
        match (take::<_, _, ()>(len), streaming::char(',')).parse(rest) {
            Ok((rest, (block, _))) => Ok(Some((block.0, input.len() - rest.0.len()))),
            Err(nom::Err::Incomplete(_)) => Ok(None),
            Err(_) => Err(DecodeError::BadNetstring(
                "missing ',' after the header block",
            )),
        }
    }

    /// A NUL-terminated string of a complete block.
    #[inline]
    fn field(input: Bytes<'_>) -> PResult<'_, Bytes<'_>> {
        let (rest, (text, _)) = (take_till(|b| b == 0), char('\0')).parse_complete(input)?;
        Ok((rest, text))
    }

    /// The name-value pairs of a header block, as ranges into it.
    pub(super) fn pairs(block: &[u8], limits: &Limits) -> Result<Vec<PairRanges>, DecodeError> {
        if block.last().is_some_and(|&b| b != 0) {
            return Err(DecodeError::BadParams("header block does not end with NUL"));
        }
        let mut pairs = Vec::with_capacity(32);
        let mut rest = Bytes(block);
        while !rest.0.is_empty() {
            let pos = block.len() - rest.0.len();
            let (after_name, name) =
                field(rest).map_err(|_| DecodeError::BadParams("unterminated name"))?;
            let (after_value, value) =
                field(after_name).map_err(|_| DecodeError::BadParams("name without a value"))?;
            if name.0.is_empty() {
                return Err(DecodeError::BadParams("empty name"));
            }
            if pairs.len() == limits.max_params_pairs {
                return Err(DecodeError::TooManyParams {
                    limit: limits.max_params_pairs,
                });
            }
            let name_end = pos + name.0.len();
            let value_start = name_end + 1;
            pairs.push((
                pos as u32..name_end as u32,
                value_start as u32..(value_start + value.0.len()) as u32,
            ));
            rest = after_value;
        }
        Ok(pairs)
    }
}

/// The checks on a whole head: CONTENT_LENGTH first, decimal and only once, `SCGI: 1`.
///
/// Other names may repeat, although the SCGI specification says they do not: nginx before
/// 1.23 sends a header given twice as two pairs (later versions join them first), and a
/// request refused for it would be a 502 for the client. Joining them is the environ's job.
fn check_head(block: Vec<u8>, pairs: Vec<parse::PairRanges>) -> Result<RequestHead, DecodeError> {
    let name_of = |r: &Range<u32>| &block[r.start as usize..r.end as usize];
    match pairs.first() {
        Some((n, v)) if name_of(n) == b"CONTENT_LENGTH" && parse_decimal(name_of(v)).is_some() => {}
        _ => return Err(DecodeError::BadContentLength),
    }
    if pairs[1..]
        .iter()
        .any(|(n, _)| name_of(n) == b"CONTENT_LENGTH")
    {
        return Err(DecodeError::DuplicateHeader);
    }
    if !pairs
        .iter()
        .any(|(n, v)| name_of(n) == b"SCGI" && name_of(v) == b"1")
    {
        return Err(DecodeError::MissingScgiHeader);
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

    #[test]
    fn a_repeated_header_is_two_params_in_order() {
        // What nginx 1.22 sends for `X-A: one` and `X-A: two`.
        let wire = netstring(
            b"CONTENT_LENGTH\x000\x00SCGI\x001\x00HTTP_X_A\x00one\x00HTTP_X_A\x00two\x00",
        );
        let Decoded {
            event: Some(Event::Request { head }),
            ..
        } = Decoder::new(Limits::default()).decode(&wire).unwrap()
        else {
            panic!("no request");
        };
        let repeated: Vec<_> = head.iter().filter(|(n, _)| *n == b"HTTP_X_A").collect();
        assert_eq!(
            repeated,
            [(&b"HTTP_X_A"[..], &b"one"[..]), (b"HTTP_X_A", b"two")]
        );
        assert_eq!(head.get(b"HTTP_X_A"), Some(&b"one"[..]));
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
                netstring(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00CONTENT_LENGTH\x000\x00"),
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
