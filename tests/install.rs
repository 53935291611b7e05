//! Installing and running the gateway the way the README says: `pip install` into an app's
//! venv (which then is the gateway's python-home), and nginx-examples/nginx.conf run as it is
//! with `nginx -c`. They use the examples' fixed addresses (the `frontends` test group).
//!
//! The pip test builds the gateway in release mode once per Python, so it is `#[ignore]`d:
//! tools/test.sh runs it once (`--run-ignored only`), for each Python in
//! `WSGI_GATEWAY_PIP_PYTHONS` (space-separated; default: the build's own Python).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::frontends::*;
use support::*;

fn have_nginx() -> bool {
    require(find_bin("nginx").is_some(), "nginx")
}

#[test]
fn nginx_complete_example_config_runs_as_it_is() {
    if !have_nginx() {
        return;
    }
    let serial = serial_guard();
    assert_port_free(GATEWAY_TCP);
    let gw = Gateway::start(&["--fastcgi", GATEWAY_TCP]);
    let front = Frontend::nginx_complete("nginx-examples/nginx.conf");
    let rig = Rig::from_parts(gw, front, serial);
    let r = rig.ok("GET", "/hello/there?x=1", &[], b"");
    let text = r.text();
    assert!(text.contains("wsgi-gateway diagnostics"), "{text}");
    assert!(
        text.contains("SCRIPT_NAME='' PATH_INFO='/hello/there'"),
        "{text}"
    );
    // /etc/nginx/fastcgi_params was included: nginx sent its params.
    assert!(text.contains("REQUEST_URI"), "{text}");
    rig.assert_gateway_quiet();
}

/// `python -c CODE` printed this line.
fn python_says(python: &Path, code: &str) -> String {
    let out = Command::new(python).args(["-c", code]).output().unwrap();
    assert!(out.status.success(), "{}: {code}", python.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where cargo builds for `pip install` with this Python: kept under target/ so a second run
/// reuses the build.
fn pip_target_dir(python: &Path) -> PathBuf {
    let real = python_says(
        python,
        "import os, sys; print(os.path.realpath(sys.executable))",
    );
    let hash = real.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    root().join(format!("target/pip/{:08x}", hash as u32))
}

#[test]
#[ignore = "slow: a release build per Python; tools/test.sh runs it once"]
fn pip_install_into_a_venv_then_flask_behind_nginx() {
    if !have_nginx() {
        return;
    }
    let pythons: Vec<PathBuf> = match std::env::var("WSGI_GATEWAY_PIP_PYTHONS") {
        Ok(list) if !list.trim().is_empty() => list.split_whitespace().map(PathBuf::from).collect(),
        _ => vec![PathBuf::from(BUILD_PYTHON)],
    };
    for python in &pythons {
        pip_install_and_serve(python);
    }
}

fn pip_install_and_serve(python: &Path) {
    let version = python_says(python, "import platform; print(platform.python_version())");
    let dir = tmpdir("pip-install");
    let venv = dir.join("venv");
    let made = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "{} -m venv {}", python.display(), venv.display());
    // What the README says: pip install the gateway (here: this checkout) beside the app's
    // packages.
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(root())
        .arg("Flask==3.1.3")
        .env("CARGO_TARGET_DIR", pip_target_dir(python))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Could not find a version") || err.contains("connection") {
            require(
                false,
                &format!("PyPI reachable for maturin and Flask: {err}"),
            );
            return;
        }
        panic!("pip install with Python {version} failed:\n{err}");
    }
    let exe = venv.join("bin/wsgi-gateway");
    assert!(
        exe.is_file(),
        "pip put no wsgi-gateway into {}/bin",
        venv.display()
    );
    let v = Command::new(&exe).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(v.contains(&format!("\nPython {version} ")), "{v}");

    let script = dir.join("app.wsgi");
    std::fs::copy(app("flask_app.wsgi"), &script).unwrap();
    let serial = serial_guard();
    assert_port_free(GATEWAY_TCP);
    // No --python-home: a gateway in <venv>/bin/ uses that venv, where Flask is.
    let gw = Gateway::start_exe(
        &exe,
        &["--fastcgi", GATEWAY_TCP, path_str(&script)],
        GATEWAY_TCP,
    );
    let front = Frontend::nginx_complete("nginx-examples/nginx.conf");
    let rig = Rig::from_parts(gw, front, serial);
    assert_eq!(
        rig.ok("GET", "/", &[], b"").text(),
        "flask index script_root=\n"
    );
    assert_eq!(
        rig.ok("GET", "/hello/bob", &[], b"").text(),
        "hello bob url=/hello/x\n"
    );
    let log = rig.gw.log_text();
    assert!(
        log.contains(&format!(
            "Python {version} (python-home {})",
            venv.display()
        )),
        "{log}"
    );
    rig.assert_gateway_quiet();
}
