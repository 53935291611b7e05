//! What SCGI and uwsgi share: one request per connection, a head, then exactly CONTENT_LENGTH
//! body bytes. Each protocol's `Decoder` parses its own head and leaves the rest to
//! [`Machine`]; both yield the same [`Event`]s, so that a server handles them with one piece of
//! code.

use crate::{DecodeError, Limits, RequestHead};

/// What the decoder saw. Body data is borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The head is complete; its CONTENT_LENGTH was checked.
    Request { head: RequestHead },
    /// A piece of the body.
    Body(&'a [u8]),
    /// The body is complete (right after `Request` when CONTENT_LENGTH is 0).
    End,
}

/// Bytes consumed and, possibly, an event; zero and `None` means more input is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

impl Decoded<'_> {
    /// More input is needed.
    pub(crate) const NONE: Decoded<'static> = Decoded {
        consumed: 0,
        event: None,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body { remaining: u64 },
    Done,
}

/// One connection's decoding state.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) limits: Limits,
    state: State,
}

impl Machine {
    pub(crate) fn new(limits: Limits) -> Self {
        Machine {
            limits,
            state: State::Head,
        }
    }

    /// Whether the head is still to come (the protocol's decoder parses it, then calls
    /// [`Machine::request`]).
    pub(crate) fn wants_head(&self) -> bool {
        self.state == State::Head
    }

    /// The head is parsed: it took `consumed` bytes and announced a body of `len`.
    pub(crate) fn request(
        &mut self,
        head: RequestHead,
        consumed: usize,
        len: u64,
    ) -> Decoded<'static> {
        self.state = State::Body { remaining: len };
        Decoded {
            consumed,
            event: Some(Event::Request { head }),
        }
    }

    /// Decodes the next event after the head from the start of `input`. Input after the body
    /// is an error: a web server sends none, unless it announced a shorter body than it sends.
    pub(crate) fn body<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        Ok(match self.state {
            State::Body { remaining: 0 } => {
                self.state = State::Done;
                Decoded {
                    consumed: 0,
                    event: Some(Event::End),
                }
            }
            State::Body { remaining } if !input.is_empty() => {
                let n = remaining.min(input.len() as u64) as usize;
                self.state = State::Body {
                    remaining: remaining - n as u64,
                };
                Decoded {
                    consumed: n,
                    event: Some(Event::Body(&input[..n])),
                }
            }
            State::Done if !input.is_empty() => return Err(DecodeError::InputAfterBody),
            _ => Decoded::NONE,
        })
    }

    /// Whether the whole request, body included, has been decoded.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }
}
