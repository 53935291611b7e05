//! PEP 3333 behaviour of the gateway, spoken to directly over FastCGI and SCGI.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use protocol::fastcgi::{self, encode};
use protocol::{scgi, uwsgi};
use support::*;

fn gateway(extra: &[&str]) -> Gateway {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let mut args = vec!["--mount", &mount];
    if !extra.contains(&"--threads") {
        args.extend(["--threads", "4"]);
    }
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

use serde_json::{json, Value};

#[test]
fn environ_is_pep3333() {
    let gw = gateway(&[]);
    let r = fcgi(&gw.addr, "GET", "/t/echo/a%20b?x=1&y=2", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["SCRIPT_NAME"], "/t");
    assert_eq!(v["PATH_INFO"], "/echo/a b");
    assert_eq!(v["QUERY_STRING"], "x=1&y=2");
    assert_eq!(v["wsgi.url_scheme"], "http");
    assert_eq!(v["wsgi.input_terminated"], true);
    assert_eq!(v["wsgi.multithread"], true);
    assert_eq!(v["wsgi.run_once"], false);
    assert_eq!(v["wsgi.version"], json!([1, 0]));
    assert_eq!(v["types"], json!(["str"]));
    assert_eq!(v["http"]["HTTP_HOST"], "localhost");
    assert_eq!(v["sys.argv"], json!(["wsgi-gateway"]));
    // The same over SCGI.
    let r = scgi(&gw.addr, "GET", "/t/echo?z", b"").unwrap();
    assert_eq!(json(&r)["PATH_INFO"], "/echo");
}

#[test]
fn a_repeated_list_header_is_one_value_and_other_names_take_the_last() {
    // What nginx before 1.23 sends for a header given twice (later versions join it
    // themselves, as the gateway does for list-valued headers), and for a param its
    // configuration sets twice (HTTP_HOST set by Debian's included params file and by the
    // site, SERVER_NAME), over each protocol.
    let gw = gateway(&[]);
    let mut params = cgi_params("GET", "/t/echo", 0);
    for (n, v) in [
        ("HTTP_X_FORWARDED_FOR", "192.0.2.1"),
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_HOST", "localhost:8080"),
        ("HTTP_X_FORWARDED_FOR", "192.0.2.2"),
        ("HTTP_COOKIE", "b=2"),
        ("HTTP_X_A", "one"),
        ("HTTP_X_A", "two"),
        ("SERVER_NAME", "configured"),
    ] {
        params.push((n.into(), v.into()));
    }
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_bytes(1, false, &params, b"")).unwrap();
    let responses = [
        ("FastCGI", fcgi_read_response(&mut *s, 1)),
        ("SCGI", scgi_with(&gw.addr, &params, b"")),
        ("uwsgi", uwsgi_with(&gw.addr, &params, b"")),
    ];
    for (protocol, r) in responses {
        let v = json(&r.unwrap());
        assert_eq!(
            v["http"]["HTTP_X_FORWARDED_FOR"], "192.0.2.1, 192.0.2.2",
            "{protocol}"
        );
        assert_eq!(v["http"]["HTTP_COOKIE"], "a=1; b=2", "{protocol}");
        assert_eq!(v["http"]["HTTP_HOST"], "localhost:8080", "{protocol}");
        assert_eq!(v["http"]["HTTP_X_A"], "two", "{protocol}");
        assert_eq!(v["SERVER_NAME"], "configured", "{protocol}");
    }
    // CONTENT_LENGTH twice over FastCGI: the same value is that value; two values, 400.
    // (The SCGI and uwsgi decoders refuse a repeat: the connection is closed.)
    for (second, status) in [("0", 200), ("5", 400)] {
        let mut params = cgi_params("GET", "/t/echo", 0);
        params.push(("CONTENT_LENGTH".into(), second.into()));
        let mut s = connect(&gw.addr).unwrap();
        s.write_all(&fcgi_bytes(1, false, &params, b"")).unwrap();
        let r = fcgi_read_response(&mut *s, 1).unwrap();
        assert_eq!(r.status, status, "{}", r.text());
    }
}

