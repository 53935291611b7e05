//! Application groups: which interpreter runs a request, made on first use. `%{GLOBAL}` is the
//! main interpreter; a mount's own group and named groups are sub-interpreters sharing the GIL
//! (mod_wsgi's semantics: isolation of modules and `sys`, not parallelism). Also the reload of
//! scripts that change on disk.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::python::{Interp, MainThread, SubInterpreter, ThreadState};
use crate::router::{AppGroup as GroupName, Mount, Target};
use crate::server::Job;
use crate::wsgi::{self, Script};

/// One interpreter and the WSGI state made in it.
pub struct Group {
    serial: u64,
    interp: Interp,
    app: wsgi::Interpreter,
    label: String,
    /// How to end it (a sub-interpreter not yet ended).
    sub: Mutex<Option<SubInterpreter>>,
    /// Requests running in it (counted under the registry's lock, so that a replaced group
    /// is ended only once nothing uses it).
    inflight: AtomicUsize,
    /// Worker thread states made for it.
    holders: AtomicUsize,
    /// Replaced by a reload: ended as soon as no request and no thread state uses it.
    retired: AtomicBool,
}

/// What the gateway-wide settings add to every interpreter.
pub struct Base {
    pub python_path: Vec<PathBuf>,
    pub threads: usize,
    pub multiprocess: bool,
}

struct ScriptState {
    modified: Option<SystemTime>,
    generation: u64,
}

pub struct Registry {
    mounts: Vec<Mount>,
    base: Base,
    main: Interp,
    global: Arc<Group>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// Groups replaced by a reload, until they are ended.
    retired: Mutex<Vec<Arc<Group>>>,
    /// Sub-interpreters whose set-up failed: ended when the gateway stops.
    failed: Mutex<Vec<SubInterpreter>>,
    scripts: Mutex<HashMap<PathBuf, ScriptState>>,
    /// Per mount, the group key of its script (script mounts; made once, not per request).
    mount_keys: Vec<String>,
    serials: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker thread's thread states: one for the main interpreter and one per sub-interpreter
/// it has served, made once and entered per request.
pub struct WorkerStates {
    main: ThreadState,
    subs: HashMap<u64, ThreadState>,
}

impl WorkerStates {
    pub fn new(registry: &Registry) -> Self {
        WorkerStates {
            main: ThreadState::new(registry.main),
            subs: HashMap::new(),
        }
    }

    fn for_group(&mut self, group: &Group) -> &ThreadState {
        if group.serial == 0 {
            return &self.main;
        }
        self.subs.entry(group.serial).or_insert_with(|| {
            group.holders.fetch_add(1, Ordering::SeqCst);
            ThreadState::new(group.interp)
        })
    }
}

/// Where a request goes, decided before any Python runs.
struct Plan<'a> {
    key: Cow<'a, str>,
    script: Option<(Cow<'a, Path>, u64)>,
}

impl Registry {
    /// Sets up the main interpreter (`%{GLOBAL}`) on the main thread.
    pub fn new(main: &MainThread, mounts: Vec<Mount>, base: Base) -> Result<Registry, String> {
        let global = mounts.iter().filter(|m| m.group == GroupName::Global);
        let settings = settings(&base, global, GroupName::GLOBAL.into(), false);
        let app = main
            .with_gil(|gil| wsgi::Interpreter::setup(gil, &settings))
            .map_err(|e| format!("setting up the main interpreter failed:\n{e}"))?;
        let mount_keys = mounts
            .iter()
            .map(|m| match &m.target {
                Target::Script(path) => group_key(m, path),
                _ => String::new(),
            })
            .collect();
        Ok(Registry {
            mounts,
            base,
            main: main.interp(),
            global: Arc::new(Group {
                serial: 0,
                interp: main.interp(),
                app,
                label: GroupName::GLOBAL.into(),
                sub: Mutex::new(None),
                inflight: AtomicUsize::new(0),
                holders: AtomicUsize::new(0),
                retired: AtomicBool::new(false),
            }),
            groups: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            scripts: Mutex::new(HashMap::new()),
            mount_keys,
            serials: AtomicU64::new(1),
        })
    }

    /// Runs one request in its interpreter; returns whether the response is complete.
    pub fn run(&self, job: &Job, states: &mut WorkerStates) -> bool {
        let mount = &self.mounts[job.route.mount];
        let Some(plan) = self.plan(job, mount, job.route.mount) else {
            job.respond(404, "Not Found: no such script\n");
            return true;
        };
        let group = match self.group(&plan.key, mount, states) {
            Ok(g) => g,
            Err(e) => {
                crate::error!("{}: {e}", plan.key);
                job.respond(
                    500,
                    "Internal Server Error: the application's interpreter could not be made; \
                     the gateway log has the details\n",
                );
                return true;
            }
        };
        let script = match &plan.script {
            Some((path, generation)) => Script::File(path, *generation),
            None => Script::Diagnostics,
        };
        let complete = group
            .app
            .handle(states.for_group(&group), job, script, &mount.callable);
        self.done_with(&group, states);
        complete
    }

