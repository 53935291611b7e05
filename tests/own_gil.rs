//! Own-GIL application groups (`own-gil`, Python 3.12+): refused with a clear message on an
//! older embedded Python; on 3.12+ reported by `check` and the start-up log, and two own-GIL
//! groups run CPU-bound Flask apps in one process at the same time, without a crash.

mod support;

use std::fs;

use support::*;

/// Whether the embedded Python can give a sub-interpreter its own GIL.
fn own_gil_python() -> bool {
    let mut parts = PY_VERSION.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap()) >= (3, 12)
}

fn problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect()
}

#[test]
fn own_gil_needs_python_3_12_and_check_names_the_groups_that_have_it() {
    let dir = tmpdir("own-gil-check");
    let sock = format!("unix:{}", dir.join("gw.sock").display());
    let script = app("pep3333.wsgi");
    let a = format!("/a={script}");
    let b = format!("/b={script}");
    let args = [
        "check",
        "--fastcgi",
        &sock,
        "--own-gil",
        "--mount",
        &a,
        "--mount",
        &b,
    ];
    let (code, out, err) = run_gateway_output(&args);
    if own_gil_python() {
        assert_eq!(code, 0, "{out}\n{err}");
        let line = out
            .lines()
            .find(|l| l.starts_with("own GIL"))
            .unwrap_or_else(|| panic!("no \"own GIL\" line:\n{out}"));
        assert!(
            line.contains("mount /a (its own sub-interpreter)")
                && line.contains("mount /b (its own sub-interpreter)"),
            "{line}"
        );
    } else {
        assert_eq!(code, 1, "{out}\n{err}");
        let found = problems(&err);
        assert_eq!(found.len(), 1, "{err}");
        for needle in [
            "own-gil: needs Python 3.12 or later",
            &format!("this gateway embeds Python {PY_FULL_VERSION}"),
            "rebuild it against Python 3.12+",
        ] {
            assert!(found[0].contains(needle), "{needle:?} not in {}", found[0]);
        }
        assert!(!out.contains("configuration OK"), "{out}");
        // Serving is refused the same way, before Python starts.
        let (code, err) = run_gateway(&args[1..]);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("own-gil: needs Python 3.12 or later"), "{err}");
    }
    // Without own-gil the same mounts are fine on every version.
    let (code, out, err) =
        run_gateway_output(&["check", "--fastcgi", &sock, "--mount", &a, "--mount", &b]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("own GIL"), "{out}");
}

#[test]
fn own_gil_is_for_sub_interpreters_and_one_per_group() {
    let dir = tmpdir("own-gil-conflicts");
    let script = app("pep3333.wsgi");
    let sock = format!("fastcgi = ['unix:{}']\n", dir.join("gw.sock").display());
    let mount = |prefix: &str, extra: &str| {
        format!("\n[[mount]]\nprefix = \"{prefix}\"\nscript = '{script}'\n{extra}\n")
    };
    let cfg = |name: &str, text: String| {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    // %{GLOBAL} is the main interpreter: its GIL is the process's.
    let f = cfg(
        "global.toml",
        [
            sock.clone(),
            mount("/g", "application-group = \"%{GLOBAL}\"\nown-gil = true"),
        ]
        .concat(),
    );
    let (code, out, err) = run_gateway_output(&["check", "--config", &f]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        problems(&err).iter().any(|p| p.contains("mount /g")
            && p.contains("line 7")
            && p.contains("%{GLOBAL} is the main interpreter")),
        "{err}"
    );
    // Mounts sharing a named group must agree.
    let f = cfg(
        "named.toml",
        [
            sock.clone(),
            mount("/x", "application-group = \"team\"\nown-gil = true"),
            mount("/y", "application-group = \"team\""),
        ]
        .concat(),
    );
    let (code, out, err) = run_gateway_output(&["check", "--config", &f]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        problems(&err).iter().any(|p| p.contains(
            "mounts /x (own-gil) and /y (no own-gil) share application group \"team\": one \
             interpreter has one GIL"
        )),
        "{err}"
    );
    // The gateway-wide setting leaves %{GLOBAL} mounts alone (on 3.12+ the rest is OK).
    let f = cfg(
        "default.toml",
        [
            sock.clone(),
            "own-gil = true\n".into(),
            mount("/g", "application-group = \"%{GLOBAL}\""),
            mount("/s", ""),
        ]
        .concat(),
    );
    let (code, out, err) = run_gateway_output(&["check", "--config", &f]);
    if own_gil_python() {
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("own GIL (sub-interpreters running Python in parallel): mount /s (its own sub-interpreter)\n"), "{out}");
    } else {
        assert_eq!(code, 1, "{out}\n{err}");
        let found = problems(&err);
        assert_eq!(found.len(), 1, "{err}");
        assert!(
            found[0].contains("line 2") && found[0].contains("own-gil: needs Python 3.12"),
            "{err}"
        );
    }
}

