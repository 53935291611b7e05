//! One serving process: the embedded interpreter, the worker threads and the event loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::{error, groups, info, pool, python, router, server, warn};

/// Exit codes a supervisor reads.
pub const EXIT_OK: u8 = 0;
pub const EXIT_CONFIG: u8 = 2;
/// The interpreter or the application could not be set up.
pub const EXIT_LOAD: u8 = 3;

/// Serves on `listeners` until told to stop (or recycled); returns the exit code.
pub fn run(config: &Config, listeners: Vec<server::Listener>, multiprocess: bool) -> u8 {
    let main = match python::start(&config.home) {
        Ok(m) => m,
        Err(e) => {
            error!("{e}");
            return EXIT_LOAD;
        }
    };
    let base = groups::Base {
        python_path: config.python_path.clone(),
        threads: config.threads,
        multiprocess,
    };
    let registry = match groups::Registry::new(&main, config.mounts.clone(), base) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            error!("{e}");
            return EXIT_LOAD;
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let pool = pool::Pool::start(config.threads, rx, registry.clone());
    let router = Arc::new(router::Router::new(config.mounts.clone()));
    let server_config = server::ServerConfig {
        limits: config.limits,
        threads: config.threads,
        graceful_timeout: config.graceful_timeout,
        maximum_requests: config.maximum_requests.map(jitter),
    };
    let started = Instant::now();
    let result = server::Server::new(listeners, router, tx, server_config).and_then(|s| s.run());
    if let Err(e) = result {
        error!("event loop failed: {e}");
        return 1;
    }
    let left = config
        .graceful_timeout
        .saturating_sub(started.elapsed().min(config.graceful_timeout))
        .max(Duration::from_secs(1));
    if pool.join(Instant::now() + left) {
        let rc = main.finalize(registry.take_sub_interpreters());
        if rc != 0 {
            warn!("Python finalisation reported {rc}");
        }
        info!("stopped");
    } else {
        warn!("worker threads still busy; exiting without finalising Python");
    }
    EXIT_OK
}

/// maximum-requests ±10%, different in each process, so workers do not recycle together.
fn jitter(n: u64) -> u64 {
    let seed = u64::from(std::process::id())
        ^ Instant::now().elapsed().subsec_nanos() as u64
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