    /// A request (or preload) in `group` ended.
    fn done_with(&self, group: &Arc<Group>, states: &mut WorkerStates) {
        if group.serial != 0 {
            group.inflight.fetch_sub(1, Ordering::SeqCst);
            self.release_retired(states);
        }
    }

    /// Drops this worker's thread states of replaced interpreters, and ends those nothing
    /// uses any more. Workers call it between requests (and when idle, every second).
    pub fn release_retired(&self, states: &mut WorkerStates) {
        let retired: Vec<Arc<Group>> = {
            let list = lock(&self.retired);
            if list.is_empty() {
                return;
            }
            list.clone()
        };
        for group in retired {
            if group.inflight.load(Ordering::SeqCst) == 0 {
                if let Some(ts) = states.subs.remove(&group.serial) {
                    drop(ts);
                    group.holders.fetch_sub(1, Ordering::SeqCst);
                }
            }
            if group.inflight.load(Ordering::SeqCst) != 0
                || group.holders.load(Ordering::SeqCst) != 0
            {
                continue;
            }
            let Some(sub) = lock(&group.sub).take() else {
                continue;
            };
            lock(&self.retired).retain(|g| !Arc::ptr_eq(g, &group));
            match states
                .main
                .with_gil(|gil| sub.end(gil, |in_sub| group.app.release(in_sub)))
            {
                Ok(()) => crate::info!("ended the replaced sub-interpreter of {}", group.label),
                Err(sub) => {
                    crate::warn!(
                        "the replaced sub-interpreter of {} still runs threads of its own; \
                         it is left running",
                        group.label
                    );
                    lock(&self.failed).push(sub);
                }
            }
        }
    }

    /// The script file (a directory mount's resolved and confined to its directory), its
    /// generation, and the group key; `None` for a script that does not exist.
    fn plan<'a>(&'a self, job: &Job, mount: &'a Mount, index: usize) -> Option<Plan<'a>> {
        let (path, key): (Cow<'a, Path>, Cow<'a, str>) = match &mount.target {
            Target::Diagnostics => {
                return Some(Plan {
                    key: Cow::Borrowed(GroupName::GLOBAL),
                    script: None,
                })
            }
            Target::Script(path) => (
                Cow::Borrowed(path.as_path()),
                Cow::Borrowed(self.mount_keys[index].as_str()),
            ),
            Target::Directory { dir, extension } => {
                let name = job.route.resource.as_deref()?;
                let candidate = dir.join(format!("{name}{extension}"));
                let real = std::fs::canonicalize(&candidate).ok()?;
                if !real.starts_with(dir) || !real.is_file() {
                    return None;
                }
                let key = group_key(mount, &candidate);
                (Cow::Owned(candidate), Cow::Owned(key))
            }
        };
        let generation = if mount.reload {
            self.check_reload(&path, &key, mount.group == GroupName::Own)
        } else {
            0
        };
        Some(Plan {
            key,
            script: Some((path, generation)),
        })
    }

    /// A changed script gets a new generation (its module is imported again); a script with
    /// a sub-interpreter of its own gets a new interpreter.
    fn check_reload(&self, path: &Path, key: &str, own: bool) -> u64 {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut scripts = lock(&self.scripts);
        if !scripts.contains_key(path) {
            scripts.insert(
                path.to_path_buf(),
                ScriptState {
                    modified,
                    generation: 0,
                },
            );
        }
        let state = scripts.get_mut(path).expect("just made");
        if state.modified != modified {
            state.modified = modified;
            state.generation += 1;
            crate::info!("{} changed: reloading it ({key})", path.display());
            if own {
                if let Some(old) = lock(&self.groups).remove(key) {
                    old.retired.store(true, Ordering::SeqCst);
                    lock(&self.retired).push(old);
                }
            }
        }
        state.generation
    }

