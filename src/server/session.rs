//! One connection's protocol state, whatever the protocol: bytes in, events out, and the
//! framing of responses. This is the only place that knows FastCGI records, SCGI's
//! close-to-end or uwsgi's HTTP status line; the rest of the server speaks of requests, body
//! bytes and ends.
//!
//! Sans-IO like the protocol crate: nothing here touches a socket or a clock.

use std::io::IoSlice;

use protocol::fastcgi::{self, encode};
use protocol::{scgi, uwsgi, Limits, Protocol, RequestHead};
use smallvec::SmallVec;

/// A request's id on its connection: the FastCGI request id; 0 for SCGI's and uwsgi's one
/// request.
pub type Rid = u16;

/// What the web server sent, as the server acts on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A request's head is complete.
    Request { rid: Rid, head: RequestHead },
    /// A piece of a request's body.
    Body { rid: Rid, data: &'a [u8] },
    /// A request's body is complete.
    BodyEnd { rid: Rid },
    /// The web server aborted a request (FastCGI ABORT_REQUEST).
    Abort { rid: Rid },
}

/// Input that breaks the protocol: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

enum Kind {
    /// Waiting for the first byte (a listener that accepts both protocols).
    Detect,
    FastCgi(fastcgi::Connection),
    Scgi(scgi::Decoder),
    Uwsgi(uwsgi::Decoder),
}

/// The protocol state of one connection.
pub struct Session {
    kind: Kind,
    limits: Limits,
    fcgi: fastcgi::Config,
}

impl Session {
    /// A session for `proto`, or told apart by the first byte when `None`.
    pub fn new(proto: Option<Protocol>, limits: Limits, fcgi: fastcgi::Config) -> Session {
        let mut s = Session {
            kind: Kind::Detect,
            limits,
            fcgi,
        };
        if let Some(p) = proto {
            s.kind = s.kind_for(p);
        }
        s
    }

    fn kind_for(&self, p: Protocol) -> Kind {
        match p {
            Protocol::FastCgi => Kind::FastCgi(fastcgi::Connection::new(self.fcgi.clone())),
            Protocol::Scgi => Kind::Scgi(scgi::Decoder::new(self.limits)),
            Protocol::Uwsgi => Kind::Uwsgi(uwsgi::Decoder::new(self.limits)),
        }
    }