#[test]
fn https_scheme_and_latin1_native_strings() {
    let gw = gateway(&[]);
    let mut params = cgi_params("GET", "/t/echo/%C3%A9", 0);
    params.push(("HTTPS".into(), "on".into()));
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_bytes(1, false, &params, b"")).unwrap();
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    let v = json(&r);
    assert_eq!(v["wsgi.url_scheme"], "https");
    // UTF-8 bytes of "é" as two latin-1 code points, per PEP 3333.
    assert_eq!(v["PATH_INFO"], "/echo/\u{c3}\u{a9}");
}

#[test]
fn validator_wrapped_app_passes() {
    let gw = gateway(&[]);
    let r = fcgi(&gw.addr, "GET", "/t/validated", b"").unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.log_text());
    assert_eq!(r.text(), "Hello, world!\n");
    assert!(!gw.log_text().contains("Traceback"), "{}", gw.log_text());
}

#[test]
fn write_callable_exc_info_and_content_length() {
    let gw = gateway(&[]);
    let r = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    assert_eq!(r.text(), "written directly then returned");
    let r = fcgi(&gw.addr, "GET", "/t/exc-info", b"").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "replaced");
    let r = fcgi(&gw.addr, "GET", "/t/content-length", b"").unwrap();
    assert_eq!(r.text(), "01234", "no more than Content-Length is sent");
    let r = fcgi(&gw.addr, "HEAD", "/t/write", b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // start_response by keyword, twice, with exc_info before and after the head went out;
    // write() of bytearray, memoryview, empty bytes and str.
    let r = fcgi(&gw.addr, "GET", "/t/start-response-edges", b"").unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(r.header("X-Replaced"), Some("yes"));
    let text = r.text();
    let (written, seen) = text.split_at(text.find('{').unwrap());
    assert_eq!(written, "ba|mv|");
    let v: serde_json::Value = serde_json::from_str(seen).unwrap();
    assert_eq!(v["twice"], "start_response() called twice without exc_info");
    assert_eq!(v["four"], "TypeError");
    assert!(v["keyword"].as_str().unwrap().contains("colour"), "{v}");
    assert_eq!(
        v["str"],
        "InvalidResponse: response body must be bytes, not str"
    );
    assert_eq!(v["reraised"], true);
}

/// The gateway's Python imports `traceback` at an app's first error. Should that import fail,
/// the error is still logged (as its one line) and answered with 500.
#[test]
fn an_error_is_logged_and_answered_when_traceback_cannot_be_imported() {
    let gw = gateway(&[]);
    let r = fcgi(&gw.addr, "GET", "/t/error-no-traceback", b"").unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    wait_for("the error's line", || {
        gw.log_text()
            .contains("RuntimeError: boom with no traceback module")
    });
    let log = gw.log_text();
    assert!(!log.contains("ImportError"), "{log}");
}

#[test]
fn input_stream_methods() {
    let gw = gateway(&[]);
    let body = b"first line\nabcdef\nl3\nl4\nl5\ntail";
    let r = fcgi(&gw.addr, "POST", "/t/lines", body).unwrap();
    let v = json(&r);
    assert_eq!(v["first"], "first line\n");
    assert_eq!(v["limited"], "abc");
    assert_eq!(v["rest"], "def\n");
    assert_eq!(v["two"], json!(["l3\n"]));
    assert_eq!(v["remaining"], json!(["l4\n", "l5\n", "tail"]));
    assert_eq!(v["eof"], "");
}

#[test]
fn body_without_content_length_ends_with_the_stream() {
    let gw = gateway(&[]);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut params = cgi_params("POST", "/t/upload", 0);
    for p in &mut params {
        if p.0 == "CONTENT_LENGTH" {
            p.1 = String::new();
        }
    }
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_bytes(1, false, &params, &body)).unwrap();
    let v = json(&fcgi_read_response(&mut *s, 1).unwrap());
    assert_eq!(v["length"].as_u64().unwrap() as usize, body.len());
    assert_eq!(v["sha256"], sha256_hex(&body));
}

