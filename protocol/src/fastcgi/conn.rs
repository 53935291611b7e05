//! The application side of one FastCGI connection: which requests are active, their PARAMS
//! streams being collected, and the management records answered on the spot.

use super::encode;
use super::params::{decode_params, parse_pair};
use super::*;
use crate::{DecodeError, Limits, RequestHead};

/// How a connection behaves; the management values are what GET_VALUES is answered with.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    /// Accept several concurrent requests on this connection. When false, a BEGIN_REQUEST for a
    /// second request while one is active is answered with `FCGI_CANT_MPX_CONN`.
    pub multiplex: bool,
    /// `FCGI_MAX_CONNS` answered to GET_VALUES.
    pub max_conns: u32,
    /// `FCGI_MAX_REQS` answered to GET_VALUES.
    pub max_reqs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            multiplex: true,
            max_conns: 1024,
            max_reqs: 1024,
        }
    }
}

/// What the decoder saw. Data is borrowed from the input given to [`Connection::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A responder request is ready to run: its BEGIN_REQUEST and whole PARAMS stream arrived.
    Request {
        id: u16,
        head: RequestHead,
        keep_conn: bool,
    },
    /// A piece of the request body.
    Stdin { id: u16, data: &'a [u8] },
    /// The body is complete.
    StdinEnd { id: u16 },
    /// A piece of the DATA stream.
    Data { id: u16, data: &'a [u8] },
    /// The DATA stream is complete.
    DataEnd { id: u16 },
    /// The web server asked to abort the request. It stays active until the caller ends it
    /// (with [`Connection::end_request`]), as the specification requires an END_REQUEST reply.
    Abort { id: u16 },
}

/// The result of one decoding step: the bytes consumed and, possibly, an event. Zero bytes
/// consumed and no event means more input is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

#[derive(Debug)]
struct Active {
    id: u16,
    keep_conn: bool,
    /// The PARAMS stream while it is being collected; `None` once the request was surfaced.
    params: Option<Vec<u8>>,
    stdin_open: bool,
    data_open: bool,
}

/// A STDIN or DATA record whose content is passed on as it arrives: what is left of it.
#[derive(Debug, Clone, Copy)]
struct Partial {
    id: u16,
    record_type: u8,
    content: usize,
    padding: usize,
}

/// One connection's decoding state.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    active: Vec<Active>,
    /// The STDIN or DATA record being read, when its header came and its content has not all.
    partial: Option<Partial>,
    /// Requests already ended whose STDIN stream the web server is still sending: their
    /// records are consumed without events until the stream's end (or a new BEGIN_REQUEST
    /// for the id, which abandons it).
    draining: Vec<u16>,
    keep_conn: bool,
    overloaded: bool,
}

impl Connection {
    pub fn new(config: Config) -> Self {
        Connection {
            config,
            active: Vec::new(),
            partial: None,
            draining: Vec::new(),
            keep_conn: true,
            overloaded: false,
        }
    }

