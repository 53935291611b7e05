//! FastCGI name-value pairs: lengths of 1 byte (< 128) or 4 bytes (top bit set, 31 bits).

use std::ops::Range;

use nom::bytes::streaming::take;
use nom::number::streaming::{be_u32, be_u8};
use nom::Parser;

use crate::input::{Bytes, PResult};
use crate::{DecodeError, Limits, RequestHead};

/// One decoded pair: name and value ranges relative to the input, and the bytes it took.
pub type PairSpan = (Range<usize>, Range<usize>, usize);

/// A length: one byte below 128, else four (big-endian, top bit set, 31 bits kept).
#[inline]
fn length(input: Bytes<'_>) -> PResult<'_, u32> {
    match input.0.first() {
        Some(first) if first & 0x80 == 0 => be_u8.map(u32::from).parse(input),
        _ => be_u32.map(|n| n & 0x7fff_ffff).parse(input),
    }
}

/// A pair: both lengths, then the name and the value.
#[inline]
fn pair(input: Bytes<'_>) -> PResult<'_, (Bytes<'_>, Bytes<'_>)> {
    let (rest, (name_len, value_len)) = (length, length).parse(input)?;
    (take(name_len), take(value_len)).parse(rest)
}

/// Decodes one pair at the start of `input`: `Ok(None)` if it is incomplete.
pub fn parse_pair(input: &[u8]) -> Result<Option<PairSpan>, DecodeError> {
    match pair(Bytes(input)) {
        Ok((rest, (name, value))) => {
            let end = input.len() - rest.0.len();
            let value_start = end - value.0.len();
            let name_start = value_start - name.0.len();
            Ok(Some((name_start..value_start, value_start..end, end)))
        }
        Err(nom::Err::Incomplete(_)) => Ok(None),
        // Lengths and counted bytes: short input is the only way to fail.
        Err(nom::Err::Error(()) | nom::Err::Failure(())) => {
            Err(DecodeError::BadParams("bad length"))
        }
    }
}

/// Decodes a complete PARAMS stream (all records' content concatenated) into a request head,
/// taking ownership of the block so the params are not copied again.
pub fn decode_params(block: Vec<u8>, limits: &Limits) -> Result<RequestHead, DecodeError> {
    if block.len() > limits.max_params_bytes || block.len() > u32::MAX as usize {
        return Err(DecodeError::ParamsTooLarge {
            limit: limits.max_params_bytes,
        });
    }
    let mut pairs = Vec::with_capacity(32);
    let mut pos = 0;
    while pos < block.len() {
        let Some((name, value, used)) = parse_pair(&block[pos..])? else {
            return Err(DecodeError::BadParams(
                "pair truncated at end of PARAMS stream",
            ));
        };
        if name.is_empty() {
            return Err(DecodeError::BadParams("empty name"));
        }
        if pairs.len() == limits.max_params_pairs {
            return Err(DecodeError::TooManyParams {
                limit: limits.max_params_pairs,
            });
        }
        let at = |r: Range<usize>| (r.start + pos) as u32..(r.end + pos) as u32;
        pairs.push((at(name), at(value)));
        pos += used;
    }
    Ok(RequestHead::from_parts(block, pairs))
}

/// Appends one encoded pair.
pub fn encode_pair(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    for len in [name.len(), value.len()] {
        assert!(
            len <= 0x7fff_ffff,
            "FastCGI name or value longer than 2^31-1"
        );
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_four_length_layouts() {
        let long = vec![b'x'; 300];
        let mut block = Vec::new();
        encode_pair(b"A", b"1", &mut block);
        encode_pair(b"B", &long, &mut block);
        encode_pair(&long, b"2", &mut block);
        encode_pair(&long, &long, &mut block);
        let head = decode_params(block, &Limits::default()).unwrap();
        let got: Vec<_> = head.iter().map(|(n, v)| (n.len(), v.len())).collect();
        assert_eq!(got, vec![(1, 1), (1, 300), (300, 1), (300, 300)]);
    }

    #[test]
    fn truncated_and_oversized() {
        let mut block = Vec::new();
        encode_pair(b"NAME", b"value", &mut block);
        block.pop();
        assert!(decode_params(block, &Limits::default()).is_err());
        let mut block = Vec::new();
        for i in 0..10 {
            encode_pair(format!("N{i}").as_bytes(), b"v", &mut block);
        }
        let limits = Limits {
            max_params_pairs: 5,
            ..Limits::default()
        };
        assert_eq!(
            decode_params(block.clone(), &limits),
            Err(DecodeError::TooManyParams { limit: 5 })
        );
        let limits = Limits {
            max_params_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            decode_params(block, &limits),
            Err(DecodeError::ParamsTooLarge { limit: 10 })
        );
    }

    #[test]
    fn huge_declared_length_is_incomplete_not_a_panic() {
        assert_eq!(
            parse_pair(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Ok(None)
        );
    }
}
