//! The gateway configuration file, each setting under a comment naming the Apache line it came
//! from.

use std::fmt::Write;

use super::translate::{Entry, Origin, Plan, Value};
use super::Shown;

/// A TOML value (strings quoted and escaped by the toml crate).
pub fn value(v: &Value) -> String {
    match v {
        Value::Str(s) => toml::Value::String(s.clone()).to_string(),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => {
            let quoted: Vec<String> = items
                .iter()
                .map(|s| toml::Value::String(s.clone()).to_string())
                .collect();
            format!("[{}]", quoted.join(", "))
        }
    }
}

fn comment(out: &mut String, indent: &str, shown: &Shown, origin: &Origin) {
    let _ = writeln!(
        out,
        "{indent}# {}: {}",
        shown.place(&origin.src),
        one_line(&origin.text)
    );
}

/// Comment text on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn entry(out: &mut String, indent: &str, shown: &Shown, e: &Entry) {
    comment(out, indent, shown, &e.origin);
    let _ = writeln!(out, "{indent}{} = {}", e.key, value(&e.value));
}

pub fn write(plan: &Plan, shown: &Shown) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# wsgi-gateway configuration, written by `wsgi-gateway import-apache` from\n\
         # {}.\n\
         # Each setting names the Apache line it came from. Check it with\n\
         #     wsgi-gateway check --config THIS-FILE\n\
         # and run it with `wsgi-gateway --config THIS-FILE`.",
        shown.main.display()
    );
    for e in &plan.top {
        out.push('\n');
        entry(&mut out, "", shown, e);
    }
    for g in &plan.groups {
        out.push('\n');
        match &g.origin {
            Some(o) => comment(&mut out, "", shown, o),
            None => out.push_str(
                "# Embedded mode: these mounts ran inside Apache's own processes (no \
                 WSGIDaemonProcess).\n",
            ),
        }
        out.push_str("[[process-group]]\n");
        let _ = writeln!(out, "name = {}", value(&Value::Str(g.name.clone())));
        for e in &g.entries {
            entry(&mut out, "", shown, e);
        }
        for l in &g.listeners {
            let _ = writeln!(out, "# {}", one_line(&l.why));
            let _ = writeln!(
                out,
                "{} = {}",
                l.proto.key(),
                value(&Value::List(vec![l.addr.clone()]))
            );
        }
        for m in &g.mounts {
            out.push('\n');
            comment(&mut out, "  ", shown, &m.origin);
            out.push_str("  [[process-group.mount]]\n");
            let _ = writeln!(out, "  prefix = {}", value(&Value::Str(m.prefix.clone())));
            match &m.target {
                super::translate::MountTarget::Script(p) => {
                    let _ = writeln!(
                        out,
                        "  script = {}",
                        value(&Value::Str(p.to_string_lossy().into_owned()))
                    );
                }
                super::translate::MountTarget::Directory { dir, extension } => {
                    let _ = writeln!(
                        out,
                        "  directory = {}",
                        value(&Value::Str(dir.to_string_lossy().into_owned()))
                    );
                    let _ = writeln!(
                        out,
                        "  extension = {}",
                        value(&Value::Str(extension.clone()))
                    );
                }
            }
            for e in &m.entries {
                entry(&mut out, "  ", shown, e);
            }
        }
    }
    out
}
