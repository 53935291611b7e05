//! wsgi-gateway: a FastCGI/SCGI application server that embeds CPython and runs WSGI apps.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod cli;
mod client;
mod config;
mod import_apache;
mod interpreters;
mod log;
mod python;
mod router;
mod scoreboard;
mod script_check;
mod server;
mod sockdiag;
mod supervisor;
mod sys;
mod venv;
mod worker;
mod wsgi;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command, RequestCli, StatusCli};
use config::ProcessGroup;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init();
    match cli.command {
        Some(Command::Request(args)) => request(args),
        Some(Command::Status(args)) => status(&args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::ImportApache(args)) => import_apache::run(&args),
        None => serve(&cli.serve),
    }
}

fn serve(args: &config::Settings) -> ExitCode {
    if let Err(e) = python::check_libpython() {
        error!("{e}");
        return ExitCode::from(worker::EXIT_CONFIG);
    }
    let (configs, logging) = match config::load(args).into_result() {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                error!("{p}");
            }
            return ExitCode::from(worker::EXIT_CONFIG);
        }
    };
    if let Err(e) = log::configure(&logging) {
        error!("{e}");
        return ExitCode::from(worker::EXIT_CONFIG);
    }
    let mut groups = Vec::new();
    for config in configs {
        let listeners = match bind_all(&config) {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(worker::EXIT_CONFIG);
            }
        };
        describe(&config, &listeners);
        groups.push((config, listeners));
    }
    if groups.len() == 1 && groups[0].0.processes.is_none() {
        let (config, listeners) = groups.pop().expect("one group");
        if let Some(name) = &config.lifecycle.display_name {
            sys::set_process_title(name);
        }
        let row = match &config.status {
            None => None,
            Some(_) => match scoreboard::Board::new(1, config.threads) {
                Ok(board) => Some(board.claim(0, sys::pid() as u32)),
                Err(e) => {
                    error!("the status page's scoreboard: {e}");
                    return ExitCode::from(worker::EXIT_INTERNAL);
                }
            },
        };
        return ExitCode::from(worker::run(&config, listeners, None, row));
    }
    supervisor::run(args, groups)
}

fn bind_all(config: &ProcessGroup) -> Result<Vec<server::Listener>, String> {
    config
        .listeners
        .iter()
        .map(|spec| server::Listener::bind(spec.clone()))
        .collect()
}

/// Who may connect to a Unix socket: its owner and mode, and what a web server running as
/// another user needs (the usual cause of a 502 from nginx with nothing in the gateway's log).
fn socket_access(path: &std::path::Path) -> String {
    use nix::unistd::{Gid, Group, Uid, User};
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return String::new();
    };
    let user = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = Group::from_gid(Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    let mode = meta.mode() & 0o777;
    let hint = if mode & 0o002 == 0 {
        format!(
            "; a web server running as another user must be in group {group} \
             (--socket-group) or be its owner (--socket-user)"
        )
    } else {
        String::new()
    };
    format!(", socket owner {user}:{group}, mode {mode:03o}{hint}")
}

/// Start-up lines: listeners, mounts, Python.
fn describe(config: &ProcessGroup, listeners: &[server::Listener]) {
    for l in listeners {
        let allow = match (&l.spec.addr, &l.spec.allow) {
            (server::Addr::Tcp(_), Some(list)) => format!("; clients allowed: {list}"),
            _ => String::new(),
        };
        match &l.spec.addr {
            server::Addr::Unix(path) => info!(
                "listening on {} ({}){}",
                l.spec.addr,
                l.spec.proto,
                socket_access(path)
            ),
            _ => info!("listening on {} ({}){allow}", l.spec.addr, l.spec.proto),
        }
    }
    for m in &config.mounts {
        let prefix = m.shown_prefix();
        let group = &m.group;
        let venv = m
            .venv
            .as_ref()
            .map(|v| format!(", venv {}", v.display()))
            .unwrap_or_default();
        let venv = if m.own_gil {
            format!(", its own GIL{venv}")
        } else {
            venv
        };
        match &m.target {
            router::Target::Script(p) => {
                info!(
                    "mount {prefix} -> {} (interpreter: {group}{venv})",
                    p.display()
                )
            }
            router::Target::Directory { dir, extension } => info!(
                "mount {prefix} -> {}/*{extension} (interpreter: {group}{venv})",
                dir.display()
            ),
            router::Target::Diagnostics => info!("mount {prefix} -> built-in diagnostics app"),
        }
    }
    info!(
        "process group {}: Python {} ({}), {} process(es) x {} thread(s)",
        config.name,
        python::BUILD_VERSION,
        match &config.python.home {
            venv::Home::Venv(p) => format!("python-home {}", p.display()),
            venv::Home::Prefix(p) => format!("prefix {}", p.display()),
        },
        config.processes.unwrap_or(1),
        config.threads
    );
    for w in &config.warnings {
        warn!("{w}");
    }
}

