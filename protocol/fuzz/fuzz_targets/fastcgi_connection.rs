//! Drives `fastcgi::Connection::decode` over arbitrary bytes the way a server does (append
//! what arrived, decode until more is needed, drop what was consumed) and checks that it
//! never panics, never consumes more than it was given, never surfaces an event without
//! consuming input, keeps every documented limit, and that the outcome does not depend on
//! how the input was split into reads (a body's pieces joined).
//!
//! Input layout: one knob byte, then the bytes of the connection. Knob bits: 0 = small limits,
//! 1 = no multiplexing, 2 = leave requests active after their STDIN ends, 3..7 = the read
//! size for the second, chunked run (1 to 32 bytes, plus the input length / 256).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::fastcgi::{Config, Connection, Event};
use protocol::{DecodeError, Limits};

/// Everything observable from one run: the events, the replies written to `out`, and either
/// the bytes left undecoded or the error that ended the connection.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<(String, Vec<u8>)>,
    out: Vec<u8>,
    end: Result<usize, DecodeError>,
}

fn config(knobs: u8) -> Config {
    let limits = if knobs & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_params_bytes: 64,
            max_params_pairs: 4,
            max_requests: 2,
        }
    };
    Config {
        limits,
        multiplex: knobs & 2 == 0,
        ..Config::default()
    }
}

fn run<'c>(knobs: u8, chunks: impl Iterator<Item = &'c [u8]>) -> Outcome {
    let config = config(knobs);
    let limits = config.limits;
    let mut conn = Connection::new(config);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let input = &buf[start..];
            let d = match conn.decode(input, &mut out) {
                Ok(d) => d,
                Err(e) => {
                    // Every error must be printable.
                    let _ = e.to_string();
                    return Outcome {
                        events,
                        out,
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
            assert!(conn.active_count() <= limits.max_requests);
            let Some(event) = d.event else {
                if d.consumed == 0 {
                    break;
                }
                start += d.consumed;
                continue;
            };
            assert!(d.consumed > 0, "event without consuming its record");
            match &event {
                Event::Request { id, head, .. } => {
                    assert!(*id != 0);
                    assert!(conn.is_active(*id));
                    assert!(head.len() <= limits.max_params_pairs);
                    assert!(head.params_bytes() <= limits.max_params_bytes);
                    assert!(head.iter().all(|(name, _)| !name.is_empty()));
                    assert_eq!(head.iter().len(), head.len());
                    let _ = head.content_length();
                }
                Event::Stdin { data, .. } | Event::Data { data, .. } => {
                    assert!(!data.is_empty());
                    assert!(data.len() <= d.consumed);
                }
                _ => {}
            }
            // Body pieces are kept as bytes: their Debug form would cost more than decoding.
            // A record's content comes in as many pieces as it took reads, so consecutive
            // pieces of one stream are joined.
            let (name, data) = match &event {
                Event::Stdin { id, data } => (format!("Stdin {id}"), *data),
                Event::Data { id, data } => (format!("Data {id}"), *data),
                other => (format!("{other:?}"), &[][..]),
            };
            match events.last_mut() {
                Some((last, bytes)) if !data.is_empty() && *last == name => {
                    bytes.extend_from_slice(data)
                }
                _ => events.push((name, data.to_vec())),
            }
            // What a gateway does: answer a request once its body is in, or when aborted.
            match event {
                Event::StdinEnd { id } if knobs & 4 == 0 => conn.end_request(id, 0, &mut out),
                Event::Abort { id } => conn.end_request(id, 1, &mut out),
                _ => {}
            }
            start += d.consumed;
        }
        buf.drain(..start);
    }
    Outcome {
        events,
        out,
        end: Ok(buf.len()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, wire)) = data.split_first() else {
        return;
    };
    let whole = run(knobs, std::iter::once(wire));
    // Reads of 1 to 32 bytes, plus len/256 so that large inputs stay fast to run.
    let read_size = 1 + usize::from(knobs >> 3) + wire.len() / 256;
    let chunked = run(knobs, wire.chunks(read_size));
    assert_eq!(whole, chunked, "outcome depends on read size {read_size}");
});
