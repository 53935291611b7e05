//! A running request is watched without killing its worker process: the slow log writes its
//! stack once, interrupt-timeout raises an exception in its thread (its `finally` runs, the
//! client gets 504, the same process serves on), and cancel-on-disconnect does the same when
//! the client goes away.

mod support;

use std::io::Write;
use std::path::Path;

use protocol::fastcgi::{self, encode};
use support::*;

fn spin_uri(marker: &Path, ms: u64) -> String {
    format!("/t/spin?marker={}&ms={ms}", marker.display())
}

fn pid_of(r: &Response) -> u64 {
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    doc["pid"].as_u64().expect("a pid in the body")
}

#[test]
fn slowlog_logs_the_stack_once_and_the_request_completes() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--slowlog-timeout", "1", "--mount", &mount]);
    let dir = tmpdir("slowlog");
    let r = fcgi(&gw.addr, "GET", &spin_uri(&dir.join("m"), 2500), b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let log = gw.log_text();
    assert_eq!(log.matches("(slowlog-timeout 1s)").count(), 1, "{log}");
    assert!(log.contains("GET /t/spin"), "{log}");
    // The stack is the request's thread, down to the app's loop.
    assert!(log.contains("pep3333.wsgi"), "{log}");
    assert!(!log.contains("interrupted"), "{log}");
}

#[test]
fn interrupt_timeout_runs_finally_answers_504_and_the_worker_lives_on() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--interrupt-timeout",
        "1",
        "--threads",
        "2",
        "--mount",
        &mount,
    ]);
    let dir = tmpdir("interrupt");
    let marker = dir.join("m");
    let first = fcgi(&gw.addr, "GET", "/t/spin?marker=/dev/null&ms=0", b"").unwrap();
    assert_eq!(first.status, 200);
    let r = fcgi(&gw.addr, "GET", &spin_uri(&marker, 30_000), b"").unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "finally");
    // The housekeeper logs its interrupt once it is raised: the app may answer before.
    wait_for("the interrupt in the log", || {
        gw.log_text()
            .contains("over interrupt-timeout (1s): interrupted")
    });
    assert!(
        gw.log_text().contains("InterruptTimeout"),
        "{}",
        gw.log_text()
    );
    // The same worker process serves the next requests, on every thread.
    for _ in 0..4 {
        let next = fcgi(&gw.addr, "GET", "/t/spin?marker=/dev/null&ms=0", b"").unwrap();
        assert_eq!(next.status, 200, "{}", next.text());
        assert_eq!(pid_of(&next), pid_of(&first));
    }
}

#[test]
fn the_interrupt_exceptions_are_importable_and_not_exceptions() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount]);
    let r = fcgi(&gw.addr, "GET", "/t/interrupt-class", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["base"], "BaseException");
    assert_eq!(
        doc["names"],
        serde_json::json!(["Cancelled", "InterruptTimeout", "RequestInterrupted"])
    );
}

#[test]
fn a_client_that_goes_away_cancels_its_request() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--cancel-on-disconnect", "--mount", &mount]);
    let dir = tmpdir("cancel");
    let marker = dir.join("m");
    let mut s = connect(&gw.addr).unwrap();
    let uri = spin_uri(&marker, 60_000);
    s.write_all(&fcgi_bytes(1, false, &cgi_params("GET", &uri, 0), b""))
        .unwrap();
    cancelled_when_its_client_goes_away(&gw, s, &marker);
    let next = fcgi(&gw.addr, "GET", "/t/spin?marker=/dev/null&ms=0", b"").unwrap();
    assert_eq!(next.status, 200);
}

#[test]
fn without_cancel_on_disconnect_the_request_runs_to_its_end() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--mount", &mount]);
    let dir = tmpdir("no-cancel");
    let marker = dir.join("m");
    let mut s = connect(&gw.addr).unwrap();
    let uri = spin_uri(&marker, 1500);
    s.write_all(&fcgi_bytes(1, false, &cgi_params("GET", &uri, 0), b""))
        .unwrap();
    wait_for("the request to run", || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "running")
    });
    drop(s);
    wait_for("the app's end", || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "finally")
    });
    assert!(!gw.log_text().contains("the client went away"));
}

