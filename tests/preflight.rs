//! Bad setups are refused before serving, with one clear message and a non-zero exit; a good
//! venv is used exactly.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn make_venv(python: impl AsRef<std::ffi::OsStr>, dir: &Path) -> bool {
    Command::new(python)
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the user nobody can read `path`; None when setpriv cannot run as nobody.
fn nobody_reads(path: &str) -> Option<bool> {
    let status = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(["test", "-r", path])
        .status()
        .ok()?;
    match status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        _ => None,
    }
}

fn refused(args: &[&str], needle: &str) {
    let (code, err) = run_gateway(args);
    assert_ne!(code, 0, "accepted: {args:?}\n{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(!err.contains("Fatal Python error"), "{err}");
}

#[test]
fn python_home_problems_are_named() {
    let dir = tmpdir("preflight");
    let missing = dir.join("missing");
    refused(
        &["--python-home", path_str(&missing)],
        &format!("python-home {} does not exist", missing.display()),
    );
    let file = dir.join("notes.txt");
    std::fs::write(&file, "").unwrap();
    refused(&["--python-home", path_str(&file)], "is not a directory");

    let venv = dir.join("venv");
    assert!(make_venv(BUILD_PYTHON, &venv), "{BUILD_PYTHON} -m venv");
    refused(
        &["--python-home", path_str(&venv.join("bin/python"))],
        &format!(
            "is the interpreter, not the virtualenv root; use {}",
            venv.display()
        ),
    );
    refused(
        &["--python-home", path_str(&venv.join("bin"))],
        &format!(
            "is the virtualenv's bin directory, not its root; use {}",
            venv.display()
        ),
    );
    refused(
        &["--python-home", path_str(&venv.join("lib"))],
        &format!(
            "is inside the virtualenv {0}, not its root; use {0}",
            venv.display()
        ),
    );
    let site = venv.join(site_rel());
    std::fs::rename(&site, dir.join("moved")).unwrap();
    refused(&["--python-home", path_str(&venv)], "site-packages");
    std::fs::rename(dir.join("moved"), &site).unwrap();

    // uv writes only version_info.
    let other = other_minor();
    let uv = dir.join("uv-venv");
    std::fs::create_dir_all(uv.join(format!("lib/python{other}/site-packages"))).unwrap();
    std::fs::write(
        uv.join("pyvenv.cfg"),
        format!("home = /x/bin\nversion_info = {other}.4\n"),
    )
    .unwrap();
    refused(
        &["--python-home", path_str(&uv)],
        &format!("was created by Python {other} but this gateway embeds Python {PY_VERSION}"),
    );
    let neither = dir.join("empty");
    std::fs::create_dir_all(&neither).unwrap();
    refused(
        &["--python-home", path_str(&neither)],
        "is neither a virtualenv",
    );
}

#[test]
fn venv_of_another_python_version_is_refused() {
    let Some((python, other)) = other_python() else {
        return;
    };
    let dir = tmpdir("preflight-other");
    let venv = dir.join("venv");
    assert!(make_venv(&python, &venv), "{} -m venv", python.display());
    refused(
        &["--python-home", path_str(&venv)],
        &format!(
            "was created by Python {other} but this gateway embeds Python {PY_VERSION}; \
             recreate it with python{PY_VERSION} -m venv {}",
            venv.display()
        ),
    );
}

#[test]
fn unreadable_venv_is_named_when_not_root() {
    // Root reads everything, so the check runs as an unprivileged user when one can be used.
    let dir = tmpdir("unreadable");
    let venv = dir.join("venv");
    assert!(make_venv(BUILD_PYTHON, &venv), "{BUILD_PYTHON} -m venv");
    let built = env!("WSGI_GATEWAY_PY_LIBRARY");
    if nobody_reads(built) != Some(true) {
        // The loader would not even take the build's libpython as nobody (see
        // an_unreadable_build_libpython_is_named_when_not_root).
        return eprintln!("SKIPPED: nobody cannot run this build (cannot read {built})");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&venv, std::fs::Permissions::from_mode(0o700)).unwrap();
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin())
        .args(["--python-home", path_str(&venv)])
        .output();
    let Ok(out) = as_nobody else {
        eprintln!("SKIPPED: setpriv is not available");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && !err.contains("python-home") {
        eprintln!("SKIPPED: the test binary is not reachable by nobody: {err}");
        return;
    }
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains(&format!("python-home {}", venv.display())),
        "{err}"
    );
    assert!(err.contains("is not readable by this user"), "{err}");
}

