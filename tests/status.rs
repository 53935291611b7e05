//! The status page (status-path): every format through nginx, OpenMetrics read by
//! prometheus_client's parser, a running request seen in `?full`, status-allow, and the
//! counters of every worker process whichever one answers.

mod support;

use std::io::Write;
use std::process::Command;

use support::*;

/// Runs `code` with the test venv's Python, `input` on its standard input; its output.
fn python(code: &str, input: &[u8]) -> Option<String> {
    let venv = test_venv()?;
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", code])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\ninput:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(input)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Whether the test venv can parse OpenMetrics (prometheus_client installed).
fn has_prometheus_client() -> bool {
    let Some(venv) = test_venv() else {
        return false;
    };
    Command::new(venv.join("bin/python"))
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success())
}

/// `?openmetrics` parsed by prometheus_client: `name value` per sample, labels dropped.
const PARSE_OPENMETRICS: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "pool")
        print(f"{s.name}{{{labels}}} {int(s.value)}")
"#;

fn metric(parsed: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{}} ");
    parsed
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} in\n{parsed}"))
        .parse()
        .unwrap()
}

/// The value of a `name: value` line of the plain-text page.
fn field(text: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
        .trim()
        .to_string()
}

/// The per-thread entries of a `?full` text page (after the pool's fields).
fn full_entries(text: &str) -> Vec<&str> {
    text.split("************************").skip(1).collect()
}

/// One FastCGI request with REMOTE_ADDR set to `remote`.
fn fcgi_from(addr: &str, uri: &str, remote: &str) -> Response {
    let mut params = cgi_params("GET", uri, 0);
    for p in &mut params {
        if p.0 == "REMOTE_ADDR" {
            p.1 = remote.to_string();
        }
    }
    let mut s = connect(addr).unwrap();
    s.write_all(&fcgi_bytes(1, false, &params, b"")).unwrap();
    fcgi_read_response(&mut *s, 1).unwrap()
}