/// Through nginx: the browser closes, nginx closes its connection to the gateway, and the
/// request's thread gets `Cancelled`.
#[test]
fn front_nginx_client_gone_cancels_the_request() {
    use support::frontends::*;
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    let script = app("pep3333.wsgi");
    let mount = format!("/t={script}");
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--cancel-on-disconnect",
            "--mount",
            &mount,
        ],
    );
    let dir = tmpdir("cancel-nginx");
    let marker = dir.join("m");
    let mut s = connect(&format!("127.0.0.1:{FRONT_PORT}")).unwrap();
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        spin_uri(&marker, 60_000)
    )
    .unwrap();
    wait_for("the request to run", || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "running")
    });
    drop(s);
    wait_for("the app's finally", || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "finally")
    });
    // Logged once the request is cancelled: its app's finally may run before.
    wait_for("the cancel in the log", || {
        rig.gw.log_text().contains("the client went away")
    });
}

/// A request spinning in its sub-interpreter over request-timeout: its stack is logged at the
/// time (not when it ends), and the worker is recycled.
#[test]
fn request_timeout_reads_the_stack_of_a_spinning_request() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--processes",
        "1",
        "--request-timeout",
        "1",
        "--graceful-timeout",
        "1",
        "--mount",
        &mount,
    ]);
    let dir = tmpdir("spin-timeout");
    let marker = dir.join("m");
    let addr = gw.addr.clone();
    let uri = spin_uri(&marker, 20_000);
    let spinning = std::thread::spawn(move || fcgi(&addr, "GET", &uri, b""));
    wait_for("the stacks in the log", || {
        gw.log_text().contains("Python stacks of this worker")
    });
    let log = gw.log_text();
    assert!(log.contains("over request-timeout"), "{log}");
    assert!(log.contains("pep3333.wsgi"), "{log}");
    // Still spinning: the stacks were read while it ran.
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "running");
    drop(spinning);
}

/// With the process holding buffer-body-total (another request's collected body), a request
/// whose small body came whole is still watched for its client going away.
#[test]
fn a_client_that_goes_away_cancels_its_request_while_bodies_fill_the_budget() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--cancel-on-disconnect",
        "--threads",
        "2",
        "--buffer-body-total",
        "1048576",
        "--mount",
        &mount,
    ]);
    let dir = tmpdir("cancel-full");
    let (held, marker) = (dir.join("held"), dir.join("m"));
    // Holds the whole budget: its 1 MiB body is collected, and its app does not read it.
    let big = vec![b'b'; 1 << 20];
    let uri = format!("/t/block?ms=3000&marker={}", path_str(&held));
    let mut a = connect(&gw.addr).unwrap();
    a.write_all(&fcgi_bytes(
        1,
        false,
        &cgi_params("POST", &uri, big.len()),
        &big,
    ))
    .unwrap();
    wait_for("the request that holds the budget", || held.exists());
    let mut s = connect(&gw.addr).unwrap();
    let uri = spin_uri(&marker, 60_000);
    s.write_all(&fcgi_bytes(
        1,
        false,
        &cgi_params("POST", &uri, 100),
        &[b'x'; 100],
    ))
    .unwrap();
    cancelled_when_its_client_goes_away(&gw, s, &marker);
    assert_eq!(fcgi_read_response(&mut *a, 1).unwrap().status, 200);
}

/// Waits for the spinning request of `s` to run, closes `s`, and checks that the request is
/// cancelled: its app's `finally` runs soon after (not after its spin), and the log says why.
fn cancelled_when_its_client_goes_away(gw: &Gateway, s: Box<dyn Stream>, marker: &Path) {
    wait_for("the request to run", || {
        std::fs::read_to_string(marker).is_ok_and(|t| t == "running")
    });
    drop(s);
    wait_for("the app's finally", || {
        std::fs::read_to_string(marker).is_ok_and(|t| t == "finally")
    });
    // Logged once the request is cancelled: its app's finally may run before.
    wait_for("the cancel in the log", || {
        gw.log_text().contains("the client went away")
    });
}

