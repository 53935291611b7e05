//! Application groups, mount venvs, directory mounts, the config file, `check` and script
//! reload (mod_wsgi's model), against the real binary. The tests named `nginx_*` put real
//! nginx (nginx-examples/fastcgi.conf, fixed ports) in front of the gateway and run one at a
//! time (the `frontends` test group in .config/nextest.toml); the others talk FastCGI to a
//! gateway on a free port.
//!
//! The venvs with conflicting versions of `six` are made once per build Python under
//! target/test-venvs (pip from PyPI the first time). Missing nginx or venvs skip a test locally
//! and fail it in CI (`require`); without a Python of another version (`other_python`), the
//! check that refuses its venv is skipped.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use support::frontends::*;
use support::*;

/// The base installation the gateway uses without python-home.
const BASE_PREFIX: &str = PY_PREFIX;
/// The marker of a finished venv in target/test-venvs.
const READY: &str = ".wsgi-gateway-test-ready";

// ---------------------------------------------------------------------------------------------
// Support

fn groups_app(name: &str) -> String {
    app(&format!("groups/{name}"))
}

fn groups_lib() -> String {
    groups_app("lib")
}

/// A venv made once under target/test-venvs/NAME by `python`, with `packages` installed by
/// its own pip (none: `--without-pip`). Made in a scratch directory and renamed into place,
/// so concurrent test processes never see half a venv. None (after `require`) when it cannot
/// be made here.
fn cached_venv(name: &str, python: &Path, packages: &[&str]) -> Option<PathBuf> {
    let parent = venv_cache();
    let dir = parent.join(name);
    if dir.join(READY).is_file() {
        return Some(dir);
    }
    if !require(python.is_file(), &python.display().to_string()) {
        return None;
    }
    fs::create_dir_all(&parent).unwrap();
    let scratch = parent.join(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let mut venv = Command::new(python);
    venv.args(["-m", "venv"]);
    if packages.is_empty() {
        venv.arg("--without-pip");
    }
    let made = venv.arg(&scratch).status().is_ok_and(|s| s.success());
    assert!(
        made,
        "{} -m venv {} failed",
        python.display(),
        scratch.display()
    );
    if !packages.is_empty() {
        let out = Command::new(scratch.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            let _ = fs::remove_dir_all(&scratch);
            let why = format!(
                "pip install {} into a venv (PyPI reachable?): {}",
                packages.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            require(false, &why);
            return None;
        }
    }
    fs::write(scratch.join(READY), "").unwrap();
    if fs::rename(&scratch, &dir).is_err() {
        // Another test process finished it first.
        let _ = fs::remove_dir_all(&scratch);
        assert!(
            dir.join(READY).is_file(),
            "{} is not a test venv",
            dir.display()
        );
    }
    Some(dir)
}

/// target/test-venvs/VERSION-HASH: the cached venvs of the build Python (each build Python,
/// e.g. of tools/test.sh's smoke runs, has its own).
fn venv_cache() -> PathBuf {
    // FNV-1a of the prefix: two installations of one version do not share venvs.
    let hash = PY_PREFIX.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    root()
        .join("target/test-venvs")
        .join(format!("{PY_FULL_VERSION}-{:08x}", hash as u32))
}

/// Two venvs holding conflicting versions of six (1.15.0 and 1.16.0; the base installation
/// has yet another).
fn six_venvs() -> Option<(PathBuf, PathBuf)> {
    let a = cached_venv("six115", Path::new(BUILD_PYTHON), &["six==1.15.0"])?;
    let b = cached_venv("six116", Path::new(BUILD_PYTHON), &["six==1.16.0"])?;
    Some((a, b))
}

/// A venv of the embedded version with nothing installed.
fn empty_venv() -> Option<PathBuf> {
    cached_venv("empty", Path::new(BUILD_PYTHON), &[])
}

fn have_nginx() -> bool {
    require(find_bin("nginx").is_some(), "nginx")
}

/// The nginx tests use the example's fixed ports: one at a time in this process too (plain
/// `cargo test` runs tests on threads), including the `check` of the example config, which
/// binds the same port.
fn fixed_ports() -> MutexGuard<'static, ()> {
    static FIXED: Mutex<()> = Mutex::new(());
    FIXED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A path as a TOML literal string.
fn q(p: impl AsRef<Path>) -> String {
    let s = p.as_ref().to_str().unwrap();
    assert!(!s.contains('\''), "{s}");
    format!("'{s}'")
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("gateway.toml");
    fs::write(&file, text).unwrap();
    file
}

/// A `[[mount]]` table.
fn mount(prefix: &str, script: impl AsRef<Path>, extra: &str) -> String {
    format!(
        "\n[[mount]]\nprefix = \"{prefix}\"\nscript = {}\n{extra}\n",
        q(script)
    )
}

/// GET `uri` over FastCGI; must answer 200. Returns the `KEY=value` lines.
fn get(gw: &Gateway, uri: &str) -> Echo {
    let r = request(gw, uri);
    if r.status != 200 {
        panic!(
            "GET {uri}: status {} body {:?}\n--- gateway log:\n{}",
            r.status,
            r.text(),
            gw.log_text()
        );
    }
    Echo::parse(&r)
}

fn request(gw: &Gateway, uri: &str) -> Response {
    fcgi(&gw.addr, "GET", uri, b"")
        .unwrap_or_else(|e| panic!("GET {uri}: {e}\n--- gateway log:\n{}", gw.log_text()))
}

/// GET `path` through the rig's nginx; must answer 200.
fn rig_get(rig: &Rig, path: &str) -> Echo {
    Echo::parse(&rig.ok("GET", path, &[], b""))
}

/// Runs `wsgi-gateway args` to its end (bounded): (exit code, stdout, stderr).
fn run_bounded(args: &[&str]) -> (i32, String, String) {
    let dir = tmpdir("run");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wsgi-gateway {args:?} did not exit (serving a configuration it should refuse?):\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        fs::read_to_string(out).unwrap(),
        fs::read_to_string(err).unwrap(),
    )
}

/// The `problem: ` lines of `check`'s stderr.
fn problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("problem: "))
        .collect()
}

/// `check`'s stdout says the configuration is OK, with these counts.
fn assert_check_ok(out: &str, listeners: usize, mounts: usize) {
    let line = out
        .lines()
        .find(|l| l.starts_with("configuration OK: "))
        .unwrap_or_else(|| panic!("no \"configuration OK\" line:\n{out}"));
    for part in [
        format!(" {listeners} listener(s),"),
        format!(" {mounts} mount(s),"),
        format!(", Python {PY_VERSION}"),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line:?}");
    }
}