    fn group(
        &self,
        key: &str,
        mount: &Mount,
        states: &mut WorkerStates,
    ) -> Result<Arc<Group>, String> {
        if key == GroupName::GLOBAL {
            return Ok(self.global.clone());
        }
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get(key) {
            g.inflight.fetch_add(1, Ordering::SeqCst);
            return Ok(g.clone());
        }
        let members: Vec<&Mount> = match &mount.group {
            GroupName::Own => vec![mount],
            named => self.mounts.iter().filter(|m| &m.group == named).collect(),
        };
        let settings = settings(&self.base, members.into_iter(), key.to_string(), true);
        let (sub, app) = states
            .main
            .with_gil(|gil| gil.new_interpreter(|sub| wsgi::Interpreter::setup(sub, &settings)))?;
        let interp = sub.interp;
        let app = match app {
            Ok(app) => app,
            Err(e) => {
                lock(&self.failed).push(sub);
                return Err(format!("setting up the sub-interpreter failed:\n{e}"));
            }
        };
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let group = Arc::new(Group {
            serial,
            interp,
            app,
            label: key.to_string(),
            sub: Mutex::new(Some(sub)),
            inflight: AtomicUsize::new(1),
            holders: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        });
        crate::info!("made a sub-interpreter for {}", group.label);
        groups.insert(key.to_string(), group.clone());
        Ok(group)
    }

    /// Imports every script mount's script in its interpreter now (preload): a failure is the
    /// worker's failure to start.
    pub fn preload(&self) -> Result<(), String> {
        let mut states = WorkerStates::new(self);
        for (mount, key) in self.mounts.iter().zip(&self.mount_keys) {
            let Target::Script(path) = &mount.target else {
                continue;
            };
            let generation = if mount.reload {
                self.check_reload(path, key, mount.group == GroupName::Own)
            } else {
                0
            };
            let group = self.group(key, mount, &mut states)?;
            let loaded = states
                .for_group(&group)
                .with_gil(|gil| group.app.preload(gil, path, &mount.callable, generation));
            self.done_with(&group, &mut states);
            loaded.map_err(|e| {
                format!(
                    "mount {}: preloading {}:\n{e}",
                    mount.shown_prefix(),
                    path.display()
                )
            })?;
            crate::info!(
                "mount {}: {} preloaded",
                mount.shown_prefix(),
                path.display()
            );
        }
        Ok(())
    }

    /// Ends every sub-interpreter (the worker threads are gone), on the main thread before
    /// finalisation. Returns how many could not be ended (they run threads of their own).
    pub fn end_all(&self, main: &MainThread) -> usize {
        let groups: Vec<Arc<Group>> = lock(&self.groups).values().cloned().collect();
        let retired: Vec<Arc<Group>> = lock(&self.retired).clone();
        let mut left = 0;
        for g in groups.iter().chain(retired.iter()) {
            if let Some(sub) = lock(&g.sub).take() {
                let ended = main.with_gil(|gil| sub.end(gil, |in_sub| g.app.release(in_sub)));
                left += usize::from(ended.is_err());
            }
        }
        for sub in std::mem::take(&mut *lock(&self.failed)) {
            left += usize::from(main.with_gil(|gil| sub.end(gil, |_| ())).is_err());
        }
        left
    }
}

/// The name of the interpreter that runs `script` of `mount`.
fn group_key(mount: &Mount, script: &Path) -> String {
    match &mount.group {
        GroupName::Global => GroupName::GLOBAL.to_string(),
        GroupName::Named(n) => n.clone(),
        GroupName::Own => match mount.target {
            Target::Directory { .. } => {
                format!("mount {} script {}", mount.shown_prefix(), script.display())
            }
            _ => format!("mount {}", mount.shown_prefix()),
        },
    }
}

/// The settings of an interpreter serving `members`: their venv (group conflicts were refused
/// by the config) and python-path entries, then the global python-path.
fn settings<'a>(
    base: &Base,
    members: impl Iterator<Item = &'a Mount>,
    label: String,
    sub: bool,
) -> wsgi::Settings {
    let mut venv = None;
    let mut python_path = Vec::new();
    for m in members {
        venv = venv.or(m.venv.clone());
        for p in &m.python_path {
            if !python_path.contains(p) {
                python_path.push(p.clone());
            }
        }
    }
    python_path.extend(base.python_path.iter().cloned());
    wsgi::Settings {
        python_path,
        venv,
        label,
        sub,
        threads: base.threads,
        multiprocess: base.multiprocess,
    }
}

impl crate::server::Runner for Registry {
    type Thread = WorkerStates;

    fn thread(&self) -> WorkerStates {
        WorkerStates::new(self)
    }

    fn run(&self, thread: &mut WorkerStates, req: &Job) -> bool {
        Registry::run(self, req, thread)
    }

    fn idle(&self, thread: &mut WorkerStates) {
        self.release_retired(thread);
    }

    fn stacks(&self, thread: &mut WorkerStates) -> String {
        thread.main.with_gil(wsgi::dump_stacks)
    }
}
