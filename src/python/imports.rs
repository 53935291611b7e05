//! Extension-module loads, one at a time in the whole process, when it has interpreters with
//! a GIL of their own. CPython's extension-module loading keeps process-wide state (the cache
//! of single-phase-init modules, their static types) that two interpreters running at once
//! can corrupt: on 3.12.1 a single-phase-init module refused by a second own-GIL interpreter
//! crashes the process. So every interpreter of such a process loads extension modules under
//! one lock (reentrant: an extension's initialisation may import another), and a module an
//! own-GIL interpreter refused is refused again from memory, without running its
//! initialisation a second time.
//!
//! The lock is always taken without holding any GIL (the callbacks let go of theirs while
//! they wait; interpreter creation takes it before the GIL), so it cannot deadlock with one.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, ThreadId};

struct Guard {
    /// The thread holding the lock, and how many times it took it.
    owner: Mutex<(Option<ThreadId>, usize)>,
    free: Condvar,
    /// Extension files an own-GIL interpreter refused, with CPython's message.
    refused: Mutex<HashMap<String, String>>,
}

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| Guard {
        owner: Mutex::new((None, 0)),
        free: Condvar::new(),
        refused: Mutex::new(HashMap::new()),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the process's extension-loading lock (again, when this thread holds it already).
/// Call it holding no GIL.
pub fn enter() {
    let g = guard();
    let me = thread::current().id();
    let mut owner = lock(&g.owner);
    loop {
        match owner.0 {
            None => {
                *owner = (Some(me), 1);
                return;
            }
            Some(t) if t == me => {
                owner.1 += 1;
                return;
            }
            Some(_) => owner = g.free.wait(owner).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Lets go of one [`enter`] of this thread.
pub fn leave() {
    let g = guard();
    let mut owner = lock(&g.owner);
    if owner.0 != Some(thread::current().id()) {
        return;
    }
    owner.1 -= 1;
    if owner.1 == 0 {
        owner.0 = None;
        g.free.notify_one();
    }
}

/// Holds the lock while alive (interpreter creation and ending).
pub struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        leave();
    }
}

/// [`enter`], until the returned value is dropped.
pub fn hold() -> Held {
    enter();
    Held(())
}

/// CPython's message when an own-GIL interpreter refused the extension file `origin`.
pub fn refusal(origin: &str) -> Option<String> {
    lock(&guard().refused).get(origin).cloned()
}

/// Remembers that an own-GIL interpreter refused the extension file `origin`.
pub fn record_refusal(origin: &str, message: &str) {
    lock(&guard().refused).insert(origin.to_string(), message.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn one_thread_at_a_time_and_reentrant() {
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (inside, most) = (inside.clone(), most.clone());
                thread::spawn(move || {
                    for _ in 0..200 {
                        let _outer = hold();
                        let _nested = hold();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(*lock(&guard().owner), (None, 0));
    }

    #[test]
    fn refusals_are_remembered_by_file() {
        assert_eq!(refusal("/x/_a.so"), None);
        record_refusal(
            "/x/_a.so",
            "module _a does not support loading in subinterpreters",
        );
        assert!(refusal("/x/_a.so").unwrap().contains("_a does not support"));
        assert_eq!(refusal("/x/_b.so"), None);
    }
}