    /// Decodes at most one record from the start of `input`. Replies the protocol requires
    /// without involving the application (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST for an
    /// unknown role, a refused multiplexed request or overload) are appended to `out`.
    ///
    /// A STDIN or DATA record is not waited for whole: once its header is in, its content is
    /// passed on as it arrives (one event per piece, the header and padding consumed without
    /// one), so a body is handed on however the input is cut, and no more than a header need
    /// be kept between two reads.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<Decoded<'a>, DecodeError> {
        if self.partial.is_some() {
            return Ok(self.continue_partial(input));
        }
        let Some((rec, consumed)) = parse_record(input)? else {
            return self.start_partial(input);
        };
        let event = self.handle(rec, out)?;
        Ok(Decoded { consumed, event })
    }

    /// An incomplete record at the start of `input`: when it is a STDIN or DATA record with
    /// content, its header is consumed (checked as a whole record would be) and the content
    /// that came with it passed on.
    fn start_partial<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let wait = Decoded {
            consumed: 0,
            event: None,
        };
        let Some(h) = parse_header(input) else {
            return Ok(wait);
        };
        let stream = matches!(h.record_type, STDIN | DATA) && h.request_id != 0;
        if !stream || h.content_len == 0 {
            return Ok(wait);
        }
        if let Some(pos) = self.active.iter().position(|a| a.id == h.request_id) {
            self.check_stream(pos, h.record_type)?;
        }
        self.partial = Some(Partial {
            id: h.request_id,
            record_type: h.record_type,
            content: usize::from(h.content_len),
            padding: usize::from(h.padding_len),
        });
        let d = self.continue_partial(&input[HEADER_LEN..]);
        Ok(Decoded {
            consumed: HEADER_LEN + d.consumed,
            event: d.event,
        })
    }

    /// The next piece of the partial record: content (an event, unless its request is not
    /// active), then padding.
    fn continue_partial<'a>(&mut self, input: &'a [u8]) -> Decoded<'a> {
        let Some(p) = self.partial.as_mut() else {
            unreachable!("called with a partial record")
        };
        let from_content = p.content > 0;
        let n = if from_content {
            p.content.min(input.len())
        } else {
            p.padding.min(input.len())
        };
        if from_content {
            p.content -= n;
        } else {
            p.padding -= n;
        }
        let Partial {
            id, record_type, ..
        } = *p;
        if p.content == 0 && p.padding == 0 {
            self.partial = None;
        }
        let data = &input[..n];
        let event = match record_type {
            STDIN => Event::Stdin { id, data },
            _ => Event::Data { id, data },
        };
        let event = (from_content && n > 0 && self.is_active(id)).then_some(event);
        Decoded { consumed: n, event }
    }

    /// Checks that active request `pos` may get content on stream `kind` (STDIN or DATA).
    fn check_stream(&self, pos: usize, kind: u8) -> Result<(), DecodeError> {
        let req = &self.active[pos];
        let unexpected = |reason| DecodeError::UnexpectedRecord {
            record_type: kind,
            request_id: req.id,
            reason,
        };
        if req.params.is_some() {
            return Err(unexpected("body before the PARAMS stream ended"));
        }
        let open = if kind == STDIN {
            req.stdin_open
        } else {
            req.data_open
        };
        if !open {
            return Err(unexpected("stream data after its end"));
        }
        Ok(())
    }

    fn handle<'a>(
        &mut self,
        rec: Record<'a>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Event<'a>>, DecodeError> {
        let id = rec.header.request_id;
        let kind = rec.header.record_type;
        let unexpected = |reason| DecodeError::UnexpectedRecord {
            record_type: kind,
            request_id: id,
            reason,
        };
        if id == 0 {
            match kind {
                GET_VALUES => self.get_values(rec.content, out)?,
                _ => encode::unknown_type(kind, out),
            }
            return Ok(None);
        }
        if kind == BEGIN_REQUEST {
            return self.begin(id, rec.content, out).map(|()| None);
        }
        let Some(pos) = self.active.iter().position(|a| a.id == id) else {
            if kind == STDIN && rec.content.is_empty() {
                self.draining.retain(|&d| d != id);
            }
            // Records for inactive requests are ignored (they may belong to a request refused
            // or ended just before the web server noticed).
            return match kind {
                ABORT_REQUEST | PARAMS | STDIN | DATA => Ok(None),
                _ => Err(unexpected("not a record type a web server sends")),
            };
        };
        let req = &mut self.active[pos];
        match kind {
            PARAMS => {
                let Some(block) = req.params.as_mut() else {
                    return Err(unexpected("PARAMS after the PARAMS stream ended"));
                };
                if !rec.content.is_empty() {
                    if block.len() + rec.content.len() > self.config.limits.max_params_bytes {
                        return Err(DecodeError::ParamsTooLarge {
                            limit: self.config.limits.max_params_bytes,
                        });
                    }
                    block.extend_from_slice(rec.content);
                    return Ok(None);
                }
                let block = req.params.take().unwrap_or_default();
                let head = decode_params(block, &self.config.limits)?;
                Ok(Some(Event::Request {
                    id,
                    head,
                    keep_conn: req.keep_conn,
                }))
            }
            STDIN | DATA => {
                self.check_stream(pos, kind)?;
                let req = &mut self.active[pos];
                let open = if kind == STDIN {
                    &mut req.stdin_open
                } else {
                    &mut req.data_open
                };
                let data = rec.content;
                if data.is_empty() {
                    *open = false;
                }
                Ok(Some(match (kind, data.is_empty()) {
                    (STDIN, false) => Event::Stdin { id, data },
                    (STDIN, true) => Event::StdinEnd { id },
                    (_, false) => Event::Data { id, data },
                    (_, true) => Event::DataEnd { id },
                }))
            }
            // Aborted before its PARAMS ended: the caller never saw it, so it ends here, with
            // the END_REQUEST the web server waits for.
            ABORT_REQUEST if req.params.is_some() => {
                self.active.remove(pos);
                encode::end_request_record(id, 0, ProtocolStatus::RequestComplete, out);
                Ok(None)
            }
            ABORT_REQUEST => Ok(Some(Event::Abort { id })),
            _ => Err(unexpected("not a record type a web server sends")),
        }
    }

    fn begin(&mut self, id: u16, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let &[r0, r1, flags, ..] = body else {
            return Err(DecodeError::BadBeginRequest);
        };
        if body.len() != 8 {
            return Err(DecodeError::BadBeginRequest);
        }
        if self.active.iter().any(|a| a.id == id) {
            return Err(DecodeError::UnexpectedRecord {
                record_type: BEGIN_REQUEST,
                request_id: id,
                reason: "BEGIN_REQUEST for a request id that is active",
            });
        }
        let keep_conn = flags & KEEP_CONN != 0;
        self.keep_conn = keep_conn;
        self.draining.retain(|&d| d != id);
        let role = u16::from_be_bytes([r0, r1]);
        let refusal = if role != RESPONDER {
            Some(ProtocolStatus::UnknownRole)
        } else if !self.active.is_empty() && !self.config.multiplex {
            Some(ProtocolStatus::CantMpxConn)
        } else if self.overloaded || self.active.len() >= self.config.limits.max_requests {
            Some(ProtocolStatus::Overloaded)
        } else {
            None
        };
        match refusal {
            Some(status) => encode::end_request_record(id, 0, status, out),
            None => self.active.push(Active {
                id,
                keep_conn,
                params: Some(Vec::new()),
                stdin_open: true,
                data_open: true,
            }),
        }
        Ok(())
    }

    fn get_values(&self, content: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut known: Vec<(&[u8], String)> = Vec::new();
        let mut pos = 0;
        while pos < content.len() {
            let Some((name, _, used)) = parse_pair(&content[pos..])? else {
                return Err(DecodeError::BadParams("truncated GET_VALUES"));
            };
            let name = &content[pos + name.start..pos + name.end];
            let value = match name {
                b"FCGI_MAX_CONNS" => self.config.max_conns.to_string(),
                b"FCGI_MAX_REQS" => self.config.max_reqs.to_string(),
                b"FCGI_MPXS_CONNS" => u8::from(self.config.multiplex).to_string(),
                _ => String::new(),
            };
            // Each variable is answered once, however often it is asked for: the answer stays
            // a few bytes (a record of names repeated up to 64 KiB would otherwise need an
            // answer over a record's 65535 bytes).
            if !value.is_empty() && !known.iter().any(|(n, _)| *n == name) {
                known.push((name, value));
            }
            pos += used;
        }
        encode::get_values_result(known.iter().map(|(n, v)| (*n, v.as_bytes())), out);
        Ok(())
    }

    /// Ends an active request: the empty STDOUT record and END_REQUEST (REQUEST_COMPLETE) are
    /// appended to `out`, and the id becomes inactive.
    pub fn end_request(&mut self, id: u16, app_status: u32, out: &mut Vec<u8>) {
        encode::end_request(id, app_status, ProtocolStatus::RequestComplete, out);
        self.finish(id);
    }

    /// Marks a request inactive, for a caller that encoded its END_REQUEST itself.
    pub fn finish(&mut self, id: u16) {
        if let Some(pos) = self.active.iter().position(|a| a.id == id) {
            let req = self.active.swap_remove(pos);
            if req.stdin_open {
                self.draining.push(id);
            }
        }
    }

    /// Whether the web server still owes input: a request's PARAMS or STDIN stream has not
    /// ended, also for a request already ended (its unread body). A connection that is to be
    /// closed is read to this point first, or the close resets it while the web server is
    /// still writing.
    pub fn input_pending(&self) -> bool {
        !self.draining.is_empty()
            || self.partial.is_some()
            || self.active.iter().any(|a| a.stdin_open)
    }

    /// Whether a request not yet ended owes input: one has begun, or a record has begun
    /// after every ended request's input (a web server that sends its next request on a kept
    /// connection). Input that only requests already ended owe (their unread bodies) is not
    /// counted.
    pub fn new_input_pending(&self) -> bool {
        !self.active.is_empty() || (self.partial.is_some() && self.draining.is_empty())
    }

    /// Whether any request is active (begun, not yet ended).
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Whether `id` is an active request.
    pub fn is_active(&self, id: u16) -> bool {
        self.active.iter().any(|a| a.id == id)
    }

    /// The number of active requests.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Whether the web server wants the connection kept once no request is active (the
    /// KEEP_CONN flag of the latest BEGIN_REQUEST; true before any).
    pub fn keep_conn(&self) -> bool {
        self.keep_conn
    }

    /// While set, new requests are refused with `FCGI_OVERLOADED`.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(conn: &mut Connection, mut input: &[u8], out: &mut Vec<u8>) -> Vec<String> {
        let mut events = Vec::new();
        loop {
            let d = conn.decode(input, out).unwrap();
            if d.consumed == 0 && d.event.is_none() {
                return events;
            }
            if let Some(e) = d.event {
                events.push(format!("{e:?}"));
            }
            input = &input[d.consumed..];
        }
    }

    fn request(id: u16, flags: u8, body: &[u8], out: &mut Vec<u8>) {
        encode::begin_request(id, RESPONDER, flags, out);
        encode::params(
            id,
            [
                (&b"REQUEST_METHOD"[..], &b"POST"[..]),
                (b"CONTENT_LENGTH", b"3"),
            ],
            out,
        );
        encode::stream(STDIN, id, body, out);
        encode::stream_end(STDIN, id, out);
    }

    #[test]
    fn interleaved_requests_are_tracked_by_id() {
        let mut wire = Vec::new();
        encode::begin_request(1, RESPONDER, KEEP_CONN, &mut wire);
        encode::begin_request(2, RESPONDER, KEEP_CONN, &mut wire);
        encode::params(2, [(&b"A"[..], &b"2"[..])], &mut wire);
        encode::params(1, [(&b"A"[..], &b"1"[..])], &mut wire);
        encode::stream(STDIN, 1, b"one", &mut wire);
        encode::stream(STDIN, 2, b"two", &mut wire);
        encode::stream_end(STDIN, 2, &mut wire);
        encode::abort_request(1, &mut wire);
        let mut conn = Connection::new(Config::default());
        let mut out = Vec::new();
        let events = drain(&mut conn, &wire, &mut out);
        assert_eq!(events.len(), 6, "{events:#?}");
        assert!(events[0].starts_with("Request { id: 2"));
        assert!(events[1].starts_with("Request { id: 1"));
        assert_eq!(events[5], "Abort { id: 1 }");
        assert!(out.is_empty());
        assert_eq!(conn.active_count(), 2);
        conn.end_request(1, 0, &mut out);
        assert_eq!(conn.active_count(), 1);
        assert!(conn.keep_conn());
    }

    #[test]
    fn refusals_are_answered_with_end_request() {
        let mut wire = Vec::new();
        encode::begin_request(1, AUTHORIZER, 0, &mut wire);
        encode::params(1, [(&b"A"[..], &b"1"[..])], &mut wire);
        request(2, 0, b"abc", &mut wire);
        request(3, 0, b"abc", &mut wire);
        let mut conn = Connection::new(Config {
            multiplex: false,
            ..Config::default()
        });
        let mut out = Vec::new();
        let events = drain(&mut conn, &wire, &mut out);
        // Request 1 (unknown role) and 3 (no multiplexing) were refused; 2 runs.
        assert_eq!(events.len(), 3, "{events:#?}");
        let mut expected = Vec::new();
        encode::end_request_record(1, 0, ProtocolStatus::UnknownRole, &mut expected);
        encode::end_request_record(3, 0, ProtocolStatus::CantMpxConn, &mut expected);
        assert_eq!(out, expected);
        assert!(!conn.keep_conn());
    }

    #[test]
    fn management_records() {
        let mut wire = Vec::new();
        encode::get_values(
            [
                &b"FCGI_MAX_CONNS"[..],
                b"FCGI_MPXS_CONNS",
                b"NOT_A_VALUE",
                b"FCGI_MAX_REQS",
            ],
            &mut wire,
        );
        encode::record(200, 0, b"", &mut wire);
        let mut conn = Connection::new(Config {
            max_conns: 7,
            max_reqs: 9,
            ..Config::default()
        });
        let mut out = Vec::new();
        assert!(drain(&mut conn, &wire, &mut out).is_empty());
        let mut expected = Vec::new();
        encode::get_values_result(
            [
                (&b"FCGI_MAX_CONNS"[..], &b"7"[..]),
                (b"FCGI_MPXS_CONNS", b"1"),
                (b"FCGI_MAX_REQS", b"9"),
            ],
            &mut expected,
        );
        encode::unknown_type(200, &mut expected);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_request_aborted_before_its_params_ended_is_ended_here() {
        let mut wire = Vec::new();
        encode::begin_request(1, RESPONDER, KEEP_CONN, &mut wire);
        encode::record(PARAMS, 1, &[1, 1, b'A', b'b'], &mut wire);
        encode::record(ABORT_REQUEST, 1, b"", &mut wire);
        // The id is free again: nginx, for one, uses id 1 for every request.
        encode::begin_request(1, RESPONDER, KEEP_CONN, &mut wire);
        encode::params(1, [(&b"A"[..], &b"c"[..])], &mut wire);
        let mut conn = Connection::new(Config::default());
        let mut out = Vec::new();
        let events = drain(&mut conn, &wire, &mut out);
        let mut expected = Vec::new();
        encode::end_request_record(1, 0, ProtocolStatus::RequestComplete, &mut expected);
        assert_eq!(out, expected);
        assert_eq!(events.len(), 1, "{events:#?}");
        assert!(events[0].contains("\"A\": \"c\""), "{events:#?}");
    }

    #[test]
    fn a_variable_asked_for_many_times_is_answered_once() {
        // 64,000 bytes of names: the largest answer would not fit in a record.
        let mut wire = Vec::new();
        encode::get_values(std::iter::repeat_n(&b"FCGI_MAX_CONNS"[..], 4000), &mut wire);
        let mut conn = Connection::new(Config {
            max_conns: 7,
            ..Config::default()
        });
        let mut out = Vec::new();
        assert!(drain(&mut conn, &wire, &mut out).is_empty());
        let mut expected = Vec::new();
        encode::get_values_result([(&b"FCGI_MAX_CONNS"[..], &b"7"[..])], &mut expected);
        assert_eq!(out, expected);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut conn = Connection::new(Config::default());
        let mut out = Vec::new();
        let mut wire = Vec::new();
        encode::begin_request(1, RESPONDER, 0, &mut wire);
        encode::stream(STDIN, 1, b"early", &mut wire);
        let d = conn.decode(&wire, &mut out).unwrap();
        assert!(matches!(
            conn.decode(&wire[d.consumed..], &mut out),
            Err(DecodeError::UnexpectedRecord { .. })
        ));
        let mut conn = Connection::new(Config::default());
        let mut wire = Vec::new();
        encode::record(STDOUT, 1, b"x", &mut wire);
        assert!(conn.decode(&wire, &mut out).is_err());
        let mut conn = Connection::new(Config::default());
        let mut wire = Vec::new();
        encode::record(BEGIN_REQUEST, 1, &[0, 1, 0], &mut wire);
        assert_eq!(
            conn.decode(&wire, &mut out),
            Err(DecodeError::BadBeginRequest)
        );
    }

    #[test]
    fn a_stream_record_is_passed_on_as_it_arrives() {
        let mut conn = Connection::new(Config::default());
        let mut out = Vec::new();
        let mut wire = Vec::new();
        request(1, 0, b"", &mut wire);
        // Everything but the STDIN stream's end.
        let head_len = wire.len() - HEADER_LEN;
        assert_eq!(drain(&mut conn, &wire[..head_len], &mut out).len(), 1);
        let mut rec = Vec::new();
        encode::record(STDIN, 1, b"abcde", &mut rec); // 3 bytes of padding
        assert_eq!(rec.len(), HEADER_LEN + 8);
        // A header alone is consumed, with nothing to pass on yet.
        let d = conn.decode(&rec[..HEADER_LEN], &mut out).unwrap();
        assert_eq!((d.consumed, d.event), (HEADER_LEN, None));
        assert!(conn.input_pending());
        let d = conn
            .decode(&rec[HEADER_LEN..HEADER_LEN + 2], &mut out)
            .unwrap();
        let ab = Event::Stdin { id: 1, data: b"ab" };
        assert_eq!((d.consumed, d.event), (2, Some(ab)));
        // The rest of the content and the padding, then the next record: one step each.
        let rest = [&rec[HEADER_LEN + 2..], &wire[head_len..]].concat();
        let d = conn.decode(&rest, &mut out).unwrap();
        let cde = Event::Stdin {
            id: 1,
            data: b"cde",
        };
        assert_eq!((d.consumed, d.event), (3, Some(cde)));
        let d = conn.decode(&rest[3..], &mut out).unwrap();
        assert_eq!((d.consumed, d.event), (3, None));
        let d = conn.decode(&rest[6..], &mut out).unwrap();
        assert_eq!(d.event, Some(Event::StdinEnd { id: 1 }));
        assert!(out.is_empty());

        // A request ended within a record: the rest of its content is consumed unseen.
        let mut conn = Connection::new(Config::default());
        drain(&mut conn, &wire[..head_len], &mut out);
        let d = conn.decode(&rec[..HEADER_LEN + 1], &mut out).unwrap();
        assert_eq!(d.event, Some(Event::Stdin { id: 1, data: b"a" }));
        conn.end_request(1, 0, &mut out);
        let d = conn.decode(&rec[HEADER_LEN + 1..], &mut out).unwrap();
        assert_eq!((d.consumed, d.event), (4, None));
    }

    #[test]
    fn a_stream_record_is_checked_by_its_header() {
        // Body before the PARAMS stream ended: an error as soon as the header is in.
        let mut conn = Connection::new(Config::default());
        let mut out = Vec::new();
        let mut wire = Vec::new();
        encode::begin_request(1, RESPONDER, 0, &mut wire);
        let begin = wire.len();
        encode::stream(STDIN, 1, b"early", &mut wire);
        assert_eq!(conn.decode(&wire, &mut out).unwrap().consumed, begin);
        assert!(matches!(
            conn.decode(&wire[begin..begin + HEADER_LEN], &mut out),
            Err(DecodeError::UnexpectedRecord { .. })
        ));
        // A record of a request that is not active is read through without events.
        let mut conn = Connection::new(Config::default());
        let mut rec = Vec::new();
        encode::record(STDIN, 7, b"ignored", &mut rec);
        let d = conn.decode(&rec[..HEADER_LEN + 3], &mut out).unwrap();
        assert_eq!((d.consumed, d.event), (HEADER_LEN + 3, None));
        let d = conn.decode(&rec[HEADER_LEN + 3..], &mut out).unwrap();
        assert_eq!((d.consumed, d.event), (4, None));
        let d = conn.decode(&rec[HEADER_LEN + 7..], &mut out).unwrap();
        assert_eq!((d.consumed, d.event), (1, None)); // the padding
        assert!(!conn.input_pending());
    }

    #[test]
    fn input_is_pending_until_every_stdin_ended() {
        let mut conn = Connection::new(Config::default());
        let mut out = Vec::new();
        assert!(!conn.input_pending());
        let mut wire = Vec::new();
        encode::begin_request(1, RESPONDER, 0, &mut wire);
        encode::params(1, [(&b"A"[..], &b"1"[..])], &mut wire);
        encode::stream(STDIN, 1, b"part", &mut wire);
        let events = drain(&mut conn, &wire, &mut out);
        assert_eq!(events.len(), 2);
        assert!(conn.input_pending());
        // Answered before its body ended: the rest is consumed without events.
        conn.end_request(1, 0, &mut out);
        assert!(conn.input_pending());
        let mut rest = Vec::new();
        encode::stream(STDIN, 1, b"more", &mut rest);
        assert!(drain(&mut conn, &rest, &mut out).is_empty());
        assert!(conn.input_pending());
        let mut end = Vec::new();
        encode::stream_end(STDIN, 1, &mut end);
        assert!(drain(&mut conn, &end, &mut out).is_empty());
        assert!(!conn.input_pending());
        // A new BEGIN_REQUEST for the id abandons an unfinished stream.
        let mut wire = Vec::new();
        encode::begin_request(2, RESPONDER, KEEP_CONN, &mut wire);
        encode::params(2, [(&b"A"[..], &b"1"[..])], &mut wire);
        drain(&mut conn, &wire, &mut out);
        conn.end_request(2, 0, &mut out);
        assert!(conn.input_pending());
        let mut again = Vec::new();
        encode::begin_request(2, RESPONDER, KEEP_CONN, &mut again);
        drain(&mut conn, &again, &mut out);
        assert!(conn.input_pending(), "the new request's streams are open");
        assert_eq!(conn.active_count(), 1);
    }

    #[test]
    fn params_limit_is_enforced_while_collecting() {
        let mut conn = Connection::new(Config {
            limits: Limits {
                max_params_bytes: 100,
                ..Limits::default()
            },
            ..Config::default()
        });
        let mut wire = Vec::new();
        encode::begin_request(1, RESPONDER, 0, &mut wire);
        encode::record(PARAMS, 1, &[b'x'; 60], &mut wire);
        encode::record(PARAMS, 1, &[b'x'; 60], &mut wire);
        let mut out = Vec::new();
        let mut input = &wire[..];
        let mut result = Ok(());
        while !input.is_empty() {
            match conn.decode(input, &mut out) {
                Ok(d) => input = &input[d.consumed..],
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        assert_eq!(result, Err(DecodeError::ParamsTooLarge { limit: 100 }));
    }
}
