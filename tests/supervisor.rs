//! `--processes`: the supervisor respawns, recycles and reloads worker processes.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

fn pid_of(addr: &str) -> Result<u32, String> {
    pid_in(fcgi(addr, "GET", "/t/count", b"")?)
}

/// The pid in a `/t/count` response.
fn pid_in(r: Response) -> Result<u32, String> {
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    let text = r.text();
    let pid = text
        .rsplit("\"pid\": ")
        .next()
        .and_then(|p| p.trim_end_matches('}').trim().parse().ok())
        .ok_or_else(|| format!("no pid in {text}"))?;
    Ok(pid)
}

/// Sends requests from `n` threads until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: &str, n: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let threads = (0..n)
            .map(|_| {
                let (stop, ok, failed, addr) =
                    (stop.clone(), ok.clone(), failed.clone(), addr.to_string());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match fcgi(&addr, "GET", path, b"") {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                errors.push(format!("status {}", r.status));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                errors.push(e);
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Waits until `n` more requests were answered 200 (the load makes progress).
    fn wait_served(&self, n: usize) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        wait_for("the load to be served", || {
            self.ok.load(Ordering::SeqCst) >= target
        });
    }

    fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

fn mount() -> String {
    format!("/t={}", app("pep3333.wsgi"))
}

#[test]
fn killed_worker_is_respawned_and_only_its_requests_fail() {
    let m = mount();
    let gw = Gateway::start(&["--processes", "2", "--threads", "2", "--mount", &m]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let before = child_pids(gw.pid());
    let load = Load::start(&gw.addr, 4, "/t/slow?ms=20");
    load.wait_served(20);
    let victim = *before.iter().next().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    wait_for("a replacement worker", || {
        let now = child_pids(gw.pid());
        now.len() == 2 && !now.contains(&victim)
    });
    load.wait_served(20);
    let (ok, failed, errors) = load.finish();
    assert!(ok > 20, "ok={ok}");
    // Only the requests the killed worker held can fail: each load thread has one at a time.
    assert!(
        failed <= 4,
        "{failed} failed: {errors:?}\n{}",
        gw.log_text()
    );
    let log = gw.log_text();
    assert!(
        log.contains(&format!("(pid {victim}) was killed by SIGKILL")),
        "{log}"
    );
    // The replacement serves.
    let pids: HashSet<u32> = (0..20).filter_map(|_| pid_of(&gw.addr).ok()).collect();
    assert!(!pids.contains(&victim));
}

/// A kept FastCGI connection and the worker process that answered its last request.
struct Kept {
    stream: std::net::TcpStream,
    pid: u32,
}

impl Kept {
    /// Opens a connection and sends one request on it (again, on a new connection, while
    /// the gateway closes it before the request).
    fn open(addr: &str) -> Kept {
        for _ in 0..20 {
            let stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut kept = Kept { stream, pid: 0 };
            if kept.ask().unwrap() {
                return kept;
            }
        }
        panic!("20 new connections in a row were closed before their first request");
    }

    /// One request (keep-conn) and its whole response; false when the connection was closed
    /// while it waited for this request (which gets no answer, and the caller sends it on a
    /// new connection, as nginx does). A connection closed right after its response is an
    /// error: nginx may send it its next request at once, and a POST is not sent again.
    fn ask(&mut self) -> Result<bool, String> {
        if !self.request()? {
            return Ok(false);
        }
        self.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut self.stream, &mut byte) {
            Ok(0) => return Err("the connection closed right after its response".into()),
            Ok(_) => return Err("bytes after the response".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err("the connection was reset right after its response".into())
            }
            Err(_) => {}
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Ok(true)
    }

    /// One request and its whole response, as [`Kept::ask`], but without looking for a close
    /// after it (the next request finds it).
    fn request(&mut self) -> Result<bool, String> {
        fcgi_send(&mut self.stream, true, "GET", "/t/count");
        let response = match fcgi_read_response(&mut self.stream, 1) {
            Err(e) if e.contains("(0 bytes of stdout)") => return Ok(false),
            r => r?,
        };
        self.pid = pid_in(response)?;
        Ok(true)
    }
}

/// Two worker processes of one thread each, loading `mount` before they serve.
fn two_workers_of_one_thread(mount: &str) -> [&str; 7] {
    [
        "--processes",
        "2",
        "--threads",
        "1",
        "--preload",
        "--mount",
        mount,
    ]
}

/// How many of `conns` each worker process holds.
fn held(conns: &[Kept]) -> HashMap<u32, usize> {
    let mut by_pid = HashMap::new();
    for c in conns {
        *by_pid.entry(c.pid).or_default() += 1;
    }
    by_pid
}

/// Two workers of one thread (and `extra` arguments), one of which serves 3 s after the other
/// (--preload of an app that sleeps in one process), and 10 kept connections opened
/// meanwhile: all on the first. (The kernel hands a new connection to the first worker with a
/// thread waiting, and a kept connection stays where it went.) Once both serve, the one
/// holding more than the other by more than twice the slack (2 with one thread) sheds kept
/// connections, half its excess at a time, and takes no new ones while it holds more by more
/// than the slack.
fn ten_kept_on_one_worker(name: &str, extra: &[&str]) -> (Gateway, Vec<Kept>) {
    let dir = tmpdir(name);
    let slow = format!("{}:3", dir.join("lock").display());
    let m = format!("/t={}", app("slow_start.wsgi"));
    let mut args = two_workers_of_one_thread(&m).to_vec();
    args.extend_from_slice(extra);
    let gw = Gateway::start_with_env(&args, &[("SLOW_START", &slow)]);
    let conns: Vec<Kept> = (0..10).map(|_| Kept::open(&gw.addr)).collect();
    assert_eq!(held(&conns).len(), 1, "{:?}", held(&conns));
    (gw, conns)
}

/// Asks on every connection in rounds (half a second each: [`Kept::ask`] waits 50 ms after
/// each response for a close) until both workers answer 3 or more of them; a connection
/// closed while it waited is opened again, as nginx does. How many were. Then, balanced, the
/// connections stay where they are (once every worker looked again at its housekeeper's
/// tick, 100 ms).
fn ask_until_spread(gw: &Gateway, conns: &mut [Kept]) -> usize {
    let (mut closed, mut rounds) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let by_pid = held(conns);
        if by_pid.len() == 2 && by_pid.values().all(|&n| n >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {rounds} rounds ({closed} connections closed by the gateway), still \
             {by_pid:?}\n{}",
            gw.log_text()
        );
        for c in conns.iter_mut() {
            if !c.ask().unwrap_or_else(|e| panic!("{e}\n{}", gw.log_text())) {
                closed += 1;
                *c = Kept::open(&gw.addr);
            }
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = held(conns);
    for c in conns.iter_mut() {
        assert!(
            c.ask().unwrap(),
            "a connection closed once balanced: {before:?}\n{}",
            gw.log_text()
        );
    }
    assert_eq!(held(conns), before);
    closed
}

#[test]
fn kept_connections_are_handed_to_the_other_worker_without_a_close() {
    // Connections that wait for a request pass to the other worker (their sockets, over the
    // group's Unix sockets): the client sees no close, and its next request is answered by
    // the other worker.
    let (gw, mut conns) = ten_kept_on_one_worker("balance", &[]);
    let closed = ask_until_spread(&gw, &mut conns);
    assert_eq!(closed, 0, "{}", gw.log_text());
}

#[test]
fn without_hand_over_kept_connections_that_wait_are_closed_not_those_just_answered() {
    // With hand-over-kept=false, the worker closes connections that waited for a request for
    // 100 ms or more (then none for a second), never one right after its response
    // (`Kept::ask` fails on that): nginx could be sending it its next request.
    let (gw, mut conns) = ten_kept_on_one_worker("balance-close", &["--hand-over-kept=false"]);
    let closed = ask_until_spread(&gw, &mut conns);
    assert!(closed > 0);
}

/// Each connection asked again as soon as it answered, on its own thread, as nginx does at
/// full load, until both workers answer 3 or more of them (a connection closed before its
/// request is opened again); how many were opened again.
fn ask_busily_until_spread(gw: &Gateway, conns: Vec<Kept>) -> usize {
    let pids = Mutex::new(conns.iter().map(|c| c.pid).collect::<Vec<_>>());
    let done = AtomicBool::new(false);
    let reopened = AtomicUsize::new(0);
    let by_pid = || {
        let mut by_pid: HashMap<u32, usize> = HashMap::new();
        for &pid in pids.lock().unwrap().iter() {
            *by_pid.entry(pid).or_default() += 1;
        }
        by_pid
    };
    std::thread::scope(|s| {
        for (i, mut c) in conns.into_iter().enumerate() {
            let (pids, done, reopened) = (&pids, &done, &reopened);
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let answered = c.request().unwrap_or_else(|e| {
                        done.store(true, Ordering::Relaxed);
                        panic!("{e}\n{}", gw.log_text())
                    });
                    if !answered {
                        reopened.fetch_add(1, Ordering::Relaxed);
                        c = Kept::open(&gw.addr);
                    }
                    pids.lock().unwrap()[i] = c.pid;
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let by_pid = by_pid();
            if by_pid.len() == 2 && by_pid.values().all(|&n| n >= 3) {
                break;
            }
            if done.load(Ordering::Relaxed) || Instant::now() >= deadline {
                done.store(true, Ordering::Relaxed);
                panic!(
                    "still {by_pid:?} ({} connections opened again)\n{}",
                    reopened.load(Ordering::Relaxed),
                    gw.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::Relaxed);
    });
    reopened.into_inner()
}

#[test]
fn busy_kept_connections_are_handed_over_too() {
    // Between a response and the client's next request a connection waits for a moment: at
    // a housekeeper tick some do, and those are handed over.
    let (gw, conns) = ten_kept_on_one_worker("balance-busy", &[]);
    let reopened = ask_busily_until_spread(&gw, conns);
    assert_eq!(reopened, 0, "{}", gw.log_text());
}

#[test]
fn without_hand_over_busy_kept_connections_close_after_their_response() {
    // None waits long enough (100 ms) to be closed while it waits: once the worker that holds
    // them all held more than its share for a second, some close right after their response
    // (without that, they stayed there for good).
    let (gw, conns) = ten_kept_on_one_worker("balance-busy-close", &["--hand-over-kept=false"]);
    let reopened = ask_busily_until_spread(&gw, conns);
    assert!(reopened > 0);
}

#[test]
fn a_frozen_worker_does_not_hold_up_new_connections() {
    // A worker holding fewer connections is left the new ones; a worker that is stopped
    // (SIGSTOP, a debugger, swapped out) publishes nothing, and once it said nothing for a
    // second the others no longer leave it anything.
    let m = mount();
    let args = two_workers_of_one_thread(&m);
    let gw = Gateway::start(&args);
    wait_for("both workers to load the app", || {
        gw.log_text().matches("made a sub-interpreter").count() == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    // Both workers serve: kept connections come to both.
    let mut conns = Vec::new();
    while held(&conns).len() < 2 {
        assert!(conns.len() < 30, "{:?}\n{}", held(&conns), gw.log_text());
        conns.push(Kept::open(&gw.addr));
    }
    let frozen = conns[0].pid;
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    signal(frozen, "STOP");
    std::thread::sleep(Duration::from_millis(1500));
    let opened: Vec<Kept> = (0..6)
        .map(|_| {
            let stream = std::net::TcpStream::connect(&gw.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut kept = Kept { stream, pid: 0 };
            let asked = kept.ask();
            if asked.is_err() {
                signal(frozen, "CONT");
            }
            assert!(
                asked.is_ok(),
                "{asked:?}: {:?}\n{}",
                held(&[]),
                gw.log_text()
            );
            kept
        })
        .collect();
    signal(frozen, "CONT");
    assert!(opened.iter().all(|k| k.pid != frozen));
}

#[test]
fn sighup_replaces_workers_without_failed_requests_and_applies_the_new_config() {
    let dir = tmpdir("sighup");
    let config = dir.join("gw.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "processes = 2\nthreads = 2\n\n[[mount]]\nprefix = \"/t\"\nscript = \"{}\"\n{extra}",
                app("pep3333.wsgi")
            ),
        )
        .unwrap();
    };
    write_config("");
    let gw = Gateway::start(&["--config", path_str(&config)]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let before = child_pids(gw.pid());
    assert_eq!(fcgi(&gw.addr, "GET", "/u/write", b"").unwrap().status, 404);

    let load = Load::start(&gw.addr, 4, "/t/slow?ms=10");
    load.wait_served(20);
    write_config(&format!(
        "\n[[mount]]\nprefix = \"/u\"\nscript = \"{}\"\n",
        app("pep3333.wsgi")
    ));
    gw.hup();
    wait_for("new workers", || {
        let now = child_pids(gw.pid());
        now.len() == 2 && now.is_disjoint(&before)
    });
    load.wait_served(20);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}\n{}", gw.log_text());
    assert!(ok > 20);
    assert_eq!(fcgi(&gw.addr, "GET", "/u/write", b"").unwrap().status, 200);

    // A bad configuration is refused; the workers keep serving.
    std::fs::write(&config, "processes = 2\nthreds = 3\n").unwrap();
    let serving = child_pids(gw.pid());
    gw.hup();
    wait_for("the refusal", || gw.log_text().contains("reload refused"));
    assert!(gw
        .log_text()
        .contains("unknown key `threds`; did you mean `threads`?"));
    assert_eq!(child_pids(gw.pid()), serving);
    assert_eq!(fcgi(&gw.addr, "GET", "/u/write", b"").unwrap().status, 200);
}

#[test]
fn maximum_requests_recycles_the_worker() {
    let m = mount();
    let gw = Gateway::start(&[
        "--processes",
        "1",
        "--maximum-requests",
        "20",
        "--mount",
        &m,
    ]);
    let first = pid_of(&gw.addr).unwrap();
    let mut pids = HashSet::new();
    for _ in 0..60 {
        if let Ok(pid) = pid_of(&gw.addr) {
            pids.insert(pid);
        }
    }
    assert!(
        pids.len() >= 2,
        "never recycled: {pids:?}\n{}",
        gw.log_text()
    );
    assert!(pids.iter().any(|&p| p != first));
    let log = gw.log_text();
    assert!(log.contains("recycling this worker: served"), "{log}");
    assert!(
        log.contains("recycles: its replacement starts now"),
        "{log}"
    );
}

#[test]
fn a_worker_that_cannot_start_is_backed_off() {
    // A .pth file that kills the process while the interpreter is being set up.
    let dir = tmpdir("backoff");
    std::fs::write(dir.join("die.pth"), "import os; os._exit(7)\n").unwrap();
    let m = mount();
    let gw = Gateway::start_unready(&[
        "--processes",
        "1",
        "--python-path",
        path_str(&dir),
        "--mount",
        &m,
    ]);
    wait_for("back-off", || {
        gw.log_text().contains("failures in a row: next start in")
    });
    let log = gw.log_text();
    assert!(log.contains("exited with code 7"), "{log}");
}

#[test]
fn workers_share_a_unix_socket_that_outlives_them() {
    let dir = tmpdir("supunix");
    let sock = format!("unix:{}/gw.sock", dir.display());
    let m = mount();
    let gw = Gateway::start(&["--fastcgi", &sock, "--processes", "2", "--mount", &m]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let pids: HashSet<u32> = (0..40).filter_map(|_| pid_of(&gw.addr).ok()).collect();
    assert!(!pids.is_empty());
    for pid in child_pids(gw.pid()) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    wait_for("replacements", || child_pids(gw.pid()).len() == 2);
    wait_for("serving again", || pid_of(&gw.addr).is_ok());
    assert!(dir.join("gw.sock").exists());
}

#[test]
fn sigterm_stops_workers_gracefully() {
    let m = mount();
    let mut gw = Gateway::start(&["--processes", "2", "--mount", &m]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let slow = blocking_request_in_thread(&gw.addr, "sigterm", 1000);
    let status = gw.stop("TERM");
    assert!(status.success(), "{status}\n{}", gw.log_text());
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    assert!(gw
        .log_text()
        .contains("all workers stopped; supervisor exits"));
}

/// A worker still finishing a request after a reload replaced it gets the stop's SIGTERM as
/// a stop, not as a second signal: the request completes and the supervisor exits 0.
#[test]
fn sigterm_lets_a_worker_replaced_by_a_reload_finish() {
    let m = mount();
    let mut gw = Gateway::start(&["--processes", "1", "--threads", "2", "--mount", &m]);
    wait_for("the worker", || child_pids(gw.pid()).len() == 1);
    let old = child_pids(gw.pid());
    let slow = blocking_request_in_thread(&gw.addr, "sigterm-replaced", 2500);
    gw.hup();
    wait_for("the new worker", || {
        let now = child_pids(gw.pid());
        now.len() == 2 && !now.is_subset(&old)
    });
    wait_for("the old worker to drain", || {
        gw.log_text().contains("replaced by a new worker")
    });
    let status = gw.stop("TERM");
    assert!(status.success(), "{status}\n{}", gw.log_text());
    let r = slow.join().unwrap();
    assert_eq!(r.map(|r| r.status), Ok(200), "{}", gw.log_text());
    assert!(!gw.log_text().contains("stopping now"), "{}", gw.log_text());
}

#[test]
fn request_timeout_logs_every_stack_and_recycles_the_worker() {
    let m = mount();
    let gw = Gateway::start(&[
        "--processes",
        "1",
        "--request-timeout",
        "1",
        "--graceful-timeout",
        "2",
        "--mount",
        &m,
    ]);
    let first = pid_of(&gw.addr).unwrap();
    let addr = gw.addr.clone();
    let stuck = std::thread::spawn(move || fcgi(&addr, "GET", "/t/slow?ms=6000", b""));
    // The report is two log lines, the request's then the stacks: wait for the second.
    wait_for("the timeout report", || {
        gw.log_text().contains("Python stacks of this worker")
    });
    let log = gw.log_text();
    assert!(log.contains("GET /t/slow?ms=6000: running for"), "{log}");
    assert!(log.contains("over request-timeout (1s)"), "{log}");
    assert!(
        log.contains("time.sleep"),
        "the stuck frame is shown:\n{log}"
    );
    wait_for("a new worker", || {
        pid_of(&gw.addr).is_ok_and(|p| p != first)
    });
    let _ = stuck.join();
    assert!(gw
        .log_text()
        .contains("recycling this worker: a request timed out"));
}

#[test]
fn queue_timeout_answers_503_instead_of_running_late() {
    let m = mount();
    let gw = Gateway::start(&["--threads", "1", "--queue-timeout", "1", "--mount", &m]);
    let slow = blocking_request_in_thread(&gw.addr, "queue-timeout-503", 2500);
    let late = fcgi(&gw.addr, "GET", "/t/write", b"").unwrap();
    assert_eq!(late.status, 503, "{}", late.text());
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    assert!(
        gw.log_text().contains("queue-timeout 1s"),
        "{}",
        gw.log_text()
    );
    // With a free thread, requests run.
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
}

#[test]
fn inactivity_timeout_restart_interval_and_rss_limit_recycle() {
    let m = mount();
    for (flag, value, reason) in [
        (
            "--inactivity-timeout",
            "1",
            "no request within inactivity-timeout",
        ),
        ("--restart-interval", "1", "restart-interval reached"),
        ("--reload-on-rss", "1", "is over reload-on-rss (1 MiB)"),
    ] {
        let gw = Gateway::start(&["--processes", "1", flag, value, "--mount", &m]);
        wait_for(reason, || gw.log_text().contains(reason));
        wait_for("a replacement", || {
            gw.log_text()
                .contains("recycles: its replacement starts now")
        });
    }
}

#[test]
fn preload_imports_at_start_and_a_broken_app_is_backed_off() {
    let m = mount();
    let gw = Gateway::start(&["--processes", "1", "--preload", "--mount", &m]);
    wait_for("preload", || gw.log_text().contains("preloaded"));
    let broken = format!("/b={}", app("broken.wsgi"));
    let gw = Gateway::start_unready(&["--processes", "1", "--preload", "--mount", &broken]);
    wait_for("back-off", || {
        gw.log_text().contains("failures in a row: next start in")
    });
    let log = gw.log_text();
    assert!(
        log.contains("failed to load its interpreter or application"),
        "{log}"
    );
    assert!(
        log.contains("No module named 'this_module_does_not_exist'"),
        "{log}"
    );
}

#[test]
fn recycling_settings_need_processes() {
    let (code, err) = run_gateway(&["--maximum-requests", "5"]);
    assert_ne!(code, 0);
    assert!(err.contains("needs processes"), "{err}");
}

#[test]
fn two_process_groups_with_their_own_venvs_on_their_own_sockets() {
    let Some(full) = test_venv() else {
        require(false, "the test venv (tools/make-test-venv.sh)");
        return;
    };
    let dir = tmpdir("pgroups");
    let empty = dir.join("empty-venv");
    let made = std::process::Command::new(BUILD_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&empty)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "{BUILD_PYTHON} -m venv");
    std::fs::write(
        dir.join("which.wsgi"),
        "import sys, importlib.util\n\
         def application(environ, start_response):\n\
         \x20   has = importlib.util.find_spec('flask') is not None\n\
         \x20   body = ('%s flask=%s' % (sys.prefix, has)).encode()\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [body]\n",
    )
    .unwrap();
    let (a, b) = (free_port(), free_port());
    let config = dir.join("groups.toml");
    std::fs::write(
        &config,
        format!(
            "threads = 2\n\n\
             [[process-group]]\nname = \"full\"\nprocesses = 2\npython-home = \"{}\"\nfastcgi = [\"127.0.0.1:{a}\"]\n\
             [[process-group.mount]]\nprefix = \"/\"\nscript = \"which.wsgi\"\n\n\
             [[process-group]]\nname = \"bare\"\npython-home = \"empty-venv\"\nfastcgi = [\"127.0.0.1:{b}\"]\n\
             [[process-group.mount]]\nprefix = \"/\"\nscript = \"which.wsgi\"\n",
            full.display()
        ),
    )
    .unwrap();
    let (code, out) = run_gateway(&["check", "--config", path_str(&config)]);
    assert_eq!(code, 0, "{out}");
    let gw = Gateway::start_as_is(&["--config", path_str(&config)]);
    let (fa, fb) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    wait_for("both groups", || {
        fcgi(&fa, "GET", "/", b"").is_ok() && fcgi(&fb, "GET", "/", b"").is_ok()
    });
    let ra = fcgi(&fa, "GET", "/", b"").unwrap().text();
    let rb = fcgi(&fb, "GET", "/", b"").unwrap().text();
    assert_eq!(ra, format!("{} flask=True", full.display()));
    assert_eq!(rb, format!("{} flask=False", empty.display()));
    wait_for("three workers", || child_pids(gw.pid()).len() == 3);
    let log = gw.log_text();
    assert!(log.contains("worker full/1 started"), "{log}");
    assert!(log.contains("worker bare/0 started"), "{log}");
}

#[test]
fn workers_switch_user_and_check_what_they_need_as_that_user() {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        let (code, err) = run_gateway(&["--processes", "1", "--user", "nobody"]);
        assert_ne!(code, 0);
        assert!(err.contains("only when started as root"), "{err}");
        return;
    }
    let (code, err) = run_gateway(&["--processes", "1", "--user", "no-such-user-here"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("user \"no-such-user-here\" does not exist"),
        "{err}"
    );
    // The embedded Python lives under /root (mode 700 here): a worker running as nobody cannot
    // read it, and says so before starting Python, then is backed off.
    let m = mount();
    let gw = Gateway::start_unready(&["--processes", "1", "--user", "nobody", "--mount", &m]);
    wait_for("the refusal as nobody", || {
        gw.log_text().contains("as user nobody: python-home")
    });
    wait_for("back-off", || {
        gw.log_text().contains("failures in a row: next start in")
    });
}

#[test]
fn workers_do_not_outlive_a_killed_supervisor() {
    let m = mount();
    let mut gw = Gateway::start(&["--processes", "2", "--mount", &m]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let workers = child_pids(gw.pid());
    gw.stop("KILL");
    // Gone, or a zombie waiting for whoever adopted it to reap it.
    let ended = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    wait_for("the workers to exit", || workers.iter().all(ended));
}

#[test]
fn a_stop_while_workers_start_is_not_lost() {
    let m = mount();
    for _ in 0..3 {
        let mut gw = Gateway::start_unready(&[
            "--processes",
            "2",
            "--graceful-timeout",
            "20",
            "--mount",
            &m,
        ]);
        wait_for("the workers to fork", || {
            gw.log_text().matches("started (pid").count() == 2
        });
        let started = Instant::now();
        let status = gw.stop("TERM");
        assert!(status.success(), "{status}\n{}", gw.log_text());
        // Without the stop reaching the starting workers, the supervisor would wait out the
        // graceful timeout and kill them.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}\n{}",
            started.elapsed(),
            gw.log_text()
        );
        assert!(!gw.log_text().contains("killing them"), "{}", gw.log_text());
    }
}

/// SIGHUP checks the scripts as `wsgi-gateway check` does: one that does not compile is
/// refused with its line, and the running workers keep serving; once fixed, the reload runs.
#[test]
fn sighup_refuses_a_script_that_does_not_compile() {
    let dir = tmpdir("sighup-script");
    let script = dir.join("app.wsgi");
    let version = |v: &str| {
        format!(
            "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'{v}']\n"
        )
    };
    std::fs::write(&script, version("one")).unwrap();
    let mount = format!("/a={}", script.display());
    let gw = Gateway::start(&["--processes", "1", "--no-reload", "--mount", &mount]);
    wait_for("the worker", || child_pids(gw.pid()).len() == 1);
    let serving = child_pids(gw.pid());
    assert_eq!(fcgi(&gw.addr, "GET", "/a", b"").unwrap().text(), "one");
    std::fs::write(
        &script,
        "def application(environ, start_response:\n    pass\n",
    )
    .unwrap();
    gw.hup();
    wait_for("the refusal", || gw.log_text().contains("reload refused"));
    let log = gw.log_text();
    assert!(log.contains("does not compile"), "{log}");
    assert!(log.contains("(line 1)"), "{log}");
    assert_eq!(child_pids(gw.pid()), serving);
    assert_eq!(fcgi(&gw.addr, "GET", "/a", b"").unwrap().text(), "one");
    std::fs::write(&script, version("two")).unwrap();
    gw.hup();
    wait_for("the new worker", || {
        fcgi(&gw.addr, "GET", "/a", b"").is_ok_and(|r| r.text() == "two")
    });
}

/// Once the gateway stops, its listening sockets close (the workers' copies and the
/// supervisor's): a new connection is refused at once while in-flight requests finish.
#[test]
fn sigterm_refuses_new_connections_while_in_flight_requests_finish() {
    let m = mount();
    let gw = Gateway::start(&["--processes", "1", "--threads", "2", "--mount", &m]);
    wait_for("the worker", || child_pids(gw.pid()).len() == 1);
    let slow = blocking_request_in_thread(&gw.addr, "sigterm-refused", 3000);
    signal(gw.pid(), "TERM");
    wait_for("new connections refused", || {
        matches!(std::net::TcpStream::connect(&gw.addr),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    assert!(
        !slow.is_finished(),
        "refused only once the gateway was gone"
    );
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
}

/// A gateway of one worker process whose python-home is a new venv; `slow_check` then makes
/// that python-home take `secs` to start (the script check of the next SIGHUP, and any new
/// worker).
fn gateway_with_own_venv(tag: &str) -> (Gateway, PathBuf) {
    let dir = tmpdir(tag);
    let venv = dir.join("venv");
    let made = std::process::Command::new(BUILD_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let m = mount();
    let home = path_str(&venv).to_string();
    let gw = Gateway::start(&["--processes", "1", "--python-home", &home, "--mount", &m]);
    wait_for("the worker", || gw.log_text().contains("started (pid"));
    assert_eq!(fcgi(&gw.addr, "GET", "/t/write", b"").unwrap().status, 200);
    (gw, venv)
}

fn slow_check(venv: &Path, secs: u32) {
    std::fs::write(
        venv.join(site_rel()).join("slow.pth"),
        format!("import time; time.sleep({secs})\n"),
    )
    .unwrap();
}

/// While a SIGHUP's scripts are checked, the supervisor goes on: a worker that dies meanwhile
/// is seen and replaced at once, not after the check.
#[test]
fn the_supervisor_goes_on_during_a_reload_s_script_check() {
    let (gw, venv) = gateway_with_own_venv("sighup-check-goes-on");
    let worker = *child_pids(gw.pid()).iter().next().unwrap();
    slow_check(&venv, 3);
    gw.hup();
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(worker, "KILL");
    wait_for("the reload", || {
        gw.log_text().contains("configuration re-read")
    });
    let log = gw.log_text();
    let killed = log
        .find(&format!("(pid {worker}) was killed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(killed < log.find("configuration re-read").unwrap(), "{log}");
}

/// A supervisor killed while a SIGHUP's scripts are checked leaves nothing behind: its
/// checking child dies with it, and the listening socket closes.
#[test]
fn a_killed_supervisor_leaves_no_checking_child() {
    let (gw, venv) = gateway_with_own_venv("sighup-check-killed");
    slow_check(&venv, 60);
    gw.hup();
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(gw.pid(), "KILL");
    wait_for("the listening socket to close", || {
        matches!(std::net::TcpStream::connect(&gw.addr),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
}

/// A stop that comes while a SIGHUP's script check runs (here a python-home that takes seconds
/// to start) is handled at once: the check ends, and no new worker starts.
#[test]
fn a_stop_during_a_reload_s_script_check_ends_the_check() {
    let (mut gw, venv) = gateway_with_own_venv("sighup-slow-check");
    slow_check(&venv, 3);
    gw.hup();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = gw.stop("TERM");
    assert!(status.success(), "{status}\n{}", gw.log_text());
    let log = gw.log_text();
    assert!(!log.contains("configuration re-read"), "{log}");
    assert_eq!(log.matches("started (pid").count(), 1, "{log}");
}

/// A connection that has sent nothing does not keep a worker replaced by a reload alive until
/// its graceful timeout (30 s): it is closed two seconds into the drain, and the old worker
/// exits.
#[test]
fn a_connection_that_sends_nothing_does_not_hold_a_replaced_worker() {
    let m = mount();
    let gw = Gateway::start(&["--processes", "1", "--mount", &m]);
    wait_for("the worker", || child_pids(gw.pid()).len() == 1);
    let old = child_pids(gw.pid());
    let mut silent = connect(&gw.addr).unwrap();
    // Taken by the worker (it waits 10 ms for a request, then leaves it to its epoll).
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    gw.hup();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap(), 0, "{}", gw.log_text());
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "closed {took:?} after the reload\n{}",
        gw.log_text()
    );
    wait_for("the old worker to exit", || {
        child_pids(gw.pid()).is_disjoint(&old)
    });
}
