//! Own-GIL application groups (`own-gil`, Python 3.12+): refused with a clear message on an
//! older embedded Python; on 3.12+ reported by `check` and the start-up log, and two own-GIL
//! groups run CPU-bound Flask apps in one process at the same time, without a crash.

mod support;

use std::fs;
use std::process::{Command, Stdio};

use support::*;

/// Whether the embedded Python can give a sub-interpreter its own GIL.
fn own_gil_python() -> bool {
    let mut parts = PY_VERSION.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap()) >= (3, 12)
}

/// Runs `wsgi-gateway ARGS` to completion: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let (code, out, err) = run(&args);
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
    let (code, out, err) = run(&["check", "--fastcgi", &sock, "--mount", &a, "--mount", &b]);
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
    let (code, out, err) = run(&["check", "--config", &f]);
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
    let (code, out, err) = run(&["check", "--config", &f]);
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
    let (code, out, err) = run(&["check", "--config", &f]);
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