/// `check` with these arguments fails with exactly one problem containing every needle.
fn check_fails_with(args: &[&str], needles: &[&str]) {
    let (code, out, err) = run_bounded(&[&["check"], args].concat());
    assert_eq!(
        code, 1,
        "check {args:?}: exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    let found = problems(&err);
    assert_eq!(
        found.len(),
        1,
        "check {args:?}: want one problem line:\n{err}"
    );
    for n in needles {
        assert!(found[0].contains(n), "check {args:?}: {n:?} not in:\n{err}");
    }
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(!err.contains("Fatal Python error"), "{err}");
}

/// GET `uri` until the app answers with `version` (a script change is noticed a moment after
/// it is written); bounded.
fn get_version(gw: &Gateway, uri: &str, version: &str) -> Echo {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let e = get(gw, uri);
        if e.get("version") == version {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{uri} never answered with {version}:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `text` to `path` and gives it the modification time `secs` after the epoch (the
/// reload check compares modification times; explicit ones need no sleeping).
fn write_with_mtime(path: &Path, text: &str, secs: u64) {
    fs::write(path, text).unwrap();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Waits until the gateway's log contains `needle`.
fn wait_log(gw: &Gateway, needle: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !gw.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never reached the gateway log:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The packages of the base installation the base-packages warning names (not pip and the
/// like).
fn base_packages() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(base_site())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let pkg = name
                .strip_suffix(".dist-info")?
                .split('-')
                .next()?
                .to_string();
            (!["pip", "setuptools", "wheel", "distribute"].contains(&pkg.as_str())).then_some(pkg)
        })
        .collect();
    names.sort();
    names
}

/// The base installation's `six` version, when it has one.
fn base_six() -> Option<String> {
    fs::read_dir(base_site()).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let v = name.strip_prefix("six-")?.strip_suffix(".dist-info")?;
        Some(v.to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Mount venvs with conflicting versions; python-home; the base-packages warning

#[test]
fn nginx_mount_venvs_with_conflicting_versions_side_by_side() {
    if !have_nginx() {
        return;
    }
    let (Some((v115, v116)), Some(empty)) = (six_venvs(), empty_venv()) else {
        return;
    };
    let _fixed = fixed_ports();
    let dir = tmpdir("groups-venvs");
    let probe = groups_app("probe.wsgi");
    // python-home is an empty venv: the base installation's packages are out of sight.
    let cfg = write_config(
        &dir,
        &[
            format!("python-home = {}\n", q(&empty)),
            mount("/v115", &probe, &format!("venv = {}", q(&v115))),
            mount("/v116", &probe, &format!("venv = {}", q(&v116))),
            mount("/plain", &probe, ""),
        ]
        .concat(),
    );
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &["--fastcgi", GATEWAY_TCP, "--config", path_str(&cfg)],
    );
    let site = |v: &Path| format!("{}/{}/", v.display(), site_rel());
    let mut interpreters = Vec::new();
    for round in 1..=2 {
        for (path, venv, six) in [("/v115/x", &v115, "1.15.0"), ("/v116/y", &v116, "1.16.0")] {
            let e = rig_get(&rig, path);
            assert_eq!(e.get("six"), six, "{path}\n{}", rig.logs());
            assert!(
                e.get("six_file").starts_with(&site(venv)),
                "{path}: {}",
                e.get("six_file")
            );
            assert_eq!(
                e.get("prefix"),
                path_str(venv),
                "{path}: sys.prefix is the venv"
            );
            assert_eq!(e.get("flask"), "missing", "{path}: base packages invisible");
            assert_eq!(e.get("counter"), round.to_string(), "{path}");
            interpreters.push(e.get("interpreter").to_string());
        }
    }
    let plain = rig_get(&rig, "/plain/");
    assert_eq!(
        plain.get("six"),
        "missing",
        "no venv, empty python-home: no six"
    );
    assert_eq!(plain.get("flask"), "missing");
    assert_eq!(plain.get("prefix"), path_str(&empty));
    assert_eq!(plain.get("SCRIPT_NAME"), "/plain");
    assert_eq!(plain.get("PATH_INFO"), "/");
    interpreters.push(plain.get("interpreter").to_string());
    // Each mount its own sub-interpreter (never the main one, 0), the same one every time.
    assert_eq!(interpreters[0], interpreters[2]);
    assert_eq!(interpreters[1], interpreters[3]);
    let distinct: std::collections::HashSet<_> = interpreters.iter().collect();
    assert_eq!(distinct.len(), 3, "{interpreters:?}");
    assert!(!distinct.contains(&"0".to_string()), "{interpreters:?}");
    // An empty python-home: nothing to warn about.
    assert!(
        !rig.gw.log_text().contains("base site-packages"),
        "{}",
        rig.logs()
    );
    rig.assert_gateway_quiet();
}

#[test]
fn a_mount_venv_comes_before_the_base_packages_which_are_named_in_a_warning() {
    let Some((v115, _)) = six_venvs() else {
        return;
    };
    let dir = tmpdir("groups-base");
    let probe = groups_app("probe.wsgi");
    let mounts = [
        mount("/v115", &probe, &format!("venv = {}", q(&v115))),
        mount("/plain", &probe, ""),
    ]
    .concat();

    // No python-home: the build's installation, whose site-packages is named in a warning
    // when it holds packages (other than pip and setuptools).
    let cfg = write_config(&dir, &mounts);
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    let e = get(&gw, "/v115/");
    assert_eq!(
        e.get("six"),
        "1.15.0",
        "the venv's six wins over the base one"
    );
    assert!(e.get("six_file").starts_with(path_str(&v115)));
    assert_eq!(e.get("prefix"), path_str(&v115));
    let plain = get(&gw, "/plain/");
    assert_eq!(plain.get("prefix"), BASE_PREFIX);
    if let Some(base) = base_six() {
        assert_eq!(
            plain.get("six"),
            base,
            "no venv: the base installation's six"
        );
        assert!(plain.get("six_file").starts_with(&base_site()));
    }
    let log = gw.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("[warn]") && l.contains("base site-packages"));
    let base = base_packages();
    match warning {
        None => assert!(base.is_empty(), "no warning naming {base:?}:\n{log}"),
        Some(warning) => {
            assert!(warning.contains(&base_site()), "{warning}");
            for name in &base {
                assert!(warning.contains(name.as_str()), "{name}: {warning}");
            }
            assert!(
                warning.contains("point python-home at an empty virtualenv"),
                "{warning}"
            );
        }
    }
    drop(gw);

    // python-home with Flask and Django: named in the log and by check, and visible to the
    // mount whose venv lacks them (which is what the warning is about).
    let Some(test_venv) = test_venv() else {
        require(false, "target/test-venv (Flask, Django)");
        return;
    };
    let home_site = format!("{}/{}", test_venv.display(), site_rel());
    let cfg = write_config(
        &dir,
        &[format!("python-home = {}\n", q(&test_venv)), mounts.clone()].concat(),
    );
    let (code, out, err) = run_bounded(&[
        "check",
        "--config",
        path_str(&cfg),
        "--fastcgi",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_check_ok(&out, 1, 2);
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("check printed no warning:\n{out}"));
    assert!(
        warning.contains(&format!(
            "the base site-packages {home_site} holds packages"
        )),
        "{warning}"
    );
    for name in ["django", "flask"] {
        assert!(warning.contains(name), "{name} not in {warning}");
    }
    for name in ["pip,", "setuptools"] {
        assert!(!warning.contains(name), "{name} in {warning}");
    }
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    let e = get(&gw, "/v115/");
    assert_eq!(e.get("six"), "1.15.0");
    assert!(e.get("flask").starts_with(&home_site), "{}", e.get("flask"));
    let log = gw.log_text();
    assert!(
        log.lines().any(|l| l.contains("[warn]")
            && l.contains(&home_site)
            && l.contains("django")
            && l.contains("flask")),
        "{log}"
    );
    drop(gw);

    // python-home an empty venv: check has nothing to warn about.
    let Some(empty) = empty_venv() else {
        return;
    };
    let cfg = write_config(
        &dir,
        &[format!("python-home = {}\n", q(&empty)), mounts].concat(),
    );
    let (code, out, err) = run_bounded(&[
        "check",
        "--config",
        path_str(&cfg),
        "--fastcgi",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("warning:"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 2. mod_wsgi's scenario 2: one venv (python-home) for several apps, each in its own
//    sub-interpreter

#[test]
fn apps_sharing_the_python_home_venv_each_in_their_own_sub_interpreter() {
    let Some((v115, _)) = six_venvs() else {
        return;
    };
    let probe = groups_app("probe.wsgi");
    let mounts: Vec<String> = ["/one", "/two", "/three"]
        .iter()
        .map(|p| format!("{p}={probe}"))
        .collect();
    let lib = groups_lib();
    let mut args = vec!["--python-home", path_str(&v115), "--python-path", &lib];
    for m in &mounts {
        args.extend(["--mount", m]);
    }
    let gw = Gateway::start(&args);
    let mut seen = Vec::new();
    for p in ["/one", "/two", "/three"] {
        let e = get(&gw, &format!("{p}/?set=written-by-{p}"));
        assert_eq!(e.get("six"), "1.15.0", "{p}");
        assert!(e.get("six_file").starts_with(path_str(&v115)), "{p}");
        assert_eq!(e.get("prefix"), path_str(&v115), "{p}");
        assert_eq!(
            e.get("flask"),
            "missing",
            "{p}: the base packages are not visible"
        );
        assert_eq!(e.get("argv"), "['wsgi-gateway']");
        seen.push(e.get("interpreter").to_string());
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 3, "one sub-interpreter each: {seen:?}");
    assert!(!seen.contains(&"0".to_string()), "{seen:?}");
    // Each app kept its own module state.
    for p in ["/one", "/two", "/three"] {
        let e = get(&gw, &format!("{p}/"));
        assert_eq!(e.get("value"), format!("written-by-{p}"), "{p}");
        assert_eq!(e.get("counter"), "2", "{p}");
    }
    assert!(!gw.log_text().contains("[warn]"), "{}", gw.log_text());
}

// ---------------------------------------------------------------------------------------------
// 3. mod_wsgi's scenario 4: the script activates its venv itself

#[test]
fn scripts_that_activate_their_own_venv_keep_working() {
    let Some((v115, v116)) = six_venvs() else {
        return;
    };
    let dir = tmpdir("groups-activate");
    // virtualenv's activate_this.py, which `python -m venv` does not make.
    fs::copy(
        groups_app("activate_this.py"),
        v115.join("bin/activate_this.py"),
    )
    .unwrap();
    let placeholder = "/usr/local/envs/myapp1";
    let site_script = dir.join("site.wsgi");
    let text = fs::read_to_string(groups_app("activate_site.wsgi")).unwrap();
    assert!(text.contains(placeholder));
    fs::write(&site_script, text.replace(placeholder, path_str(&v116))).unwrap();
    let this_script = dir.join("this.wsgi");
    let text = fs::read_to_string(groups_app("activate_this.wsgi")).unwrap();
    assert!(text.contains(placeholder));
    fs::write(&this_script, text.replace(placeholder, path_str(&v115))).unwrap();

    let m1 = format!("/site={}", site_script.display());
    let m2 = format!("/this={}", this_script.display());
    let m3 = format!("/plain={}", groups_app("probe.wsgi"));
    let gw = Gateway::start(&["--mount", &m1, "--mount", &m2, "--mount", &m3]);
    for _ in 0..2 {
        let e = get(&gw, "/site/");
        assert_eq!(e.get("six"), "1.16.0", "site.addsitedir activation");
        assert!(e
            .get("six_file")
            .starts_with(&format!("{}/{}/", v116.display(), site_rel())));
        let e = get(&gw, "/this/");
        assert_eq!(e.get("six"), "1.15.0", "activate_this.py activation");
        // activate_this.py adds the real path of site-packages.
        let real = fs::canonicalize(&v115).unwrap();
        assert!(
            e.get("six_file")
                .starts_with(&format!("{}/{}/", real.display(), site_rel())),
            "{}",
            e.get("six_file")
        );
        assert_eq!(e.get("prefix"), path_str(&v115));
        assert_eq!(e.get("real_prefix"), BASE_PREFIX);
        // The activations stayed in their sub-interpreters.
        let e = get(&gw, "/plain/");
        assert_eq!(e.get("prefix"), BASE_PREFIX);
        assert!(
            !e.get("six_file").contains("test-venvs"),
            "{}",
            e.get("six_file")
        );
        if let Some(base) = base_six() {
            assert_eq!(e.get("six"), base);
        }
    }
    assert!(!gw.log_text().contains("[error]"), "{}", gw.log_text());
}

/// What the gateway's own code imports into an interpreter, it imports into every one: the main
/// interpreter and each sub-interpreter pay for it in memory. An app that imports nothing finds
/// none of the watched modules (traceback, threading, re, html, importlib.util...) beyond what
/// the venv's own Python loads at start-up, in a sub-interpreter and in %{GLOBAL}, also after
/// an error was answered with its traceback in the log.
#[test]
fn the_gateway_loads_no_module_an_app_did_not_import() {
    let Some(empty) = empty_venv() else {
        return;
    };
    let dir = tmpdir("groups-modules");
    let script = app("modules.wsgi");
    let broken = app("broken.wsgi");
    let cfg = write_config(
        &dir,
        &[
            format!("python-home = {}\n", q(&empty)),
            mount("/sub", &script, ""),
            mount("/global", &script, "application-group = \"%{GLOBAL}\""),
            mount("/broken", &broken, ""),
        ]
        .concat(),
    );
    // The modules watched, and those of them a plain start of the venv's Python loads (none,
    // usually).
    let watched = "traceback,threading,re,html,importlib.util,contextlib,tokenize,hashlib,enum,\
                   functools";
    let out = Command::new(empty.join("bin/python"))
        .args([
            "-c",
            "import sys; print(','.join(m for m in sys.argv[1].split(',') if m in sys.modules))",
            watched,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let at_start = String::from_utf8(out.stdout).unwrap();
    let at_start: Vec<&str> = at_start.trim().split(',').collect();
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    let check = |when: &str| {
        for p in ["/sub/", "/global/"] {
            let r = request(&gw, &format!("{p}?{watched}"));
            assert_eq!(r.status, 200, "{}", r.text());
            let text = r.text();
            let loaded: Vec<&str> = text
                .split(',')
                .filter(|m| !m.is_empty() && !at_start.contains(m))
                .collect();
            assert!(loaded.is_empty(), "{when}, {p} holds {loaded:?}");
        }
    };
    check("at the first requests");
    // A script that fails to import: its traceback is logged, from its own interpreter.
    let r = request(&gw, "/broken/");
    assert_eq!(r.status, 500, "{}", r.text());
    wait_for("the broken script's traceback", || {
        gw.log_text().contains("Traceback (most recent call last)")
    });
    check("after another interpreter's error");
}

// ---------------------------------------------------------------------------------------------
// 4. Isolation between groups, sharing within one; threads, sys.argv and print() per
//    interpreter

#[test]
fn module_state_is_shared_within_a_group_and_isolated_between_groups() {
    let dir = tmpdir("groups-isolation");
    let (a, b) = (dir.join("app_a.wsgi"), dir.join("app_b.wsgi"));
    fs::copy(groups_app("probe.wsgi"), &a).unwrap();
    fs::copy(groups_app("probe.wsgi"), &b).unwrap();
    let global = "application-group = \"%{GLOBAL}\"";
    let cfg = write_config(
        &dir,
        &[
            format!("python-path = [{}]\nthreads = 4\n", q(groups_lib())),
            mount("/a", &a, "application-group = \"team\""),
            mount("/b", &b, "application-group = \"team\""),
            mount("/c", &b, "application-group = \"other\""),
            mount("/d", &a, ""),
            mount("/e", &a, global),
            mount("/f", &b, global),
            // A named group whose name reads like how the gateway names /d's own group.
            mount("/g", &b, "application-group = \"mount /d\""),
        ]
        .concat(),
    );
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    let id = |p: &str| get(&gw, p).get("interpreter").to_string();

    let e = get(&gw, "/a/?set=from-a");
    assert_eq!(e.get("value"), "from-a");
    let team = e.get("interpreter").to_string();
    // The same named group: the same interpreter, the same module.
    let e = get(&gw, "/b/");
    assert_eq!(
        e.get("value"),
        "from-a",
        "visible within the group \"team\""
    );
    assert_eq!(e.get("interpreter"), team);
    assert_eq!(e.get("script"), "app_b.wsgi");
    // Another group, the script's own group, the main interpreter: not visible.
    for p in ["/c/", "/d/", "/e/", "/f/"] {
        assert_eq!(get(&gw, p).get("value"), "None", "{p} sees team's value");
    }
    let e = get(&gw, "/e/?set=from-e");
    assert_eq!(
        e.get("interpreter"),
        "0",
        "%{{GLOBAL}} is the main interpreter"
    );
    assert_eq!(
        get(&gw, "/f/").get("value"),
        "from-e",
        "both in %{{GLOBAL}}"
    );
    assert_eq!(get(&gw, "/a/").get("value"), "from-a");
    assert_eq!(get(&gw, "/c/").get("value"), "None");
    assert_eq!(get(&gw, "/d/").get("value"), "None");

    // One module per script per interpreter: app_a in "team", in its own group and in
    // %{GLOBAL} are three modules with three counters.
    let (ca, cd, ce) = (
        get(&gw, "/a/").get("counter").to_string(),
        get(&gw, "/d/").get("counter").to_string(),
        get(&gw, "/e/").get("counter").to_string(),
    );
    assert_eq!((ca.as_str(), cd.as_str(), ce.as_str()), ("3", "3", "3"));

    let ids = [id("/a/"), id("/c/"), id("/d/"), id("/e/")];
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "{ids:?}");
    assert_eq!(id("/f/"), "0");

    for p in ["/a", "/c", "/d", "/e"] {
        let e = get(&gw, &format!("{p}/?thread=1&print=marker-{}", &p[1..]));
        let want = format!(
            "499500 in interpreter {}, alive after join: False",
            e.get("interpreter")
        );
        assert_eq!(
            e.get("thread"),
            want,
            "{p}: a thread started and joined by the app"
        );
        assert_eq!(e.get("argv"), "['wsgi-gateway']", "{p}: sys.argv");
        wait_log(&gw, &format!("probe-print marker-{}", &p[1..]));
    }
    assert_ne!(id("/d/"), id("/g/"), "a name is not a mount's own group");
    let log = gw.log_text();
    assert!(!log.contains("[error]"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 5. Directory mounts and traversal attempts, behind nginx

#[test]
fn nginx_directory_mount_serves_its_scripts_and_nothing_else() {
    if !have_nginx() {
        return;
    }
    let _fixed = fixed_ports();
    let base = tmpdir("groups-dir");
    let dir = base.join("apps");
    fs::create_dir_all(dir.join("sub")).unwrap();
    let probe = groups_app("probe.wsgi");
    for name in [
        "hello.wsgi",
        "index.wsgi",
        ".hidden.wsgi",
        "sub/inner.wsgi",
        "notes.txt",
    ] {
        fs::copy(&probe, dir.join(name)).unwrap();
    }
    let outside = "def application(environ, start_response):\n    \
                   start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
                   return [b'outside-script-ran\\n']\n";
    fs::write(base.join("outside.wsgi"), outside).unwrap();
    fs::write(
        base.join("root.wsgi"),
        outside.replace("outside-script", "root-script"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../outside.wsgi", dir.join("escape.wsgi")).unwrap();
    std::os::unix::fs::symlink(base.join("outside.wsgi"), dir.join("absolute.wsgi")).unwrap();
    std::os::unix::fs::symlink("hello.wsgi", dir.join("alias.wsgi")).unwrap();

    let m_apps = format!("/apps={}", dir.display());
    let m_root = format!("/={}", base.join("root.wsgi").display());
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--mount",
            &m_apps,
            "--mount",
            &m_root,
        ],
    );

    let route = |path: &str, script: &str, script_name: &str, path_info: &str| {
        let e = rig_get(&rig, path);
        let got = (e.get("script"), e.get("SCRIPT_NAME"), e.get("PATH_INFO"));
        assert_eq!(
            got,
            (script, script_name, path_info),
            "GET {path}\n{}",
            rig.logs()
        );
        e.get("interpreter").to_string()
    };
    let hello = route("/apps/hello/x/y?q=1", "hello.wsgi", "/apps/hello", "/x/y");
    route("/apps/hello", "hello.wsgi", "/apps/hello", "");
    route("/apps/hello/", "hello.wsgi", "/apps/hello", "/");
    let index = route("/apps/", "index.wsgi", "/apps", "/");
    route("/apps", "index.wsgi", "/apps", "");
    // A symlink that stays in the directory is served.
    route("/apps/alias/z", "alias.wsgi", "/apps/alias", "/z");
    assert_ne!(hello, index, "a sub-interpreter per script");
    assert_ne!(hello, "0");
    // The root mount still serves its own paths.
    assert_eq!(
        rig.ok("GET", "/elsewhere", &[], b"").text(),
        "root-script-ran\n"
    );

    for path in [
        "/apps/../outside",
        "/apps/..",
        "/apps/%2e%2e/outside",
        "/apps/%2E%2E/outside",
        "/apps/.%2e/outside",
        "/apps/%2e%2e%2foutside",
        "/apps/hello%2Fx",
        "/apps/sub%2finner",
        "/apps/..%5coutside",
        "/apps/.hidden",
        "/apps/.hidden/x",
        "/apps/escape",
        "/apps/escape/x",
        "/apps/absolute",
        "/apps/nope",
        "/apps/nope/x",
        "/apps/sub",
        "/apps/sub/inner",
        "/apps/notes",
        "/apps/hello.wsgi",
        "/apps/index.wsgi",
    ] {
        let r = rig.get_verbatim(path);
        assert_eq!(
            r.status,
            404,
            "GET {path}: {} {:?}\n{}",
            r.status,
            r.text(),
            rig.logs()
        );
        // The gateway's answer (nginx passes every path on), and no script ran.
        assert!(
            r.text().starts_with("Not Found"),
            "GET {path}: {:?}",
            r.text()
        );
        assert!(
            !r.text().contains("-ran"),
            "GET {path} ran a script: {:?}",
            r.text()
        );
    }
    // nginx refuses a path above its root itself; nothing is run either way.
    let r = rig.get_verbatim("/apps/../../outside");
    assert!(matches!(r.status, 400 | 404), "{} {:?}", r.status, r.text());
    assert!(!r.text().contains("-ran"));
    let log = rig.gw.log_text();
    let made: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("made a sub-interpreter for mount /apps "))
        .collect();
    assert_eq!(made.len(), 3, "hello, index, alias only:\n{}", rig.logs());
    for l in made {
        assert!(
            l.contains("/hello.wsgi") || l.contains("/index.wsgi") || l.contains("/alias.wsgi"),
            "{l}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Reload on change

fn versioned(v: &str) -> String {
    let text = fs::read_to_string(groups_app("versioned.wsgi")).unwrap();
    assert!(text.contains("VERSION = 'v1'"));
    text.replace("VERSION = 'v1'", &format!("VERSION = '{v}'"))
}

const T0: u64 = 1_700_000_000;

/// A script changed twice within one second, its size the same (a version bumped): the
/// reload runs the new source. (CPython's bytecode cache tells its files apart by the
/// source's modification time in whole seconds and its size; a script is compiled from its
/// source instead.)
#[test]
fn a_script_changed_within_a_second_keeping_its_size_is_reloaded_from_its_source() {
    let dir = tmpdir("groups-same-second");
    let script = dir.join("app.wsgi");
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(T0 * 1000 + ms);
    let write = |v: &str, ms: u64| {
        fs::write(&script, versioned(v)).unwrap();
        let f = fs::OpenOptions::new().write(true).open(&script).unwrap();
        f.set_modified(at(ms)).unwrap();
    };
    write("v1", 100);
    let cfg = write_config(&dir, &mount("/a", &script, ""));
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    assert_eq!(get(&gw, "/a/").get("version"), "v1");
    for (v, ms) in [("v2", 400), ("v3", 700)] {
        write(v, ms);
        assert_eq!(get_version(&gw, "/a/", v).get("version"), v);
    }
}

#[test]
fn a_changed_script_is_reloaded_and_in_flight_requests_finish_on_the_old_code() {
    let dir = tmpdir("groups-reload");
    let names = ["own", "glob", "named", "fixed", "other", "slow", "slowglob"];
    for n in names {
        write_with_mtime(&dir.join(format!("{n}.wsgi")), &versioned("v1"), T0);
    }
    let s = |n: &str| dir.join(format!("{n}.wsgi"));
    let global = "application-group = \"%{GLOBAL}\"";
    let cfg = write_config(
        &dir,
        &[
            "threads = 6\n".to_string(),
            mount("/own", s("own"), ""),
            mount("/glob", s("glob"), global),
            mount("/named", s("named"), "application-group = \"team\""),
            mount("/fixed", s("fixed"), "reload = false"),
            mount("/other", s("other"), ""),
            mount("/slow", s("slow"), ""),
            mount("/slowglob", s("slowglob"), global),
        ]
        .concat(),
    );
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    let mut before = std::collections::HashMap::new();
    for round in 1..=2 {
        for n in names {
            let e = get(&gw, &format!("/{n}/"));
            assert_eq!(e.get("version"), "v1", "/{n}");
            assert_eq!(e.get("counter"), round.to_string(), "/{n}");
            assert_eq!(e.get("imports"), "1", "/{n}");
            before.insert(n, e.get("interpreter").to_string());
        }
    }
    assert_eq!(before["glob"], "0");

    // Requests in flight while their scripts change: an own-group mount and a %{GLOBAL} one.
    let release = dir.join("release");
    let in_flight: Vec<_> = ["slow", "slowglob"]
        .iter()
        .map(|n| {
            let (addr, uri) = (gw.addr.clone(), format!("/{n}/?wait={}", release.display()));
            std::thread::spawn(move || fcgi(&addr, "GET", &uri, b""))
        })
        .collect();
    wait_log(&gw, "versioned-started /slow v1");
    wait_log(&gw, "versioned-started /slowglob v1");

    for n in ["own", "glob", "named", "fixed", "slow", "slowglob"] {
        write_with_mtime(&s(n), &versioned("v2"), T0 + 60);
    }
    // Own group: a new sub-interpreter (module state and `sys` start afresh). (Changes are
    // noticed through inotify, by a thread: the first request may come a moment before.)
    for n in ["own", "slow"] {
        let e = get_version(&gw, &format!("/{n}/"), "v2");
        assert_eq!(e.get("version"), "v2", "/{n}");
        assert_eq!((e.get("counter"), e.get("imports")), ("1", "1"), "/{n}");
        assert_ne!(e.get("interpreter"), before[n], "/{n}: a new interpreter");
    }
    // %{GLOBAL} and a named group: the module is imported again in the same interpreter.
    for n in ["glob", "named", "slowglob"] {
        let e = get_version(&gw, &format!("/{n}/"), "v2");
        assert_eq!((e.get("counter"), e.get("imports")), ("1", "2"), "/{n}");
        assert_eq!(
            e.get("interpreter"),
            before[n],
            "/{n}: the same interpreter"
        );
    }
    // reload = false: the old code, the old module.
    let e = get(&gw, "/fixed/");
    assert_eq!((e.get("version"), e.get("counter")), ("v1", "3"));
    // Untouched mounts are untouched.
    let e = get(&gw, "/other/");
    assert_eq!((e.get("version"), e.get("counter")), ("v1", "3"));
    assert_eq!(e.get("interpreter"), before["other"]);

    // The requests that started before the change finish on the old code.
    fs::write(&release, "").unwrap();
    for (t, n) in in_flight.into_iter().zip(["slow", "slowglob"]) {
        let r = t
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("/{n}: {e}\n{}", gw.log_text()));
        assert_eq!(r.status, 200, "/{n}: {}\n{}", r.text(), gw.log_text());
        let e = Echo::parse(&r);
        assert_eq!(
            (e.get("version"), e.get("counter")),
            ("v1", "3"),
            "/{n} in flight"
        );
        assert_eq!(e.get("interpreter"), before[n]);
    }
    // No further reloads without further changes.
    for n in ["own", "glob", "named", "slow"] {
        let e = get(&gw, &format!("/{n}/"));
        assert_eq!((e.get("version"), e.get("counter")), ("v2", "2"), "/{n}");
    }
    let log = gw.log_text();
    for n in ["own", "glob", "named", "slow", "slowglob"] {
        let needle = format!("{} changed: reloading it", s(n).display());
        assert_eq!(log.matches(&needle).count(), 1, "{needle}\n{log}");
    }
    assert!(
        !log.contains(&format!("{} changed", s("fixed").display())),
        "{log}"
    );
    assert!(!log.contains("[error]"), "{log}");
}

#[test]
fn reload_is_switched_off_by_the_file_and_by_the_flag() {
    let dir = tmpdir("groups-noreload");
    let (a, b) = (dir.join("a.wsgi"), dir.join("b.wsgi"));
    write_with_mtime(&a, &versioned("v1"), T0);
    write_with_mtime(&b, &versioned("v1"), T0);
    // Off for the whole file, back on for /b.
    let cfg = write_config(
        &dir,
        &[
            "reload = false\n".to_string(),
            mount("/a", &a, ""),
            mount("/b", &b, "reload = true"),
        ]
        .concat(),
    );
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    assert_eq!(get(&gw, "/a/").get("version"), "v1");
    assert_eq!(get(&gw, "/b/").get("version"), "v1");
    write_with_mtime(&a, &versioned("v2"), T0 + 60);
    write_with_mtime(&b, &versioned("v2"), T0 + 60);
    // reload = true on the mount: noticed.
    get_version(&gw, "/b/", "v2");
    assert_eq!(
        get(&gw, "/a/").get("version"),
        "v1",
        "reload = false in the file"
    );
    drop(gw);

    // --no-reload wins over everything.
    let gw = Gateway::start(&["--config", path_str(&cfg), "--no-reload"]);
    assert_eq!(get(&gw, "/b/").get("version"), "v2");
    write_with_mtime(&b, &versioned("v3"), T0 + 120);
    let e = get(&gw, "/b/");
    assert_eq!(
        (e.get("version"), e.get("counter")),
        ("v2", "2"),
        "--no-reload"
    );
    assert!(!gw.log_text().contains("reloading"), "{}", gw.log_text());
}

// ---------------------------------------------------------------------------------------------
// 7. Wrong mount venvs are refused

#[test]
fn wrong_mount_venvs_are_refused_with_their_message() {
    let Some((v115, v116)) = six_venvs() else {
        return;
    };
    let dir = tmpdir("groups-badvenv");
    let probe = groups_app("probe.wsgi");
    let sock = format!("fastcgi = ['unix:{}']\n", dir.join("gw.sock").display());
    let refused = |mounts: &[String], needle: &str| {
        let cfg = write_config(
            &dir,
            &[vec![sock.clone()], mounts.to_vec()].concat().concat(),
        );
        let cfg = path_str(&cfg);
        check_fails_with(&["--config", cfg], &[needle]);
        let (code, out, err) = run_bounded(&["--config", cfg]);
        assert_ne!(code, 0, "serving {cfg}: exit {code}\n{out}\n{err}");
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
        assert!(!err.contains("Fatal Python error"), "{err}");
    };

    if let Some((python, other)) = other_python() {
        let venv = cached_venv(&format!("other-{other}"), &python, &[]).expect("a venv");
        refused(
            &[mount("/x", &probe, &format!("venv = {}", q(&venv)))],
            &format!(
                "mount /x: venv {0} was created by Python {other} but this gateway embeds \
                 Python {PY_VERSION}; recreate it with python{PY_VERSION} -m venv {0}",
                venv.display()
            ),
        );
    }
    refused(
        &[mount(
            "/x",
            &probe,
            &format!("venv = {}", q(v115.join("bin/python"))),
        )],
        &format!(
            "mount /x: venv {}/bin/python is the interpreter, not the virtualenv root; use {}",
            v115.display(),
            v115.display()
        ),
    );
    refused(
        &[mount("/x", &probe, &format!("venv = {}", q(BASE_PREFIX)))],
        &format!("mount /x: venv {BASE_PREFIX} is a Python installation, not a virtualenv"),
    );
    refused(
        &[mount(
            "/x",
            &probe,
            &format!("venv = {}", q(dir.join("missing"))),
        )],
        &format!(
            "mount /x: venv {} does not exist",
            dir.join("missing").display()
        ),
    );
    let global = "application-group = \"%{GLOBAL}\"";
    refused(
        &[
            mount("/a", &probe, &format!("{global}\nvenv = {}", q(&v115))),
            mount("/b", &probe, &format!("{global}\nvenv = {}", q(&v116))),
        ],
        &format!(
            "mounts /a (venv {}) and /b (venv {}) share application group %{{GLOBAL}}: one \
             interpreter cannot hold two venvs; give one of them its own application group",
            v115.display(),
            v116.display()
        ),
    );
    // A named group, one mount with a venv and one without: also two environments.
    refused(
        &[
            mount(
                "/a",
                &probe,
                &format!("application-group = \"team\"\nvenv = {}", q(&v115)),
            ),
            mount("/b", &probe, "application-group = \"team\""),
        ],
        "share application group \"team\": one interpreter cannot hold two venvs",
    );
    // The same venv in one group is fine: activated in that interpreter, the main one too.
    let cfg = write_config(
        &dir,
        &[
            mount("/a", &probe, &format!("{global}\nvenv = {}", q(&v115))),
            mount("/b", &probe, &format!("{global}\nvenv = {}", q(&v115))),
            mount(
                "/c",
                &probe,
                &format!("application-group = \"team\"\nvenv = {}", q(&v116)),
            ),
            mount(
                "/d",
                &probe,
                &format!("application-group = \"team\"\nvenv = {}", q(&v116)),
            ),
        ]
        .concat(),
    );
    let (code, out, err) = run_bounded(&[
        "check",
        "--config",
        path_str(&cfg),
        "--fastcgi",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    for (p, venv, six) in [
        ("/a/", &v115, "1.15.0"),
        ("/b/", &v115, "1.15.0"),
        ("/c/", &v116, "1.16.0"),
        ("/d/", &v116, "1.16.0"),
    ] {
        let e = get(&gw, p);
        assert_eq!(e.get("six"), six, "{p}");
        assert_eq!(e.get("prefix"), path_str(venv), "{p}");
    }
    assert_eq!(get(&gw, "/a/").get("interpreter"), "0");
    assert_eq!(
        get(&gw, "/c/").get("interpreter"),
        get(&gw, "/d/").get("interpreter")
    );
}

// ---------------------------------------------------------------------------------------------
// 8. The example config file; check's failures

#[test]
fn nginx_the_example_config_checks_and_serves() {
    if !have_nginx() {
        return;
    }
    let _fixed = fixed_ports();
    assert_port_free(GATEWAY_TCP);
    example_venvs();
    let example = root().join("examples/gateway.toml");
    let (code, out, err) = run_bounded(&["check", "--config", path_str(&example)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_check_ok(&out, 1, 4);
    assert!(err.is_empty(), "{err}");

    let ex = |p: &str| root().join("examples").join(p).display().to_string();
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &["--config", path_str(&example), "--fastcgi", GATEWAY_TCP],
    );
    let text = |path: &str| rig.ok("GET", path, &[], b"").text();
    assert!(text("/").starts_with("main site\npath: /\n"));
    assert!(text("/about").contains("path: /about\n"));
    let shop = text("/shop/cart");
    assert!(shop.starts_with("shop on shopkit 2.0\n"), "{shop}");
    assert!(
        shop.contains(&format!("sys.prefix: {}\n", ex("venvs/shop"))),
        "{shop}"
    );
    assert!(shop.contains("path: /cart\n"), "{shop}");
    let legacy = text("/legacy/");
    assert!(
        legacy.starts_with("legacy shop on shopkit 1.4\n"),
        "{legacy}"
    );
    assert!(
        legacy.contains(&format!("sys.prefix: {}\n", ex("venvs/legacy"))),
        "{legacy}"
    );
    assert!(
        text("/shop/").starts_with("shop on shopkit 2.0\n"),
        "both shops side by side"
    );
    assert_eq!(
        text("/tools/"),
        "tools: echo\nrequests to tools so far: 0\n"
    );
    assert_eq!(
        text("/tools/echo/a/b?x=1"),
        "SCRIPT_NAME=/tools/echo\nPATH_INFO=/a/b\nQUERY_STRING=x=1\n"
    );
    // The tools share their group's modules.
    assert_eq!(
        text("/tools/"),
        "tools: echo\nrequests to tools so far: 1\n"
    );
    for path in [
        "/tools/.hidden",
        "/tools/../shop",
        "/tools/nope",
        "/tools/echo%2fx",
    ] {
        assert_eq!(rig.get_verbatim(path).status, 404, "{path}");
    }
    let log = rig.gw.log_text();
    assert!(log.contains("mount /tools -> "), "{log}");
    assert!(log.contains("(interpreter: \"tools\")"), "{log}");
    // No python-home in the example: the gateway warns about the base packages, nothing else.
    let unexpected: Vec<&str> = log
        .lines()
        .filter(|l| {
            (l.contains("[warn]") && !l.contains("base site-packages")) || l.contains("[error]")
        })
        .collect();
    assert!(unexpected.is_empty(), "{}", rig.logs());
}

#[test]
fn check_names_each_problem_on_one_line() {
    let dir = tmpdir("groups-check");
    let sock = format!("fastcgi = ['unix:{}']\n", dir.join("gw.sock").display());
    let good = dir.join("good.wsgi");
    fs::copy(groups_app("probe.wsgi"), &good).unwrap();
    let cfg = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    // A good configuration first.
    let ok = cfg("ok.toml", &[sock.clone(), mount("/", &good, "")].concat());
    let (code, out, err) = run_bounded(&["check", "--config", &ok]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_check_ok(&out, 1, 1);
    assert!(
        !dir.join("gw.sock").exists(),
        "check leaves no socket behind"
    );

    // A TOML syntax error, with its line.
    let f = cfg(
        "syntax.toml",
        &format!("{sock}threads = 4\n\n[[mount]\nprefix = \"/\"\nscript = 'good.wsgi'\n"),
    );
    check_fails_with(&["--config", &f], &[&format!("config file {f}, line 4")]);
    // An unknown key (a mount's), with its line.
    let f = cfg(
        "unknown.toml",
        &format!(
            "{sock}threads = 4\n\n[[mount]]\nprefix = \"/\"\nscript = 'good.wsgi'\n\
             application_group = \"x\"\n"
        ),
    );
    check_fails_with(
        &["--config", &f],
        &[
            &format!("config file {f}, line 7"),
            "unknown key `mount[0].application_group`; did you mean `application-group`?",
        ],
    );
    // A script that does not compile: its line.
    let bad = dir.join("bad.wsgi");
    fs::write(
        &bad,
        "import os\n\ndef application(environ, start_response)\n    return []\n",
    )
    .unwrap();
    let f = cfg(
        "bad.toml",
        &[sock.clone(), mount("/bad", &bad, "")].concat(),
    );
    check_fails_with(
        &["--config", &f],
        &[
            &format!("mount /bad: script {} does not compile", bad.display()),
            "(line 3)",
        ],
    );
    // A script without the callable (read from its syntax tree: nothing is run).
    let nocall = dir.join("nocall.wsgi");
    fs::write(
        &nocall,
        "import sys\nsys.exit('check must not run scripts')\n\ndef app(environ, start_response):\n    return []\n",
    )
    .unwrap();
    let f = cfg(
        "nocall.toml",
        &[sock.clone(), mount("/n", &nocall, "")].concat(),
    );
    check_fails_with(
        &["--config", &f],
        &[&format!(
            "mount /n: script {} defines no 'application' at module level",
            nocall.display()
        )],
    );
    // ...found with the mount's callable.
    let f = cfg(
        "callable.toml",
        &[sock.clone(), mount("/n", &nocall, "callable = \"app\"")].concat(),
    );
    let (code, out, err) = run_bounded(&["check", "--config", &f]);
    assert_eq!(code, 0, "{out}\n{err}");
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let f = cfg(
        "port.toml",
        &format!("fastcgi = ['{addr}']\n{}", mount("/", &good, "")),
    );
    check_fails_with(
        &["--config", &f],
        &[&format!("cannot listen on {addr}"), "in use"],
    );
    check_fails_with(
        &["--fastcgi", &addr, path_str(&good)],
        &[&format!("cannot listen on {addr}")],
    );

    // Several problems: one line each.
    let f = cfg(
        "all.toml",
        &[
            format!("fastcgi = ['{addr}']\n"),
            mount("/bad", &bad, ""),
            mount("/n", &nocall, ""),
            mount("/", &good, ""),
        ]
        .concat(),
    );
    let (code, _, err) = run_bounded(&["check", "--config", &f]);
    assert_eq!(code, 1, "{err}");
    let found = problems(&err);
    assert_eq!(found.len(), 3, "{err}");
    assert!(
        found.iter().any(|p| p.contains("does not compile")),
        "{err}"
    );
    assert!(
        found.iter().any(|p| p.contains("defines no 'application'")),
        "{err}"
    );
    assert!(
        found.iter().any(|p| p.contains("cannot listen on")),
        "{err}"
    );
    drop(taken);

    // Problems of every stage in one run: an unknown key (with a suggestion) does not hide a
    // missing script, which does not hide another mount's missing callable.
    let f = cfg(
        "stages.toml",
        &[
            sock.clone(),
            "thraeds = 4\n".to_string(),
            mount("/gone", dir.join("gone.wsgi"), ""),
            mount("/n", &nocall, ""),
            mount("/", &good, ""),
        ]
        .concat(),
    );
    let (code, _, err) = run_bounded(&["check", "--config", &f]);
    assert_eq!(code, 1, "{err}");
    let found = problems(&err);
    assert_eq!(found.len(), 3, "{err}");
    for needle in [
        "line 2: unknown key `thraeds`; did you mean `threads`?".to_string(),
        format!("mount /gone: script {}", dir.join("gone.wsgi").display()),
        "mount /n: script".to_string(),
    ] {
        assert!(
            found.iter().any(|p| p.contains(&needle)),
            "{needle:?} in\n{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. The sub-interpreter guard

#[test]
fn an_extension_refusing_sub_interpreters_gets_a_hint_naming_its_group() {
    let fail = groups_app("subinterp_fail.wsgi");
    let pyo3 = groups_app("pyo3_fail.wsgi");
    let dir = tmpdir("groups-guard");
    let global = "application-group = \"%{GLOBAL}\"";
    let cfg = write_config(
        &dir,
        &[
            mount("/own", &fail, ""),
            mount("/glob", &fail, global),
            mount("/legacy", &pyo3, "application-group = \"legacy\""),
            mount("/pyo3glob", &pyo3, global),
        ]
        .concat(),
    );
    let gw = Gateway::start(&["--config", path_str(&cfg)]);
    let hint = "this application uses an extension module that cannot be loaded in a \
                sub-interpreter; run it in the main interpreter: application-group = \"%{GLOBAL}\"";
    let html_hint = hint.replace('"', "&quot;");

    // In the main interpreter there is nothing to hint at.
    for p in ["/glob/", "/pyo3glob/"] {
        let r = request(&gw, p);
        assert_eq!(r.status, 500, "{p}");
        assert!(!r.text().contains("sub-interpreter"), "{p}: {}", r.text());
    }
    let log = gw.log_text();
    assert!(
        log.contains("does not support loading in subinterpreters"),
        "{log}"
    );
    assert!(
        log.contains("PyO3 modules may only be initialized once"),
        "{log}"
    );
    assert!(!log.contains(hint), "a hint for %{{GLOBAL}}:\n{log}");

    for (p, label) in [
        ("/own/", "mount /own"),
        ("/legacy/", "application group \"legacy\""),
    ] {
        for _ in 0..2 {
            let r = request(&gw, p);
            assert_eq!(r.status, 500, "{p}");
            let page = r.text();
            assert!(
                page.contains(&format!("{}: {html_hint}", label.replace('"', "&quot;"))),
                "{p}: {page}"
            );
            assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        }
        let log = gw.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("{label}: {hint}")))
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "{p}: the hint once per failing request:\n{log}"
        );
        assert!(lines[0].contains(&format!("GET {p}")), "{p}: {}", lines[0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping

/// A daemon thread left running in a sub-interpreter (a heartbeat, an error reporter's
/// transport) must not turn SIGTERM into an abort: CPython's Py_EndInterpreter refuses to end
/// an interpreter with other thread states ("Fatal Python error: Py_EndInterpreter: not the
/// last thread", SIGABRT); Py_FinalizeEx of the main interpreter copes.
#[test]
fn a_daemon_thread_in_a_sub_interpreter_does_not_break_the_graceful_stop() {
    let script = groups_app("daemon_thread.wsgi");
    for group in ["%{GLOBAL}", "", "team"] {
        let mut gw = Gateway::start(&["--application-group", group, &script]);
        assert_eq!(request(&gw, "/").text(), "beating\n");
        let status = gw.stop("TERM");
        let log = gw.log_text();
        assert!(status.success(), "group {group:?}: {status}\n{log}");
        assert!(
            !log.contains("Fatal Python error"),
            "group {group:?}:\n{log}"
        );
        assert!(log.contains("stopped"), "group {group:?}:\n{log}");
    }
}

/// A sub-interpreter replaced by a reload is ended once nothing uses it (memory is not kept
/// for every reload).
#[test]
fn replaced_sub_interpreters_are_ended() {
    let dir = tmpdir("reload-end");
    let script = dir.join("app.wsgi");
    std::fs::copy(app("pep3333.wsgi"), &script).unwrap();
    let mount = format!("/r={}", script.display());
    let gw = Gateway::start(&["--threads", "3", "--mount", &mount]);
    assert_eq!(fcgi(&gw.addr, "GET", "/r/write", b"").unwrap().status, 200);
    for i in 0..5u64 {
        let stamp = format!("@{}", 1_700_000_000 + i);
        let touched = std::process::Command::new("touch")
            .args(["-d", &stamp])
            .arg(&script)
            .status()
            .unwrap();
        assert!(touched.success());
        // Each change is noticed (a moment after it is made) and reloads the script.
        let reloads = |log: &str| log.matches("changed: reloading it").count() as u64;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert_eq!(fcgi(&gw.addr, "GET", "/r/write", b"").unwrap().status, 200);
            if reloads(&gw.log_text()) > i {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {i} never noticed:\n{}",
                gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_for("the replaced interpreters to end", || {
        gw.log_text()
            .matches("ended the replaced sub-interpreter of mount /r")
            .count()
            >= 4
    });
}
