//! Connections: a request's unread input is read to its end before its connection closes (a
//! close with unread input resets a web server still writing it), stalled peers are closed
//! after their timeout, limits are answered cleanly. The `front_*` tests run real nginx,
//! lighttpd and Apache with the shipped example configs (the `frontends` test group); the
//! others speak FastCGI and SCGI on raw sockets.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use protocol::fastcgi::{self, encode};
use protocol::scgi;
use support::frontends::*;
use support::*;

fn echo() -> String {
    app("frontend_echo.wsgi")
}

/// What frontend_echo.wsgi's `/unread?kib=N` answers.
fn unread_body(kib: usize) -> Vec<u8> {
    (0..kib * 1024).map(|i| (i % 251) as u8).collect()
}

/// Lines of a web server's logs that show a connection reset or cut short by the gateway.
fn resets(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("reset by peer")
                || l.contains("broken pipe")
                || l.contains("prematurely closed")
                || l.contains("ah01075")
                || l.contains("ah01067")
        })
        .map(str::to_string)
        .collect()
}

/// POST bodies of 1 MiB and 10 MiB, 50 times each, to an app that never reads them, through
/// `kind` with `example`: every response is 200 and whole, and the web server logged no
/// reset.
fn unread_bodies_through(kind: Kind, example: &str, flag: &str, addr: &str, prefix: &str) {
    let mount = format!(
        "{}={}",
        if prefix.is_empty() { "/" } else { prefix },
        echo()
    );
    let rig = Rig::start(
        kind,
        example,
        &[flag, addr, "--threads", "4", "--mount", &mount],
    );
    let want = unread_body(64);
    for mib in [1, 10] {
        let body = pseudo_random(mib << 20, mib as u64);
        for i in 0..50 {
            let r = rig.request("POST", &format!("{prefix}/unread?kib=64"), &[], &body);
            if r.status != 200 || r.body != want {
                panic!(
                    "{mib} MiB POST {i} through {}: status {}, {} of {} body bytes\n{}",
                    rig.front.name,
                    r.status,
                    r.body.len(),
                    want.len(),
                    rig.logs()
                );
            }
        }
    }
    let bad = resets(&rig.front.log_text());
    assert!(
        bad.is_empty(),
        "{}: {bad:#?}\n{}",
        rig.front.name,
        rig.logs()
    );
    rig.assert_gateway_quiet();
}

#[test]
fn front_nginx_fastcgi_unread_bodies() {
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    unread_bodies_through(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        "--fastcgi",
        GATEWAY_TCP,
        "",
    );
}

#[test]
fn front_nginx_fastcgi_keepalive_unread_bodies() {
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    unread_bodies_through(
        Kind::Nginx,
        "nginx-examples/fastcgi-keepalive.conf",
        "--fastcgi",
        GATEWAY_UNIX,
        "",
    );
}

#[test]
fn front_nginx_scgi_unread_bodies() {
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    unread_bodies_through(
        Kind::Nginx,
        "nginx-examples/scgi.conf",
        "--scgi",
        GATEWAY_TCP,
        "",
    );
}

#[test]
fn front_lighttpd_fastcgi_unread_bodies() {
    if !require(find_bin("lighttpd").is_some(), "lighttpd") {
        return;
    }
    unread_bodies_through(
        Kind::Lighttpd,
        "lighttpd-examples/fastcgi.conf",
        "--fastcgi",
        GATEWAY_TCP,
        "/app",
    );
}

#[test]
fn front_lighttpd_scgi_unread_bodies() {
    if !require(find_bin("lighttpd").is_some(), "lighttpd") {
        return;
    }
    unread_bodies_through(
        Kind::Lighttpd,
        "lighttpd-examples/scgi.conf",
        "--scgi",
        GATEWAY_TCP,
        "",
    );
}

fn have_apache() -> bool {
    require(
        find_bin("apache2").is_some()
            && std::path::Path::new("/usr/lib/apache2/modules/mod_proxy_fcgi.so").is_file(),
        "apache2 with mod_proxy_fcgi",
    )
}

#[test]
fn front_apache_fastcgi_unread_bodies() {
    if !have_apache() {
        return;
    }
    unread_bodies_through(
        Kind::Apache,
        "apache-examples/fastcgi.conf",
        "--fastcgi",
        GATEWAY_TCP,
        "",
    );
}

#[test]
fn front_apache_scgi_unread_bodies() {
    if !have_apache() {
        return;
    }
    unread_bodies_through(
        Kind::Apache,
        "apache-examples/scgi.conf",
        "--scgi",
        GATEWAY_TCP,
        "",
    );
}

