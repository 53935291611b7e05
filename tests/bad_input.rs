//! Bad input straight from the wire: that connection is closed (or the request refused by the
//! protocol), and the next valid request is served.

mod support;

use std::io::{Read, Write};

use protocol::fastcgi::{self, encode};
use support::*;

fn gateway(extra: &[&str]) -> Gateway {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let mut args = vec!["--mount", mount.as_str(), "--threads", "1"];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// Sends `bytes` and expects the gateway to close the connection (EOF, or a reset).
fn expect_closed(gw: &Gateway, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(&gw.addr).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "not closed: {e}"),
    }
    got
}

fn still_serves(gw: &Gateway) {
    let r = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    assert_eq!(
        r.text(),
        "written directly then returned",
        "{}",
        gw.log_text()
    );
    let r = scgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn wrong_version_and_garbage_close_the_connection() {
    let gw = gateway(&[]);
    let mut wrong = fcgi_bytes(1, false, &cgi_params("GET", "/t/write", 0), b"");
    wrong[0] = 2;
    // The first byte 2 is no protocol on an auto-detecting listener.
    assert!(expect_closed(&gw, &wrong).is_empty());
    // A FastCGI record with a bad version later in the stream.
    let mut later = fcgi_bytes(1, false, &cgi_params("GET", "/t/write", 0), b"");
    let begin_len = 16;
    later[begin_len] = 9;
    assert!(expect_closed(&gw, &later).is_empty());
    assert!(expect_closed(&gw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_empty());
    assert!(expect_closed(&gw, &[0xff; 64]).is_empty());
    still_serves(&gw);
    assert!(
        gw.log_text().contains("neither FastCGI, SCGI nor uwsgi"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn protocol_violations_close_the_connection() {
    let gw = gateway(&[]);
    // STDIN before the PARAMS stream ended.
    let mut wire = Vec::new();
    encode::begin_request(1, fastcgi::RESPONDER, 0, &mut wire);
    encode::stream(fastcgi::STDIN, 1, b"early", &mut wire);
    expect_closed(&gw, &wire);
    // A record type a web server never sends.
    let mut wire = Vec::new();
    encode::record(fastcgi::STDOUT, 1, b"x", &mut wire);
    expect_closed(&gw, &wire);
    // A malformed BEGIN_REQUEST body.
    let mut wire = Vec::new();
    encode::record(fastcgi::BEGIN_REQUEST, 1, &[0, 1], &mut wire);
    expect_closed(&gw, &wire);
    // Params whose lengths run past the end of the stream.
    let mut wire = Vec::new();
    encode::begin_request(1, fastcgi::RESPONDER, 0, &mut wire);
    encode::record(fastcgi::PARAMS, 1, &[10, 10, b'A'], &mut wire);
    encode::stream_end(fastcgi::PARAMS, 1, &mut wire);
    expect_closed(&gw, &wire);
    still_serves(&gw);
}

#[test]
fn get_values_asking_for_a_variable_thousands_of_times_is_answered() {
    // 64,000 bytes of names in one legal record; one thread, which must survive it.
    let gw = gateway(&[]);
    let mut wire = Vec::new();
    encode::get_values(
        std::iter::repeat_n(&b"FCGI_MPXS_CONNS"[..], 3700),
        &mut wire,
    );
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&wire).unwrap();
    let mut answer = [0u8; 8];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer[1], fastcgi::GET_VALUES_RESULT, "{answer:?}");
    assert!(
        u16::from_be_bytes([answer[4], answer[5]]) < 64,
        "{answer:?}"
    );
    still_serves(&gw);
    assert!(!gw.log_text().contains("panic"), "{}", gw.log_text());
}

#[test]
fn a_request_aborted_before_its_params_ended_is_answered_and_its_id_reused() {
    let gw = gateway(&[]);
    let params = cgi_params("GET", "/t/write", 0);
    let mut head = Vec::new();
    encode::begin_request(1, fastcgi::RESPONDER, fastcgi::KEEP_CONN, &mut head);
    encode::record(fastcgi::PARAMS, 1, &[1, 1, b'A', b'b'], &mut head);
    let mut abort = Vec::new();
    encode::record(fastcgi::ABORT_REQUEST, 1, b"", &mut abort);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&head).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    s.write_all(&abort).unwrap();
    // The END_REQUEST the web server waits for, with no STDOUT before it.
    let mut stdout = Vec::new();
    let kind = FcgiReader::default()
        .read_until(&mut *s, 1, &mut stdout, |kind, _| {
            kind == fastcgi::END_REQUEST
        })
        .unwrap();
    assert_eq!((kind, stdout.len()), (fastcgi::END_REQUEST, 0));
    // The id is free again on the kept connection (nginx uses id 1 for every request).
    s.write_all(&fcgi_bytes(1, true, &params, b"")).unwrap();
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    assert_eq!(r.text(), "written directly then returned");
    // Without KEEP_CONN, the connection closes after the END_REQUEST (not before it, while
    // the head is still coming: the abort in the same read, or in a later one).
    head[8 + 2] = 0; // BEGIN_REQUEST's flags
    for pause in [0, 50] {
        let mut s = connect(&gw.addr).unwrap();
        s.write_all(&head).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(pause));
        s.write_all(&abort).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 16, "END_REQUEST, then the close: {rest:?}");
    }
    still_serves(&gw);
}