    /// Decodes one step from the start of `input`: the bytes consumed and maybe an event.
    /// Zero consumed and no event: more input is needed. Replies the protocol makes without
    /// the application (FastCGI management records, refusals) are appended to `reply`.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        reply: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if let Kind::Detect = self.kind {
            let Some(&first) = input.first() else {
                return Ok((0, None));
            };
            match protocol::detect(first) {
                Some(p) => self.kind = self.kind_for(p),
                None => {
                    return Err(ProtocolError(format!(
                        "neither FastCGI, SCGI nor uwsgi (first byte 0x{first:02x})"
                    )))
                }
            }
        }
        let err = |e: protocol::DecodeError| ProtocolError(e.to_string());
        match &mut self.kind {
            Kind::Detect => unreachable!("detected above"),
            Kind::FastCgi(conn) => {
                let d = conn.decode(input, reply).map_err(err)?;
                let event = d.event.and_then(|e| match e {
                    fastcgi::Event::Request { id, head, .. } => {
                        Some(Event::Request { rid: id, head })
                    }
                    fastcgi::Event::Stdin { id, data } => Some(Event::Body { rid: id, data }),
                    fastcgi::Event::StdinEnd { id } => Some(Event::BodyEnd { rid: id }),
                    fastcgi::Event::Abort { id } => Some(Event::Abort { rid: id }),
                    // Responders have no DATA stream (a FILTER's); it is consumed unread.
                    fastcgi::Event::Data { .. } | fastcgi::Event::DataEnd { .. } => None,
                });
                Ok((d.consumed, event))
            }
            // SCGI and uwsgi: one request per connection, the same events, and nothing after
            // its body (an error).
            Kind::Scgi(dec) => Ok(one_request(dec.decode(input).map_err(err)?)),
            Kind::Uwsgi(dec) => Ok(one_request(dec.decode(input).map_err(err)?)),
        }
    }

    /// Frames response bytes of request `rid` (the head, then body bytes) into `frames`; with
    /// `end`, the response's end too (FastCGI's empty STDOUT and END_REQUEST; an SCGI response
    /// ends with its connection).
    pub fn frame<'a>(
        &mut self,
        rid: Rid,
        head: &'a [u8],
        body: &'a [u8],
        end: bool,
        frames: &mut Frames<'a>,
    ) {
        match &mut self.kind {
            Kind::FastCgi(conn) => {
                let total = head.len() + body.len();
                if total <= encode::MAX_CHUNK {
                    // A small response is one record, however the app cut it.
                    if total > 0 {
                        let pad = encode::padding_for(total);
                        frames.own(&encode::header(fastcgi::STDOUT, rid, total as u16, pad));
                        frames.data(head);
                        frames.data(body);
                        frames.data(&ZEROES[..pad as usize]);
                    }
                } else {
                    for piece in [head, body] {
                        for chunk in piece.chunks(encode::MAX_CHUNK) {
                            let pad = encode::padding_for(chunk.len());
                            let h = encode::header(fastcgi::STDOUT, rid, chunk.len() as u16, pad);
                            frames.own(&h);
                            frames.data(chunk);
                            frames.data(&ZEROES[..pad as usize]);
                        }
                    }
                }
                if end {
                    // The empty STDOUT record, then END_REQUEST (REQUEST_COMPLETE).
                    frames.own(&encode::header(fastcgi::STDOUT, rid, 0, 0));
                    frames.own(&encode::header(fastcgi::END_REQUEST, rid, 8, 0));
                    let status = fastcgi::ProtocolStatus::RequestComplete as u8;
                    frames.own(&[0, 0, 0, 0, status, 0, 0, 0]);
                    conn.finish(rid);
                }
            }
            Kind::Uwsgi(_) => {
                // uwsgi responses are HTTP: the CGI head's `Status: ` becomes the status line
                // (every head the gateway frames starts with it).
                match head.strip_prefix(b"Status: ".as_slice()) {
                    Some(rest) => {
                        frames.own(b"HTTP/1.1 ");
                        frames.data(rest);
                    }
                    None if head.is_empty() => {}
                    None => {
                        frames.own(b"HTTP/1.1 200 OK\r\n");
                        frames.data(head);
                    }
                }
                frames.data(body);
            }
            Kind::Scgi(_) | Kind::Detect => {
                frames.data(head);
                frames.data(body);
            }
        }
    }

    /// Ends request `rid` without its response's end (a response cut off, or one that the
    /// connection's close ends).
    pub fn forget(&mut self, rid: Rid) {
        if let Kind::FastCgi(conn) = &mut self.kind {
            conn.finish(rid);
        }
    }

    /// Whether the web server still owes input (a body not yet ended, also for requests
    /// already answered); a connection is read to that point before it is closed.
    pub fn input_pending(&self) -> bool {
        match &self.kind {
            Kind::Detect => true,
            Kind::FastCgi(conn) => conn.input_pending(),
            Kind::Scgi(dec) => !dec.is_done(),
            Kind::Uwsgi(dec) => !dec.is_done(),
        }
    }

    /// Whether a request not yet answered began arriving, its head not yet whole (FastCGI,
    /// a web server's next request on a kept connection): the connection serves it before it
    /// closes.
    pub fn request_arriving(&self) -> bool {
        match &self.kind {
            Kind::FastCgi(conn) => conn.new_input_pending(),
            _ => false,
        }
    }

    /// Whether a FastCGI request began without KEEP_CONN and the protocol has none active
    /// (it refused it, or it was aborted before its head was whole): the connection is done.
    pub fn fastcgi_done(&self) -> bool {
        matches!(&self.kind, Kind::FastCgi(conn) if !conn.keep_conn() && !conn.has_active())
    }

    /// Whether this is a FastCGI connection.
    pub fn is_fastcgi(&self) -> bool {
        matches!(self.kind, Kind::FastCgi(_))
    }

    /// Whether the connection stays open once its requests are answered: FastCGI with
    /// KEEP_CONN; never SCGI or uwsgi (a response ends with the connection).
    pub fn keeps_open(&self) -> bool {
        match &self.kind {
            Kind::FastCgi(conn) => conn.keep_conn(),
            Kind::Scgi(_) | Kind::Uwsgi(_) | Kind::Detect => false,
        }
    }
}