/// Apache's mod_proxy_fcgi closes the connection after each request and sends the empty
/// STDIN record even without a body: 2,000 GETs and 2,000 small POSTs from 8 clients at
/// once, every one 200, and no AH01075 (an error sending to the gateway).
#[test]
fn front_apache_fastcgi_many_small_requests() {
    if !have_apache() {
        return;
    }
    let mount = format!("/={}", echo());
    let rig = Rig::start(
        Kind::Apache,
        "apache-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--threads",
            "4",
            "--mount",
            &mount,
        ],
    );
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8usize)
            .map(|t| {
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..500usize {
                        let (method, body) = if i % 2 == 0 {
                            ("GET", Vec::new())
                        } else {
                            ("POST", pseudo_random(200 + i, (t * 1000 + i) as u64))
                        };
                        match http(FRONT_PORT, method, &format!("/c{t}/{i}"), &[], &body) {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => failed.push(format!("{method} {t}/{i}: {}", r.status)),
                            Err(e) => failed.push(format!("{method} {t}/{i}: {e}")),
                        }
                    }
                    failed
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}\n{}", rig.logs());
    let bad = resets(&rig.front.log_text());
    assert!(bad.is_empty(), "{bad:#?}\n{}", rig.logs());
    rig.assert_gateway_quiet();
}

// ---- raw sockets ----

fn gateway(extra: &[&str]) -> Gateway {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let mut args = vec!["--mount", &mount, "--threads", "2"];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// FastCGI bytes of a request whose CONTENT_LENGTH is `len`, with only `sent` body bytes and
/// no end of the body yet.
fn fcgi_start(uri: &str, len: usize, sent: &[u8], keep: bool) -> Vec<u8> {
    let mut wire = Vec::new();
    let flags = if keep { fastcgi::KEEP_CONN } else { 0 };
    encode::begin_request(1, fastcgi::RESPONDER, flags, &mut wire);
    let params = cgi_params("POST", uri, len);
    encode::params(
        1,
        params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut wire,
    );
    encode::stream(fastcgi::STDIN, 1, sent, &mut wire);
    wire
}

/// The FastCGI bytes of the rest of a body, and its end.
fn fcgi_rest(rest: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    encode::stream(fastcgi::STDIN, 1, rest, &mut wire);
    encode::stream_end(fastcgi::STDIN, 1, &mut wire);
    wire
}

/// Reads until the peer closes: Ok when it closed cleanly (EOF), Err on a reset.
fn read_to_close(s: &mut dyn Stream) -> Result<usize, String> {
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn fastcgi_input_is_read_to_its_end_before_the_close() {
    let gw = gateway(&[]);
    let body = pseudo_random(4 << 20, 4);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_start(
        "/t/write",
        body.len(),
        &body[..32 << 10],
        false,
    ))
    .unwrap();
    // The app answers without reading the body: the whole response arrives...
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    assert_eq!(r.text(), "written directly then returned");
    // ...and the rest of the input is still taken, then the connection closes cleanly.
    s.write_all(&fcgi_rest(&body[32 << 10..]))
        .expect("the gateway reads the rest of the input");
    read_to_close(&mut *s).expect("a clean close, not a reset");
    assert!(!gw.log_text().contains("[warn]"), "{}", gw.log_text());
}

#[test]
fn scgi_input_is_read_to_its_end_before_the_close() {
    let gw = gateway(&[]);
    let body = pseudo_random(4 << 20, 5);
    let params: Vec<_> = cgi_params("POST", "/t/write", body.len())
        .into_iter()
        .filter(|(n, _)| n != "CONTENT_LENGTH")
        .collect();
    let mut wire = Vec::new();
    scgi::encode_request(
        body.len() as u64,
        params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut wire,
    );
    wire.extend_from_slice(&body[..32 << 10]);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&wire).unwrap();
    // An SCGI response ends with the connection: read its head and its Content-Length.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, used) = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
        if let Some(h) = protocol::cgi::parse_response_head(&got) {
            break h.unwrap();
        }
    };
    assert_eq!(head.status, 200);
    // The app writes its body in three pieces, with no Content-Length: read them all.
    let want = b"written directly then returned";
    while got.len() - used < want.len() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the whole response");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[used..], want);
    s.write_all(&body[32 << 10..])
        .expect("the gateway reads the rest of the input");
    read_to_close(&mut *s).expect("a clean close, not a reset");
}

#[test]
fn a_peer_that_never_finishes_its_body_is_closed_after_the_linger_timeout() {
    let gw = gateway(&["--linger-timeout", "1"]);
    let body = pseudo_random(2 << 20, 6);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_start("/t/write", body.len(), &body[..1000], false))
        .unwrap();
    fcgi_read_response(&mut *s, 1).unwrap();
    let answered = Instant::now();
    // The response's end is a half close (the web server may stop sending and close)...
    read_to_close(&mut *s).expect("the end of the response");
    // ...while the gateway goes on reading what the peer sends, until the linger timeout.
    let mut trickle = Vec::new();
    encode::stream(fastcgi::STDIN, 1, b"12345678", &mut trickle);
    let lingered = loop {
        if s.write_all(&trickle).is_err() {
            break answered.elapsed();
        }
        assert!(answered.elapsed() < TIMEOUT, "never closed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        lingered >= Duration::from_millis(900),
        "closed {lingered:?} after the response, before the linger timeout"
    );
}