#[test]
fn front_nginx_status_in_every_format() {
    use support::frontends::*;
    if !require(find_bin("nginx").is_some(), "nginx")
        || !require(test_venv().is_some(), "the test venv")
    {
        return;
    }
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--status-path",
            "/status",
            "--threads",
            "3",
            "--mount",
            &mount,
        ],
    );
    rig.ok("GET", "/t/slow?ms=1", &[], b"");
    // A thread is counted idle again just after its response went out: wait for that.
    let mut asked = 1;
    let mut text = String::new();
    wait_for("one thread busy (the status request's)", || {
        let r = rig.ok("GET", "/status", &[], b"");
        assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
        asked += 1;
        text = r.text();
        field(&text, "active processes") == "1"
    });
    for name in [
        "pool",
        "process manager",
        "start time",
        "start since",
        "accepted conn",
        "listen queue",
        "max listen queue",
        "listen queue len",
        "idle processes",
        "active processes",
        "total processes",
        "max active processes",
        "max children reached",
        "slow requests",
    ] {
        field(&text, name);
    }
    assert_eq!(field(&text, "pool"), "main");
    assert_eq!(field(&text, "process manager"), "static");
    assert_eq!(field(&text, "accepted conn"), asked.to_string());
    // The status request itself runs on one of the 3 threads.
    assert_eq!(field(&text, "idle processes"), "2");
    assert_eq!(field(&text, "total processes"), "3");
    assert_eq!(field(&text, "listen queue len"), "1024", "{text}");

    let json = rig.ok("GET", "/status?json&full", &[], b"");
    assert_eq!(json.header("Content-Type"), Some("application/json"));
    let checked = python(
        "import json, sys\nd = json.load(sys.stdin)\n\
         print(d['pool'], d['accepted-conn'], d['total-processes'], len(d['processes']),\n\
               sorted(p['request-uri'] for p in d['processes'] if p['state'] == 'Running'))",
        &json.body,
    )
    .unwrap();
    assert_eq!(
        checked.trim(),
        format!("main {} 3 3 ['/status?json&full']", asked + 1)
    );

    let xml = rig.ok("GET", "/status?xml", &[], b"");
    assert_eq!(xml.header("Content-Type"), Some("text/xml"));
    let checked = python(
        "import sys, xml.etree.ElementTree as ET\nr = ET.fromstring(sys.stdin.buffer.read())\n\
         print(r.tag, r.findtext('pool'), r.findtext('accepted-conn'))",
        &xml.body,
    )
    .unwrap();
    assert_eq!(checked.trim(), format!("status main {}", asked + 2));

    let html = rig.ok("GET", "/status?html&full", &[], b"");
    assert!(html
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    let html = html.text();
    let accepted = format!("<tr><th>accepted conn</th><td>{}</td></tr>", asked + 3);
    assert!(html.contains(&accepted), "{html}");
    assert!(html.contains("<td>/status?html&amp;full</td>"), "{html}");

    let om = rig.ok("GET", "/status?openmetrics", &[], b"");
    assert!(om
        .header("Content-Type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().ends_with("# EOF\n"));

    // Outside the mounts too: the gateway answers the status path itself.
    let r = rig.get("/nothing-mounted-here");
    assert_eq!(r.status, 404);
    rig.assert_gateway_quiet();
}

#[test]
fn front_nginx_openmetrics_counters_move_with_requests() {
    use support::frontends::*;
    if !require(find_bin("nginx").is_some(), "nginx")
        || !require(
            has_prometheus_client(),
            "prometheus_client in the test venv",
        )
    {
        return;
    }
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--status-path",
            "/status",
            "--mount",
            &mount,
        ],
    );
    let scrapes = std::cell::Cell::new(0);
    let scrape = || {
        let r = rig.ok("GET", "/status?openmetrics&full", &[], b"");
        scrapes.set(scrapes.get() + 1);
        python(PARSE_OPENMETRICS, &r.body).unwrap()
    };
    // Requests finished, summed over the threads.
    let served = |parsed: &str| -> u64 {
        parsed
            .lines()
            .filter(|l| l.starts_with("wsgi_gateway_thread_requests_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let before = scrape();
    let accepted = |parsed: &str| metric(parsed, "wsgi_gateway_accepted_connections_total");
    assert_eq!(accepted(&before), 1);
    assert_eq!(metric(&before, "wsgi_gateway_total_processes"), 8);
    // The scrape's own connection at least.
    assert!(metric(&before, "wsgi_gateway_connections") >= 1, "{before}");
    assert_eq!(metric(&before, "wsgi_gateway_active_processes"), 1);
    assert_eq!(metric(&before, "wsgi_gateway_up"), 1);
    assert_eq!(served(&before), 0);
    for _ in 0..5 {
        rig.ok("GET", "/t/slow?ms=1", &[], b"");
    }
    // A request is counted as served just after its response went out.
    let mut after = String::new();
    wait_for("the requests counted as served", || {
        after = scrape();
        served(&after) == 5 + scrapes.get() - 1
    });
    assert_eq!(accepted(&after), 5 + scrapes.get());
    assert_eq!(metric(&after, "wsgi_gateway_active_processes"), 1);
}

#[test]
fn full_shows_a_running_request_while_it_runs() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--status-path",
        "/status",
        "--threads",
        "2",
        "--mount",
        &mount,
    ]);
    let dir = tmpdir("status-full");
    let marker = dir.join("m");
    let uri = format!("/t/block?marker={}&ms=1500", marker.display());
    let addr = gw.addr.clone();
    let blocked = {
        let uri = uri.clone();
        std::thread::spawn(move || fcgi(&addr, "GET", &uri, b"").unwrap())
    };
    wait_for("the request to run", || marker.exists());
    let page = fcgi(&gw.addr, "GET", "/status?full", b"").unwrap();
    assert_eq!(page.status, 200);
    let text = page.text();
    let entries = full_entries(&text);
    assert_eq!(entries.len(), 2, "{text}");
    let running = entries
        .iter()
        .find(|e| field(e, "request URI") == uri)
        .unwrap_or_else(|| panic!("{uri} in\n{text}"));
    assert_eq!(field(running, "state"), "Running");
    assert_eq!(field(running, "request method"), "GET");
    assert_eq!(field(running, "pid"), gw.pid().to_string());
    let ran: u64 = field(running, "request duration").parse().unwrap();
    assert!(ran < 1_500_000, "{ran} µs");
    assert_eq!(blocked.join().unwrap().status, 200);
    // Once it ended (its slot is updated just after its response went out): counted, and
    // no longer running.
    let mut page = String::new();
    wait_for("the request to be counted", || {
        page = fcgi(&gw.addr, "GET", "/status?full", b"").unwrap().text();
        !page.contains("/t/block")
            || full_entries(&page)
                .iter()
                .any(|e| field(e, "request URI") == uri && field(e, "state") == "Idle")
    });
    let entries = full_entries(&page);
    let served: u64 = entries
        .iter()
        .map(|e| field(e, "requests").parse::<u64>().unwrap())
        .sum();
    assert!(served >= 2, "{page}");
}

