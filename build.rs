//! Links the pinned libpython with an rpath (the binary runs without LD_LIBRARY_PATH) and
//! records the embedded Python's version and prefix for the preflight checks.

use std::process::Command;

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::print_expected_cfgs();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let config = pyo3_build_config::get();
    let version = config.version();
    println!(
        "cargo:rustc-env=WSGI_GATEWAY_PY_VERSION={}.{}",
        version.major, version.minor
    );
    let python = config
        .executable()
        .map(str::to_owned)
        .expect("the build interpreter is known (PYO3_PYTHON)");
    let out = Command::new(&python)
        .args([
            "-I",
            "-c",
            "import sys, platform; print(sys.base_prefix); print(platform.python_version())",
        ])
        .output()
        .expect("run the build interpreter");
    assert!(out.status.success(), "{python} failed");
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    let mut lines = text.lines();
    let prefix = lines.next().expect("prefix");
    let full = lines.next().expect("version");
    println!("cargo:rustc-env=WSGI_GATEWAY_PY_PREFIX={prefix}");
    println!("cargo:rustc-env=WSGI_GATEWAY_PY_FULL_VERSION={full}");
}
