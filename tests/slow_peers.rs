//! Slow, stalled and unlucky peers cannot take the server down: stalled uploads hold no
//! thread, queue-timeout answers on time, a recycled worker process is replaced at once,
//! reloads and recycles lose no request under load, and load goes to the idle worker
//! process. The `front_*` tests run real nginx and Apache with the shipped example configs
//! (the `frontends` test group).

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::frontends::*;
use support::*;

fn have_apache() -> bool {
    require(
        find_bin("apache2").is_some()
            && std::path::Path::new("/usr/lib/apache2/modules/mod_proxy_fcgi.so").is_file(),
        "apache2 with mod_proxy_fcgi",
    )
}

/// Apache's mod_proxy_fcgi streams request bodies: uploads that stall hold no thread of the
/// gateway while their body is collected, a plain GET is answered at once, and the stalled
/// ones end at the body timeout with a log line.
#[test]
fn front_apache_stalled_uploads_hold_no_thread() {
    if !have_apache() {
        return;
    }
    let mount = format!("/={}", app("frontend_echo.wsgi"));
    let rig = Rig::start(
        Kind::Apache,
        "apache-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--threads",
            "2",
            "--body-timeout",
            "4",
            "--mount",
            &mount,
        ],
    );
    // Four uploads (twice the threads) that send part of their body and stop.
    let stalled: Vec<_> = (0..4)
        .map(|i| {
            let mut s = connect(&format!("127.0.0.1:{FRONT_PORT}")).unwrap();
            let head = format!(
                "POST /upload/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&[b'x'; 1000]).unwrap();
            s
        })
        .collect();
    wait_for("the stalled uploads to reach the gateway", || {
        // The gateway's own view: four connections established on its port.
        established(9000) >= 4
    });
    let started = Instant::now();
    let r = rig.ok("GET", "/probe", &[], b"");
    let took = started.elapsed();
    assert_eq!(Echo::parse(&r).get("PATH_INFO"), "/probe");
    assert!(
        took < Duration::from_secs(2),
        "the probe took {took:?} behind stalled uploads"
    );
    wait_for("the body timeout of the stalled uploads", || {
        rig.gw.log_text().matches("made no progress for").count() >= 4
    });
    drop(stalled);
}

/// Connections established to local TCP port `port` (from /proc/net/tcp; state 01).
fn established(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

fn block_uri(marker: &std::path::Path, ms: u64) -> String {
    format!("/t/block?marker={}&ms={ms}", marker.display())
}

#[test]
fn queue_timeout_answers_on_time_when_every_thread_is_stuck() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--threads", "1", "--queue-timeout", "1", "--mount", &mount]);
    let dir = tmpdir("queue-timeout");
    let marker = dir.join("running");
    let addr = gw.addr.clone();
    let uri = block_uri(&marker, 5000);
    let stuck = std::thread::spawn(move || fcgi(&addr, "GET", &uri, b""));
    wait_for("the stuck request to run", || marker.exists());
    let started = Instant::now();
    let r = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        took < Duration::from_millis(1500),
        "the 503 came after {took:?}\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text().contains("queue-timeout 1s): 503"),
        "{}",
        gw.log_text()
    );
    assert_eq!(stuck.join().unwrap().unwrap().status, 200);
}

#[test]
fn a_recycled_worker_is_replaced_at_once() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--processes",
        "1",
        "--request-timeout",
        "2",
        "--graceful-timeout",
        "20",
        "--mount",
        &mount,
    ]);
    let dir = tmpdir("recycle-gap");
    let marker = dir.join("running");
    let addr = gw.addr.clone();
    let uri = block_uri(&marker, 8000);
    let stuck = std::thread::spawn(move || fcgi(&addr, "GET", &uri, b""));
    wait_for("the stuck request to run", || marker.exists());
    wait_for("the request timeout", || {
        gw.log_text().contains("over request-timeout")
    });
    // The old worker still finishes its stuck request; a new one serves meanwhile.
    let started = Instant::now();
    let r = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took < Duration::from_secs(2),
        "served after {took:?}, not by a replacement started at once\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text()
            .contains("recycles: its replacement starts now"),
        "{}",
        gw.log_text()
    );
    drop(stuck);
}