/// An SCGI or uwsgi decoder's output as the server's events (the one request is rid 0).
fn one_request(d: scgi::Decoded<'_>) -> (usize, Option<Event<'_>>) {
    let event = d.event.map(|e| match e {
        scgi::Event::Request { head } => Event::Request { rid: 0, head },
        scgi::Event::Body(data) => Event::Body { rid: 0, data },
        scgi::Event::End => Event::BodyEnd { rid: 0 },
    });
    (d.consumed, event)
}

const ZEROES: [u8; 8] = [0; 8];

/// Framing bytes owned per frame set: record headers and a request's end.
const OWN_CAP: usize = 1024;
/// Slices per frame set (headers, data, padding).
const PARTS_CAP: usize = 200;
/// Response bytes framed at once: the rest of a larger piece waits for the next call.
pub const FRAME_LIMIT: usize = 16 * encode::MAX_CHUNK;

#[derive(Clone, Copy)]
enum Part<'a> {
    Own(u16, u16),
    Data(&'a [u8]),
}

/// Bytes to write as slices: the framing bytes owned here and the response bytes borrowed
/// from the caller, so that a response goes out in one `writev` and is copied only when the
/// socket does not take all of it. Allocation-free: it lives on the stack.
pub struct Frames<'a> {
    // Inline vectors: not initialised up front (a frame set is made per response write, and
    // most use a few parts of their capacity).
    own: SmallVec<[u8; OWN_CAP]>,
    parts: SmallVec<[Part<'a>; PARTS_CAP]>,
    len: usize,
}

impl<'a> Frames<'a> {
    pub fn new() -> Self {
        Frames {
            own: SmallVec::new(),
            parts: SmallVec::new(),
            len: 0,
        }
    }

    fn own(&mut self, bytes: &[u8]) {
        let start = self.own.len();
        let end = start + bytes.len();
        assert!(
            end <= OWN_CAP && self.parts.len() < PARTS_CAP,
            "frame set full"
        );
        self.own.extend_from_slice(bytes);
        self.len += bytes.len();
        if let Some(Part::Own(_, e)) = self.parts.last_mut() {
            if *e as usize == start {
                *e = end as u16;
                return;
            }
        }
        self.parts.push(Part::Own(start as u16, end as u16));
    }

    fn data(&mut self, d: &'a [u8]) {
        if d.is_empty() {
            return;
        }
        assert!(self.parts.len() < PARTS_CAP, "frame set full");
        self.parts.push(Part::Data(d));
        self.len += d.len();
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    fn slice(&self, p: Part<'a>) -> &[u8] {
        match p {
            Part::Own(s, e) => &self.own[s as usize..e as usize],
            Part::Data(d) => d,
        }
    }

    /// The bytes after the first `skip` as slices for a vectored write.
    pub fn io_slices_from<'s>(&'s self, mut skip: usize, out: &mut Vec<IoSlice<'s>>) {
        out.clear();
        for &p in &self.parts {
            let s = self.slice(p);
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            out.push(IoSlice::new(&s[skip..]));
            skip = 0;
        }
    }

