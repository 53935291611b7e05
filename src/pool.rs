//! Worker threads: each takes requests from the queue and runs them in their interpreter,
//! holding the GIL only while Python runs (never while waiting for the queue).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::exchange::Job;
use crate::groups::{Registry, WorkerStates};

pub struct Pool {
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn start(n: usize, jobs: Receiver<Job>, registry: Arc<Registry>) -> Pool {
        let threads = (0..n)
            .map(|i| {
                let jobs = jobs.clone();
                let registry = registry.clone();
                std::thread::Builder::new()
                    .name(format!("wsgi-worker-{i}"))
                    .spawn(move || {
                        let mut states = WorkerStates::new(&registry);
                        for job in jobs.iter() {
                            let job = Arc::new(job);
                            let complete = registry.run(&job, &mut states);
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
    pub fn join(self, deadline: std::time::Instant) -> bool {
        for t in &self.threads {
            while !t.is_finished() {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        true
    }
}