/// Load through nginx from 8 clients for `secs` seconds, with SIGHUP every 2 s and worker
/// processes recycling after about 500 requests each: not one request fails, and nginx logs
/// no error (but for attempts it retried, on kept connections).
fn reloads_under_load(example: &str, flag: &str, addr: &str, secs: u64) {
    let kept = example.contains("keepalive");
    let script = app("pep3333.wsgi");
    let rig = Rig::start(
        Kind::Nginx,
        example,
        &[
            flag,
            addr,
            "--processes",
            "2",
            "--threads",
            "4",
            "--maximum-requests",
            "500",
            &script,
        ],
    );
    wait_for("two workers", || child_pids(rig.gw.pid()).len() == 2);
    rig.ok("GET", "/write", &[], b"");
    let load = http_load(8, "/write");
    let started = Instant::now();
    let mut reloads = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(2));
        rig.gw.hup();
        reloads += 1;
    }
    let (ok, errors) = load.finish();
    let log = rig.gw.log_text();
    let recycled = log.matches("recycling this worker: served").count();
    assert!(
        errors.is_empty(),
        "{} failed of {}: {errors:?}\n{}",
        errors.len(),
        ok + errors.len(),
        rig.logs()
    );
    assert!(ok > 1000, "only {ok} requests");
    assert!(
        reloads >= secs / 2 - 1 && recycled > 0,
        "{reloads} reloads, {recycled} recycles\n{log}"
    );
    let front = rig.front.log_text();
    let bad: Vec<&str> = front
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[crit]") || l.contains("[alert]"))
        .filter(|l| !(kept && retried_on_a_kept_connection(l)))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// FastCGI cannot tell a web server that a kept connection is about to close, so closing an
/// idle one can cross a request nginx just started on it. nginx then retries that request on a
/// new connection (the client sees no error) and logs the failed attempt.
fn retried_on_a_kept_connection(line: &str) -> bool {
    line.contains("[error]")
        && (line.contains("upstream prematurely closed connection while reading response header")
            || line.contains("(104: Connection reset by peer) while reading response header")
            || line.contains("(32: Broken pipe) while sending request to upstream"))
}

#[test]
fn front_nginx_fastcgi_reloads_and_recycles_lose_no_request() {
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    reloads_under_load("nginx-examples/fastcgi.conf", "--fastcgi", GATEWAY_TCP, 20);
}

#[test]
fn front_nginx_fastcgi_keepalive_reloads_and_recycles_lose_no_request() {
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    reloads_under_load(
        "nginx-examples/fastcgi-keepalive.conf",
        "--fastcgi",
        GATEWAY_UNIX,
        20,
    );
}

#[test]
fn front_nginx_scgi_reloads_and_recycles_lose_no_request() {
    if !require(find_bin("nginx").is_some(), "nginx") {
        return;
    }
    reloads_under_load("nginx-examples/scgi.conf", "--scgi", GATEWAY_TCP, 20);
}

/// A worker process whose threads are all busy takes no new connection: 8 concurrent
/// one-second requests on 2 processes of 4 threads all finish in about a second.
#[test]
fn load_goes_to_the_idle_worker_process() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--processes", "2", "--threads", "4", "--mount", &mount]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let round = |ms: u64| -> Vec<Duration> {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let addr = gw.addr.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let r = fcgi(&addr, "GET", &format!("/t/slow?ms={ms}"), b"").unwrap();
                    assert_eq!(r.status, 200);
                    started.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    // Both workers have their interpreters made before rounds are timed.
    for _ in 0..3 {
        round(200);
    }
    for n in 0..20 {
        let times = round(1000);
        let slowest = times.iter().max().unwrap();
        assert!(
            *slowest < Duration::from_millis(1200),
            "round {n}: a request took {slowest:?}: {times:?}"
        );
    }
}