#[test]
fn ten_mib_upload_and_fifty_mib_response_are_exact() {
    let gw = gateway(&[]);
    let body: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let v = json(&fcgi(&gw.addr, "POST", "/t/upload", &body).unwrap());
    assert_eq!(v["length"].as_u64().unwrap() as usize, body.len());
    assert_eq!(v["sha256"], sha256_hex(&body));
    let v = json(&fcgi(&gw.addr, "POST", "/t/upload-chunked-reads?size=7777", &body).unwrap());
    assert_eq!(v["sha256"], sha256_hex(&body));
    let v = json(&scgi(&gw.addr, "POST", "/t/upload", &body).unwrap());
    assert_eq!(v["sha256"], sha256_hex(&body));

    let r = fcgi(&gw.addr, "GET", "/t/big?mb=50", b"").unwrap();
    assert_eq!(r.body.len(), 50 << 20);
    let expected: Vec<u8> = (0..50)
        .flat_map(|i| vec![(i % 251) as u8; 1 << 20])
        .collect();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&expected));
}

#[test]
fn responses_are_streamed() {
    let gw = gateway(&[]);
    let mut s = connect(&gw.addr).unwrap();
    fcgi_send(&mut *s, false, "GET", "/t/stream?n=3&delay=1");
    let started = Instant::now();
    let mut reader = FcgiReader::default();
    let mut stdout = Vec::new();
    reader
        .read_until(&mut *s, 1, &mut stdout, |_, out| {
            out.windows(8).any(|w| w == b"chunk 0\n")
        })
        .unwrap();
    let first = started.elapsed();
    reader
        .read_until(&mut *s, 1, &mut stdout, |kind, _| {
            kind == fastcgi::END_REQUEST
        })
        .unwrap();
    let total = started.elapsed();
    let r = parse_cgi(&stdout).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, "chunk 0\nchunk 1\nchunk 2\n".into())
    );
    // The first chunk arrives before the app finished sleeping between chunks.
    assert!(
        first + Duration::from_millis(1500) < total,
        "first chunk after {first:?}, whole response after {total:?}"
    );
}

#[test]
fn concurrent_slow_requests_finish_with_the_configured_threads() {
    let gw = gateway(&[]);
    let started = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let addr = gw.addr.clone();
            std::thread::spawn(move || fcgi(&addr, "GET", "/t/slow?ms=200", b""))
        })
        .collect();
    let mut threads = std::collections::HashSet::new();
    for h in handles {
        let r = h.join().unwrap().unwrap();
        assert_eq!(r.status, 200);
        threads.insert(json(&r)["thread"].as_u64().unwrap());
    }
    // 50 requests of 200 ms on 4 threads: at least 13 rounds, on all 4 threads (those in
    // reserve take the epoll while the others sleep in the app), never more.
    assert_eq!(threads.len(), 4, "{} threads", threads.len());
    assert!(started.elapsed() >= Duration::from_millis(200 * 12));
}

#[test]
fn a_request_is_served_while_another_thread_runs_a_long_one() {
    // Two threads: one takes the epoll at a time, the other waits in reserve. A request that
    // comes while the first runs a long one is served by the other, not after it.
    let gw = gateway(&["--threads", "2"]);
    let dir = tmpdir("reserve");
    let marker = dir.join("running");
    let mut long = connect(&gw.addr).unwrap();
    fcgi_send(
        &mut *long,
        false,
        "GET",
        &format!("/t/block?ms=4000&marker={}", marker.display()),
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let r = fcgi_read_response(&mut *long, 1);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        })
    };
    wait_for("the long request to run", || marker.exists());
    for _ in 0..3 {
        let r = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
        assert_eq!(r.text(), "written directly then returned");
    }
    // All three came back while the long request still ran.
    assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
    let r = reader.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn app_errors_give_500_or_a_cut_off_response_and_the_process_keeps_serving() {
    let gw = gateway(&["--threads", "1"]);
    let r = fcgi(&gw.addr, "GET", "/t/error-before", b"").unwrap();
    assert_eq!(r.status, 500);
    for route in [
        "bad-status",
        "bad-header",
        "hop-by-hop",
        "bad-length",
        "str-body",
        "no-start",
    ] {
        let r = fcgi(&gw.addr, "GET", &format!("/t/{route}"), b"").unwrap();
        assert_eq!(r.status, 500, "{route}");
    }
    // After the head went out, the response is cut off: no END_REQUEST.
    let err = fcgi(&gw.addr, "GET", "/t/error-after", b"").unwrap_err();
    assert!(err.contains("before END_REQUEST"), "{err}");
    let log = gw.log_text();
    assert!(
        log.contains("RuntimeError: boom before start_response"),
        "{log}"
    );
    assert!(log.contains("GET /t/error-before"), "{log}");
    assert!(log.contains("response cut off"), "{log}");
    assert!(log.contains("hop-by-hop header"), "{log}");
    assert!(log.contains("Content-Length '-5' is not a number"), "{log}");
    // The single worker thread survived all of it.
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
}