#[test]
fn a_body_over_max_body_bytes_gets_413_and_is_drained() {
    let gw = gateway(&["--max-body-bytes", "100000"]);
    let body = pseudo_random(300_000, 7);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&fcgi_start("/t/upload", body.len(), &body[..1000], false))
        .unwrap();
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("over 100000"), "{}", r.text());
    s.write_all(&fcgi_rest(&body[1000..]))
        .expect("drained, not reset");
    read_to_close(&mut *s).expect("a clean close");
    // Within the limit: served.
    let r = fcgi(&gw.addr, "POST", "/t/upload", &body[..50_000]).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_kept_connection_drops_an_unread_body_and_serves_the_next_request() {
    let gw = gateway(&[]);
    let body = pseudo_random(500_000, 8);
    let mut s = connect(&gw.addr).unwrap();
    for round in 0..3 {
        let mut wire = fcgi_start("/t/write", body.len(), &body, true);
        wire.extend(fcgi_rest(b""));
        s.write_all(&wire).unwrap();
        let r = fcgi_read_response(&mut *s, 1).unwrap();
        assert_eq!(r.text(), "written directly then returned", "round {round}");
    }
    s.write_all(&fcgi_bytes(
        1,
        true,
        &cgi_params("POST", "/t/upload", 5),
        b"hello",
    ))
    .unwrap();
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    assert!(r.text().contains("\"length\": 5"), "{}", r.text());
}

#[test]
fn the_end_of_input_behind_the_last_bytes_is_seen() {
    // Readiness is edge-triggered: when a web server's last bytes and its end (a shutdown of
    // its side, or a close) arrive together, the end makes no event of its own. Before, the
    // connection then waited for a timeout; each case ran 20 times, as it came about one time
    // in two to five.
    let gw = gateway(&["--body-timeout", "30", "--keepalive-timeout", "60"]);
    let body = pseudo_random(500_000, 9);
    for round in 0..20 {
        // An SCGI upload cut short by a half close: the connection closes without an
        // answer, not with the body timeout's 408.
        let params = cgi_params("POST", "/t/upload", 1 << 20);
        let mut wire = Vec::new();
        let pairs = params.iter().filter(|(n, _)| n != "CONTENT_LENGTH");
        let pairs = pairs.map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        scgi::encode_request(1 << 20, pairs, &mut wire);
        wire.extend_from_slice(&body);
        let mut s = tcp(&gw.addr);
        s.write_all(&wire).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_close(&mut s), Ok(0), "SCGI, round {round}");
        // The same with the whole body: the request is answered (the end of the input is
        // not the client going away).
        let mut wire = Vec::new();
        let params = cgi_params("POST", "/t/upload", body.len());
        let pairs = params.iter().filter(|(n, _)| n != "CONTENT_LENGTH");
        let pairs = pairs.map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        scgi::encode_request(body.len() as u64, pairs, &mut wire);
        wire.extend_from_slice(&body);
        let mut s = tcp(&gw.addr);
        s.write_all(&wire).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let r = parse_cgi(&out).unwrap();
        assert!(
            r.text().contains("\"length\": 500000"),
            "round {round}: {}",
            r.text()
        );
        // A kept FastCGI connection that the web server shuts after its answer, with the
        // body the app did not read still coming: it closes too, not after the idle timeout.
        let mut wire = fcgi_start("/t/write", body.len(), &body, true);
        wire.extend(fcgi_rest(b""));
        let mut s = tcp(&gw.addr);
        s.write_all(&wire).unwrap();
        let r = fcgi_read_response(&mut s, 1).unwrap();
        assert_eq!(r.status, 200);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_close(&mut s), Ok(0), "FastCGI, round {round}");
        // A whole FastCGI request, then a half close: answered, then closed.
        let mut s = tcp(&gw.addr);
        s.write_all(&fcgi_bytes(
            1,
            true,
            &cgi_params("POST", "/t/upload", 5),
            b"hello",
        ))
        .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let r = fcgi_read_response(&mut s, 1).unwrap();
        assert!(
            r.text().contains("\"length\": 5"),
            "round {round}: {}",
            r.text()
        );
        assert_eq!(read_to_close(&mut s), Ok(0), "FastCGI, round {round}");
    }
}

/// A TCP connection to the gateway (which the tests start on a TCP address), with bounded
/// timeouts; unlike [`connect`]'s, it can be shut down one way.
#[test]
fn content_length_that_is_not_a_number_is_400() {
    let gw = gateway(&[]);
    for bad in ["-5", " 12", "1_000", "12a"] {
        let mut params = cgi_params("POST", "/t/upload", 0);
        for (n, v) in &mut params {
            if n == "CONTENT_LENGTH" {
                *v = bad.to_string();
            }
        }
        let mut s = connect(&gw.addr).unwrap();
        s.write_all(&fcgi_bytes(1, false, &params, b"")).unwrap();
        let r = fcgi_read_response(&mut *s, 1).unwrap();
        assert_eq!(r.status, 400, "CONTENT_LENGTH {bad:?}");
    }
}