/// A thread whose app waits for body bytes that have not arrived shows as Reading.
#[test]
fn full_shows_a_thread_waiting_for_its_body_as_reading() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--status-path",
        "/status",
        "--threads",
        "2",
        "--buffer-body",
        "0",
        "--mount",
        &mount,
    ]);
    let body = vec![b'x'; 100];
    let wire = fcgi_bytes(1, false, &cgi_params("POST", "/t/upload", 100), &body);
    let (now, later) = wire.split_at(wire.len() - 60);
    let mut s = connect(&gw.addr).unwrap();
    s.write_all(now).unwrap();
    let mut text = String::new();
    wait_for("a thread reading its body", || {
        text = fcgi(&gw.addr, "GET", "/status?full", b"").unwrap().text();
        full_entries(&text)
            .iter()
            .any(|e| e.contains("/t/upload") && field(e, "state") == "Reading")
    });
    s.write_all(later).unwrap();
    let r = fcgi_read_response(&mut *s, 1).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&sha256_hex(&body)), "{}", r.text());
    wait_for("the thread to be idle again", || {
        text = fcgi(&gw.addr, "GET", "/status?full", b"").unwrap().text();
        full_entries(&text)
            .iter()
            .all(|e| field(e, "state") == "Idle" || field(e, "request URI") == "/status?full")
    });
}

/// The listen-queue fields of a Unix socket come from the kernel: connections that wait while
/// every thread of both worker processes is busy (a busy worker accepts nothing) are seen by
/// the once-a-second sample ("max listen queue"), and the backlog is the one the socket was
/// given.
#[test]
fn unix_socket_listen_queue_from_the_kernel() {
    let dir = tmpdir("status-queue");
    let sock = format!("unix:{}", dir.join("gw.sock").display());
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--fastcgi",
        &sock,
        "--listen-backlog",
        "50",
        "--status-path",
        "/status",
        "--processes",
        "2",
        "--threads",
        "1",
        "--mount",
        &mount,
    ]);
    wait_for("two workers", || child_pids(gw.pid()).len() == 2);
    let text = fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
    assert_eq!(field(&text, "listen queue"), "0", "{text}");
    assert_eq!(field(&text, "listen queue len"), "50", "{text}");
    assert_eq!(field(&text, "max listen queue"), "0", "{text}");
    // Both workers busy for 3 s: three more connections wait in the kernel's queue, for
    // longer than the sampling period.
    let blocked: Vec<_> = (0..2)
        .map(|i| {
            let marker = dir.join(format!("m{i}"));
            let uri = format!("/t/block?marker={}&ms=3000", marker.display());
            let addr = gw.addr.clone();
            let t = std::thread::spawn(move || fcgi(&addr, "GET", &uri, b"").unwrap());
            wait_for("a blocking request to run", || marker.exists());
            t
        })
        .collect();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let addr = gw.addr.clone();
            std::thread::spawn(move || fcgi(&addr, "GET", "/t/echo", b"").unwrap())
        })
        .collect();
    for t in blocked.into_iter().chain(waiting) {
        assert_eq!(t.join().unwrap().status, 200);
    }
    let text = fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
    let max: u64 = field(&text, "max listen queue").parse().unwrap();
    assert!((1..=3).contains(&max), "{text}");
    assert_eq!(field(&text, "listen queue"), "0", "{text}");
}

#[test]
fn a_client_outside_status_allow_gets_403() {
    let gw = Gateway::start(&["--status-path", "/status"]);
    assert_eq!(fcgi_from(&gw.addr, "/status", "10.1.2.3").status, 403);
    assert_eq!(fcgi_from(&gw.addr, "/status", "::1").status, 200);
    assert_eq!(fcgi_from(&gw.addr, "/status", "127.0.0.2").status, 200);
    let gw = Gateway::start(&["--status-path", "/st", "--status-allow", "10.0.0.0/8"]);
    assert_eq!(fcgi_from(&gw.addr, "/st", "10.1.2.3").status, 200);
    assert_eq!(fcgi_from(&gw.addr, "/st", "127.0.0.1").status, 403);
    // Without a status path, the path is an app's like any other.
    let gw = Gateway::start(&[]);
    let r = fcgi_from(&gw.addr, "/status", "127.0.0.1");
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("accepted conn"));
}