#[test]
fn close_is_called_also_when_the_client_goes_away() {
    let gw = gateway(&[]);
    let dir = tmpdir("close");
    let marker = dir.join("normal");
    let r = fcgi(
        &gw.addr,
        "GET",
        &format!("/t/close?marker={}", marker.display()),
        b"",
    )
    .unwrap();
    assert_eq!(r.text(), "ab");
    wait_for("close() on a normal response", || marker.exists());

    let marker = dir.join("aborted");
    let mut s = connect(&gw.addr).unwrap();
    fcgi_send(
        &mut *s,
        false,
        "GET",
        &format!("/t/close-slow?marker={}", marker.display()),
    );
    let mut buf = [0u8; 256];
    assert!(s.read(&mut buf).unwrap() > 0);
    drop(s);
    wait_for("close() after the client vanished", || marker.exists());
    // The thread is free again.
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
}

#[test]
fn abort_request_ends_the_request_and_the_connection_goes_on() {
    let gw = gateway(&[]);
    let dir = tmpdir("abort");
    let marker = dir.join("aborted");
    let mut s = connect(&gw.addr).unwrap();
    let uri = format!("/t/close-slow?marker={}", marker.display());
    fcgi_send(&mut *s, true, "GET", &uri);
    // Abort once the response is streaming (its head and first chunk arrived).
    let mut reader = FcgiReader::default();
    let mut stdout = Vec::new();
    reader
        .read_until(&mut *s, 1, &mut stdout, |_, out| {
            out.windows(7).any(|w| w == b"chunk 0")
        })
        .unwrap();
    let mut abort = Vec::new();
    protocol::fastcgi::encode::abort_request(1, &mut abort);
    s.write_all(&abort).unwrap();
    // END_REQUEST arrives for the aborted request (after whatever output was on its way).
    reader
        .read_until(&mut *s, 1, &mut stdout, |kind, _| {
            kind == protocol::fastcgi::END_REQUEST
        })
        .unwrap();
    assert_eq!(parse_cgi(&stdout).unwrap().status, 200);
    wait_for("close() after ABORT_REQUEST", || marker.exists());
    // Same connection, next request.
    fcgi_send(&mut *s, true, "GET", "/t/write");
    assert_eq!(
        fcgi_read_response(&mut *s, 1).unwrap().text(),
        "written directly then returned"
    );
}

/// A body that reached its Content-Length ends the response with its last bytes (one write),
/// not when the iterable is exhausted: the end arrives while the app's generator still runs,
/// close() is still called after it, and the kept connection serves the next request.
#[test]
fn a_body_at_its_content_length_ends_the_response_before_the_iterable_does() {
    let gw = gateway(&[]);
    let dir = tmpdir("sized");
    let (go, marker) = (dir.join("go"), dir.join("closed"));
    let uri = format!(
        "/t/sized-wait?go={}&marker={}",
        go.display(),
        marker.display()
    );
    let mut s = connect(&gw.addr).unwrap();
    fcgi_send(&mut *s, true, "GET", &uri);
    let mut reader = FcgiReader::default();
    let mut stdout = Vec::new();
    // The generator waits for `go`, which is made only once END_REQUEST is here.
    reader
        .read_until(&mut *s, 1, &mut stdout, |kind, _| {
            kind == protocol::fastcgi::END_REQUEST
        })
        .unwrap();
    assert!(!marker.exists(), "close() ran before the response's end");
    assert_eq!(parse_cgi(&stdout).unwrap().text(), "complete");
    std::fs::write(&go, b"").unwrap();
    wait_for("close() after the generator ended", || marker.exists());
    fcgi_send(&mut *s, true, "GET", "/t/write");
    assert_eq!(
        fcgi_read_response(&mut *s, 1).unwrap().text(),
        "written directly then returned"
    );
    assert!(!gw.log_text().contains("Traceback"), "{}", gw.log_text());
    // An error after the whole body: the response is complete, and the log says so.
    fcgi_send(&mut *s, true, "GET", "/t/sized-then-error");
    assert_eq!(fcgi_read_response(&mut *s, 1).unwrap().text(), "complete");
    wait_for("the error's log line", || {
        gw.log_text()
            .contains("application error after the response was complete")
    });
    assert!(!gw.log_text().contains("cut off"), "{}", gw.log_text());
}

