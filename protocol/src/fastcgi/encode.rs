//! Encoders. Each appends whole records to a caller-owned buffer; stream content is split into
//! records of at most [`MAX_CHUNK`] bytes and padded to 8-byte alignment. A body chunk is copied
//! exactly once, into `out` (a caller that prefers vectored writes can use [`header`] and
//! [`padding_for`] and write the content from its own buffer).

use super::params::encode_pair;
use super::*;

/// Content bytes per stream record: the largest multiple of 8 below 64 KiB, so full records
/// need no padding.
pub const MAX_CHUNK: usize = 0xfff8;

const ZEROES: [u8; 8] = [0; 8];

/// Padding that aligns a record with `content_len` bytes of content to 8 bytes.
pub fn padding_for(content_len: usize) -> u8 {
    ((8 - content_len % 8) % 8) as u8
}

/// A record header for `content_len` bytes of content followed by `padding_len` bytes of padding.
pub fn header(record_type: u8, request_id: u16, content_len: u16, padding_len: u8) -> [u8; 8] {
    let id = request_id.to_be_bytes();
    let len = content_len.to_be_bytes();
    [
        VERSION_1,
        record_type,
        id[0],
        id[1],
        len[0],
        len[1],
        padding_len,
        0,
    ]
}

/// One record holding `content` (at most 65535 bytes), padded.
pub fn record(record_type: u8, request_id: u16, content: &[u8], out: &mut Vec<u8>) {
    assert!(
        content.len() <= MAX_CONTENT_LEN,
        "record content over 65535 bytes"
    );
    let pad = padding_for(content.len());
    out.reserve(HEADER_LEN + content.len() + pad as usize);
    out.extend_from_slice(&header(record_type, request_id, content.len() as u16, pad));
    out.extend_from_slice(content);
    out.extend_from_slice(&ZEROES[..pad as usize]);
}

/// Stream data (STDOUT, STDERR, STDIN, PARAMS, DATA) as as many records as it takes. Empty
/// data writes nothing: the empty record ends a stream, see [`stream_end`].
pub fn stream(record_type: u8, request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + (data.len() / MAX_CHUNK + 1) * (HEADER_LEN + 8));
    for chunk in data.chunks(MAX_CHUNK) {
        record(record_type, request_id, chunk, out);
    }
}

/// The empty record that ends a stream.
pub fn stream_end(record_type: u8, request_id: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&header(record_type, request_id, 0, 0));
}

/// Response body or head bytes.
pub fn stdout(request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    stream(STDOUT, request_id, data, out);
}

/// Text for the web server's error log.
pub fn stderr(request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    stream(STDERR, request_id, data, out);
}

/// The end of a request: the empty STDOUT record, then END_REQUEST.
pub fn end_request(request_id: u16, app_status: u32, status: ProtocolStatus, out: &mut Vec<u8>) {
    stream_end(STDOUT, request_id, out);
    end_request_record(request_id, app_status, status, out);
}

/// END_REQUEST alone (for requests refused before any output).
pub fn end_request_record(
    request_id: u16,
    app_status: u32,
    status: ProtocolStatus,
    out: &mut Vec<u8>,
) {
    let a = app_status.to_be_bytes();
    record(
        END_REQUEST,
        request_id,
        &[a[0], a[1], a[2], a[3], status as u8, 0, 0, 0],
        out,
    );
}

/// BEGIN_REQUEST (client side).
pub fn begin_request(request_id: u16, role: u16, flags: u8, out: &mut Vec<u8>) {
    let r = role.to_be_bytes();
    record(
        BEGIN_REQUEST,
        request_id,
        &[r[0], r[1], flags, 0, 0, 0, 0, 0],
        out,
    );
}

/// A whole PARAMS stream, terminator included (client side).
pub fn params<'p>(
    request_id: u16,
    pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>,
    out: &mut Vec<u8>,
) {
    let mut block = Vec::new();
    for (name, value) in pairs {
        encode_pair(name, value, &mut block);
    }
    stream(PARAMS, request_id, &block, out);
    stream_end(PARAMS, request_id, out);
}

/// ABORT_REQUEST (client side).
pub fn abort_request(request_id: u16, out: &mut Vec<u8>) {
    record(ABORT_REQUEST, request_id, &[], out);
}

/// GET_VALUES asking for `names` (client side).
pub fn get_values<'n>(names: impl IntoIterator<Item = &'n [u8]>, out: &mut Vec<u8>) {
    let mut block = Vec::new();
    for name in names {
        encode_pair(name, b"", &mut block);
    }
    record(GET_VALUES, 0, &block, out);
}

/// GET_VALUES_RESULT with the given pairs.
pub fn get_values_result<'p>(
    pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>,
    out: &mut Vec<u8>,
) {
    let mut block = Vec::new();
    for (name, value) in pairs {
        encode_pair(name, value, &mut block);
    }
    record(GET_VALUES_RESULT, 0, &block, out);
}

/// UNKNOWN_TYPE for a management record of type `unknown`.
pub fn unknown_type(unknown: u8, out: &mut Vec<u8>) {
    record(UNKNOWN_TYPE, 0, &[unknown, 0, 0, 0, 0, 0, 0, 0], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_stdout_is_split_aligned_and_complete() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        stdout(7, &data, &mut out);
        let mut pos = 0;
        let mut back = Vec::new();
        while pos < out.len() {
            let (rec, used) = parse_record(&out[pos..]).unwrap().unwrap();
            assert_eq!(used % 8, 0);
            assert_eq!(rec.header.request_id, 7);
            assert!(rec.content.len() <= MAX_CHUNK);
            back.extend_from_slice(rec.content);
            pos += used;
        }
        assert_eq!(back, data);
    }

    #[test]
    fn end_request_layout() {
        let mut out = Vec::new();
        end_request(1, 0x0102_0304, ProtocolStatus::Overloaded, &mut out);
        assert_eq!(
            out,
            [1, 6, 0, 1, 0, 0, 0, 0, 1, 3, 0, 1, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0]
        );
    }
}
