//! Worker threads: each takes requests from the queue and runs them in their interpreter,
//! holding the GIL only while Python runs (never while waiting for the queue).

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::exchange::Job;
use crate::groups::{Registry, WorkerStates};

pub struct Pool {
    threads: Vec<JoinHandle<()>>,
}

/// A request running on a worker thread, and since when.
type Running = Option<(Instant, Arc<Job>)>;

/// What each worker thread is running, for the request-timeout watchdog.
pub struct Watch {
    enabled: bool,
    slots: Vec<Mutex<Running>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watch {
    pub fn new(threads: usize, enabled: bool) -> Self {
        Watch {
            enabled,
            slots: (0..threads).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The requests running longer than `limit`: (thread, running for, job).
    pub fn overdue(&self, limit: Duration) -> Vec<(usize, Duration, Arc<Job>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let slot = lock(s);
                let (since, job) = slot.as_ref()?;
                (since.elapsed() > limit).then(|| (i, since.elapsed(), job.clone()))
            })
            .collect()
    }
}

impl Pool {
    pub fn start(
        n: usize,
        jobs: Receiver<Job>,
        registry: Arc<Registry>,
        watch: Arc<Watch>,
        queue_timeout: Option<Duration>,
    ) -> Pool {
        let threads = (0..n)
            .map(|i| {
                let jobs = jobs.clone();
                let registry = registry.clone();
                let watch = watch.clone();
                std::thread::Builder::new()
                    .name(format!("wsgi-worker-{i}"))
                    .spawn(move || {
                        let mut states = WorkerStates::new(&registry);
                        loop {
                            let job = match jobs.recv_timeout(Duration::from_secs(1)) {
                                Ok(job) => Arc::new(job),
                                Err(RecvTimeoutError::Timeout) => {
                                    // Idle: let go of interpreters replaced by a reload.
                                    registry.release_retired(&mut states);
                                    continue;
                                }
                                Err(RecvTimeoutError::Disconnected) => break,
                            };
                            if let Some(limit) = queue_timeout {
                                let waited = job.queued_at.elapsed();
                                if waited > limit {
                                    crate::warn!(
                                        "{}: waited {:.1}s for a free thread (queue-timeout {}s): 503",
                                        crate::wsgi::label(&job),
                                        waited.as_secs_f64(),
                                        limit.as_secs()
                                    );
                                    job.respond(
                                        "503 Service Unavailable",
                                        "Service Unavailable: every thread is busy; try again later\n",
                                    );
                                    job.finish(true);
                                    continue;
                                }
                            }
                            if watch.enabled {
                                *lock(&watch.slots[i]) = Some((Instant::now(), job.clone()));
                            }
                            let complete = registry.run(&job, &mut states);
                            if watch.enabled {
                                *lock(&watch.slots[i]) = None;
                            }
                            job.finish(complete);
                        }
                    })
                    .expect("spawn worker thread")
            })
            .collect();
        Pool { threads }
    }

    /// Waits for the workers to finish their requests, up to `deadline`. Returns whether all
    /// of them did (only then may the interpreter be finalised).
    pub fn join(self, deadline: Instant) -> bool {
        for t in &self.threads {
            while !t.is_finished() {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        true
    }
}