#[test]
fn keep_conn_and_multiplexed_requests() {
    let gw = gateway(&[]);
    let mut s = connect(&gw.addr).unwrap();
    for _ in 0..3 {
        fcgi_send(&mut *s, true, "GET", "/t/write");
        assert_eq!(fcgi_read_response(&mut *s, 1).unwrap().status, 200);
    }
    // Two requests interleaved on one connection run concurrently.
    let mut wire = fcgi_bytes(7, true, &cgi_params("GET", "/t/slow?ms=500", 0), b"");
    wire.extend(fcgi_bytes(
        9,
        true,
        &cgi_params("GET", "/t/slow?ms=500", 0),
        b"",
    ));
    let started = Instant::now();
    s.write_all(&wire).unwrap();
    let out = FcgiReader::default().read_responses(&mut *s, 2).unwrap();
    let ended: std::collections::HashSet<u16> = out.keys().copied().collect();
    assert_eq!(ended, [7, 9].into_iter().collect());
    assert!(
        started.elapsed() < Duration::from_millis(950),
        "ran one after the other"
    );
}

#[test]
fn multiplexed_uploads_interleaved_on_one_connection_do_not_wait_for_each_other() {
    // Three requests on one kept connection, their bodies (over buffer-body: they run at once
    // and stream) interleaved record by record, one thread: the first one's app reads its
    // body while the others wait for the thread, so their records are read past their queues'
    // high-water mark, or the first one would wait behind them for good.
    let gw = gateway(&["--threads", "1"]);
    let out = multiplexed_uploads(&gw, (2 << 20) + 1);
    assert!(
        out.iter().all(|(status, same)| *status == 200 && *same),
        "{out:?}"
    );
    // Past what the process holds for them (buffer-body-total and 8 MiB more), the first
    // request's body read times out instead of waiting for good, and the others go on.
    let gw = gateway(&["--threads", "1", "--body-timeout", "1"]);
    let out = multiplexed_uploads(&gw, 6 << 20);
    assert_ne!(out[0].0, 200, "{out:?}");
    assert!(
        out[1..]
            .iter()
            .all(|(status, same)| *status == 200 && *same),
        "{out:?}"
    );
    assert!(
        gw.log_text().contains("made no progress"),
        "{}",
        gw.log_text()
    );
}

/// A request's thread that waits because the process holds its most of bodies (buffer-body-total
/// and 8 MiB more) goes on when another connection's request frees its share: it looks again
/// while it waits, rather than at its body timeout.
#[test]
fn a_multiplexed_upload_waiting_for_room_goes_on_when_another_connection_frees_it() {
    let gw = gateway(&[
        "--threads",
        "2",
        "--buffer-body",
        "4194304",
        "--buffer-body-total",
        "4259840",
        "--body-timeout",
        "3",
    ]);
    let dir = tmpdir("mux-room");
    let held = dir.join("held");
    // 4 MiB collected, held 1.5 s by an app that then reads it and sleeps on, its thread busy.
    let big = vec![b'h'; 4 << 20];
    let uri = format!("/t/block?ms=5500&read=1500&marker={}", path_str(&held));
    let (mut b, mut b_writer) = connect_pair(&gw.addr).unwrap();
    let wire = fcgi_bytes(1, false, &cgi_params("POST", &uri, big.len()), &big);
    let b_sender = std::thread::spawn(move || b_writer.write_all(&wire));
    wait_for("the request that holds 4 MiB", || held.exists());
    // Two 10 MiB uploads multiplexed: the first runs on the other thread, the second waits
    // for a thread while its records fill its queue past what the process may hold.
    let out = multiplexed_uploads_n(&gw, 10 << 20, 2);
    assert!(
        out.iter().all(|(status, same)| *status == 200 && *same),
        "{out:?}\n{}",
        gw.log_text()
    );
    b_sender.join().unwrap().unwrap();
    assert_eq!(fcgi_read_response(&mut *b, 1).unwrap().status, 200);
}

