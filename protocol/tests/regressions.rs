//! Inputs the fuzz targets (`protocol/fuzz`) once failed on, kept as plain tests.

mod common;

use protocol::DecodeError;

/// The SCGI decoder reported a non-digit at the start of the netstring length as
/// `ParamsTooLarge` when it arrived in one read with more than seven bytes, and as
/// `BadNetstring` when it arrived alone; `0x:` was a leading zero in one read and not a number
/// byte by byte. The error must not depend on how the bytes were split into reads.
#[test]
fn scgi_length_prefix_errors_do_not_depend_on_read_size() {
    let cases: [(&[u8], DecodeError); 4] = [
        (
            b"TENT_LENGTH\x0011\x00",
            DecodeError::BadNetstring("length is not a decimal number"),
        ),
        (
            b"0x:",
            DecodeError::BadNetstring("length is not a decimal number"),
        ),
        (
            b"01:x,",
            DecodeError::BadNetstring("length has a leading zero"),
        ),
        (b"123456789", DecodeError::ParamsTooLarge { limit: 1 << 20 }),
    ];
    for (wire, expected) in cases {
        let whole = common::scgi_feed(&[wire]);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let byte_by_byte = common::scgi_feed(&bytes);
        assert_eq!(whole, Err(expected.clone()), "{wire:?} in one read");
        assert_eq!(byte_by_byte, Err(expected), "{wire:?} byte by byte");
    }
}