#[test]
fn oversized_params_close_the_connection() {
    let gw = gateway(&["--max-params-bytes", "4096"]);
    let mut params = cgi_params("GET", "/t/write", 0);
    params.push(("HTTP_X_BIG".into(), "x".repeat(8000)));
    expect_closed(&gw, &fcgi_bytes(1, false, &params, b""));
    let mut wire = Vec::new();
    protocol::scgi::encode_request(
        0,
        [(&b"HTTP_X_BIG"[..], "y".repeat(8000).as_bytes())],
        &mut wire,
    );
    expect_closed(&gw, &wire);
    still_serves(&gw);
    assert!(
        gw.log_text().contains("exceed the limit of 4096"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn large_params_within_the_limit_are_served() {
    let gw = gateway(&[]);
    let mut params = cgi_params("GET", "/t/echo", 0);
    for i in 0..10 {
        params.push((format!("HTTP_X_BIG_{i}"), "z".repeat(8000)));
    }
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_bytes(1, false, &params, b"")).unwrap();
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("HTTP_X_BIG_9"));
}

#[test]
fn scgi_without_content_length_or_scgi_header_is_refused() {
    let gw = gateway(&[]);
    let block = b"REQUEST_METHOD\x00GET\x00SCGI\x001\x00";
    let mut wire = format!("{}:", block.len()).into_bytes();
    wire.extend_from_slice(block);
    wire.push(b',');
    assert!(expect_closed(&gw, &wire).is_empty());
    let block = b"CONTENT_LENGTH\x000\x00REQUEST_METHOD\x00GET\x00";
    let mut wire = format!("{}:", block.len()).into_bytes();
    wire.extend_from_slice(block);
    wire.push(b',');
    assert!(expect_closed(&gw, &wire).is_empty());
    assert!(expect_closed(&gw, b"01:x,").is_empty());
    still_serves(&gw);
}

#[test]
fn input_past_an_scgi_or_uwsgi_body_drops_the_request() {
    // A web server that sends more body than the CONTENT_LENGTH it announced (nginx 1.22
    // with scgi_request_buffering off): the app would see a body cut short, so the
    // connection is closed without a response, while the app (slow) still runs.
    let gw = gateway(&[]);
    let params = cgi_params("POST", "/t/slow?ms=300", 5);
    let mut scgi_wire = Vec::new();
    let pairs = params.iter().filter(|(n, _)| n != "CONTENT_LENGTH");
    let pairs = pairs.map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    protocol::scgi::encode_request(5, pairs.clone(), &mut scgi_wire);
    let mut uwsgi_wire = Vec::new();
    protocol::uwsgi::encode_request(5, pairs, &mut uwsgi_wire);
    for mut wire in [scgi_wire, uwsgi_wire] {
        wire.extend_from_slice(b"12345 and more");
        assert!(expect_closed(&gw, &wire).is_empty());
    }
    let log = gw.log_text();
    assert_eq!(
        log.matches("input after the request's CONTENT_LENGTH bytes")
            .count(),
        2,
        "{log}"
    );
    still_serves(&gw);
}

#[test]
fn client_vanishing_mid_body_frees_the_thread() {
    // One worker thread: if the app stayed blocked reading the body, nothing else would run.
    let gw = gateway(&[]);
    // The start of a POST promising a megabyte, with `sent` bytes of it.
    let partial = |sent: usize| {
        let mut params = cgi_params("POST", "/t/upload", 0);
        for p in &mut params {
            if p.0 == "CONTENT_LENGTH" {
                p.1 = "1000000".into();
            }
        }
        let mut wire = Vec::new();
        encode::begin_request(1, fastcgi::RESPONDER, 0, &mut wire);
        encode::params(
            1,
            params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut wire,
        );
        encode::stream(fastcgi::STDIN, 1, &vec![7u8; sent], &mut wire);
        wire
    };
    for _ in 0..3 {
        let mut s = connect(&gw.addr).unwrap();
        s.write_all(&partial(1000)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(s);
    }
    // The same with the close arriving together with the body bytes (one readiness edge).
    for _ in 0..20 {
        let mut s = tcp(&gw.addr);
        s.write_all(&partial(100)).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    // A truncated record, then gone.
    let wire = fcgi_bytes(1, false, &cgi_params("GET", "/t/write", 0), b"");
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&wire[..13]).unwrap();
    drop(s);
    still_serves(&gw);
}

#[test]
fn unknown_role_is_answered_and_the_connection_stays() {
    let gw = gateway(&[]);
    let mut s = connect(&gw.addr).unwrap();
    let mut wire = Vec::new();
    encode::begin_request(1, fastcgi::AUTHORIZER, fastcgi::KEEP_CONN, &mut wire);
    encode::params(1, [(&b"REQUEST_METHOD"[..], &b"GET"[..])], &mut wire);
    s.write_all(&wire).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let (rec, _) = fastcgi::parse_record(&buf[..n]).unwrap().unwrap();
    assert_eq!(rec.header.record_type, fastcgi::END_REQUEST);
    assert_eq!(rec.content[4], fastcgi::ProtocolStatus::UnknownRole as u8);
    s.write_all(&fcgi_bytes(2, true, &cgi_params("GET", "/t/write", 0), b""))
        .unwrap();
    assert_eq!(fcgi_read_response(&mut *s, 2).unwrap().status, 200);
    // Without KEEP_CONN: the END_REQUEST, then the close.
    let mut wire = Vec::new();
    encode::begin_request(1, fastcgi::AUTHORIZER, 0, &mut wire);
    encode::params(1, [(&b"REQUEST_METHOD"[..], &b"GET"[..])], &mut wire);
    encode::stream_end(fastcgi::STDIN, 1, &mut wire);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&wire).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let (rec, used) = fastcgi::parse_record(&all).unwrap().unwrap();
    assert_eq!(rec.header.record_type, fastcgi::END_REQUEST);
    assert_eq!(used, all.len());
}

#[test]
fn unmatched_path_is_404() {
    let gw = gateway(&[]);
    let r = fcgi(&gw.addr, "GET", "/elsewhere", b"").unwrap();
    assert_eq!(r.status, 404);
    let r = scgi(&gw.addr, "GET", "/tx", b"").unwrap();
    assert_eq!(r.status, 404);
}
