//! Record framing: the 8-byte header, content and padding.

use nom::bytes::streaming::take;
use nom::number::streaming::{be_u16, be_u8};
use nom::Parser;

use super::{HEADER_LEN, VERSION_1};
use crate::input::{Bytes, PResult};
use crate::DecodeError;

/// A record header (the version is checked while parsing and not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub record_type: u8,
    pub request_id: u16,
    pub content_len: u16,
    pub padding_len: u8,
}

impl Header {
    /// The length of the whole record on the wire.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.content_len as usize + self.padding_len as usize
    }
}

/// A whole record, content borrowed from the input (padding already skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub header: Header,
    pub content: &'a [u8],
}

#[inline]
fn header(input: Bytes<'_>) -> PResult<'_, Header> {
    let (rest, (_version, record_type, request_id, content_len, padding_len, _reserved)) =
        (be_u8, be_u8, be_u16, be_u16, be_u8, be_u8).parse(input)?;
    Ok((
        rest,
        Header {
            record_type,
            request_id,
            content_len,
            padding_len,
        },
    ))
}

/// The header at the start of `input`: `None` when fewer than 8 bytes are there or the version
/// is not 1.
pub fn parse_header(input: &[u8]) -> Option<Header> {
    if input.first() != Some(&VERSION_1) {
        return None;
    }
    header(Bytes(input)).ok().map(|(_, h)| h)
}

/// A record: its header, `content_len` bytes of content and `padding_len` of padding.
#[inline]
fn record(input: Bytes<'_>) -> PResult<'_, Record<'_>> {
    let (rest, header) = header(input)?;
    let (rest, (content, _padding)) =
        (take(header.content_len), take(header.padding_len)).parse(rest)?;
    Ok((
        rest,
        Record {
            header,
            content: content.0,
        },
    ))
}

/// Parses one record at the start of `input`. `Ok(None)` means the record is not complete
/// yet (nothing is consumed); otherwise the record and the bytes it took, padding included.
/// The version byte is checked as soon as it is present.
pub fn parse_record(input: &[u8]) -> Result<Option<(Record<'_>, usize)>, DecodeError> {
    if let Some(&v) = input.first() {
        if v != VERSION_1 {
            return Err(DecodeError::BadVersion(v));
        }
    }
    match record(Bytes(input)) {
        Ok((rest, record)) => Ok(Some((record, input.len() - rest.0.len()))),
        Err(nom::Err::Incomplete(_)) => Ok(None),
        // Fixed-size fields and counted bytes: short input is the only way to fail.
        Err(nom::Err::Error(()) | nom::Err::Failure(())) => {
            unreachable!("a record cannot fail to parse")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_alone_is_parsed_without_its_content() {
        let h = parse_header(&[1, 5, 0, 1, 0x80, 0x01, 7, 0, b'x']).unwrap();
        assert_eq!(
            h,
            Header {
                record_type: 5,
                request_id: 1,
                content_len: 0x8001,
                padding_len: 7,
            }
        );
        assert_eq!(parse_header(&[1, 5, 0, 1, 0, 1, 0]), None);
        assert_eq!(parse_header(&[2, 5, 0, 1, 0, 1, 0, 0]), None);
        assert_eq!(parse_header(&[]), None);
    }

    #[test]
    fn parses_with_padding_and_reports_short_input() {
        let bytes = [
            1, 5, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0xff,
        ];
        for n in 0..16 {
            assert_eq!(parse_record(&bytes[..n]), Ok(None), "prefix {n}");
        }
        let (rec, used) = parse_record(&bytes).unwrap().unwrap();
        assert_eq!(used, 16);
        assert_eq!(rec.header.record_type, 5);
        assert_eq!(rec.header.request_id, 1);
        assert_eq!(rec.content, b"abc");
    }

    #[test]
    fn rejects_bad_version_at_first_byte() {
        assert_eq!(parse_record(&[2]), Err(DecodeError::BadVersion(2)));
        assert_eq!(
            parse_record(b"GET / HTTP/1.1"),
            Err(DecodeError::BadVersion(b'G'))
        );
    }
}
