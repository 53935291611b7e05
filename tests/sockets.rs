//! Sockets handed over from outside: systemd socket activation (LISTEN_FDS, with
//! `systemd-socket-activate` as the launcher) and FastCGI's own convention of a listening
//! socket on standard input (`spawn-fcgi`, as lighttpd's `bin-path` and mod_fcgid do). Both
//! with the supervisor, and a reload that keeps the socket.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A launcher running the gateway; stopped (the gateway with it) when dropped.
struct Launched {
    child: Child,
    log: std::path::PathBuf,
}

impl Launched {
    fn start(program: &str, args: &[&str]) -> Launched {
        let dir = tmpdir("launched");
        let log = dir.join("log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Launched { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn served(addr: &str) -> bool {
    fcgi(addr, "GET", "/t/write", b"").is_ok_and(|r| r.status == 200)
}

#[test]
fn systemd_sockets_are_served_by_the_workers_and_survive_a_reload() {
    if !require(
        have_tool("systemd-socket-activate"),
        "systemd-socket-activate",
    ) {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Launched::start(
        "systemd-socket-activate",
        &["-l", &addr, bin(), "--processes", "2", "--mount", &mount],
    );
    // The launcher starts the gateway at the first connection.
    wait_for("the gateway to serve", || served(&addr));
    let log = gw.log_text();
    assert!(log.contains("listening on fd 3 (systemd socket"), "{log}");
    assert!(
        !log.contains("127.0.0.1:9000"),
        "the default listener too\n{log}"
    );
    // Unnamed: both protocols, told apart per connection.
    assert_eq!(scgi(&addr, "GET", "/t/write", b"").unwrap().status, 200);
    let pid = gw.child.id();
    let before = child_pids(pid);
    assert_eq!(before.len(), 2, "{log}");
    signal(pid, "HUP");
    wait_for("new workers", || {
        let now = child_pids(pid);
        now.len() == 2 && now.is_disjoint(&before)
    });
    assert!(served(&addr), "{}", gw.log_text());
}

#[test]
fn a_systemd_socket_named_for_a_protocol_speaks_only_it() {
    if !require(
        have_tool("systemd-socket-activate"),
        "systemd-socket-activate",
    ) {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Launched::start(
        "systemd-socket-activate",
        &["-l", &addr, "--fdname=scgi", bin(), "--mount", &mount],
    );
    wait_for("the gateway to serve", || {
        scgi(&addr, "GET", "/t/write", b"").is_ok_and(|r| r.status == 200)
    });
    assert!(fcgi(&addr, "GET", "/t/write", b"").is_err());
    let log = gw.log_text();
    assert!(log.contains("fd 3 (systemd socket `scgi`) (SCGI)"), "{log}");
}

#[test]
fn a_listening_socket_on_standard_input_is_served() {
    if !require(have_tool("spawn-fcgi"), "spawn-fcgi") {
        return;
    }
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mount = format!("/t={}", app("pep3333.wsgi"));
    // -n: spawn-fcgi execs the gateway itself, the socket on fd 0.
    let gw = Launched::start(
        "spawn-fcgi",
        &[
            "-n",
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            "--",
            bin(),
            "--mount",
            &mount,
        ],
    );
    wait_for("the gateway to serve", || served(&addr));
    let log = gw.log_text();
    assert!(
        log.contains("listening on fd 0 (standard input) (FastCGI)"),
        "{log}"
    );
}
