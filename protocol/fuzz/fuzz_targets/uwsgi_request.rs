//! Drives `uwsgi::Decoder` over arbitrary bytes the way a server does and checks that it never
//! panics or over-consumes, that the limits hold, that the body it surfaces is exactly
//! CONTENT_LENGTH bytes (none when absent or empty), that nothing is decoded after the request
//! ends, and that the outcome does not depend on how the input was split into reads.
//!
//! Input layout: one knob byte (bit 0 = small limits, bit 1 = force a well-formed packet
//! header (modifiers 0 and 0, datasize = the rest of the input up to 65535) so that the vars
//! parser sees the bytes, bits 3..7 = the read size for the second, chunked run: 1 to 32
//! bytes, plus the input length / 256), then the bytes of the connection.
#![no_main]

#[path = "../common/one_request.rs"]
mod one_request;

use libfuzzer_sys::fuzz_target;
use protocol::uwsgi::{Decoder, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, wire)) = data.split_first() else {
        return;
    };
    let mut wire = wire.to_vec();
    if knobs & 2 != 0 && wire.len() >= HEADER_LEN {
        let size = (wire.len() - HEADER_LEN).min(0xffff) as u16;
        wire[0] = 0;
        wire[1..3].copy_from_slice(&size.to_le_bytes());
        wire[3] = 0;
    }
    one_request::check_read_sizes::<Decoder>(knobs, &wire, |head, consumed, limits| {
        assert_eq!(consumed, HEADER_LEN + head.params_bytes() + 4 * head.len());
        assert!(consumed <= HEADER_LEN + limits.max_params_bytes.min(0xffff));
        assert!(head.iter().all(|(n, _)| !n.is_empty()));
        let lengths = head.iter().filter(|(n, _)| *n == b"CONTENT_LENGTH").count();
        assert!(lengths <= 1, "CONTENT_LENGTH repeated");
        match head.content_length() {
            None => 0,
            Some(n) => n.expect("a bad CONTENT_LENGTH is an error"),
        }
    });
});
