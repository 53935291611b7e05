//! Application groups: which interpreter runs a request, made on first use. `%{GLOBAL}` is the
//! main interpreter; a mount's own application group and named ones are sub-interpreters
//! sharing the GIL (mod_wsgi's semantics: isolation of modules and `sys`, not parallelism),
//! or, with own-gil (Python 3.12+), each with a GIL of its own: a worker thread entering such
//! an interpreter takes only that interpreter's GIL, so groups run Python in parallel.
//! Also the scripts, and their reload when they change on disk.

use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::python::{imports, GilTurn, InterpId, MainThread, SubInterpreter, ThreadState};
use crate::router::{AppGroup, Mount, Target};
use crate::server::{Interrupt, Job};
use crate::wsgi::{self, Script, WsgiState};

/// Which interpreter serves a script: the application group, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum GroupKey {
    /// `%{GLOBAL}`: the main interpreter.
    Global,
    /// A named application group, shared by the mounts that name it.
    Named(String),
    /// A mount's own sub-interpreter (by mount index).
    Mount(usize),
    /// A directory mount's own sub-interpreter for one of its scripts (mod_wsgi's
    /// `%{RESOURCE}`).
    Resource(usize, PathBuf),
}

/// One interpreter and the WSGI state made in it.
pub struct Interpreter {
    serial: u64,
    id: InterpId,
    wsgi: WsgiState,
    label: String,
    /// How to end it (a sub-interpreter not yet ended).
    sub: Mutex<Option<SubInterpreter>>,
    /// Requests running in it (counted under the registry's lock, so that a replaced
    /// interpreter is ended only once nothing uses it).
    inflight: AtomicUsize,
    /// Thread states made for it.
    holders: AtomicUsize,
    /// Replaced by a reload: ended as soon as no request and no thread state uses it.
    retired: AtomicBool,
    /// The turn of its GIL.
    turn: Arc<GilTurn>,
}

/// What the gateway-wide settings add to every interpreter.
pub struct Base {
    pub python_path: Vec<PathBuf>,
    pub threads: usize,
    pub multiprocess: bool,
}

/// A script file, and the generation of its code (bumped when the file changes).
pub struct ScriptFile {
    /// Unique in the process: the key of its app in each interpreter.
    pub id: u64,
    pub path: PathBuf,
    modified: Mutex<Option<SystemTime>>,
    generation: AtomicU64,
    /// The count of changes seen in the scripts' directories when it was last looked at.
    looked: AtomicU64,
}

/// Changes in the directories that hold scripts, noticed by inotify (a thread reads the
/// events and counts them): a request looks at its script file only after a change, not on
/// every request. Where inotify cannot be used, every request looks.
pub struct Changes {
    count: Arc<AtomicU64>,
    watching: bool,
}

impl Changes {
    /// Watches `dirs` (the directories of script mounts' scripts, and directory mounts).
    fn watch(dirs: &[PathBuf]) -> Changes {
        use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
        let count = Arc::new(AtomicU64::new(1));
        let watched = (|| -> nix::Result<Inotify> {
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
            let flags = F::IN_MODIFY
                | F::IN_ATTRIB
                | F::IN_CLOSE_WRITE
                | F::IN_CREATE
                | F::IN_DELETE
                | F::IN_MOVED_FROM
                | F::IN_MOVED_TO
                | F::IN_DELETE_SELF
                | F::IN_MOVE_SELF;
            for dir in dirs {
                inotify.add_watch(dir.as_path(), flags)?;
            }
            Ok(inotify)
        })();
        let inotify = match watched {
            Ok(i) => i,
            Err(e) => {
                crate::warn!(
                    "cannot watch the scripts' directories ({e}): every request looks at its \
                     script's modification time"
                );
                return Changes {
                    count,
                    watching: false,
                };
            }
        };
        let counter = count.clone();
        let spawned = std::thread::Builder::new()
            .name("script-watch".into())
            .spawn(move || loop {
                match inotify.read_events() {
                    Ok(_) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(nix::Error::EINTR) => {}
                    Err(e) => {
                        crate::warn!("watching the scripts' directories failed: {e}");
                        // From now on, every request looks.
                        counter.store(0, Ordering::SeqCst);
                        return;
                    }
                }
            });
        Changes {
            count,
            watching: spawned.is_ok(),
        }
    }