#[test]
fn an_incomplete_head_is_closed_after_the_header_timeout() {
    let gw = gateway(&["--header-timeout", "1"]);
    let wire = fcgi_bytes(1, false, &cgi_params("GET", "/t/write", 0), b"");
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&wire[..20]).unwrap();
    let started = Instant::now();
    read_to_close(&mut *s).expect("closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    wait_for("the log line", || gw.log_text().contains("header timeout"));
    // Others are served meanwhile and after.
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
}

#[test]
fn at_the_connection_limit_new_connections_wait_in_the_backlog() {
    let gw = gateway(&["--max-connections", "2"]);
    let a = connect(&gw.addr).unwrap();
    let b = connect(&gw.addr).unwrap();
    wait_for("the limit to be logged", || {
        gw.log_text()
            .contains("the connection limit (max-connections) is reached")
    });
    let addr = gw.addr.clone();
    let third = std::thread::spawn(move || fcgi(&addr, "GET", "/t/write", b""));
    drop(a);
    let r = third.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    drop(b);
    assert_eq!(
        gw.log_text().matches("connection limit").count(),
        1,
        "logged once\n{}",
        gw.log_text()
    );
}

/// Whether a whole response to request 1 comes on `s` within `wait`.
fn answered_within(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let answered = fcgi_read_response(s, 1).is_ok_and(|r| r.status == 200);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    answered
}

#[test]
fn a_process_of_one_thread_takes_no_more_than_max_connections_at_once() {
    // With one thread, a wait takes every ready connection at once (up to 16): here four
    // kept connections, each with a whole request, come while the thread runs a slow one.
    // Only two may be taken; the others wait in the backlog until one of those closes.
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let args = [
        "--mount",
        &mount,
        "--threads",
        "1",
        "--max-connections",
        "2",
    ];
    let gw = Gateway::start(&args);
    let mut slow = connect(&gw.addr).unwrap();
    fcgi_send(&mut *slow, false, "GET", "/t/slow?ms=500");
    std::thread::sleep(Duration::from_millis(100));
    let mut kept: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = tcp(&gw.addr);
            fcgi_send(&mut s, true, "GET", "/t/count");
            s
        })
        .collect();
    assert_eq!(fcgi_read_response(&mut *slow, 1).unwrap().status, 200);
    drop(slow);
    let wait = Duration::from_millis(700);
    let (mut done, mut waiting): (Vec<_>, Vec<_>) = kept
        .drain(..)
        .map(|mut s| (answered_within(&mut s, wait), s))
        .partition(|(answered, _)| *answered);
    assert_eq!((done.len(), waiting.len()), (2, 2), "{}", gw.log_text());
    // One closes: one more is taken, and answered.
    drop(done.pop());
    let more = (waiting.iter_mut())
        .map(|(_, s)| answered_within(s, Duration::from_secs(3)))
        .filter(|&answered| answered)
        .count();
    assert_eq!(more, 1, "{}", gw.log_text());
}

/// A client outside allow-from is closed at accept: no request of it reaches the app, and the
/// log says so once (not once per connection).
#[test]
fn allow_from_closes_other_clients_at_accept() {
    let dir = tmpdir("allow-from");
    let marker = dir.join("ran");
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--allow-from", "10.0.0.0/8, 192.168.1.7", "--mount", &mount]);
    let uri = format!("/t/block?marker={}&ms=0", marker.display());
    for _ in 0..5 {
        assert!(fcgi(&gw.addr, "GET", &uri, b"").is_err());
    }
    assert!(!marker.exists(), "a refused client's request ran");
    let log = gw.log_text();
    assert_eq!(
        log.matches("refused a connection from 127.0.0.1").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("not in allow-from (10.0.0.0/8,192.168.1.7/32)"),
        "{log}"
    );
    assert!(
        log.contains("clients allowed: 10.0.0.0/8,192.168.1.7/32"),
        "{log}"
    );
}

#[test]
fn allow_from_lets_listed_clients_in() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--allow-from", "127.0.0.0/8", "--mount", &mount]);
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
    assert!(!gw.log_text().contains("refused"));
}

/// The FastCGI spec's FCGI_WEB_SERVER_ADDRS works like allow-from; allow-from wins over it.
#[test]
fn fcgi_web_server_addrs_is_honoured() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start_with_env(
        &["--mount", &mount],
        &[("FCGI_WEB_SERVER_ADDRS", "10.1.2.3,10.1.2.4")],
    );
    assert!(fcgi(&gw.addr, "GET", "/t/write", b"").is_err());
    assert!(gw
        .log_text()
        .contains("not in allow-from (10.1.2.3/32,10.1.2.4/32)"));
    let gw = Gateway::start_with_env(
        &["--allow-from", "127.0.0.1", "--mount", &mount],
        &[("FCGI_WEB_SERVER_ADDRS", "10.1.2.3")],
    );
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
}