    /// Appends the bytes after the first `skip` (those a write did not take) to `out`.
    pub fn copy_rest(&self, mut skip: usize, out: &mut Vec<u8>) {
        for &p in &self.parts {
            let s = self.slice(p);
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            out.extend_from_slice(&s[skip..]);
            skip = 0;
        }
    }
}

impl Default for Frames<'_> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::fastcgi::KEEP_CONN;

    fn session(proto: Option<Protocol>) -> Session {
        Session::new(proto, Limits::default(), fastcgi::Config::default())
    }

    /// Decodes `wire` fed in pieces of `step` bytes (a step of 0: all at once), as a
    /// connection's read buffer would hold it; returns the events as text.
    fn decode_in_steps(proto: Option<Protocol>, wire: &[u8], step: usize) -> Vec<String> {
        let mut s = session(proto);
        let mut buf = Vec::new();
        let mut reply = Vec::new();
        let mut events = Vec::new();
        let mut fed = 0;
        while fed < wire.len() || !buf.is_empty() {
            let n = if step == 0 { wire.len() } else { step };
            let end = (fed + n).min(wire.len());
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
            let mut pos = 0;
            loop {
                let (used, ev) = s.decode(&buf[pos..], &mut reply).unwrap();
                pos += used;
                match ev {
                    // Body pieces are joined: how they are cut depends on the reads.
                    Some(Event::Body { rid, data }) => match events.last_mut() {
                        Some((r, Some(body))) if *r == rid => {
                            let body: &mut Vec<u8> = body;
                            body.extend_from_slice(data)
                        }
                        _ => events.push((rid, Some(data.to_vec()))),
                    },
                    Some(e) => events.push((u16::MAX, Some(format!("{e:?}").into_bytes()))),
                    None if used == 0 => break,
                    None => {}
                }
            }
            buf.drain(..pos);
            if fed == wire.len() && pos == 0 {
                break;
            }
        }
        events
            .into_iter()
            .map(|(rid, b)| match rid {
                u16::MAX => String::from_utf8(b.unwrap()).unwrap(),
                rid => format!("Body {rid}: {}", String::from_utf8_lossy(&b.unwrap())),
            })
            .collect()
    }

    fn fcgi_wire() -> Vec<u8> {
        let mut w = Vec::new();
        encode::begin_request(1, fastcgi::RESPONDER, KEEP_CONN, &mut w);
        encode::params(
            1,
            [(&b"CONTENT_LENGTH"[..], &b"11"[..]), (b"A", b"b")],
            &mut w,
        );
        encode::stream(fastcgi::STDIN, 1, b"hello ", &mut w);
        encode::stream(fastcgi::STDIN, 1, b"world", &mut w);
        encode::stream_end(fastcgi::STDIN, 1, &mut w);
        w
    }

    fn scgi_wire() -> Vec<u8> {
        let mut w = Vec::new();
        scgi::encode_request(11, [(&b"A"[..], &b"b"[..])], &mut w);
        w.extend_from_slice(b"hello world");
        w
    }

    fn uwsgi_wire() -> Vec<u8> {
        let mut w = Vec::new();
        uwsgi::encode_request(11, [(&b"A"[..], &b"b"[..])], &mut w);
        w.extend_from_slice(b"hello world");
        w
    }

    #[test]
    fn every_protocol_decodes_the_same_split_at_every_offset() {
        for (proto, wire) in [
            (Some(Protocol::FastCgi), fcgi_wire()),
            (None, fcgi_wire()),
            (Some(Protocol::Scgi), scgi_wire()),
            (None, scgi_wire()),
            (Some(Protocol::Uwsgi), uwsgi_wire()),
            (None, uwsgi_wire()),
        ] {
            let whole = decode_in_steps(proto, &wire, 0);
            assert_eq!(whole.len(), 3, "{whole:#?}");
            assert!(whole[0].starts_with("Request {"), "{whole:?}");
            assert!(whole[1].ends_with(": hello world"), "{whole:?}");
            assert!(whole[2].starts_with("BodyEnd"), "{whole:?}");
            for step in 1..=wire.len() {
                assert_eq!(decode_in_steps(proto, &wire, step), whole, "step {step}");
            }
        }
    }

    #[test]
    fn input_is_pending_until_the_body_ended() {
        for (proto, wire) in [
            (Protocol::FastCgi, fcgi_wire()),
            (Protocol::Scgi, scgi_wire()),
            (Protocol::Uwsgi, uwsgi_wire()),
        ] {
            let mut s = session(Some(proto));
            let mut reply = Vec::new();
            let mut pos = 0;
            let mut ended = false;
            while !ended {
                let (used, ev) = s.decode(&wire[pos..], &mut reply).unwrap();
                ended = matches!(ev, Some(Event::BodyEnd { .. }));
                assert!(ended || s.input_pending(), "{proto:?}");
                pos += used;
            }
            assert!(!s.input_pending(), "{proto:?}");
        }
    }

    #[test]
    fn input_after_a_one_request_body_is_an_error() {
        // A web server that announced a shorter body than it sends: the request, its body of
        // CONTENT_LENGTH bytes and its end, then an error for what follows, however split.
        for (proto, wire) in [
            (Protocol::Scgi, scgi_wire()),
            (Protocol::Uwsgi, uwsgi_wire()),
        ] {
            let mut wire = wire;
            wire.extend_from_slice(b"more");
            let mut s = session(Some(proto));
            let mut reply = Vec::new();
            let mut pos = 0;
            let mut events = 0;
            let err = loop {
                match s.decode(&wire[pos..], &mut reply) {
                    Ok((used, ev)) => {
                        assert!(used > 0 || ev.is_some(), "{proto:?} stalled at {pos}");
                        events += usize::from(ev.is_some());
                        pos += used;
                    }
                    Err(e) => break e,
                }
            };
            assert_eq!(events, 3, "{proto:?}");
            assert_eq!(pos, wire.len() - 4, "{proto:?}");
            assert!(err.0.contains("CONTENT_LENGTH"), "{}", err.0);
        }
    }

    fn written(frames: &Frames<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        frames.copy_rest(0, &mut out);
        out
    }

    #[test]
    fn responses_are_framed_per_protocol() {
        let mut s = session(Some(Protocol::FastCgi));
        let mut reply = Vec::new();
        let wire = fcgi_wire();
        let (used, _) = s.decode(&wire, &mut reply).unwrap();
        let (_, _) = s.decode(&wire[used..], &mut reply).unwrap();
        let body = vec![b'x'; encode::MAX_CHUNK + 3];
        let mut frames = Frames::new();
        s.frame(1, b"Status: 200 OK\r\n\r\n", &body, true, &mut frames);
        let mut expected = Vec::new();
        encode::stdout(1, b"Status: 200 OK\r\n\r\n", &mut expected);
        encode::stdout(1, &body, &mut expected);
        // A small head and body go in one record.
        let mut small = Frames::new();
        let mut s2 = session(Some(Protocol::Scgi));
        s2.frame(0, b"", b"", false, &mut small);
        assert_eq!(small.len(), 0);
        encode::end_request(
            1,
            0,
            fastcgi::ProtocolStatus::RequestComplete,
            &mut expected,
        );
        assert_eq!(written(&frames), expected);
        assert_eq!(frames.len(), expected.len());
        // What a short write left is copied from where it stopped.
        let mut rest = Vec::new();
        frames.copy_rest(5, &mut rest);
        assert_eq!(rest, expected[5..]);

        let mut s = session(Some(Protocol::Scgi));
        let mut frames = Frames::new();
        s.frame(0, b"Status: 200 OK\r\n\r\n", b"hi", true, &mut frames);
        assert_eq!(written(&frames), b"Status: 200 OK\r\n\r\nhi");
        assert!(!s.keeps_open());
    }
}