    /// The count to compare; 0 when every request must look.
    fn now(&self) -> u64 {
        if self.watching {
            self.count.load(Ordering::SeqCst)
        } else {
            0
        }
    }
}

/// A directory mount's script name as resolved, and the count of changes then.
type Resolved = (u64, Option<Arc<ScriptFile>>);

/// The application groups of a worker process and their interpreters.
pub struct Interpreters {
    mounts: Vec<Mount>,
    base: Base,
    main: InterpId,
    global: Arc<Interpreter>,
    subs: Mutex<FxHashMap<GroupKey, Arc<Interpreter>>>,
    /// Held while an interpreter is made.
    making: Mutex<()>,
    /// Interpreters replaced by a reload, until they are ended.
    retired: Mutex<Vec<Arc<Interpreter>>>,
    /// Sub-interpreters whose set-up failed: ended when the gateway stops.
    failed: Mutex<Vec<SubInterpreter>>,
    /// Per mount, its script (script mounts).
    mount_scripts: Vec<Option<Arc<ScriptFile>>>,
    /// Directory mounts' scripts, by path; and by mount and name, as resolved when the
    /// count of changes was the one kept with them.
    dir_scripts: Mutex<HashMap<PathBuf, Arc<ScriptFile>>>,
    resolved: Mutex<HashMap<(usize, String), Resolved>>,
    serials: AtomicU64,
    script_ids: AtomicU64,
    changes: Changes,
    /// Some application group has its own GIL: extension-module loads, and the making and
    /// ending of interpreters, are serialised process-wide (`python::imports`).
    guard_imports: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread's thread states: one for the main interpreter and one per sub-interpreter it
/// has served, made once and entered per request.
pub struct ThreadStates {
    main: ThreadState,
    subs: FxHashMap<u64, ThreadState>,
}

impl ThreadStates {
    pub fn new(interpreters: &Interpreters) -> Self {
        ThreadStates {
            main: ThreadState::new(interpreters.main, GilTurn::shared()),
            subs: FxHashMap::default(),
        }
    }

    fn for_interpreter(&mut self, interp: &Interpreter) -> &ThreadState {
        if interp.serial == 0 {
            return &self.main;
        }
        self.subs.entry(interp.serial).or_insert_with(|| {
            interp.holders.fetch_add(1, Ordering::SeqCst);
            ThreadState::new(interp.id, interp.turn.clone())
        })
    }
}

impl ScriptFile {
    fn new(id: u64, path: PathBuf) -> ScriptFile {
        ScriptFile {
            id,
            modified: Mutex::new(std::fs::metadata(&path).and_then(|m| m.modified()).ok()),
            path,
            generation: AtomicU64::new(0),
            looked: AtomicU64::new(0),
        }
    }