#[test]
fn a_bad_allow_list_is_refused_before_serving() {
    let (code, err) = run_gateway(&["check", "--allow-from", "10.0.0.0/33"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("allow-from"), "{err}");
}

/// One `--listen` socket tells FastCGI, SCGI and uwsgi apart by their first byte.
#[test]
fn one_listener_serves_all_three_protocols() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount]);
    for _ in 0..3 {
        let f = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
        let s = scgi(&gw.addr, "GET", "/t/write", b"").unwrap();
        let u = uwsgi(&gw.addr, "POST", "/t/upload", b"0123456789").unwrap();
        assert_eq!((f.status, s.status, u.status), (200, 200, 200));
        assert_eq!(f.body, s.body);
        assert!(u.text().contains("10"), "{}", u.text());
    }
    assert!(gw.log_text().contains("(FastCGI+SCGI+uwsgi)"));
}

/// uwsgi packets for other modifiers (not a WSGI request) are refused: the connection is
/// closed, the log says why, and the next request is served.
#[test]
fn uwsgi_other_modifiers_are_refused_cleanly() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--uwsgi",
        &format!("127.0.0.1:{}", free_port()),
        "--mount",
        &mount,
    ]);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(&[5, 4, 0, 0, 1, 0, b'a', 0]).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{out:?}");
    wait_for("the refusal in the log", || {
        gw.log_text().contains("modifier")
    });
    let r = uwsgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "written directly then returned");
}

/// A world-writable Unix socket is served, with a warning naming the safe way.
#[test]
fn a_world_writable_socket_is_warned_about() {
    let dir = tmpdir("mode-666");
    let sock = format!("unix:{}", dir.join("gw.sock").display());
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--fastcgi",
        &sock,
        "--socket-mode",
        "666",
        "--mount",
        &mount,
    ]);
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
    let log = gw.log_text();
    assert!(
        log.contains("socket-mode 666 lets any local user connect"),
        "{log}"
    );
    assert!(
        log.contains("socket-user (or socket-group) with mode 660"),
        "{log}"
    );
}