/// Three uploads of `size` bytes multiplexed on one connection, their records interleaved;
/// each one's status, and whether its app saw its body.
fn multiplexed_uploads(gw: &Gateway, size: usize) -> Vec<(u16, bool)> {
    multiplexed_uploads_n(gw, size, 3)
}

/// `n` uploads of `size` bytes multiplexed on one connection (see `multiplexed_uploads`).
fn multiplexed_uploads_n(gw: &Gateway, size: usize, n: u8) -> Vec<(u16, bool)> {
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| vec![b'a' + i; size]).collect();
    let mut wire = Vec::new();
    for (i, _) in bodies.iter().enumerate() {
        let id = i as u16 + 1;
        encode::begin_request(id, fastcgi::RESPONDER, fastcgi::KEEP_CONN, &mut wire);
        let params = cgi_params("POST", "/t/upload", size);
        let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        encode::params(id, pairs, &mut wire);
    }
    for at in (0..size).step_by(32 * 1024) {
        for (i, body) in bodies.iter().enumerate() {
            let piece = &body[at..(at + 32 * 1024).min(size)];
            encode::stream(fastcgi::STDIN, i as u16 + 1, piece, &mut wire);
        }
    }
    for id in 1..=n as u16 {
        encode::stream_end(fastcgi::STDIN, id, &mut wire);
    }
    let (mut s, mut writer) = connect_pair(&gw.addr).unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&wire));
    let out = FcgiReader::default()
        .read_responses(&mut *s, n as usize)
        .unwrap();
    sender.join().unwrap().unwrap();
    let r = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    assert_eq!(r.status, 200, "{}", gw.log_text());
    (0..n as usize)
        .map(|i| {
            let r = parse_cgi(&out[&(i as u16 + 1)]).unwrap();
            let same = r.status == 200 && json(&r)["sha256"] == sha256_hex(&bodies[i]);
            (r.status, same)
        })
        .collect()
}

#[test]
fn get_values_is_answered() {
    let gw = gateway(&[]);
    let mut s = connect(&gw.addr).unwrap();
    let mut wire = Vec::new();
    protocol::fastcgi::encode::get_values([&b"FCGI_MPXS_CONNS"[..], b"FCGI_MAX_REQS"], &mut wire);
    s.write_all(&wire).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let (rec, _) = protocol::fastcgi::parse_record(&buf[..n]).unwrap().unwrap();
    assert_eq!(rec.header.record_type, protocol::fastcgi::GET_VALUES_RESULT);
    let text = String::from_utf8_lossy(rec.content);
    assert!(text.contains("FCGI_MPXS_CONNS1"), "{text:?}");
    assert!(text.contains("FCGI_MAX_REQS4"), "{text:?}");
}

