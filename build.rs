//! Builds against the user's Python: `PYO3_PYTHON` when it is set, else the first `python3` on
//! `PATH` (or the active virtualenv's or conda environment's `python`, which pyo3 prefers).
//! Links its libpython with an rpath (the binary runs without `LD_LIBRARY_PATH`), refuses a
//! Python the gateway cannot embed with one message naming the fix, and records what the
//! preflight checks, `--version` and the tests need to know about it.
//!
//! The interpreter is chosen by pyo3-ffi's build script, which runs before this one; this one
//! reads that choice and checks it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// What the gateway needs to know about the build interpreter, one value a line.
const PROBE: &str = r#"
import os, platform, sys, sysconfig
v = sysconfig.get_config_var
print(sys.executable)
print(platform.python_version())
print(sys.base_prefix)
print(" ".join(sys.version.split()))
print(1 if v("Py_ENABLE_SHARED") else 0)
print(v("LIBDIR") or "")
print(v("INSTSONAME") or v("LDLIBRARY") or "")
print(v("LDLIBRARY") or "")
print(platform.python_implementation())
"#;

/// The oldest CPython the gateway embeds.
const MIN_MINOR: u8 = 9;

struct Probe {
    executable: String,
    full_version: String,
    base_prefix: String,
    sys_version: String,
    shared: bool,
    lib_dir: String,
    /// The file the loader takes at run time (`libpython3.X.so.1.0`).
    soname: String,
    /// The file the linker takes (`libpython3.X.so`).
    link_lib: String,
    implementation: String,
}

/// Runs `script` with `python -I -c` and `args`; its standard output, or what went wrong.
fn run_python(python: &str, script: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = Command::new(python)
        .args(["-I", "-c", script])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn probe(python: &str) -> Result<Probe, String> {
    let text = run_python(python, PROBE, &[])?;
    let mut l = text.lines().map(str::to_owned);
    let mut next = || l.next().unwrap_or_default();
    Ok(Probe {
        executable: next(),
        full_version: next(),
        base_prefix: next(),
        sys_version: next(),
        shared: next() == "1",
        lib_dir: next(),
        soname: next(),
        link_lib: next(),
        implementation: next(),
    })
}

/// Stops the build with one message (no backtrace, no build-script dump).
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    exit(0)
}

const FIX: &str = "set PYO3_PYTHON to a CPython 3.9 or newer that has a shared libpython \
     (built with --enable-shared), e.g. Debian's /usr/bin/python3 with libpython3.X-dev \
     installed, or a pyenv Python installed with PYTHON_CONFIGURE_OPTS=--enable-shared, \
     and build again";

/// The first `name` on PATH that is an executable file.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["PYO3_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    pyo3_build_config::add_libpython_rpath_link_args();
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::print_expected_cfgs();
    let config = pyo3_build_config::get();
    let Some(python) = config.executable().map(str::to_owned) else {
        fail(&format!(
            "pyo3 found no Python interpreter to build against; {FIX}"
        ));
    };
    let p = probe(&python).unwrap_or_else(|e| fail(&format!("{e}; {FIX}")));

    let mut shown = p.executable.clone();
    let chosen_by = if env::var_os("PYO3_PYTHON").is_some() {
        "PYO3_PYTHON"
    } else if env::var_os("VIRTUAL_ENV").is_some() {
        "VIRTUAL_ENV"
    } else if env::var_os("CONDA_PREFIX").is_some() {
        "CONDA_PREFIX"
    } else {
        // pyo3 tries `python` before `python3`: make sure that is the same interpreter.
        let python3 = on_path("python3").unwrap_or_else(|| {
            fail(&format!(
                "no python3 on PATH (pyo3 took {python}); set PYO3_PYTHON to the Python to build \
                 against"
            ))
        });
        let python3 = python3.to_string_lossy().into_owned();
        let other = probe(&python3).unwrap_or_else(|e| fail(&format!("{e}; {FIX}")));
        let real = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
        if real(&other.executable) != real(&p.executable) {
            fail(&format!(
                "`python` on PATH ({}, Python {}) is not the first `python3` ({}, Python {}), \
                 and pyo3 would build against `python`; set PYO3_PYTHON to the one to build \
                 against, e.g. PYO3_PYTHON={python3}",
                p.executable, p.full_version, other.executable, other.full_version
            ));
        }
        shown = other.executable;
        "the first python3 on PATH"
    };

    let version = config.version();
    if p.implementation != "CPython" {
        fail(&format!(
            "{} is {} {}, but the gateway embeds CPython; {FIX}",
            p.executable, p.implementation, p.full_version
        ));
    }
    if version.major != 3 || version.minor < MIN_MINOR {
        fail(&format!(
            "{} is Python {}, older than 3.{MIN_MINOR}; {FIX}",
            p.executable, p.full_version
        ));
    }
    let fix = FIX.replace("3.X", &format!("{}.{}", version.major, version.minor));
    if !p.shared {
        fail(&format!(
            "{} (Python {}) has no shared libpython (Py_ENABLE_SHARED is 0), so it cannot be \
             embedded; {fix}",
            p.executable, p.full_version
        ));
    }
    let link_lib = Path::new(&p.lib_dir).join(&p.link_lib);
    if !link_lib.exists() {
        fail(&format!(
            "{} (Python {}) has no {} to link against (on Debian and Ubuntu it comes with \
             libpython{}.{}-dev); {fix}",
            p.executable,
            p.full_version,
            link_lib.display(),
            version.major,
            version.minor
        ));
    }
    let loaded = Path::new(&p.lib_dir).join(&p.soname);
    let loaded = std::fs::canonicalize(&loaded).unwrap_or(loaded);

    println!(
        "cargo:warning=building against {shown} (Python {}, chosen by {chosen_by})",
        p.full_version
    );
    let env = |k: &str, v: &str| println!("cargo:rustc-env={k}={v}");
    env(
        "WSGI_GATEWAY_PY_VERSION",
        &format!("{}.{}", version.major, version.minor),
    );
    env("WSGI_GATEWAY_PY_FULL_VERSION", &p.full_version);
    env("WSGI_GATEWAY_PY_PREFIX", &p.base_prefix);
    env("WSGI_GATEWAY_PY_SYS_VERSION", &p.sys_version);
    env("WSGI_GATEWAY_PY_LIBRARY", &loaded.to_string_lossy());
    env("WSGI_GATEWAY_BUILD_PYTHON", &p.executable);

    // The gateway's own Python modules, compiled now by the build interpreter (the same
    // version as the libpython the gateway checks it loaded): each interpreter loads their
    // code with marshal instead of compiling them (`wsgi::Module`, which names them by the
    // same rule, `<wsgi-gateway FILE>`).
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for file in ["gateway.py", "diagnostics.py"] {
        let src = Path::new("src/wsgi").join(file);
        println!("cargo:rerun-if-changed={}", src.display());
        let name = format!("<wsgi-gateway {file}>");
        let target = out.join(format!("{file}.marshal"));
        let args = [src.as_os_str(), name.as_ref(), target.as_os_str()];
        if let Err(e) = run_python(&p.executable, COMPILE, &args) {
            fail(&format!("compiling {}: {e}", src.display()));
        }
    }
}

/// Compiles the module at `argv[1]` (its code named `argv[2]`) into `argv[3]`, as
/// `marshal.dumps` of its code object.
const COMPILE: &str = "import marshal, sys
source = open(sys.argv[1], encoding='utf-8').read()
code = compile(source, sys.argv[2], 'exec', dont_inherit=True)
with open(sys.argv[3], 'wb') as f:
    f.write(marshal.dumps(code))
";
