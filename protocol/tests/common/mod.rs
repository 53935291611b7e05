//! Drives the decoders the way a server does — append what arrived, decode until more is
//! needed, drop what was consumed — and renders events as comparable lines.
#![allow(dead_code)]

use protocol::{fastcgi, scgi, uwsgi, DecodeError, Limits, RequestHead};
use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Renders a request head like the capture script's `.expect` files do.
pub fn render_head(id: u16, keep_conn: bool, head: &RequestHead, lines: &mut Vec<String>) {
    lines.push(format!(
        "request {id} role=1 keep_conn={} params={} bytes={}",
        u8::from(keep_conn),
        head.len(),
        head.params_bytes()
    ));
    for (n, v) in head.iter() {
        let name = String::from_utf8_lossy(n);
        if v.len() > 80 {
            lines.push(format!(
                "param {name}=<len {} sha256 {}>",
                v.len(),
                &sha256_hex(v)[..16]
            ));
        } else {
            let text: String = v.iter().map(|&b| b as char).collect();
            lines.push(format!("param {name}={}", py_repr(&text)));
        }
    }
}

/// Python's `repr` of a str (enough of it for header values: quotes and escapes).
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (0x80..0xa0).contains(&(c as u32)) || c as u32 == 0xad => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Feeds FastCGI input in the given chunks; returns the rendered events and the management
/// output, or the first error.
pub fn fastcgi_feed(chunks: &[&[u8]]) -> Result<(Vec<String>, Vec<u8>), DecodeError> {
    let mut conn = fastcgi::Connection::new(fastcgi::Config::default());
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut lines = Vec::new();
    let mut bodies: Vec<(u16, Vec<u8>)> = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let d = conn.decode(&buf[start..], &mut out)?;
            assert!(d.consumed <= buf.len() - start, "over-consumed");
            if d.consumed == 0 && d.event.is_none() {
                break;
            }
            start += d.consumed;
            match d.event {
                Some(fastcgi::Event::Request {
                    id,
                    head,
                    keep_conn,
                }) => {
                    render_head(id, keep_conn, &head, &mut lines);
                    bodies.push((id, Vec::new()));
                }
                Some(fastcgi::Event::Stdin { id, data }) => {
                    let body = bodies.iter_mut().rev().find(|(i, _)| *i == id).unwrap();
                    body.1.extend_from_slice(data);
                }
                Some(fastcgi::Event::StdinEnd { id }) => {
                    let body = &bodies.iter().rev().find(|(i, _)| *i == id).unwrap().1;
                    lines.push(format!("stdin {id} {} {}", body.len(), sha256_hex(body)));
                    // What the gateway does when its response is done.
                    conn.end_request(id, 0, &mut Vec::new());
                }
                Some(other) => lines.push(format!("{other:?}")),
                None => {}
            }
        }
        buf.drain(..start);
    }
    Ok((lines, out))
}

/// Feeds SCGI input in the given chunks; returns the rendered events.
pub fn scgi_feed(chunks: &[&[u8]]) -> Result<Vec<String>, DecodeError> {
    let mut dec = scgi::Decoder::new(Limits::default());
    feed_one_request(chunks, |input| dec.decode(input))
}

/// Feeds uwsgi input in the given chunks; returns the rendered events (like SCGI's).
pub fn uwsgi_feed(chunks: &[&[u8]]) -> Result<Vec<String>, DecodeError> {
    let mut dec = uwsgi::Decoder::new(Limits::default());
    feed_one_request(chunks, |input| dec.decode(input))
}

/// The read loop shared by the one-request-per-connection decoders (SCGI and uwsgi).
fn feed_one_request(
    chunks: &[&[u8]],
    mut decode: impl for<'a> FnMut(&'a [u8]) -> Result<scgi::Decoded<'a>, DecodeError>,
) -> Result<Vec<String>, DecodeError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let mut body = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        loop {
            let d = decode(&buf[start..])?;
            assert!(d.consumed <= buf.len() - start, "over-consumed");
            if d.consumed == 0 && d.event.is_none() {
                break;
            }
            start += d.consumed;
            match d.event {
                Some(scgi::Event::Request { head }) => render_head(0, false, &head, &mut lines),
                Some(scgi::Event::Body(data)) => body.extend_from_slice(data),
                Some(scgi::Event::End) => {
                    lines.push(format!("stdin 0 {} {}", body.len(), sha256_hex(&body)))
                }
                None => {}
            }
        }
        buf.drain(..start);
    }
    Ok(lines)
}