/// Connections waiting in the listen queue are taken before kept connections' next requests:
/// with kept connections busy, the epoll reports a listener once per round of them, so a queue
/// of new connections would drain one per round (the last one waiting for every kept
/// connection many times over). Counted in requests, not timed.
#[test]
fn waiting_connections_are_not_starved_by_kept_ones() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    const KEPT: usize = 4;
    const NEW: usize = 8;
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount, "--threads", "1"]);
    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let kept: Vec<_> = (0..KEPT)
        .map(|_| {
            let (addr, served, stop) = (gw.addr.clone(), served.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut s = connect(&addr).unwrap();
                let wire = fcgi_bytes(1, true, &cgi_params("GET", "/t/slow?ms=5", 0), b"");
                let mut reader = FcgiReader::default();
                while !stop.load(Ordering::SeqCst) {
                    s.write_all(&wire).unwrap();
                    let mut stdout = Vec::new();
                    reader
                        .read_until(&mut *s, 1, &mut stdout, |kind, _| {
                            kind == fastcgi::END_REQUEST
                        })
                        .unwrap();
                    served.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_for("the kept connections to be served", || {
        served.load(Ordering::SeqCst) >= 2 * KEPT
    });
    // New connections, all waiting at once.
    let mut new: Vec<_> = (0..NEW)
        .map(|_| {
            let mut s = connect(&gw.addr).unwrap();
            let wire = fcgi_bytes(1, false, &cgi_params("GET", "/t/slow?ms=5", 0), b"");
            s.write_all(&wire).unwrap();
            s
        })
        .collect();
    let before = served.load(Ordering::SeqCst);
    for s in &mut new {
        assert_eq!(fcgi_read_response(&mut **s, 1).unwrap().status, 200);
    }
    let meanwhile = served.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    for t in kept {
        t.join().unwrap();
    }
    // Served in order of arrival, the new connections wait for about one round of the kept
    // ones; one per round, they would wait for NEW rounds (KEPT * NEW requests).
    assert!(
        meanwhile <= 2 * KEPT + NEW / 2,
        "{meanwhile} requests of kept connections were served while {NEW} new connections \
         waited"
    );
}

/// The `hits` of a `/t/count` response.
fn hits_in(r: &Response) -> u64 {
    let text = r.text();
    text.split("\"hits\": ")
        .nth(1)
        .and_then(|t| t.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no hits in {text:?}"))
}

/// Requests run in the order they came: one whose body was still being collected when a later
/// request arrived runs first, although the later one's connection is taken in the same wait
/// before its body's end is read (a process of one thread, busy meanwhile).
#[test]
fn a_request_whose_body_was_collected_runs_before_those_that_came_after_it() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount, "--threads", "1"]);
    // A: half of its body, collected by the idle thread.
    let mut first = connect(&gw.addr).unwrap();
    first
        .write_all(&fcgi_start("/t/count", 100_000, &[b'a'; 50_000], false))
        .unwrap();
    // The thread runs another request meanwhile (taken after A: one listen queue).
    let mut busy = blocking_request(&gw.addr, "order", 1500);
    // B comes, whole; then the rest of A's body.
    let mut second = connect(&gw.addr).unwrap();
    fcgi_send(&mut *second, false, "GET", "/t/count");
    first.write_all(&fcgi_rest(&[b'a'; 50_000])).unwrap();
    assert_eq!(fcgi_read_response(&mut *busy, 1).unwrap().status, 200);
    let a = fcgi_read_response(&mut *first, 1).unwrap();
    let b = fcgi_read_response(&mut *second, 1).unwrap();
    assert_eq!((a.status, b.status), (200, 200));
    assert!(
        hits_in(&a) < hits_in(&b),
        "the request that came first ran second: {} / {}",
        a.text(),
        b.text()
    );
}

/// The head of FastCGI request `id` (KEEP_CONN): BEGIN_REQUEST and its PARAMS records, without
/// the empty record that ends them.
fn fcgi_head_begun(id: u16, uri: &str) -> Vec<u8> {
    let mut wire = Vec::new();
    encode::begin_request(id, fastcgi::RESPONDER, fastcgi::KEEP_CONN, &mut wire);
    let params = cgi_params("GET", uri, 0);
    encode::params(
        id,
        params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut wire,
    );
    wire.truncate(wire.len() - fastcgi::HEADER_LEN);
    wire
}

/// The rest of `fcgi_head_begun`: the end of the PARAMS and of the (empty) body.
fn fcgi_head_end(id: u16) -> Vec<u8> {
    let mut wire = Vec::new();
    encode::stream_end(fastcgi::PARAMS, id, &mut wire);
    encode::stream_end(fastcgi::STDIN, id, &mut wire);
    wire
}

/// While the gateway stops, a kept connection closes after its response, but a request that
/// began arriving on it (its head not yet whole) is served first: closing would answer it
/// with nothing once its app had run.
#[test]
fn a_request_begun_on_a_kept_connection_while_stopping_is_served() {
    let gw = gateway(&[]);
    let dir = tmpdir("stop-begun");
    let marker = dir.join("running");
    let mut s = connect(&gw.addr).unwrap();
    // A request runs; the next one (multiplexed) has begun, its head not yet whole.
    let uri = format!("/t/block?marker={}&ms=1000", marker.display());
    s.write_all(&fcgi_bytes(1, true, &cgi_params("GET", &uri, 0), b""))
        .unwrap();
    wait_for("the first request to run", || marker.exists());
    s.write_all(&fcgi_head_begun(2, "/t/write")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal(gw.pid(), "TERM");
    let mut reader = FcgiReader::default();
    assert_eq!(
        parse_cgi(&reader.read_responses(&mut *s, 1).unwrap()[&1])
            .unwrap()
            .status,
        200
    );
    s.write_all(&fcgi_head_end(2)).unwrap();
    let second = reader
        .read_responses(&mut *s, 1)
        .map_err(|e| format!("{e}\n{}", gw.log_text()));
    assert_eq!(parse_cgi(&second.unwrap()[&2]).unwrap().status, 200);
    assert_eq!(read_to_close(&mut *s), Ok(0));
    drop(gw);

    // An idle kept connection whose next request has only begun is not closed as idle.
    let gw = gateway(&[]);
    let mut s = connect(&gw.addr).unwrap();
    fcgi_send(&mut *s, true, "GET", "/t/write");
    let mut reader = FcgiReader::default();
    reader.read_responses(&mut *s, 1).unwrap();
    // Only its BEGIN_REQUEST record (decoded at once), then the rest.
    let next = fcgi_head_begun(1, "/t/write");
    let (begin, params) = next.split_at(fastcgi::HEADER_LEN * 2);
    s.write_all(begin).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal(gw.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(params).unwrap();
    s.write_all(&fcgi_head_end(1)).unwrap();
    let next = reader
        .read_responses(&mut *s, 1)
        .map_err(|e| format!("{e}\n{}", gw.log_text()));
    assert_eq!(parse_cgi(&next.unwrap()[&1]).unwrap().status, 200);
    assert_eq!(read_to_close(&mut *s), Ok(0));
}

/// While the gateway stops, an idle kept connection closes, but not over a request that its web
/// server already sent and nobody has read yet (the only thread is busy): it is read first,
/// served, and the connection closes after its response.
#[test]
fn a_request_unread_on_an_idle_kept_connection_while_stopping_is_served() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount, "--threads", "1"]);
    let mut kept = connect(&gw.addr).unwrap();
    fcgi_send(&mut *kept, true, "GET", "/t/write");
    let mut reader = FcgiReader::default();
    reader.read_responses(&mut *kept, 1).unwrap();
    // The only thread runs a request of another connection.
    let mut busy = blocking_request(&gw.addr, "stop-unread", 1000);
    fcgi_send(&mut *kept, true, "GET", "/t/write");
    signal(gw.pid(), "TERM");
    let next = reader
        .read_responses(&mut *kept, 1)
        .map_err(|e| format!("{e}\n{}", gw.log_text()));
    assert_eq!(parse_cgi(&next.unwrap()[&1]).unwrap().status, 200);
    assert_eq!(read_to_close(&mut *kept), Ok(0));
    assert_eq!(fcgi_read_response(&mut *busy, 1).unwrap().status, 200);
}

