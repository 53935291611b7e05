//! The resolved configuration: everything checked, paths absolute, ready to serve.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::ServeArgs;
use crate::router::{Mount, Target};
use crate::server::{Addr, ListenerSpec, Proto};
use crate::venv::{self, Home};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

#[derive(Debug)]
pub struct Config {
    pub listeners: Vec<ListenerSpec>,
    pub mounts: Vec<Mount>,
    pub home: Home,
    pub python_path: Vec<PathBuf>,
    pub threads: usize,
    pub graceful_timeout: Duration,
    pub limits: protocol::Limits,
}

impl Config {
    /// Checks every setting; returns all problems found, one message each.
    pub fn from_args(args: &ServeArgs) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let mode = match u32::from_str_radix(&args.socket_mode, 8) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                problems.push(format!(
                    "socket-mode {:?} is not an octal file mode such as 660",
                    args.socket_mode
                ));
                0o660
            }
        };
        let mut listeners = Vec::new();
        let default = [DEFAULT_LISTEN.to_string()];
        let none_given = args.fastcgi.is_empty() && args.scgi.is_empty() && args.listen.is_empty();
        let auto: &[String] = if none_given { &default } else { &args.listen };
        for (addrs, proto) in [
            (&args.fastcgi[..], Proto::FastCgi),
            (&args.scgi[..], Proto::Scgi),
            (auto, Proto::Auto),
        ] {
            for a in addrs {
                match Addr::parse(a) {
                    Ok(addr) => listeners.push(ListenerSpec {
                        addr,
                        proto,
                        mode,
                        backlog: args.listen_backlog,
                    }),
                    Err(e) => problems.push(e),
                }
            }
        }

        let mut mounts = Vec::new();
        let specs = args
            .script
            .iter()
            .map(|s| format!("/={}", s.display()))
            .chain(args.mount.iter().cloned());
        for spec in specs {
            let (prefix, script) = match spec.split_once('=') {
                Some((p, s)) if p.starts_with('/') => (p.to_string(), s.to_string()),
                _ => ("/".to_string(), spec.clone()),
            };
            let prefix = match Mount::normalise_prefix(&prefix) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if mounts.iter().any(|m: &Mount| m.prefix == prefix) {
                problems.push(format!("two mounts for the prefix {prefix:?}"));
                continue;
            }
            let path = PathBuf::from(&script);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    problems.push(format!("script {script} is not a file"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("script {script}: {e}"));
                    continue;
                }
            }
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            mounts.push(Mount {
                prefix,
                target: Target::Script(path),
                callable: args.callable.clone(),
            });
        }
        if mounts.is_empty() {
            mounts.push(Mount {
                prefix: String::new(),
                target: Target::Diagnostics,
                callable: "application".into(),
            });
        }

        let home = match &args.python_home {
            Some(dir) => venv::check("python-home", dir).unwrap_or_else(|e| {
                problems.push(e);
                Home::build_default()
            }),
            None => Home::build_default(),
        };
        let python_path = args
            .python_path
            .iter()
            .flat_map(|p| p.split(':'))
            .filter(|p| !p.is_empty())
            .map(|p| {
                let path = PathBuf::from(p);
                if !path.is_dir() {
                    problems.push(format!("python-path entry {p} is not a directory"));
                }
                std::fs::canonicalize(&path).unwrap_or(path)
            })
            .collect();
        if args.threads == 0 {
            problems.push("threads must be at least 1".into());
        }
        let limits = protocol::Limits {
            max_params_bytes: args.max_params_bytes,
            ..protocol::Limits::default()
        };
        if problems.is_empty() {
            Ok(Config {
                listeners,
                mounts,
                home,
                python_path,
                threads: args.threads,
                graceful_timeout: Duration::from_secs(args.graceful_timeout),
                limits,
            })
        } else {
            Err(problems)
        }
    }
}