#[test]
fn three_processes_count_every_request_whichever_answers() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--status-path",
        "/status",
        "--processes",
        "3",
        "--threads",
        "2",
        "--mount",
        &mount,
    ]);
    // Every worker is up: their rows are on the board.
    wait_for("three workers", || {
        let text = fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
        field(&text, "total processes") == "6"
    });
    let first = fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
    let base: u64 = field(&first, "accepted conn").parse().unwrap();
    let mut pids = std::collections::HashSet::new();
    for i in 0..30 {
        let r = fcgi(&gw.addr, "GET", "/t/slow?ms=1", b"").unwrap();
        assert_eq!(r.status, 200);
        if i % 3 == 0 {
            let page = fcgi(&gw.addr, "GET", "/status?json&full", b"")
                .unwrap()
                .text();
            let doc: serde_json::Value = serde_json::from_str(&page).unwrap();
            let running = doc["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["state"] == "Running")
                .unwrap_or_else(|| panic!("no Running thread in {page}"));
            let pid = running["pid"].as_u64().unwrap();
            pids.insert(pid);
        }
    }
    let last = fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
    // 30 app requests, 10 status requests in between, and this one.
    let accepted: u64 = field(&last, "accepted conn").parse().unwrap();
    assert_eq!(accepted, base + 41, "{last}");
    assert_eq!(field(&last, "total processes"), "6");
    eprintln!(
        "status answered by {} worker process(es): {pids:?}",
        pids.len()
    );
    // A reload keeps the board: the counters and the start time go on, and once the old
    // workers are gone their rows are free again.
    let old = child_pids(gw.pid());
    gw.hup();
    wait_for("the old workers to be replaced", || {
        let now = child_pids(gw.pid());
        now.len() == 3 && now.is_disjoint(&old)
    });
    let mut after = String::new();
    wait_for("the new workers on the board", || {
        after = fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
        field(&after, "total processes") == "6"
    });
    let counted: u64 = field(&after, "accepted conn").parse().unwrap();
    assert!(counted > accepted, "{after}");
    assert_eq!(field(&after, "start time"), field(&last, "start time"));
}

#[test]
fn open_connections_are_counted_per_process() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let args = [
        "--status-path",
        "/status",
        "--processes",
        "2",
        "--threads",
        "2",
    ];
    let gw = Gateway::start(&[&args[..], &["--mount", &mount]].concat());
    let status = || fcgi(&gw.addr, "GET", "/status", b"").unwrap().text();
    wait_for("two workers", || field(&status(), "total processes") == "4");
    // Six kept connections, each with one request answered, stay open; the page's own
    // connection is open while the page is made.
    let kept: Vec<_> = (0..6)
        .map(|_| {
            let mut s = connect(&gw.addr).unwrap();
            fcgi_send(&mut *s, true, "GET", "/t/count");
            assert_eq!(fcgi_read_response(&mut *s, 1).unwrap().status, 200);
            s
        })
        .collect();
    // (The connection of the page asked for before may not be closed yet: asked again.)
    wait_for("7 connections on the page", || {
        field(&status(), "connections") == "7"
    });
    // Per process, in `?full` (each thread's entry names its process's count).
    wait_for("7 connections over the two processes", || {
        let page = fcgi(&gw.addr, "GET", "/status?json&full", b"")
            .unwrap()
            .text();
        let doc: serde_json::Value = serde_json::from_str(&page).unwrap();
        let mut by_pid = std::collections::HashMap::new();
        for t in doc["processes"].as_array().unwrap() {
            by_pid.insert(
                t["pid"].as_u64(),
                t["process-connections"].as_u64().unwrap(),
            );
        }
        by_pid.len() == 2 && by_pid.values().sum::<u64>() == 7 && doc["connections"] == 7
    });
    drop(kept);
    wait_for("the closed connections to leave the count", || {
        field(&status(), "connections") == "1"
    });
}