#[test]
fn missing_script_and_unusable_socket_are_refused() {
    refused(&["/nonexistent/app.wsgi"], "script /nonexistent/app.wsgi");
    refused(
        &["--mount", "/x=/nonexistent/x.wsgi"],
        "/nonexistent/x.wsgi",
    );
    refused(&["--mount", "x=/etc/hostname"], "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    refused(&["--fastcgi", &addr], &format!("cannot listen on {addr}"));
    let dir = tmpdir("sock");
    let file = dir.join("not-a-socket");
    std::fs::write(&file, "").unwrap();
    refused(
        &["--fastcgi", &format!("unix:{}", file.display())],
        "the path exists and is not a socket",
    );
    refused(&["--fastcgi", "nowhere"], "neither HOST:PORT nor unix:PATH");
    refused(
        &["--socket-mode", "999"],
        "is not an octal mode such as 660",
    );
}

#[test]
fn a_good_venv_is_used_and_the_environment_is_ignored() {
    let dir = tmpdir("goodvenv");
    let venv = dir.join("venv");
    assert!(make_venv(BUILD_PYTHON, &venv), "{BUILD_PYTHON} -m venv");
    let site = venv.join(site_rel());
    std::fs::write(site.join("only_in_venv.py"), "MARKER = 'from the venv'\n").unwrap();
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("extra_mod.py"), "MARKER = 'from python-path'\n").unwrap();
    std::fs::write(
        extra.join("hook.pth"),
        "import os; os.environ['PTH_RAN'] = 'yes'\n",
    )
    .unwrap();
    let script = dir.join("app.wsgi");
    std::fs::write(
        &script,
        "import sys, os, only_in_venv, extra_mod\n\
         def application(environ, start_response):\n\
         \x20   body = '|'.join([sys.prefix, only_in_venv.MARKER, extra_mod.MARKER, os.environ.get('PTH_RAN', 'no'), sys.path[0]]).encode()\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [body]\n",
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A PYTHONHOME / PYTHONPATH in the environment must not matter.
    std::env::set_var("PYTHONHOME", "/nonexistent");
    std::env::set_var("PYTHONPATH", "/nonexistent");
    let gw = Gateway::start(&[
        "--fastcgi",
        &addr,
        "--python-home",
        path_str(&venv),
        "--python-path",
        path_str(&extra),
        path_str(&script),
    ]);
    let r = fcgi(&gw.addr, "GET", "/", b"").unwrap();
    assert_eq!(r.status, 200, "{}", gw.log_text());
    let parts: Vec<String> = r.text().split('|').map(str::to_owned).collect();
    let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap().display().to_string();
    assert_eq!(parts[0], venv.display().to_string());
    assert_eq!(parts[1], "from the venv");
    assert_eq!(parts[2], "from python-path");
    assert_eq!(parts[3], "yes", ".pth files of python-path run");
    assert_eq!(parts[4], canon(&extra), "python-path is first on sys.path");
}

#[test]
fn version_names_the_embedded_python() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let full = PY_FULL_VERSION;
    assert!(
        text.starts_with(&format!(
            "wsgi-gateway {}\nPython {full} ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nprefix {}\n", PY_PREFIX)),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nlibpython {}", env!("WSGI_GATEWAY_PY_LIBRARY"))),
        "{text}"
    );
}

/// A libpython other than the build's (here a copy of it, put first by LD_LIBRARY_PATH) is
/// refused before Python starts, by serve and by check.
#[test]
fn another_libpython_than_the_builds_is_refused() {
    let built = Path::new(env!("WSGI_GATEWAY_PY_LIBRARY"));
    let dir = tmpdir("libpython");
    let copy = dir.join(built.file_name().unwrap());
    std::fs::copy(built, &copy).unwrap();
    for args in [&["--listen", "127.0.0.1:0"][..], &["check"][..]] {
        let out = Command::new(bin())
            .args(args)
            .env("LD_LIBRARY_PATH", &dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains(&format!(
                "but the dynamic loader took {} (Python {})",
                copy.display(),
                PY_FULL_VERSION
            )),
            "{err}"
        );
        assert!(err.contains("LD_LIBRARY_PATH"), "{err}");
        assert_eq!(err.lines().count(), 1, "one message: {err}");
    }
}

/// Started as a user who cannot read the build's libpython (a Python under a private home), the
/// loader takes the system's, when there is one: refused with the reason and the fix.
#[test]
fn an_unreadable_build_libpython_is_named_when_not_root() {
    let built = env!("WSGI_GATEWAY_PY_LIBRARY");
    match nobody_reads(built) {
        None => return eprintln!("SKIPPED: cannot run as nobody"),
        Some(true) => return eprintln!("SKIPPED: nobody can read {built}: nothing to refuse"),
        Some(false) => {}
    }
    // The binary must be reachable by nobody: a copy outside the checkout.
    let dir = std::env::temp_dir().join(format!("gw-libpython-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("wsgi-gateway");
    std::fs::copy(bin(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("error while loading shared libraries") {
        return eprintln!("SKIPPED: no other libpython for the loader to take: {err}");
    }
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("{built} is not readable by this user (nobody")),
        "{err}"
    );
    assert!(err.contains("set PYO3_PYTHON"), "{err}");
}

/// With `--user`, the worker checks as that user that the embedded Python's standard library
/// (the base installation of its venv) is readable, before Python starts.
#[test]
fn workers_check_the_standard_library_as_their_user() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let stdlib = format!("{}/lib/python{}/os.py", PY_PREFIX, PY_VERSION);
    if !is_root || nobody_reads(&stdlib) != Some(false) {
        return eprintln!("SKIPPED: needs root, and a build Python that nobody cannot read");
    }
    let dir = tmpdir("stdlib-as-user");
    let venv = dir.join("venv");
    assert!(make_venv(BUILD_PYTHON, &venv));
    let gw = Gateway::start_unready(&[
        "--processes",
        "1",
        "--user",
        "nobody",
        "--python-home",
        path_str(&venv),
    ]);
    let needle = format!(
        "as user nobody: the embedded Python's standard library {}/lib/python{} is not readable",
        PY_PREFIX, PY_VERSION
    );
    wait_for("the refusal as nobody", || gw.log_text().contains(&needle));
    assert!(!gw.log_text().contains("Python path configuration"));
}