/// While the gateway stops, a kept connection closes right after a response's end. A request
/// its web server sends after that end (before it sees the close) is not run: it gets no
/// answer, as from a closed connection, so it can be sent again elsewhere without having run
/// twice.
#[test]
fn a_request_sent_after_the_last_response_of_a_closing_connection_is_not_run() {
    let gw = gateway(&[]);
    let dir = tmpdir("stop-after-end");
    let (start, go, first, second) = (
        dir.join("start"),
        dir.join("go"),
        dir.join("first"),
        dir.join("second"),
    );
    let mut s = connect(&gw.addr).unwrap();
    let uri = format!(
        "/t/sized-wait?start={}&go={}&marker={}",
        start.display(),
        go.display(),
        first.display()
    );
    fcgi_send(&mut *s, true, "GET", &uri);
    std::thread::sleep(Duration::from_millis(200));
    signal(gw.pid(), "TERM");
    wait_for("the stop", || gw.log_text().contains("SIGTERM: stopping"));
    // The response ends with its last byte while its app goes on.
    std::fs::write(&start, "").unwrap();
    let mut reader = FcgiReader::default();
    let r = reader.read_responses(&mut *s, 1).unwrap();
    assert_eq!(parse_cgi(&r[&1]).unwrap().text(), "complete");
    let uri = format!("/t/block?marker={}&ms=0", second.display());
    fcgi_send(&mut *s, true, "GET", &uri);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&go, "").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!second.exists(), "{}", gw.log_text());
}

/// A connection waiting in the listen backlog when the gateway stops (its only thread busy)
/// is taken and served before the listening socket closes: closing would reset it.
#[test]
fn a_connection_waiting_in_the_backlog_when_the_gateway_stops_is_served() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount, "--threads", "1"]);
    let mut busy = blocking_request(&gw.addr, "stop-backlog", 800);
    let mut waiting = connect(&gw.addr).unwrap();
    fcgi_send(&mut *waiting, false, "GET", "/t/write");
    signal(gw.pid(), "TERM");
    let r = fcgi_read_response(&mut *waiting, 1).map_err(|e| format!("{e}\n{}", gw.log_text()));
    assert_eq!(r.unwrap().status, 200);
    assert_eq!(fcgi_read_response(&mut *busy, 1).unwrap().status, 200);
}

/// A stopping process takes its backlog without waiting for requests that have not come: 300
/// connections that send nothing, ahead of one with a request, would otherwise hold it 10 ms
/// each (3 s) before that request is read. They are closed a second later, not held until the
/// graceful timeout (30 s) ends the process. One that has sent part of its head keeps its
/// header timeout, and is served when the rest comes.
#[test]
fn connections_that_send_nothing_in_the_backlog_at_a_stop_do_not_hold_up_the_others() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let mut gw = Gateway::start(&["--mount", &mount, "--threads", "1"]);
    let mut busy = blocking_request(&gw.addr, "stop-backlog-silent", 300);
    let mut partial = connect(&gw.addr).unwrap();
    let head = fcgi_head_begun(1, "/t/write");
    let (begun, rest) = head.split_at(head.len() / 2);
    partial.write_all(begun).unwrap();
    let silent: Vec<_> = (0..300).map(|_| connect(&gw.addr).unwrap()).collect();
    let mut waiting = connect(&gw.addr).unwrap();
    fcgi_send(&mut *waiting, false, "GET", "/t/write");
    let start = Instant::now();
    signal(gw.pid(), "TERM");
    let r = fcgi_read_response(&mut *waiting, 1).map_err(|e| format!("{e}\n{}", gw.log_text()));
    assert_eq!(r.unwrap().status, 200);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the request waiting behind 300 silent connections was answered after {took:?}"
    );
    assert_eq!(fcgi_read_response(&mut *busy, 1).unwrap().status, 200);
    for mut s in silent {
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).unwrap(),
            0,
            "a silent connection got an answer"
        );
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the silent connections were closed {took:?} after the stop\n{}",
        gw.log_text()
    );
    partial.write_all(rest).unwrap();
    partial.write_all(&fcgi_head_end(1)).unwrap();
    let r = FcgiReader::default()
        .read_responses(&mut *partial, 1)
        .map_err(|e| format!("{e}\n{}", gw.log_text()));
    assert_eq!(parse_cgi(&r.unwrap()[&1]).unwrap().status, 200);
    assert!(gw.wait_exit().success(), "{}", gw.log_text());
}