    /// Looks at the file (when something changed in the scripts' directories since the last
    /// look): a new modification time is a new generation. Returns the generation and
    /// whether it just changed.
    fn check(&self, changes: &Changes) -> (u64, bool) {
        let now = changes.now();
        if now != 0 && self.looked.swap(now, Ordering::SeqCst) == now {
            return (self.generation.load(Ordering::SeqCst), false);
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut seen = lock(&self.modified);
        if *seen == modified {
            return (self.generation.load(Ordering::SeqCst), false);
        }
        *seen = modified;
        (self.generation.fetch_add(1, Ordering::SeqCst) + 1, true)
    }
}

impl Interpreters {
    /// Sets up the main interpreter (`%{GLOBAL}`) on the main thread.
    pub fn new(main: &MainThread, mounts: Vec<Mount>, base: Base) -> Result<Interpreters, String> {
        let guard_imports = mounts.iter().any(|m| m.own_gil);
        let global = mounts.iter().filter(|m| m.group == AppGroup::Global);
        let settings = settings(&base, global, AppGroup::GLOBAL.into(), false, guard_imports);
        let wsgi = main
            .with_gil(|gil| WsgiState::setup(gil, &settings))
            .map_err(|e| format!("setting up the main interpreter failed:\n{e}"))?;
        let script_ids = AtomicU64::new(0);
        let mount_scripts = mounts
            .iter()
            .map(|m| match &m.target {
                Target::Script(path) => Some(Arc::new(ScriptFile::new(
                    script_ids.fetch_add(1, Ordering::Relaxed),
                    path.clone(),
                ))),
                _ => None,
            })
            .collect();
        let mut dirs: Vec<PathBuf> = mounts
            .iter()
            .filter(|m| m.reload)
            .filter_map(|m| match &m.target {
                Target::Script(p) => p.parent().map(Path::to_path_buf),
                Target::Directory { dir, .. } => Some(dir.clone()),
                Target::Diagnostics => None,
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(Interpreters {
            changes: Changes::watch(&dirs),
            mounts,
            base,
            main: main.interp(),
            global: Arc::new(Interpreter {
                serial: 0,
                id: main.interp(),
                wsgi,
                label: AppGroup::GLOBAL.into(),
                sub: Mutex::new(None),
                inflight: AtomicUsize::new(0),
                holders: AtomicUsize::new(0),
                retired: AtomicBool::new(false),
                turn: GilTurn::shared(),
            }),
            subs: Mutex::new(FxHashMap::default()),
            making: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            mount_scripts,
            dir_scripts: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            serials: AtomicU64::new(1),
            script_ids,
            guard_imports,
        })
    }

    /// Runs one request in its interpreter; returns whether the response is complete.
    pub fn run(&self, job: &Job, states: &mut ThreadStates) -> bool {
        let index = job.route.mount;
        let mount = &self.mounts[index];
        let script = match &mount.target {
            Target::Diagnostics => None,
            Target::Script(_) => self.mount_scripts[index].clone(),
            Target::Directory { dir, extension } => {
                match self.directory_script(job, index, dir, extension) {
                    Some(s) => Some(s),
                    None => {
                        job.respond(404, "Not Found: no such script\n");
                        return true;
                    }
                }
            }
        };
        let key = script
            .as_ref()
            .map_or(GroupKey::Global, |s| group_key(index, mount, &s.path));
        let generation = match &script {
            Some(s) if mount.reload => self.check_reload(s, &key, mount),
            _ => 0,
        };
        let interp = match self.interpreter(&key, mount, states) {
            Ok(i) => i,
            Err(e) => {
                crate::request_log!(error, job.log_fields(), "{}: {e}", self.label(&key));
                job.respond(
                    500,
                    "Internal Server Error: the application's interpreter could not be made; \
                     the gateway log has the details\n",
                );
                return true;
            }
        };
        let target = match &script {
            Some(s) => Script::File(s, generation),
            None => Script::Diagnostics,
        };
        job.python.interp.store(interp.serial, Ordering::SeqCst);
        let ts = states.for_interpreter(&interp);
        let complete = interp.wsgi.handle(ts, job, target, &mount.callable);
        self.done_with(&interp, states);
        complete
    }

    /// A directory mount's script for this request, resolved and confined to its directory;
    /// `None` when there is no such script.
    fn directory_script(
        &self,
        job: &Job,
        index: usize,
        dir: &Path,
        extension: &str,
    ) -> Option<Arc<ScriptFile>> {
        let name = job.route.resource.as_deref()?;
        let now = self.changes.now();
        let key = (index, name.to_string());
        if let Some((seen, script)) = lock(&self.resolved).get(&key) {
            if now != 0 && *seen == now {
                return script.clone();
            }
        }
        let script = self.resolve_in(dir, name, extension);
        lock(&self.resolved).insert(key, (now, script.clone()));
        script
    }

    /// `NAME<extension>` in `dir`, unless it leads out of it or is not a file.
    fn resolve_in(&self, dir: &Path, name: &str, extension: &str) -> Option<Arc<ScriptFile>> {
        let candidate = dir.join(format!("{name}{extension}"));
        let real = std::fs::canonicalize(&candidate).ok()?;
        if !real.starts_with(dir) || !real.is_file() {
            return None;
        }
        let mut scripts = lock(&self.dir_scripts);
        let s = scripts.entry(candidate).or_insert_with_key(|path| {
            let id = self.script_ids.fetch_add(1, Ordering::Relaxed);
            Arc::new(ScriptFile::new(id, path.clone()))
        });
        Some(s.clone())
    }

    /// A changed script gets a new generation (its module is imported again); a script with
    /// a sub-interpreter of its own gets a new interpreter.
    fn check_reload(&self, script: &ScriptFile, key: &GroupKey, mount: &Mount) -> u64 {
        let (generation, changed) = script.check(&self.changes);
        if changed {
            crate::info!(
                "{} changed: reloading it ({})",
                script.path.display(),
                self.label(key)
            );
            if mount.group == AppGroup::Own {
                if let Some(old) = lock(&self.subs).remove(key) {
                    old.retired.store(true, Ordering::SeqCst);
                    lock(&self.retired).push(old);
                }
            }
        }
        generation
    }

    /// How an application group is named in messages.
    fn label(&self, key: &GroupKey) -> String {
        match key {
            GroupKey::Global => AppGroup::GLOBAL.into(),
            GroupKey::Named(n) => format!("application group {n:?}"),
            GroupKey::Mount(i) => format!("mount {}", self.mounts[*i].shown_prefix()),
            GroupKey::Resource(i, path) => format!(
                "mount {} script {}",
                self.mounts[*i].shown_prefix(),
                path.display()
            ),
        }
    }

    /// The interpreter running `req` (None once it is gone).
    fn interpreter_of(&self, req: &Job) -> Option<Arc<Interpreter>> {
        let serial = req.python.interp.load(Ordering::SeqCst);
        if serial == 0 {
            return Some(self.global.clone());
        }
        lock(&self.subs)
            .values()
            .find(|i| i.serial == serial)
            .cloned()
            .or_else(|| {
                lock(&self.retired)
                    .iter()
                    .find(|i| i.serial == serial)
                    .cloned()
            })
    }

    /// Runs `f` holding the GIL in the interpreter running `req`, with this thread's state
    /// there. Python 3.11's GIL asks its holder to let go through the waiter's interpreter: a
    /// request spinning in a sub-interpreter yields only to a waiter in that interpreter.
    fn in_interpreter_of<R>(
        &self,
        thread: &mut ThreadStates,
        req: &Job,
        f: impl FnOnce(crate::python::Gil<'_>) -> R,
    ) -> Option<R> {
        let interp = self.interpreter_of(req)?;
        if interp.serial != 0 {
            // Held like a request holds it, so that it is not ended meanwhile.
            interp.inflight.fetch_add(1, Ordering::SeqCst);
        }
        let r = thread.for_interpreter(&interp).with_gil(f);
        self.done_with(&interp, thread);
        Some(r)
    }

    /// A request (or preload) in `interp` ended.
    fn done_with(&self, interp: &Arc<Interpreter>, states: &mut ThreadStates) {
        if interp.serial != 0 {
            interp.inflight.fetch_sub(1, Ordering::SeqCst);
            self.release_retired(states);
        }
    }

    /// Drops this thread's states of replaced interpreters, and ends those nothing uses any
    /// more. Threads call it between requests (and when idle, every second).
    pub fn release_retired(&self, states: &mut ThreadStates) {
        let retired: Vec<Arc<Interpreter>> = {
            let list = lock(&self.retired);
            if list.is_empty() {
                return;
            }
            list.clone()
        };
        for interp in retired {
            if interp.inflight.load(Ordering::SeqCst) == 0 {
                if let Some(ts) = states.subs.remove(&interp.serial) {
                    drop(ts);
                    interp.holders.fetch_sub(1, Ordering::SeqCst);
                }
            }
            if interp.inflight.load(Ordering::SeqCst) != 0
                || interp.holders.load(Ordering::SeqCst) != 0
            {
                continue;
            }
            let Some(sub) = lock(&interp.sub).take() else {
                continue;
            };
            lock(&self.retired).retain(|i| !Arc::ptr_eq(i, &interp));
            let held = self.guard_imports.then(imports::hold);
            let ended = states
                .main
                .with_gil(|gil| sub.end(gil, |in_sub| interp.wsgi.release(in_sub)));
            drop(held);
            match ended {
                Ok(()) => crate::info!("ended the replaced sub-interpreter of {}", interp.label),
                Err(sub) => {
                    crate::warn!(
                        "the replaced sub-interpreter of {} still runs threads of its own; \
                         it is left running",
                        interp.label
                    );
                    lock(&self.failed).push(sub);
                }
            }
        }
    }

    fn interpreter(
        &self,
        key: &GroupKey,
        mount: &Mount,
        states: &mut ThreadStates,
    ) -> Result<Arc<Interpreter>, String> {
        if *key == GroupKey::Global {
            return Ok(self.global.clone());
        }
        let existing = || {
            let subs = lock(&self.subs);
            let i = subs.get(key)?;
            i.inflight.fetch_add(1, Ordering::SeqCst);
            Some(i.clone())
        };
        if let Some(i) = existing() {
            return Ok(i);
        }
        // One interpreter is made at a time, without holding the registry: requests of the
        // groups that exist go on meanwhile (those of own-GIL groups hold no GIL it needs).
        let _making = lock(&self.making);
        if let Some(i) = existing() {
            return Ok(i);
        }
        let members: Vec<&Mount> = match &mount.group {
            AppGroup::Own => vec![mount],
            named => self.mounts.iter().filter(|m| &m.group == named).collect(),
        };
        let label = self.label(key);
        let settings = settings(
            &self.base,
            members.into_iter(),
            label.clone(),
            true,
            self.guard_imports,
        );
        // Taken before the GIL (see python::imports), held while the interpreter imports its
        // first modules.
        let held = self.guard_imports.then(imports::hold);
        let made = states.main.with_gil(|gil| {
            gil.new_interpreter(settings.own_gil, |sub| WsgiState::setup(sub, &settings))
        });
        drop(held);
        let (sub, wsgi) = made?;
        let id = sub.interp;
        let wsgi = match wsgi {
            Ok(w) => w,
            Err(e) => {
                lock(&self.failed).push(sub);
                return Err(format!("setting up the sub-interpreter failed:\n{e}"));
            }
        };
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let turn = sub.turn.clone();
        let interp = Arc::new(Interpreter {
            serial,
            id,
            wsgi,
            label,
            sub: Mutex::new(Some(sub)),
            inflight: AtomicUsize::new(1),
            holders: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            turn,
        });
        if settings.own_gil {
            crate::info!(
                "made a sub-interpreter with its own GIL for {}",
                interp.label
            );
        } else {
            crate::info!("made a sub-interpreter for {}", interp.label);
        }
        lock(&self.subs).insert(key.clone(), interp.clone());
        Ok(interp)
    }

    /// Imports every script mount's script in its interpreter now (preload): a failure is the
    /// worker process's failure to start.
    pub fn preload(&self) -> Result<(), String> {
        let mut states = ThreadStates::new(self);
        for (index, mount) in self.mounts.iter().enumerate() {
            let Some(script) = &self.mount_scripts[index] else {
                continue;
            };
            let key = group_key(index, mount, &script.path);
            let generation = if mount.reload {
                self.check_reload(script, &key, mount)
            } else {
                0
            };
            let interp = self.interpreter(&key, mount, &mut states)?;
            let loaded = states.for_interpreter(&interp).with_gil(|gil| {
                interp
                    .wsgi
                    .preload(gil, Script::File(script, generation), &mount.callable)
            });
            self.done_with(&interp, &mut states);
            loaded.map_err(|e| {
                format!(
                    "mount {}: preloading {}:\n{e}",
                    mount.shown_prefix(),
                    script.path.display()
                )
            })?;
            crate::info!(
                "mount {}: {} preloaded",
                mount.shown_prefix(),
                script.path.display()
            );
        }
        Ok(())
    }

    /// Ends every sub-interpreter (the threads are gone), on the main thread before
    /// finalisation. Returns how many could not be ended (they run threads of their own).
    pub fn end_all(&self, main: &MainThread) -> usize {
        let subs: Vec<Arc<Interpreter>> = lock(&self.subs).values().cloned().collect();
        let retired: Vec<Arc<Interpreter>> = lock(&self.retired).clone();
        let mut left = 0;
        let _held = self.guard_imports.then(imports::hold);
        for i in subs.iter().chain(retired.iter()) {
            if let Some(sub) = lock(&i.sub).take() {
                let ended = main.with_gil(|gil| sub.end(gil, |in_sub| i.wsgi.release(in_sub)));
                left += usize::from(ended.is_err());
            }
        }
        for sub in std::mem::take(&mut *lock(&self.failed)) {
            left += usize::from(main.with_gil(|gil| sub.end(gil, |_| ())).is_err());
        }
        main.with_gil(|gil| self.global.wsgi.release(gil));
        left
    }
}

/// The application group of `script` of mount number `index`.
fn group_key(index: usize, mount: &Mount, script: &Path) -> GroupKey {
    match &mount.group {
        AppGroup::Global => GroupKey::Global,
        AppGroup::Named(n) => GroupKey::Named(n.clone()),
        AppGroup::Own => match mount.target {
            Target::Directory { .. } => GroupKey::Resource(index, script.to_path_buf()),
            _ => GroupKey::Mount(index),
        },
    }
}

/// The settings of an interpreter serving `members`: their venv (conflicts were refused by
/// the configuration) and python-path entries, then the global python-path.
fn settings<'a>(
    base: &Base,
    members: impl Iterator<Item = &'a Mount>,
    label: String,
    sub: bool,
    guard_imports: bool,
) -> wsgi::Settings {
    let mut venv = None;
    let mut python_path = Vec::new();
    let mut own_gil = false;
    for m in members {
        venv = venv.or(m.venv.clone());
        own_gil |= m.own_gil;
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
        own_gil: sub && own_gil,
        guard_imports,
        threads: base.threads,
        multiprocess: base.multiprocess,
    }
}

impl crate::server::Runner for Interpreters {
    type Thread = ThreadStates;

    fn thread(&self) -> ThreadStates {
        ThreadStates::new(self)
    }

    fn run(&self, thread: &mut ThreadStates, req: &Job) -> bool {
        Interpreters::run(self, req, thread)
    }

    fn idle(&self, thread: &mut ThreadStates) {
        self.release_retired(thread);
    }

    fn stacks(&self, thread: &mut ThreadStates, req: &Job) -> String {
        self.in_interpreter_of(thread, req, wsgi::dump_stacks)
            .unwrap_or_else(|| thread.main.with_gil(wsgi::dump_stacks))
    }

    fn stack_of(&self, thread: &mut ThreadStates, req: &Job, ident: u64) -> String {
        self.in_interpreter_of(thread, req, |gil| wsgi::dump_stack_of(gil, ident))
            .unwrap_or_default()
    }

    fn interrupt(&self, thread: &mut ThreadStates, req: &Job, why: Interrupt) -> bool {
        let Some(interp) = self.interpreter_of(req) else {
            return false;
        };
        self.in_interpreter_of(thread, req, |gil| interp.wsgi.interrupt(gil, req, why))
            .unwrap_or(false)
    }
}
