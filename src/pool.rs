//! Worker threads: each takes requests from the queue and runs them in their interpreter,
//! holding the GIL only while Python runs (never while waiting for the queue).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::exchange::Job;
use crate::groups::{Registry, WorkerStates};

pub struct Pool {
    threads: Vec<JoinHandle<()>>,
}

/// The request queue between the event loop and the worker threads: a mutex and a condition
/// variable, nothing more. Idle workers sleep on the condition variable (no spinning), and
/// the loop wakes one only when one is idle.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    idle: usize,
    closed: bool,
}

enum Next {
    Job(Job),
    Idle,
    Closed,
}

impl Queue {
    /// Queues a request; false once the queue is closed.
    pub fn push(&self, job: Job) -> bool {
        let mut st = lock(&self.state);
        if st.closed {
            return false;
        }
        st.jobs.push_back(job);
        let wake = st.idle > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// No more requests: workers finish what is queued and exit.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    fn next(&self, idle_for: Duration) -> Next {
        let mut st = lock(&self.state);
        if let Some(job) = st.jobs.pop_front() {
            return Next::Job(job);
        }
        if st.closed {
            return Next::Closed;
        }
        st.idle += 1;
        let (mut st, _) = self
            .ready
            .wait_timeout(st, idle_for)
            .unwrap_or_else(|e| e.into_inner());
        st.idle -= 1;
        match st.jobs.pop_front() {
            Some(job) => Next::Job(job),
            None if st.closed => Next::Closed,
            None => Next::Idle,
        }
    }
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
        jobs: Arc<Queue>,
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
                            let job = match jobs.next(Duration::from_secs(1)) {
                                Next::Job(job) => Arc::new(job),
                                Next::Idle => {
                                    // Let go of interpreters replaced by a reload.
                                    registry.release_retired(&mut states);
                                    continue;
                                }
                                Next::Closed => break,
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