/// A request whose collected body is larger than what a running request may hold queued
/// (its app has not read it yet) is still watched for its client going away: nothing more of
/// its body can come, so its connection is read.
#[test]
fn a_client_that_goes_away_cancels_its_request_with_a_collected_body() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--cancel-on-disconnect", "--mount", &mount]);
    let dir = tmpdir("cancel-collected");
    let marker = dir.join("m");
    let body = vec![b'x'; 512 * 1024];
    let mut s = connect(&gw.addr).unwrap();
    let uri = spin_uri(&marker, 60_000);
    s.write_all(&fcgi_bytes(
        1,
        false,
        &cgi_params("POST", &uri, body.len()),
        &body,
    ))
    .unwrap();
    cancelled_when_its_client_goes_away(&gw, s, &marker);
}

/// A client that goes away while its response streams: whichever the gateway sees first (its
/// write failing, or the client's close, which cancels), the response's close() then runs to
/// its end, uninterrupted, and the log says the client went away, not that the gateway failed.
#[test]
fn a_cancelled_request_s_close_runs_to_its_end() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--cancel-on-disconnect", "--mount", &mount]);
    let dir = tmpdir("cancel-close");
    for round in 0..3 {
        let marker = dir.join(format!("m{round}"));
        let mut s = connect(&gw.addr).unwrap();
        let uri = format!("/t/close-spin?marker={}&ms=600", marker.display());
        s.write_all(&fcgi_bytes(1, false, &cgi_params("GET", &uri, 0), b""))
            .unwrap();
        let mut some = [0u8; 4096];
        std::io::Read::read_exact(&mut *s, &mut some).unwrap();
        drop(s);
        wait_for("the response's close() to end", || {
            std::fs::read_to_string(&marker).is_ok_and(|t| t == "closed")
        });
    }
    let next = fcgi(&gw.addr, "GET", "/t/spin?marker=/dev/null&ms=0", b"").unwrap();
    assert_eq!(next.status, 200);
    let log = gw.log_text();
    assert!(!log.contains("failed in the gateway"), "{log}");
    let gone = log.matches("client disconnected").count() + log.matches("client went away").count();
    assert!(gone >= 3, "{log}");
}

/// A request whose app does not read its body, with more of the body queued than a running
/// request may hold: its connection is not read until the app catches up, and its client
/// going away is seen all the same (the kernel reports the end of the input). Over a Unix
/// socket, as README advises for such uploads: over TCP the close travels behind the unread
/// body, and reaches the gateway only if the body's rest fits in its socket's receive buffer.
#[test]
fn a_client_that_goes_away_cancels_its_request_while_its_body_waits() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let dir = tmpdir("cancel-paused");
    let sock = dir.join("gw.sock");
    let listen = format!("unix:{}", sock.display());
    let gw = Gateway::start(&[
        "--cancel-on-disconnect",
        "--mount",
        &mount,
        "--listen",
        &listen,
    ]);
    let marker = dir.join("m");
    let uri = spin_uri(&marker, 60_000);
    // 512 KiB of a 4 MiB body, without the end of the stream: the request runs, its queue
    // fills, the rest waits in the socket.
    let mut wire = Vec::new();
    encode::begin_request(1, fastcgi::RESPONDER, 0, &mut wire);
    let params = cgi_params("POST", &uri, 4 << 20);
    encode::params(
        1,
        params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut wire,
    );
    encode::stream(fastcgi::STDIN, 1, &vec![b'p'; 512 * 1024], &mut wire);
    let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&wire));
    wait_for("the request to run", || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "running")
    });
    // The app does not read: what the socket did not take stays with this client.
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.shutdown(std::net::Shutdown::Both).unwrap();
    let _ = sending.join();
    cancelled_when_its_client_goes_away(&gw, Box::new(s), &marker);
}