#[test]
fn the_status_subcommand_prints_the_page() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&["--status-path", "/status", "--mount", &mount]);
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("status")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, _) = run(&[&gw.addr]);
    assert_eq!(code, Some(0));
    assert_eq!(field(&text, "pool"), "main");
    let (code, json, _) = run(&["--json", "--full", &gw.addr]);
    assert_eq!(code, Some(0));
    assert!(json.starts_with("{\"pool\":\"main\""), "{json}");
    assert!(
        json.contains("\"request-uri\":\"/status?json&full\""),
        "{json}"
    );
    let (code, om, _) = run(&["--openmetrics", "--scgi", &gw.addr]);
    assert_eq!(code, Some(0));
    assert!(om.ends_with("# EOF\n"), "{om}");
    let (code, _, err) = run(&["--path", "/elsewhere", &gw.addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--status-path /elsewhere"), "{err}");
}

/// buffer-body-total counts the body bytes that were sent, not the bodies announced: uploads
/// that announce 1 MiB each and stall after 1000 bytes stay collected (they hold 3000
/// bytes of a 1 MiB total), so the only thread is free and a request behind them is answered
/// at once, not after the body timeout.
#[test]
fn stalled_uploads_count_what_they_sent_against_buffer_body_total() {
    let gw = one_thread_with_a_1mib_body_budget();
    answered_behind_stalled_uploads(&gw, || {
        let mut wire = fcgi_bytes(
            1,
            false,
            &cgi_params("POST", "/t/upload", 1 << 20),
            &[b'x'; 1000],
        );
        // Without the STDIN end (an empty record): the body stops after its first 1000.
        wire.truncate(wire.len() - 8);
        wire
    });
}

/// Past buffer-body-total, a body is not collected before its request takes a thread: with
/// the total held by a request whose app has not read its 1 MiB body, a second request whose
/// body stalls runs at once and waits for it in its app (Reading), rather than waiting to be
/// collected. Both are answered in full.
#[test]
fn past_buffer_body_total_bodies_are_not_collected() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--status-path",
        "/status",
        "--threads",
        "2",
        "--buffer-body-total",
        "1048576",
        "--mount",
        &mount,
    ]);
    // Holds the whole budget: collected, and not read by its app for a while.
    let big = vec![b'b'; 1 << 20];
    let mut a = connect(&gw.addr).unwrap();
    a.write_all(&fcgi_bytes(
        1,
        false,
        &cgi_params("POST", "/t/slow?ms=1500", big.len()),
        &big,
    ))
    .unwrap();
    wait_for("the first request to run", || {
        let text = fcgi(&gw.addr, "GET", "/status?full", b"").unwrap().text();
        full_entries(&text)
            .iter()
            .any(|e| e.contains("/t/slow") && field(e, "state") == "Running")
    });
    let body = vec![b'x'; 100];
    let wire = fcgi_bytes(1, false, &cgi_params("POST", "/t/upload", 100), &body);
    let (now, later) = wire.split_at(wire.len() - 60);
    let mut c = connect(&gw.addr).unwrap();
    c.write_all(now).unwrap();
    wait_for("the second request to read its body in its app", || {
        let text = fcgi(&gw.addr, "GET", "/status?full", b"").unwrap().text();
        full_entries(&text)
            .iter()
            .any(|e| e.contains("/t/upload") && field(e, "state") == "Reading")
    });
    c.write_all(later).unwrap();
    let r = fcgi_read_response(&mut *c, 1).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&sha256_hex(&body)), "{}", r.text());
    assert_eq!(fcgi_read_response(&mut *a, 1).unwrap().status, 200);
}

/// Two reloads while a worker drains a long request: the newest worker starts while every row
/// of the scoreboard is held. It answers the status page all the same, and takes the first row
/// that frees, so that it shows on the page.
#[test]
fn a_worker_started_while_every_row_is_held_takes_one_that_frees() {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    let gw = Gateway::start(&[
        "--status-path",
        "/status",
        "--processes",
        "1",
        "--threads",
        "2",
        "--mount",
        &mount,
    ]);
    // The workers in the order they started (the supervisor logs each; a SIGHUP also forks
    // a child that checks the scripts, so the children alone do not tell them apart).
    let started = || -> Vec<u32> {
        gw.log_text()
            .lines()
            .filter_map(|l| l.split("started (pid ").nth(1))
            .filter_map(|rest| rest.split(')').next()?.parse().ok())
            .collect()
    };
    wait_for("the worker", || started().len() == 1);
    let marker = tmpdir("rows-held").join("running");
    let uri = format!("/t/block?marker={}&ms=4000", marker.display());
    let addr = gw.addr.clone();
    let slow = std::thread::spawn(move || fcgi(&addr, "GET", &uri, b""));
    wait_for("the long request to run", || marker.exists());
    gw.hup();
    wait_for("the first replacement", || started().len() == 2);
    gw.hup();
    wait_for("the second replacement", || started().len() == 3);
    let c = started()[2];
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let page = fcgi(&gw.addr, "GET", "/status?json&full", b"").unwrap();
        assert_eq!(page.status, 200, "{}", page.text());
        let doc: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
        let shown = doc["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["pid"].as_u64() == Some(u64::from(c)));
        if shown {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker {c} never on the status page: {}\n{}",
            page.text(),
            gw.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
}
