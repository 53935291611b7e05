//! Drives `scgi::Decoder` over arbitrary bytes the way a server does and checks that it never
//! panics or over-consumes, that the body it surfaces is exactly CONTENT_LENGTH bytes, that
//! nothing is decoded after the request ends, and that the outcome does not depend on how the
//! input was split into reads.
//!
//! Input layout: one knob byte (bit 0 = small limits, bits 3..7 = the read size for the
//! second, chunked run: 1 to 32 bytes, plus the input length / 256), then the bytes of the
//! connection.
#![no_main]

#[path = "../common/one_request.rs"]
mod one_request;

use libfuzzer_sys::fuzz_target;
use protocol::scgi::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, wire)) = data.split_first() else {
        return;
    };
    one_request::check_read_sizes::<Decoder>(knobs, wire, |head, consumed, limits| {
        assert!(head.params_bytes() < consumed);
        assert!(consumed <= limits.max_params_bytes + 9);
        let (name, _) = head.iter().next().expect("CONTENT_LENGTH comes first");
        assert_eq!(name, b"CONTENT_LENGTH");
        // Names may repeat (nginx before 1.23 repeats a header): one of them is `SCGI: 1`.
        assert!(head.iter().any(|pair| pair == (&b"SCGI"[..], &b"1"[..])));
        assert_eq!(head.iter().filter(|(n, _)| *n == b"CONTENT_LENGTH").count(), 1);
        head.content_length().unwrap().unwrap()
    });
});
