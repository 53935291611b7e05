//! The driver the SCGI and uwsgi targets share: both protocols carry one request per
//! connection (a head, then exactly CONTENT_LENGTH body bytes) through the same events.

use protocol::scgi::{Decoded, Event};
use protocol::{scgi, uwsgi, DecodeError, Limits, RequestHead};

/// An SCGI or uwsgi decoder.
pub trait OneRequest {
    fn new(limits: Limits) -> Self;
    fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, DecodeError>;
    fn is_done(&self) -> bool;
}

macro_rules! one_request {
    ($t:ty) => {
        impl OneRequest for $t {
            fn new(limits: Limits) -> Self {
                <$t>::new(limits)
            }
            fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
                <$t>::decode(self, input)
            }
            fn is_done(&self) -> bool {
                <$t>::is_done(self)
            }
        }
    };
}
one_request!(scgi::Decoder);
one_request!(uwsgi::Decoder);

/// What a run decoded, and how it ended (the bytes left over, or the error).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<String>,
    body: Vec<u8>,
    end: Result<usize, DecodeError>,
}

/// Bit 0 of the knob byte: small limits.
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

/// Decodes the reads in `chunks` as a server does, checking every event; `check_head`
/// checks a head (and the bytes it took) and gives its body's length.
fn run<'c, D: OneRequest>(
    knobs: u8,
    chunks: impl Iterator<Item = &'c [u8]>,
    check_head: impl Fn(&RequestHead, usize, &Limits) -> u64,
) -> Outcome {
    let limits = limits(knobs);
    let mut dec = D::new(limits);
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
                    // After the head, the only error is input after the body.
                    let after_body = dec.is_done() && e == DecodeError::InputAfterBody;
                    assert!(content_length.is_none() || after_body, "error after the head: {e}");
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
                    content_length = Some(check_head(head, d.consumed, &limits));
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
            .expect("a finished decoder wants no more (input after it is an error)");
        assert_eq!((rest.consumed, rest.event), (0, None));
    }
    Outcome {
        events,
        body,
        end: Ok(buf.len()),
    }
}

/// Decodes `wire` whole, then in reads of 1 to 32 bytes (plus len/256, so that large inputs
/// stay fast to run), and checks that the outcome is the same.
pub fn check_read_sizes<D: OneRequest>(
    knobs: u8,
    wire: &[u8],
    check_head: impl Fn(&RequestHead, usize, &Limits) -> u64,
) {
    let whole = run::<D>(knobs, std::iter::once(wire), &check_head);
    let read_size = 1 + usize::from(knobs >> 3) + wire.len() / 256;
    let chunked = run::<D>(knobs, wire.chunks(read_size), &check_head);
    assert_eq!(whole, chunked, "outcome depends on read size {read_size}");
}
