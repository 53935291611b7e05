//! One serving process: the embedded interpreter, the worker threads and the event loop.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ProcessGroup;
use crate::log::access::AccessLog;
use crate::{error, info, interpreters, python, router, server, warn};

use crate::supervisor::policy::code;

/// Exit codes (the supervisor reads them: [`code`]).
pub const EXIT_OK: u8 = code::OK as u8;
pub const EXIT_INTERNAL: u8 = code::INTERNAL as u8;
pub const EXIT_CONFIG: u8 = code::CONFIG as u8;
pub const EXIT_LOAD: u8 = code::LOAD as u8;

/// Serves on `listeners` until told to stop (or recycled); returns the exit code.
/// `supervisor`: the channel to the supervisor (worker processes under one); `row`: this
/// process's row of its group's scoreboard.
pub fn run(
    config: &ProcessGroup,
    listeners: Vec<server::Listener>,
    supervisor: Option<std::os::unix::net::UnixStream>,
    row: Option<crate::scoreboard::Row>,
) -> u8 {
    let multiprocess = supervisor.is_some();
    crate::sys::tune_malloc();
    // A stop asked for while the interpreter starts (seconds, for a big app) is remembered
    // and honoured as soon as the event loop runs.
    let stop_early = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, stop_early.clone()) {
            warn!("cannot watch signal {sig}: {e}");
        }
    }
    // SIGUSR1 (logrotate) reopens the log files, whenever it comes.
    let reopen_logs = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen_logs.clone()) {
        warn!("cannot watch signal SIGUSR1: {e}");
    }
    // A supervisor forks with them blocked, so that none is lost before this point.
    crate::sys::unblock_stop_signals();
    if let Some(mask) = config.lifecycle.umask {
        crate::sys::set_umask(mask);
    }
    // Opened as the user the gateway was started as (like the main log); reopened as the
    // worker's user.
    let access_log = match &config.access_log {
        None => None,
        Some(c) => match AccessLog::open(c, &config.name) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                let shown = match &c.dest {
                    crate::log::access::Dest::Stdout => "-".into(),
                    crate::log::access::Dest::File(p) => p.display().to_string(),
                };
                error!("access-log {shown}: {e}");
                return EXIT_CONFIG;
            }
        },
    };
    if let Some(id) = &config.lifecycle.identity {
        if let Err(e) = id.become_it() {
            error!(
                "cannot switch to user {:?} (uid {}, gid {}): {e}",
                id.user, id.uid, id.gid
            );
            return EXIT_CONFIG;
        }
        // What was checked as root is checked again as the worker's user.
        if let Err(e) = recheck_as_user(config) {
            error!("as user {}: {e}", id.user.as_deref().unwrap_or("?"));
            return EXIT_LOAD;
        }
    }
    let main = match python::start(&config.python.home) {
        Ok(m) => m,
        Err(e) => {
            error!("{e}");
            return EXIT_LOAD;
        }
    };
    let base = interpreters::Base {
        python_path: config.python.path.clone(),
        threads: config.threads,
        multiprocess,
    };
    let registry = match interpreters::Interpreters::new(&main, config.mounts.clone(), base) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            error!("{e}");
            return EXIT_LOAD;
        }
    };
    let life = &config.lifecycle;
    if life.preload {
        if let Err(e) = registry.preload() {
            error!("{e}");
            return EXIT_LOAD;
        }
    }
    let status_path = config.status.as_ref().map(|s| s.path.as_str());
    let router = router::Router::new(config.mounts.clone()).with_status_path(status_path);
    let router = Arc::new(router);
    let status = config
        .status
        .as_ref()
        .zip(row.clone())
        .map(|(s, row)| server::StatusPage {
            allow: s.allow.clone(),
            pool: config.name.clone(),
            row,
        });
    let c = &config.connections;
    let server_config = server::ServerConfig {
        limits: config.limits,
        threads: config.threads,
        timeouts: server::Timeouts {
            header: c.header_timeout,
            body: c.body_timeout,
            idle: c.keepalive_timeout,
            linger: c.linger_timeout,
            queue: life.queue_timeout,
            graceful: config.graceful_timeout,
        },
        buffer_body: c.buffer_body,
        buffer_body_total: c.buffer_body_total,
        max_body_bytes: c.max_body_bytes,
        max_connections: c.max_connections,
        cancel_on_disconnect: life.cancel_on_disconnect,
        hand_over_kept: life.hand_over_kept,
        watch: server::Watch {
            slowlog: life.slowlog_timeout,
            interrupt: life.interrupt_timeout,
        },
        recycle: server::Recycle {
            maximum_requests: life.maximum_requests.map(jitter),
            restart_after: life
                .restart_interval
                .map(|t| Duration::from_secs(jitter(t.as_secs().max(1)))),
            inactivity_timeout: life.inactivity_timeout,
            reload_on_rss_bytes: life.reload_on_rss_mib.map(|m| m << 20),
            request_timeout: life.request_timeout,
        },
        shared_listeners: config.processes.unwrap_or(1) > 1,
        row,
        stop_early,
        supervisor,
        reopen_logs,
        access_log: access_log.clone(),
        status,
    };
    let served = server::serve(listeners, router, registry.clone(), server_config);
    if let Some(log) = &access_log {
        log.close();
    }
    match served {
        Err(e) => {
            error!("the server failed: {e}");
            EXIT_INTERNAL
        }
        Ok(true) => {
            let left = registry.end_all(&main);
            if left > 0 {
                warn!(
                    "{left} sub-interpreter(s) still run threads of their own (daemon threads): \
                     stopped without finalising Python"
                );
            } else {
                match main.finalize() {
                    0 => info!("stopped"),
                    rc => warn!("Python finalisation reported {rc}; stopped"),
                }
            }
            EXIT_OK
        }
        Ok(false) => {
            warn!("threads still busy; exiting without finalising Python");
            EXIT_OK
        }
    }
}

/// python-home, the embedded Python's standard library, every mount venv and every script
/// must be readable by the worker's user.
fn recheck_as_user(config: &ProcessGroup) -> Result<(), String> {
    let (crate::venv::Home::Venv(root) | crate::venv::Home::Prefix(root)) = &config.python.home;
    crate::venv::check("python-home", root)?;
    crate::venv::check_base(&config.python.home)?;
    for m in &config.mounts {
        if let Some(v) = &m.venv {
            crate::venv::check(&format!("mount {} venv", m.shown_prefix()), v)?;
        }
        let readable = match &m.target {
            router::Target::Script(p) => std::fs::File::open(p).map(drop),
            router::Target::Directory { dir, .. } => std::fs::read_dir(dir).map(drop),
            router::Target::Diagnostics => Ok(()),
        };
        readable.map_err(|e| format!("mount {}: {e}", m.shown_prefix()))?;
    }
    Ok(())
}

/// maximum-requests ±10%, different in each process, so workers do not recycle together.
fn jitter(n: u64) -> u64 {
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    let spread = n / 10;
    if spread == 0 {
        return n.max(1);
    }
    let offset = seed.wrapping_mul(6364136223846793005) % (2 * spread + 1);
    (n - spread + offset).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = super::jitter(1000);
            assert!((900..=1100).contains(&j), "{j}");
        }
        assert_eq!(super::jitter(1), 1);
    }
}
