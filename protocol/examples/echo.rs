//! Decodes a FastCGI request from bytes and encodes a response that echoes its body.
//!
//!     cargo run -p wsgi-gateway-protocol --example echo
//!
//! No sockets: the bytes a web server would send are built with the client-side encoders and
//! handed to the decoder in small pieces, the way reads from a socket arrive.

use protocol::cgi::{encode_response_head, parse_response_head};
use protocol::fastcgi::{self, encode, Config, Connection, Event};
use protocol::DecodeError;

fn main() -> Result<(), DecodeError> {
    // What nginx would send for `POST /echo` with a 13-byte body.
    let mut wire = Vec::new();
    encode::begin_request(1, fastcgi::RESPONDER, fastcgi::KEEP_CONN, &mut wire);
    encode::params(
        1,
        [
            (&b"REQUEST_METHOD"[..], &b"POST"[..]),
            (b"SCRIPT_NAME", b"/echo"),
            (b"CONTENT_LENGTH", b"13"),
            (b"CONTENT_TYPE", b"text/plain"),
        ],
        &mut wire,
    );
    encode::stream(fastcgi::STDIN, 1, b"hello, world!", &mut wire);
    encode::stream_end(fastcgi::STDIN, 1, &mut wire);

    // The application side: append what arrived, decode until more is needed, drop what was
    // consumed. `out` collects every byte to write back to the web server.
    let mut conn = Connection::new(Config::default());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut content_type = Vec::new();
    for read in wire.chunks(7) {
        buf.extend_from_slice(read);
        let mut start = 0;
        loop {
            let d = conn.decode(&buf[start..], &mut out)?;
            if d.consumed == 0 && d.event.is_none() {
                break; // a record is incomplete: wait for the next read
            }
            start += d.consumed;
            match d.event {
                Some(Event::Request { id, head, .. }) => {
                    println!("request {id}: {head:?}");
                    content_type = head.get(b"CONTENT_TYPE").unwrap_or(b"").to_vec();
                }
                Some(Event::Stdin { data, .. }) => body.extend_from_slice(data),
                Some(Event::StdinEnd { id }) => {
                    // The whole body is in: answer with a CGI-style head and the body back.
                    let mut response = Vec::new();
                    encode_response_head(
                        b"200 OK",
                        [(&b"Content-Type"[..], &content_type[..])],
                        &mut response,
                    );
                    response.extend_from_slice(&body);
                    encode::stdout(id, &response, &mut out);
                    conn.end_request(id, 0, &mut out);
                }
                Some(other) => println!("ignored: {other:?}"),
                None => {} // a record that carried no event (PARAMS content, say)
            }
        }
        buf.drain(..start);
    }

    // What the web server gets back: STDOUT records, the empty STDOUT, END_REQUEST.
    let mut pos = 0;
    let mut stdout = Vec::new();
    while let Some((record, used)) = fastcgi::parse_record(&out[pos..])? {
        println!(
            "record type {} id {}: {} content bytes",
            record.header.record_type,
            record.header.request_id,
            record.content.len()
        );
        if record.header.record_type == fastcgi::STDOUT {
            stdout.extend_from_slice(record.content);
        }
        pos += used;
    }
    let (head, len) = parse_response_head(&stdout)
        .expect("a complete head")
        .expect("a valid head");
    println!(
        "status {} {:?}, body {:?}",
        head.status,
        head.headers,
        String::from_utf8_lossy(&stdout[len..])
    );
    assert_eq!(&stdout[len..], b"hello, world!");
    Ok(())
}