/// SCGI and uwsgi bodies collected before their requests run are read a piece at a time as
/// they arrive, straight into the room reserved for them: every byte lands where it belongs,
/// and the memory they held is given back. Four uploads of about 1 MiB pass through a
/// buffer-body-total of 1 MiB; then uploads that stall are still collected without the only
/// thread, so a request behind them is answered at once (were the bodies still counted, the
/// stalled ones would run, and the request would wait for the body timeout, past the
/// client's).
#[test]
fn collected_scgi_and_uwsgi_bodies_arrive_whole_and_are_let_go() {
    let gw = one_thread_with_a_1mib_body_budget();
    let head = |uwsgi_wire: bool, len: usize| {
        let params = cgi_params("POST", "/t/upload", len);
        let pairs = params
            .iter()
            .filter(|(n, _)| n != "CONTENT_LENGTH")
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let mut wire = Vec::new();
        if uwsgi_wire {
            protocol::uwsgi::encode_request(len as u64, pairs, &mut wire);
        } else {
            scgi::encode_request(len as u64, pairs, &mut wire);
        }
        wire
    };
    for round in 0..2 {
        for uwsgi_wire in [false, true] {
            // At most buffer-body (1 MiB): collected before the request runs.
            let len = (1 << 20) - round * 4099;
            let body: Vec<u8> = (0..len as u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                .collect();
            let mut wire = head(uwsgi_wire, len);
            let start = wire.len();
            wire.extend_from_slice(&body);
            // The head and a little of the body, then the rest in uneven pieces, each read
            // on its own.
            let cuts = [
                start + 1000,
                start + 70_001,
                start + 300_000,
                wire.len() - 1,
            ];
            let mut s = connect(&gw.addr).unwrap();
            let mut at = 0;
            for cut in cuts.into_iter().chain([wire.len()]) {
                s.write_all(&wire[at..cut]).unwrap();
                at = cut;
                std::thread::sleep(Duration::from_millis(30));
            }
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            let r = if uwsgi_wire {
                parse_http(&out)
            } else {
                parse_cgi(&out)
            }
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["length"].as_u64(), Some(len as u64), "{v}");
            assert_eq!(v["sha256"], sha256_hex(&body), "uwsgi: {uwsgi_wire}");
        }
    }
    answered_behind_stalled_uploads(&gw, || {
        let mut wire = head(false, 1 << 20);
        wire.extend_from_slice(&[b'x'; 1000]);
        wire
    });
}

/// In a process of more threads, all busy, a body being collected is read before the new
/// requests that came meanwhile are taken: the thread that frees up reads the connections
/// collecting a body first (the rest of the body came after a kept connection's new request),
/// so the request whose body it completes, which came first, runs first. (Taking one ready connection per
/// free thread, in the order they became ready, it ran the new request first: a body's every
/// read waited behind the new requests of kept connections, until the housekeeper saw every
/// thread stuck for a tick.)
#[test]
fn a_body_being_collected_is_read_before_new_requests_are_taken() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount, "--threads", "2"]);
    let dir = tmpdir("collect-first");
    // A request that runs until its file `go` appears.
    let gate = |name: &str| {
        let marker = dir.join(format!("{name}.running"));
        let go = dir.join(format!("{name}.go"));
        let mut s = connect(&gw.addr).unwrap();
        let uri = format!("/t/gate?marker={}&go={}", marker.display(), go.display());
        fcgi_send(&mut *s, false, "GET", &uri);
        wait_for("the gated request to run", || marker.exists());
        (s, go)
    };
    // C's kept connection, idle after a first request.
    let mut c = connect(&gw.addr).unwrap();
    fcgi_send(&mut *c, true, "GET", "/t/count");
    assert_eq!(fcgi_read_response(&mut *c, 1).unwrap().status, 200);
    let (mut first, first_go) = gate("first");
    // A: half of its body, collected by the other thread; C's next request is answered
    // after that (one thread takes the events in the order they came).
    let mut a = connect(&gw.addr).unwrap();
    a.write_all(&fcgi_start("/t/count", 100_000, &[b'a'; 50_000], false))
        .unwrap();
    fcgi_send(&mut *c, true, "GET", "/t/count");
    assert_eq!(fcgi_read_response(&mut *c, 1).unwrap().status, 200);
    // Both threads busy; C's request comes, then the rest of A's body; then a thread frees.
    let (mut second, second_go) = gate("second");
    fcgi_send(&mut *c, true, "GET", "/t/count");
    a.write_all(&fcgi_rest(&[b'a'; 50_000])).unwrap();
    std::fs::write(&first_go, "").unwrap();
    assert_eq!(fcgi_read_response(&mut *first, 1).unwrap().status, 200);
    let ra = fcgi_read_response(&mut *a, 1).unwrap();
    let rc = fcgi_read_response(&mut *c, 1).unwrap();
    assert_eq!((ra.status, rc.status), (200, 200));
    std::fs::write(&second_go, "").unwrap();
    assert_eq!(fcgi_read_response(&mut *second, 1).unwrap().status, 200);
    assert!(
        hits_in(&ra) < hits_in(&rc),
        "the new request ran before the one whose body was being collected: {} / {}",
        ra.text(),
        rc.text()
    );
}