/// GET `uri` over FastCGI: the status and the JSON body.
fn get_json(addr: &str, uri: &str) -> (u16, serde_json::Value, String) {
    let r = fcgi(addr, "GET", uri, b"").unwrap_or_else(|e| panic!("GET {uri}: {e}"));
    let text = r.text();
    (
        r.status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        text,
    )
}

/// Both `/a` and `/b` run `/meet` at once, each with a deadline of `bound` seconds; their
/// answers, in mount order.
fn meet(gw: &Gateway, dir: &std::path::Path, tag: &str, bound: u32) -> Vec<serde_json::Value> {
    let shm = dir.join(format!("meet-{tag}"));
    fs::write(&shm, [0u8; 32]).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let clients: Vec<_> = ["a", "b"]
        .into_iter()
        .enumerate()
        .map(|(me, mount)| {
            let (addr, barrier) = (gw.addr.clone(), barrier.clone());
            let uri = format!("/{mount}/meet?me={me}&bound={bound}&shm={}", shm.display());
            std::thread::spawn(move || {
                barrier.wait();
                get_json(&addr, &uri)
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| {
            let (status, json, text) = c.join().unwrap();
            assert_eq!(status, 200, "{text}\n{}", gw.log_text());
            json
        })
        .collect()
}

#[test]
fn two_own_gil_groups_run_flask_in_parallel_in_one_process() {
    if !own_gil_python() {
        eprintln!("SKIPPED: own-gil needs Python 3.12 or later; this build embeds {PY_VERSION}");
        return;
    }
    let Some(venv) = test_venv() else {
        require(false, "the test venv with Flask (WSGI_GATEWAY_TEST_VENV)");
        return;
    };
    let dir = tmpdir("own-gil-race");
    let script = app("own_gil/race.wsgi");
    let (a, b) = (format!("/a={script}"), format!("/b={script}"));
    let home = venv.display().to_string();
    let mut args = vec![
        "--python-home",
        &home,
        "--threads",
        "6",
        "--mount",
        &a,
        "--mount",
        &b,
    ];

    // The control: two groups sharing the GIL never see each other move.
    let mut shared = Gateway::start(&args);
    for m in ["/a", "/b"] {
        let (status, _, text) = get_json(&shared.addr, &format!("{m}/spin?n=10"));
        assert_eq!(status, 200, "{text}\n{}", shared.log_text());
    }
    for answer in meet(&shared, &dir, "shared", 2) {
        assert_eq!(answer["saw_other"], false, "{answer}");
        assert_eq!(answer["gil_interval"], 60.0, "{answer}");
    }
    assert!(shared.stop("TERM").success(), "{}", shared.log_text());

    let refused = format!("/r={}", app("own_gil/refused.wsgi"));
    args.extend(["--own-gil", "--mount", &refused]);
    let mut gw = Gateway::start(&args);
    // First requests in both groups at once: both import Flask (and its extension modules)
    // at the same time.
    let first: Vec<_> = ["/a", "/b"]
        .into_iter()
        .map(|m| {
            let addr = gw.addr.clone();
            std::thread::spawn(move || get_json(&addr, &format!("{m}/spin?n=1000")))
        })
        .collect();
    for f in first {
        let (status, json, text) = f.join().unwrap();
        assert_eq!(status, 200, "{text}\n{}", gw.log_text());
        assert!(
            json["third"].as_str().unwrap().starts_with("0.3333"),
            "{json}"
        );
    }
    let log = gw.log_text();
    for m in ["/a", "/b"] {
        assert!(
            log.contains(&format!(
                "made a sub-interpreter with its own GIL for mount {m}"
            )),
            "{log}"
        );
    }

    // Each request saw the other one's counter move while it held its own GIL.
    for answer in meet(&gw, &dir, "own", 20) {
        assert_eq!(answer["saw_other"], true, "{answer}\n{}", gw.log_text());
        assert_eq!(answer["both"], true, "{answer}");
        assert!(
            answer["other_advanced"].as_i64().unwrap() >= 1000,
            "{answer}"
        );
    }

    // A while of CPU-bound Flask requests in both groups at once, two clients per group.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let addr = gw.addr.clone();
            let mount = ["/a", "/b"][i % 2];
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let (status, json, text) = get_json(&addr, &format!("{mount}/spin?n=200000"));
                    assert_eq!(status, 200, "{text}");
                    assert!(json["n"].as_i64().unwrap() > 0, "{json}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join()
            .unwrap_or_else(|_| panic!("a client failed:\n{}", gw.log_text()));
    }

    // A standard-library module that cannot be loaded with an own GIL: refused with a hint.
    let r = fcgi(&gw.addr, "GET", "/r", b"").unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text()
            .contains("cannot be loaded in a sub-interpreter with its own GIL"),
        "{}",
        r.text()
    );
    let log = gw.log_text();
    assert!(
        log.contains(
            "module readline does not support loading in subinterpreters with their own GIL"
        ),
        "{log}"
    );

    // Both interpreters are ended and Python finalised without a crash.
    let status = gw.stop("TERM");
    let log = gw.log_text();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("Fatal Python error"), "{log}");
}

/// The standard-library modules whose C parts crashed processes with own-GIL interpreters
/// (when the interpreters were ended, at a stop) load in three own-GIL groups, and the
/// gateway stops cleanly; a few times over, as the crashes did not come every time.
#[test]
fn own_gil_groups_using_datetime_decimal_and_openssl_stop_cleanly() {
    if !own_gil_python() {
        eprintln!("SKIPPED: own-gil needs Python 3.12 or later; this build embeds {PY_VERSION}");
        return;
    }
    let script = app("own_gil/stdlib.wsgi");
    let mounts: Vec<String> = ["/a", "/b", "/c"]
        .iter()
        .map(|m| format!("{m}={script}"))
        .collect();
    for round in 0..4 {
        let mut args = vec!["--own-gil"];
        for m in &mounts {
            args.extend(["--mount", m.as_str()]);
        }
        let mut gw = Gateway::start(&args);
        for m in ["/a", "/b", "/c"] {
            let (status, json, text) = get_json(&gw.addr, &format!("{m}/"));
            assert_eq!(status, 200, "{text}\n{}", gw.log_text());
            assert_eq!(
                json["sha1"], "10c9ef4141add5408f91e4dada80af36fa8caa70",
                "{json}"
            );
            assert!(
                json["third"].as_str().unwrap().starts_with("0.3333"),
                "{json}"
            );
        }
        let status = gw.stop("TERM");
        let log = gw.log_text();
        assert!(status.success(), "round {round}: {status}:\n{log}");
        assert!(log.contains("stopped"), "{log}");
    }
}