#[test]
fn file_wrapper_streams_a_real_file() {
    let gw = gateway(&[]);
    let dir = tmpdir("file");
    let path = dir.join("data.bin");
    let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let r = fcgi(
        &gw.addr,
        "GET",
        &format!("/t/file?path={}", path.display()),
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
}

#[test]
fn wsgi_errors_go_to_the_log_with_method_and_path() {
    let gw = gateway(&[]);
    let r = fcgi(&gw.addr, "GET", "/t/errors", b"").unwrap();
    assert_eq!(r.status, 200);
    wait_for("log line", || {
        gw.log_text().contains("GET /t/errors: a line for the log")
    });
    wait_for("stderr line", || {
        gw.log_text().contains("to stderr via print")
    });
}

#[test]
fn unix_socket_listener_with_mode() {
    let dir = tmpdir("unix");
    let sock = format!("unix:{}/gw.sock", dir.display());
    let app = app("pep3333.wsgi");
    let gw = Gateway::start(&[
        "--fastcgi",
        &sock,
        "--socket-mode",
        "600",
        "--mount",
        &format!("/t={app}"),
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("gw.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
    // Who may connect is in the start-up log (a web server that may not gets only a 502).
    let log = gw.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("listening on {sock} (FastCGI), socket owner ")))
        .unwrap_or_else(|| panic!("no socket owner in the log:\n{log}"));
    assert!(
        line.contains(", mode 600; a web server running as another user must be in group "),
        "{line}"
    );
    assert!(
        line.ends_with("(--socket-group) or be its owner (--socket-user)"),
        "{line}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let mut gw = gateway(&[]);
    let slow = blocking_request_in_thread(&gw.addr, "sigterm-in-flight", 1000);
    let status = gw.stop("TERM");
    assert!(status.success(), "{status}\n{}", gw.log_text());
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    assert!(gw.log_text().contains("stopped"), "{}", gw.log_text());
}

#[test]
fn a_script_that_fails_to_import_breaks_only_its_mount() {
    let good = format!("/t={}", app("pep3333.wsgi"));
    let bad = format!("/broken={}", app("broken.wsgi"));
    let gw = Gateway::start(&["--mount", &good, "--mount", &bad]);
    let r = fcgi(&gw.addr, "GET", "/broken/x", b"").unwrap();
    assert_eq!(r.status, 500);
    assert!(gw
        .log_text()
        .contains("ModuleNotFoundError: No module named 'this_module_does_not_exist'"));
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
    // Two scripts with the same file name in different directories do not clash.
    let dir = tmpdir("twins");
    for name in ["a", "b"] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(
            dir.join(name).join("app.wsgi"),
            format!("def application(e, s):\n    s('200 OK', [])\n    return [b'{name}']\n"),
        )
        .unwrap();
    }
    let a = format!("/a={}/a/app.wsgi", dir.display());
    let b = format!("/b={}/b/app.wsgi", dir.display());
    let gw = Gateway::start(&["--mount", &a, "--mount", &b]);
    assert_eq!(fcgi(&gw.addr, "GET", "/a/", b"").unwrap().text(), "a");
    assert_eq!(fcgi(&gw.addr, "GET", "/b/", b"").unwrap().text(), "b");
}

#[test]
fn the_request_subcommand_speaks_both_protocols() {
    let gw = gateway(&[]);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("request")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&[&gw.addr, "/t/write"]);
    assert_eq!((code, out.as_str()), (0, "written directly then returned"));
    let (code, out) = run(&["-i", "--scgi", &gw.addr, "GET", "/t/write"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Status: 200 OK\nContent-Type: text/plain\n\n"),
        "{out}"
    );
    let dir = tmpdir("request");
    let body = dir.join("body");
    std::fs::write(&body, b"0123456789").unwrap();
    let (code, out) = run(&[
        "-H",
        "X-Custom: yes",
        "--data",
        &format!("@{}", body.display()),
        &gw.addr,
        "POST",
        "/t/upload",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"length\": 10"), "{out}");
    let (code, out) = run(&["-H", "X-Custom: yes", &gw.addr, "/t/echo"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"HTTP_X_CUSTOM\": \"yes\""), "{out}");
    // Exit codes: 1 for a status of 400 and above, 2 when no response came.
    assert_eq!(run(&[&gw.addr, "/elsewhere"]).0, 1);
    assert_eq!(run(&["127.0.0.1:1", "/"]).0, 2);
}

#[test]
fn idle_keep_alive_connections_pin_no_thread() {
    // One worker thread and many idle kept connections: every new request is still served.
    let gw = gateway(&["--threads", "1"]);
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = connect(&gw.addr).unwrap();
        fcgi_send(&mut *s, true, "GET", "/t/write");
        assert_eq!(fcgi_read_response(&mut *s, 1).unwrap().status, 200);
        idle.push(s);
    }
    for _ in 0..5 {
        assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
    }
    // And the kept connections still work.
    for s in &mut idle {
        fcgi_send(&mut **s, true, "GET", "/t/write");
        assert_eq!(fcgi_read_response(&mut **s, 1).unwrap().status, 200);
    }
}

/// Writes `wire` in pieces of varying size with short pauses, so that the gateway's reads end
/// anywhere: inside a record header, its content or its padding.
fn trickle(s: &mut dyn Stream, wire: &[u8]) {
    let mut pos = 0;
    let mut i = 0usize;
    while pos < wire.len() {
        let n = [1, 7, 8, 9, 4093, 65536, 12345, 3, 70001][i % 9].min(wire.len() - pos);
        s.write_all(&wire[pos..pos + n]).unwrap();
        s.flush().unwrap();
        pos += n;
        i += 1;
        if i.is_multiple_of(3) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Bodies the app reads straight from the socket (`--buffer-body 0`: they stream), sent in
/// pieces that end anywhere: FastCGI in records of odd sizes with padding, SCGI and uwsgi
/// raw. Read whole and in 7777-byte reads, every byte arrives in order.
#[test]
fn streamed_bodies_cut_anywhere_arrive_exact() {
    let gw = gateway(&["--buffer-body", "0", "--threads", "2"]);
    let body = support::frontends::pseudo_random(1_500_000, 9);
    let want = sha256_hex(&body);
    for uri in ["/t/upload", "/t/upload-chunked-reads?size=7777"] {
        // FastCGI: STDIN records of 1 to 65535 content bytes, padded to 8 or not at all.
        let mut wire = Vec::new();
        encode::begin_request(1, fastcgi::RESPONDER, 0, &mut wire);
        let params = cgi_params("POST", uri, body.len());
        encode::params(
            1,
            params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut wire,
        );
        let sizes = [1usize, 65535, 8, 33333, 7, 4096, 65535, 12, 20000];
        let (mut pos, mut i) = (0, 0);
        while pos < body.len() {
            let n = sizes[i % sizes.len()].min(body.len() - pos);
            let pad = if i % 2 == 0 { (8 - n % 8) % 8 } else { 0 };
            wire.extend_from_slice(&[1, fastcgi::STDIN, 0, 1]);
            wire.extend_from_slice(&(n as u16).to_be_bytes());
            wire.extend_from_slice(&[pad as u8, 0]);
            wire.extend_from_slice(&body[pos..pos + n]);
            wire.extend(std::iter::repeat_n(0xAA, pad));
            pos += n;
            i += 1;
        }
        encode::stream_end(fastcgi::STDIN, 1, &mut wire);
        let mut s = connect(&gw.addr).unwrap();
        trickle(&mut *s, &wire);
        let v = json(&fcgi_read_response(&mut *s, 1).unwrap());
        assert_eq!(
            v["length"].as_u64(),
            Some(body.len() as u64),
            "FastCGI {uri}"
        );
        assert_eq!(v["sha256"], want, "FastCGI {uri}");

        // SCGI and uwsgi: the body follows the head.
        let plain: Vec<_> = params
            .iter()
            .filter(|(n, _)| n != "CONTENT_LENGTH")
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let (mut scgi_wire, mut uwsgi_wire) = (Vec::new(), Vec::new());
        scgi::encode_request(body.len() as u64, plain.iter().copied(), &mut scgi_wire);
        uwsgi::encode_request(body.len() as u64, plain.iter().copied(), &mut uwsgi_wire);
        type Parse = fn(&[u8]) -> Result<Response, String>;
        for (name, mut wire, parse) in [
            ("SCGI", scgi_wire, parse_cgi as Parse),
            ("uwsgi", uwsgi_wire, parse_http as Parse),
        ] {
            wire.extend_from_slice(&body);
            let mut s = connect(&gw.addr).unwrap();
            trickle(&mut *s, &wire);
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            let v = json(&parse(&out).unwrap());
            assert_eq!(v["sha256"], want, "{name} {uri}");
        }
    }
}