/// `wsgi-gateway check`: every problem of the configuration, one line each, without serving:
/// the settings, then the listeners and the scripts of whatever resolved.
fn check(args: &config::Settings) -> ExitCode {
    if let Err(e) = python::check_libpython() {
        eprintln!("problem: {e}");
        return ExitCode::from(1);
    }
    let loaded = config::load(args);
    for p in &loaded.problems {
        eprintln!("problem: {p}");
    }
    let mut failed = !loaded.problems.is_empty();
    let configs = loaded.groups;
    for config in &configs {
        for spec in &config.listeners {
            if let Err(e) = server::Listener::check(spec) {
                eprintln!("problem: {e}");
                failed = true;
            }
        }
        for w in &config.warnings {
            println!("warning: {w}");
        }
        let own: Vec<String> = config
            .mounts
            .iter()
            .filter(|m| m.own_gil)
            .map(|m| format!("mount {} ({})", m.shown_prefix(), m.group))
            .collect();
        if !own.is_empty() {
            println!(
                "own GIL (sub-interpreters running Python in parallel): {}",
                own.join(", ")
            );
        }
        // Each group's python-home needs an interpreter of its own: checked in a child process.
        for p in script_check::script_problems(config) {
            eprintln!("problem: {p}");
            failed = true;
        }
    }
    if failed {
        return ExitCode::from(1);
    }
    let mounts: usize = configs.iter().map(|c| c.mounts.len()).sum();
    let listeners: usize = configs.iter().map(|c| c.listeners.len()).sum();
    println!(
        "configuration OK: {} process group(s), {listeners} listener(s), {mounts} mount(s), Python {}",
        configs.len(),
        python::BUILD_VERSION
    );
    ExitCode::SUCCESS
}

fn request(args: RequestCli) -> ExitCode {
    let addr = match server::Addr::parse(&args.addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wsgi-gateway request: {e}");
            return ExitCode::from(2);
        }
    };
    let (method, path) = match args.target.as_slice() {
        [path] => ("GET".to_string(), path.clone()),
        [method, path] => (method.to_ascii_uppercase(), path.clone()),
        _ => unreachable!("clap enforces 1..=2"),
    };
    let body = match &args.data {
        None => Vec::new(),
        Some(d) => match d.strip_prefix('@') {
            Some(file) => match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("wsgi-gateway request: {file}: {e}");
                    return ExitCode::from(2);
                }
            },
            None => d.as_bytes().to_vec(),
        },
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        match h.split_once(':') {
            Some((n, v)) => headers.push((n.trim().to_string(), v.trim().to_string())),
            None => {
                eprintln!("wsgi-gateway request: header {h:?} is not 'Name: value'");
                return ExitCode::from(2);
            }
        }
    }
    let req = client::RequestArgs {
        scgi: args.scgi,
        addr,
        method,
        path,
        headers,
        body,
        include: args.include,
        timeout: Duration::from_secs(args.timeout),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match client::run(&req, &mut out) {
        Ok(status) if status < 400 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wsgi-gateway request: {e}");
            ExitCode::from(2)
        }
    }
}

/// `wsgi-gateway status`: the status page, asked for the way a web server would.
fn status(args: &StatusCli) -> ExitCode {
    let addr = match server::Addr::parse(&args.addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wsgi-gateway status: {e}");
            return ExitCode::from(2);
        }
    };
    let mut query = Vec::new();
    if args.json {
        query.push("json");
    }
    if args.openmetrics {
        query.push("openmetrics");
    }
    if args.full {
        query.push("full");
    }
    let path = match query.is_empty() {
        true => args.path.clone(),
        false => format!("{}?{}", args.path, query.join("&")),
    };
    let req = client::RequestArgs {
        scgi: args.scgi,
        addr,
        method: "GET".into(),
        path,
        headers: Vec::new(),
        body: Vec::new(),
        include: false,
        timeout: Duration::from_secs(args.timeout),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match client::run(&req, &mut out) {
        Ok(status) if status < 400 => ExitCode::SUCCESS,
        Ok(404) => {
            eprintln!(
                "wsgi-gateway status: {} answered 404: is the gateway started with \
                 --status-path {}?",
                args.addr, args.path
            );
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wsgi-gateway status: {e}");
            ExitCode::from(2)
        }
    }
}
