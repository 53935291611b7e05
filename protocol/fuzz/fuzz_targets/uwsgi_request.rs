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

use libfuzzer_sys::fuzz_target;
use protocol::uwsgi::{Decoder, Event, HEADER_LEN};
use protocol::{DecodeError, Limits};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<String>,
    body: Vec<u8>,
    end: Result<usize, DecodeError>,
}

fn limits(knobs: u8) -> Limits {
    if knobs & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_params_bytes: 64,
            max_params_pairs: 4,
            ..Limits::default()
        }
    }
}

fn run<'c>(knobs: u8, chunks: impl Iterator<Item = &'c [u8]>) -> Outcome {
    let limits = limits(knobs);
    let mut dec = Decoder::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut content_length = None;
    let mut body = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let input = &buf[start..];
            let d = match dec.decode(input) {
                Ok(d) => d,
                Err(e) => {
                    let _ = e.to_string();
                    assert!(content_length.is_none(), "error after the packet");
                    return Outcome {
                        events,
                        body,
                        end: Err(e),
                    };
                }
            };
            assert!(
                d.consumed <= input.len(),
                "over-consumed: {} of {} bytes",
                d.consumed,
                input.len()
            );
            let Some(event) = d.event else {
                assert_eq!(d.consumed, 0, "bytes consumed without an event");
                break;
            };
            match &event {
                Event::Request { head } => {
                    assert!(content_length.is_none(), "second request head");
                    assert!(head.len() <= limits.max_params_pairs);
                    assert_eq!(d.consumed, HEADER_LEN + head.params_bytes() + 4 * head.len());
                    assert!(d.consumed <= HEADER_LEN + limits.max_params_bytes.min(0xffff));
                    assert!(head.iter().all(|(n, _)| !n.is_empty()));
                    let lengths = head.iter().filter(|(n, _)| *n == b"CONTENT_LENGTH").count();
                    assert!(lengths <= 1, "CONTENT_LENGTH repeated");
                    content_length = Some(match head.content_length() {
                        None => 0,
                        Some(n) => n.expect("a bad CONTENT_LENGTH is an error"),
                    });
                }
                Event::Body(data) => {
                    assert!(!data.is_empty());
                    assert_eq!(data.len(), d.consumed);
                    body.extend_from_slice(data);
                    assert!(body.len() as u64 <= content_length.expect("body after a head"));
                    // Pieces follow the reads; only the whole body is compared.
                    start += d.consumed;
                    continue;
                }
                Event::End => {
                    assert_eq!(d.consumed, 0);
                    assert_eq!(Some(body.len() as u64), content_length);
                    assert!(dec.is_done());
                }
            }
            events.push(format!("{event:?}"));
            start += d.consumed;
        }
        buf.drain(..start);
    }
    if dec.is_done() {
        let rest = dec
            .decode(&buf)
            .expect("a finished decoder accepts anything");
        assert_eq!((rest.consumed, rest.event), (0, None));
    }
    Outcome {
        events,
        body,
        end: Ok(buf.len()),
    }
}

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
    let whole = run(knobs, std::iter::once(&wire[..]));
    // Reads of 1 to 32 bytes, plus len/256 so that large inputs stay fast to run.
    let read_size = 1 + usize::from(knobs >> 3) + wire.len() / 256;
    let chunked = run(knobs, wire.chunks(read_size));
    assert_eq!(whole, chunked, "outcome depends on read size {read_size}");
});
