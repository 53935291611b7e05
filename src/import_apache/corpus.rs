//! The corpus: each directory of `testdata/` holds a mod_wsgi setup (`apache.conf` and what it
//! includes), the gateway configuration it must give (`expected.toml`), the lines it must
//! report (`expected.notes`), and for some the nginx and Apache outputs
//! (`expected-nginx.conf`, `expected-apache.conf`). An `args` file holds import-apache flags
//! (`--fastcgi GROUP=ADDR`, `--scgi ADDR`, `--listen ADDR`, `--runtime-dir DIR`), one a line.
//!
//! `IMPORT_APACHE_BLESS=1 cargo test ...` rewrites the expected files from the current output
//! (review the diff before committing it).

use std::path::{Path, PathBuf};

use super::translate::{ListenArg, Options, Proto};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/import_apache/testdata")
}

fn options(dir: &Path) -> Options {
    let mut opts = Options {
        listeners: Vec::new(),
        runtime_dir: PathBuf::from(super::RUNTIME_DIR),
    };
    let args = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
    for line in args.lines().filter(|l| !l.trim().is_empty()) {
        let (flag, value) = line.trim().split_once(' ').expect("FLAG VALUE");
        match flag {
            "--fastcgi" => opts.listeners.push(ListenArg::parse(Proto::FastCgi, value)),
            "--scgi" => opts.listeners.push(ListenArg::parse(Proto::Scgi, value)),
            "--listen" => opts.listeners.push(ListenArg::parse(Proto::Auto, value)),
            "--runtime-dir" => opts.runtime_dir = PathBuf::from(value),
            other => panic!("unknown flag {other} in {}", dir.display()),
        }
    }
    opts
}

/// Compares, or rewrites when blessing; returns a description of a difference.
fn check(path: &Path, got: &str) -> Option<String> {
    if std::env::var_os("IMPORT_APACHE_BLESS").is_some() {
        std::fs::write(path, got).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    if want == got {
        return None;
    }
    let first = want
        .lines()
        .zip(got.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(want.lines().count().min(got.lines().count()));
    Some(format!(
        "{} differs from line {}:\n--- expected\n{}\n--- got\n{}\n",
        path.display(),
        first + 1,
        want.lines()
            .skip(first)
            .take(8)
            .collect::<Vec<_>>()
            .join("\n"),
        got.lines()
            .skip(first)
            .take(8)
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

#[test]
fn corpus() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("apache.conf").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 15, "the corpus has {} scenarios", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let out = super::import(
            &dir.join("apache.conf"),
            None,
            &options(dir),
            Box::new(|_| None),
        )
        .unwrap();
        // Outputs name the corpus directory; shown relative, they do not depend on the checkout.
        let prefix = format!("{}/", dir.display());
        let clean = |s: &str| s.replace(&prefix, "");
        let toml = if out.plan.usable() {
            clean(&out.toml)
        } else {
            "# nothing usable: the command writes nothing and exits 1\n".to_string()
        };
        let notes: String = out.notes.iter().map(|n| clean(n) + "\n").collect();
        failures.extend(check(&dir.join("expected.toml"), &toml));
        failures.extend(check(&dir.join("expected.notes"), &notes));
        for (file, text) in [
            ("expected-nginx.conf", &out.nginx),
            ("expected-apache.conf", &out.apache),
        ] {
            let path = dir.join(file);
            if path.exists() {
                failures.extend(check(&path, &clean(text)));
            }
        }
        if out.plan.usable() {
            // What is written is valid TOML with the gateway's keys only.
            let parsed: toml::Value = toml::from_str(&out.toml)
                .unwrap_or_else(|e| panic!("{}: not TOML: {e}\n{}", dir.display(), out.toml));
            check_keys(dir, &parsed);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every key written is one the gateway's config file knows.
fn check_keys(dir: &Path, v: &toml::Value) {
    use crate::config::settings::{field_names, MountSpec, Settings};
    let top = field_names::<Settings>();
    let mount = field_names::<MountSpec>();
    let table = v.as_table().unwrap();
    for (k, group) in table {
        assert!(top.contains(&k.as_str()), "{}: key {k}", dir.display());
        if k == "process-group" {
            for g in group.as_array().unwrap() {
                for (gk, gv) in g.as_table().unwrap() {
                    assert!(top.contains(&gk.as_str()), "{}: key {gk}", dir.display());
                    if gk == "mount" {
                        for m in gv.as_array().unwrap() {
                            for mk in m.as_table().unwrap().keys() {
                                assert!(mount.contains(&mk.as_str()), "{}: {mk}", dir.display());
                            }
                        }
                    }
                }
            }
        }
    }
}
