//! Every raw CPython call the gateway makes, behind a small safe surface.
//!
//! The rules this module enforces by construction:
//! - Python objects ([`Obj`]) carry the lifetime of a [`Gil`] token, so they cannot outlive the
//!   time the calling thread holds the GIL; objects kept across requests are [`PyObj`], usable
//!   only through a `Gil` again.
//! - A [`Gil`] only comes from entering a thread state ([`ThreadState::with_gil`],
//!   [`MainThread::with_gil`]) or from inside a callback CPython made into us.
//! - No pyo3 type object, interned string or static Python object exists: everything is made
//!   per interpreter, so the same code will serve sub-interpreters.
//! - Callbacks from Python into Rust go through `static` `PyMethodDef`s whose `self` is a
//!   capsule holding an `Arc<dyn Host>`; a panic in Rust becomes a Python `RuntimeError`.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, CStr, CString, OsStr};
use std::fs::File;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use pyo3_ffi as ffi;

use crate::server::BodySink;

extern "C" {
    // CPython's own (cpython/bytesobject.h); pyo3-ffi does not export it.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// A Python exception, rendered as its traceback text.
#[derive(Debug, Clone)]
pub struct PyErr {
    pub text: String,
}

impl std::fmt::Display for PyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text.trim_end())
    }
}

impl std::error::Error for PyErr {}

pub type PyResult<T> = Result<T, PyErr>;

/// How to start the interpreter (see `python::init`).
pub struct InitOptions<'a> {
    /// `PyConfig.program_name`: `<venv>/bin/python` for a virtualenv, `<prefix>/bin/pythonX.Y`
    /// otherwise; getpath derives every path from it.
    pub program_name: &'a Path,
    /// `PyConfig.home`, only for a python-home that is a base installation, never a venv.
    pub home: Option<&'a Path>,
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} contains NUL", p.display()))
}

fn status_error(st: &ffi::PyStatus) -> Option<String> {
    // SAFETY: PyStatus_Exception only reads the struct; func and err_msg are NULL or static C
    // strings owned by CPython.
    unsafe {
        if ffi::PyStatus_Exception(*st) == 0 {
            return None;
        }
        let text = |p: *const c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        Some(match (text(st.func), text(st.err_msg)) {
            (Some(func), Some(msg)) => format!("{func}: {msg}"),
            (None, Some(msg)) => msg,
            (Some(func), None) => func,
            (None, None) => format!("exit code {}", st.exitcode),
        })
    }
}

/// Initialises CPython with an isolated configuration (no PYTHONHOME/PYTHONPATH from the
/// environment, no user site, no signal handlers, unbuffered stdio) and returns with the GIL
/// released. A failing status is returned as its message; nothing here exits the process.
pub fn initialize(opts: &InitOptions<'_>) -> Result<MainThread, String> {
    let program = cpath(opts.program_name)?;
    let home = opts.home.map(cpath).transpose()?;
    // SAFETY: the config is initialised by PyConfig_InitIsolatedConfig before any use and
    // cleared on every path; strings are copied by PyConfig_SetBytesString.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Err("the Python interpreter is already initialised".into());
        }
        let mut cfg = MaybeUninit::<ffi::PyConfig>::zeroed();
        let c = cfg.as_mut_ptr();
        ffi::PyConfig_InitIsolatedConfig(c);
        (*c).install_signal_handlers = 0;
        (*c).buffered_stdio = 0;
        let mut result = status_error(&ffi::PyConfig_SetBytesString(
            c,
            ptr::addr_of_mut!((*c).program_name),
            program.as_ptr(),
        ));
        if let (None, Some(home)) = (&result, &home) {
            result = status_error(&ffi::PyConfig_SetBytesString(
                c,
                ptr::addr_of_mut!((*c).home),
                home.as_ptr(),
            ));
        }
        if result.is_none() {
            result = status_error(&ffi::Py_InitializeFromConfig(c));
        }
        ffi::PyConfig_Clear(c);
        if let Some(err) = result {
            return Err(err);
        }
        let ts = ffi::PyEval_SaveThread();
        Ok(MainThread { ts })
    }
}

/// The libpython this process runs: its `Py_GetVersion()` (callable before the interpreter
/// starts) and the file the dynamic loader mapped it from, when the loader says.
pub fn loaded_libpython() -> (String, Option<PathBuf>) {
    // SAFETY: Py_GetVersion returns a pointer to a static NUL-terminated string and may be
    // called before Py_Initialize.
    let version = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: dlsym with RTLD_DEFAULT looks a symbol up in the loaded objects; dladdr fills
    // `info` for an address inside one, and `dli_fname` points into the loader's memory for
    // as long as the object stays loaded (libpython is never unloaded).
    let path = unsafe {
        let addr = libc::dlsym(libc::RTLD_DEFAULT, c"Py_GetVersion".as_ptr());
        let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
        if addr.is_null() || libc::dladdr(addr, info.as_mut_ptr()) == 0 {
            None
        } else {
            let name = info.assume_init().dli_fname;
            (!name.is_null())
                .then(|| PathBuf::from(OsStr::from_bytes(CStr::from_ptr(name).to_bytes())))
        }
    };
    (version, path)
}

const ADOPT_MAIN_THREAD: &CStr = c"import sys
if 'threading' in sys.modules:
    import _thread
    sys.modules['threading']._main_thread._ident = _thread.get_ident()
    sys.modules['threading']._shutdown()
";

/// The calling thread's identifier as Python knows it (`threading.get_ident()`).
#[allow(clippy::useless_conversion)] // c_ulong is 32 bits on some targets
pub fn thread_ident() -> u64 {
    // SAFETY: needs no GIL; it reads the calling thread's id.
    u64::from(unsafe { ffi::PyThread_get_thread_ident() })
}

/// The order in which the worker threads of one GIL take it.
///
/// CPython's GIL has no order: a thread that lets go of it at the end of a request and takes
/// it back for its next one gets it again before a waiting thread has even woken, and the
/// waiter asks for it only after the switch interval (5 ms). With several threads taking
/// requests, the newest requests finished first while older ones waited in steps of 5 ms
/// (Flask at 2x4: p99 in the process 24 ms for requests of 0.12 ms). A thread about to start a
/// request therefore lets a thread that already waits for the GIL (for a request started, or
/// half done) take it first.
#[derive(Default)]
pub struct GilTurn {
    /// Threads waiting in [`attach`] for this GIL.
    waiters: AtomicUsize,
    /// How many waits ended (wrapping): a polite thread watches it move.
    taken: AtomicUsize,
    /// Polite threads asleep until `taken` moves; the thread that takes the GIL wakes them.
    /// The counters are SeqCst: a sleeper counts itself then reads `taken`, the taker moves
    /// `taken` then reads `sleepers`, and one of the two must see the other's write.
    sleepers: AtomicUsize,
    /// What the sleepers wait on (`moved_cv`), held by a taker while it wakes them so that no
    /// wake falls between a sleeper's last look at `taken` and its wait.
    moved: Mutex<()>,
    moved_cv: Condvar,
}

impl GilTurn {
    /// The turn of the main interpreter's GIL, which sub-interpreters without a GIL of their
    /// own share.
    pub fn shared() -> Arc<GilTurn> {
        static SHARED: std::sync::OnceLock<Arc<GilTurn>> = std::sync::OnceLock::new();
        SHARED.get_or_init(Arc::default).clone()
    }

    /// A polite thread's wait: until a thread that waits for the GIL has taken it (`taken`
    /// has moved from `seen`), no thread waits any more, or `POLITE_FOR` has passed. It first
    /// yields its CPU a few times (a waiter woken on this CPU runs at once), then sleeps: a
    /// thread that only yielded spun while the waiter got going on another CPU, which cost
    /// CPU per request (README, "Threads take the GIL in turn").
    fn let_waiter_in(&self, seen: usize) {
        let moved = || {
            self.taken.load(Ordering::SeqCst) != seen || self.waiters.load(Ordering::SeqCst) == 0
        };
        for _ in 0..POLITE_YIELDS {
            if moved() {
                return;
            }
            std::thread::yield_now();
        }
        let deadline = std::time::Instant::now() + POLITE_FOR;
        let mut guard = lock(&self.moved);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while !moved() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            guard = self
                .moved_cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts a wait that ended with the GIL taken, and wakes the polite threads asleep for it.
    fn count_taken(&self) {
        self.taken.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.moved);
            self.moved_cv.notify_all();
        }
    }
}

/// A polite thread yields its CPU up to `POLITE_YIELDS` times, then sleeps up to `POLITE_FOR`
/// for a waiting thread to take the GIL (see [`GilTurn::let_waiter_in`]); after that it waits
/// for the GIL itself, so a waiter that cannot run does not hold up the next request for long.
const POLITE_FOR: std::time::Duration = std::time::Duration::from_millis(1);
const POLITE_YIELDS: usize = 4;

thread_local! {
    /// The turn of the GIL this thread holds through [`ThreadState::with_gil`] (NULL
    /// otherwise), for `allow_threads` to let go of the GIL and take it back by.
    static TURN: Cell<*const GilTurn> = const { Cell::new(ptr::null()) };
}

/// Attaches `ts` (takes its GIL), counted in `turn`. `polite`: the thread is about to start a
/// request, and a thread that waits for the GIL takes it first (see [`GilTurn`]).
///
/// # Safety
/// `ts` is the calling thread's own detached thread state, of the GIL `turn` counts.
unsafe fn attach(ts: *mut ffi::PyThreadState, turn: &GilTurn, polite: bool) {
    if polite && turn.waiters.load(Ordering::SeqCst) > 0 {
        turn.let_waiter_in(turn.taken.load(Ordering::SeqCst));
    }
    turn.waiters.fetch_add(1, Ordering::SeqCst);
    ffi::PyEval_RestoreThread(ts);
    turn.waiters.fetch_sub(1, Ordering::SeqCst);
    turn.count_taken();
}

/// The thread state of the thread that initialised Python; used for set-up and finalisation.
pub struct MainThread {
    ts: *mut ffi::PyThreadState,
}

impl MainThread {
    /// Runs `f` holding the GIL in the main interpreter.
    pub fn with_gil<R>(&self, f: impl FnOnce(Gil<'_>) -> R) -> R {
        // SAFETY: `ts` is this thread's state, currently detached (GIL released).
        unsafe { ffi::PyEval_RestoreThread(self.ts) };
        let _release = Release;
        f(Gil(PhantomData))
    }

    /// The main interpreter.
    pub fn interp(&self) -> InterpId {
        // SAFETY: plain accessor, valid while Python is initialised.
        InterpId(unsafe { ffi::PyInterpreterState_Main() })
    }

    /// `Py_FinalizeEx` (atexit handlers, stdio flushed). Every other thread state and every
    /// sub-interpreter must be gone. Returns CPython's result (0 on success).
    pub fn finalize(self) -> i32 {
        // SAFETY: re-attach the main thread state, then finalise; `self` is consumed.
        unsafe {
            ffi::PyEval_RestoreThread(self.ts);
            ffi::Py_FinalizeEx()
        }
    }
}

/// Detaches the current thread state when dropped (also on unwinding).
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        // SAFETY: created only right after attaching a thread state on this thread.
        unsafe {
            ffi::PyEval_SaveThread();
        }
    }
}

/// An interpreter (main or sub-interpreter).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InterpId(*mut ffi::PyInterpreterState);

// SAFETY: an interpreter-state pointer is only an identity; it is used to create thread
// states, which CPython allows from any thread.
unsafe impl Send for InterpId {}
// SAFETY: as for Send: nothing is read through the pointer.
unsafe impl Sync for InterpId {}

/// A sub-interpreter and the thread state it was created with. That state is kept, detached,
/// until the interpreter is ended with it: CPython 3.11 cannot make a new thread state for an
/// interpreter whose states were all deleted (its embedded initial state is reused and found
/// already initialised).
pub struct SubInterpreter {
    pub interp: InterpId,
    ts: *mut ffi::PyThreadState,
    own_gil: bool,
    /// The turn of its GIL (the shared one, or its own).
    pub turn: Arc<GilTurn>,
}

// SAFETY: the thread state is only attached by `end` and `MainThread::finalize`, with the GIL
// held and every other state of the interpreter gone.
unsafe impl Send for SubInterpreter {}
// SAFETY: as for Send: shared references only read the interpreter pointer.
unsafe impl Sync for SubInterpreter {}

impl SubInterpreter {
    /// Ends the interpreter now (its worker thread states must be gone), from a thread holding
    /// the GIL in another interpreter, which it returns to. When the interpreter still runs
    /// threads of its own, it is left alone and handed back.
    /// `before` runs in the interpreter first (to release what Rust holds of it).
    pub fn end(self, _gil: Gil<'_>, before: impl FnOnce(Gil<'_>)) -> Result<(), SubInterpreter> {
        // SAFETY: the GIL is held (shared by all interpreters); we swap in this interpreter's
        // creation state, end it when it is the last state, and swap the caller's state back.
        unsafe {
            let prev = ffi::PyThreadState_Get();
            if self.own_gil {
                // Let go of the caller's GIL and take this interpreter's.
                ffi::PyEval_SaveThread();
                ffi::PyEval_RestoreThread(self.ts);
            } else {
                ffi::PyThreadState_Swap(self.ts);
            }
            before(Gil(PhantomData));
            // -1 when it raised (the traceback is printed to stderr, i.e. the log); ending
            // the interpreter goes on either way: threading's shutdown is only a courtesy to
            // its non-daemon threads.
            if ffi::PyRun_SimpleString(ADOPT_MAIN_THREAD.as_ptr()) != 0 {
                crate::warn!("a sub-interpreter's threading shutdown raised; ending it anyway");
            }
            let head = ffi::PyInterpreterState_ThreadHead(self.interp.0);
            let alone = head == self.ts && ffi::PyThreadState_Next(head).is_null();
            if alone {
                // Leaves no thread state current (an own GIL is destroyed with it).
                ffi::Py_EndInterpreter(self.ts);
            }
            if self.own_gil {
                if !alone {
                    ffi::PyEval_SaveThread();
                }
                ffi::PyEval_RestoreThread(prev);
            } else {
                ffi::PyThreadState_Swap(prev);
            }
            if alone {
                Ok(())
            } else {
                Err(self)
            }
        }
    }
}

/// One worker thread's state for one interpreter: made once, entered per request. It keeps
/// the thread's request context capsule of that interpreter, reused from request to request.
pub struct ThreadState {
    ts: *mut ffi::PyThreadState,
    /// A capsule over a [`HostSlot`] (owned reference), or NULL.
    ctx: Cell<*mut ffi::PyObject>,
    /// The turn of the interpreter's GIL.
    turn: Arc<GilTurn>,
}

impl ThreadState {
    /// A state in `interp`, whose GIL `turn` counts.
    pub fn new(interp: InterpId, turn: Arc<GilTurn>) -> Self {
        // SAFETY: PyThreadState_New needs no GIL; the state starts detached.
        let ts = unsafe { ffi::PyThreadState_New(interp.0) };
        assert!(!ts.is_null(), "PyThreadState_New failed");
        ThreadState {
            ts,
            ctx: Cell::new(ptr::null_mut()),
            turn,
        }
    }

    /// Runs `f` (a request) holding the GIL in this state's interpreter; a thread already
    /// waiting for that GIL gets it first.
    pub fn with_gil<R>(&self, f: impl FnOnce(Gil<'_>) -> R) -> R {
        /// Puts back the thread's previous turn, then releases the GIL.
        struct Leave(*const GilTurn);
        impl Drop for Leave {
            fn drop(&mut self) {
                TURN.with(|t| t.set(self.0));
                // SAFETY: made only right after attaching this thread's state.
                unsafe {
                    ffi::PyEval_SaveThread();
                }
            }
        }
        // SAFETY: the state belongs to this thread (ThreadState is !Send) and is detached.
        unsafe { attach(self.ts, &self.turn, true) };
        let _leave = Leave(TURN.with(|t| t.replace(Arc::as_ptr(&self.turn))));
        f(Gil(PhantomData))
    }

    /// The context object of a request served by `host`, passed as the first argument of the
    /// callbacks. The thread's capsule is reused when nothing but this state holds it (no
    /// object of an earlier request kept it); otherwise a new one is made, and the old one
    /// stays bound to its finished request. Call [`ThreadState::end_request`] after it.
    /// `gil` must be this state's.
    pub fn request_context<'py>(&self, gil: Gil<'py>, host: Arc<dyn Host>) -> PyResult<Obj<'py>> {
        let cap = self.ctx.get();
        // SAFETY: GIL held; `cap` is NULL or our owned reference to a live capsule.
        let reusable = !cap.is_null() && unsafe { ffi::Py_REFCNT(cap) } == 1;
        if !reusable {
            if !cap.is_null() {
                // SAFETY: we give up our reference; holders of the capsule keep it alive.
                unsafe { ffi::Py_DECREF(cap) };
                self.ctx.set(ptr::null_mut());
            }
            let slot = Box::into_raw(Box::new(HostSlot(Mutex::new(None))));
            // SAFETY: the capsule owns the box; its destructor frees it.
            let made = unsafe {
                ffi::PyCapsule_New(slot.cast(), CAPSULE_NAME.as_ptr(), Some(drop_host_capsule))
            };
            if made.is_null() {
                // SAFETY: the capsule was not made, so we still own the box.
                drop(unsafe { Box::from_raw(slot) });
                return Err(gil.fetch_err());
            }
            self.ctx.set(made);
        }
        let cap = self.ctx.get();
        // SAFETY: a capsule made above with a HostSlot.
        let slot =
            unsafe { &*ffi::PyCapsule_GetPointer(cap, CAPSULE_NAME.as_ptr()).cast::<HostSlot>() };
        *lock(&slot.0) = Some(host);
        CURRENT_CTX.with(|c| c.set(cap));
        Ok(gil.borrowed(cap))
    }

    /// The request is over: its context lets go of it (a callback made later, through an
    /// object the app kept, finds no request).
    pub fn end_request(&self, _gil: Gil<'_>) {
        CURRENT_CTX.with(|c| c.set(ptr::null_mut()));
        let cap = self.ctx.get();
        if cap.is_null() {
            return;
        }
        // SAFETY: GIL held; a capsule made by request_context.
        let slot =
            unsafe { &*ffi::PyCapsule_GetPointer(cap, CAPSULE_NAME.as_ptr()).cast::<HostSlot>() };
        let host = lock(&slot.0).take();
        drop(host);
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // SAFETY: attach, release our capsule, clear and delete our own detached state;
        // DeleteCurrent releases the GIL.
        unsafe {
            ffi::PyEval_RestoreThread(self.ts);
            let cap = self.ctx.replace(ptr::null_mut());
            if !cap.is_null() {
                ffi::Py_DECREF(cap);
            }
            ffi::PyThreadState_Clear(self.ts);
            ffi::PyThreadState_DeleteCurrent();
        }
    }
}

/// What a request context capsule points to: the request while it is served.
struct HostSlot(Mutex<Option<Arc<dyn Host>>>);

thread_local! {
    /// Where start_response makes a response head (reused from one request to the next).
    static HEAD_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// The context capsule of the request this thread runs (null between requests): where
    /// `_gw_print` sends what the app prints.
    static CURRENT_CTX: std::cell::Cell<*mut ffi::PyObject> =
        const { std::cell::Cell::new(ptr::null_mut()) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Proof that the current thread holds the GIL, for the lifetime `'py`.
#[derive(Clone, Copy)]
pub struct Gil<'py>(PhantomData<&'py *mut ()>);

/// An owned reference to a Python object, valid while the GIL is held.
pub struct Obj<'py> {
    ptr: NonNull<ffi::PyObject>,
    _gil: PhantomData<Gil<'py>>,
}

impl Drop for Obj<'_> {
    fn drop(&mut self) {
        // SAFETY: we own one reference and hold the GIL ('py).
        unsafe { ffi::Py_DECREF(self.ptr.as_ptr()) }
    }
}

impl Clone for Obj<'_> {
    fn clone(&self) -> Self {
        // SAFETY: GIL held; a new strong reference.
        unsafe { ffi::Py_INCREF(self.ptr.as_ptr()) };
        Obj {
            ptr: self.ptr,
            _gil: PhantomData,
        }
    }
}

/// A reference kept across GIL sessions (per-interpreter caches). It must be bound only with
/// a [`Gil`] taken in the interpreter that made it: the type does not check this (a `Gil` does
/// not name its interpreter); each interpreter's objects are kept in that interpreter's own
/// state (`WsgiState`), and bound only by the thread states of that interpreter. Released
/// explicitly ([`PyObj::release`], before its interpreter ends), never by `Drop`.
pub struct PyObj(AtomicPtr<ffi::PyObject>);

// SAFETY: the pointer is only dereferenced through `bind` and `release`, which require a Gil.
unsafe impl Send for PyObj {}
// SAFETY: as for Send; the pointer itself is an atomic.
unsafe impl Sync for PyObj {}

impl PyObj {
    pub fn new(obj: Obj<'_>) -> Self {
        let ptr = obj.ptr;
        std::mem::forget(obj);
        PyObj(AtomicPtr::new(ptr.as_ptr()))
    }

    pub fn bind<'py>(&self, _gil: Gil<'py>) -> Obj<'py> {
        let ptr = NonNull::new(self.0.load(Ordering::Acquire)).expect("PyObj used after release");
        // SAFETY: GIL held; a new strong reference to a live object.
        unsafe { ffi::Py_INCREF(ptr.as_ptr()) };
        Obj {
            ptr,
            _gil: PhantomData,
        }
    }

    /// Drops the reference (with the GIL of the interpreter that made it).
    pub fn release(&self, _gil: Gil<'_>) {
        let ptr = self.0.swap(ptr::null_mut(), Ordering::AcqRel);
        if !ptr.is_null() {
            // SAFETY: GIL held; we owned one reference.
            unsafe { ffi::Py_DECREF(ptr) }
        }
    }
}

impl<'py> Gil<'py> {
    /// Wraps a new reference returned by CPython, fetching the exception on NULL.
    fn own(self, ptr: *mut ffi::PyObject) -> PyResult<Obj<'py>> {
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Obj {
                ptr,
                _gil: PhantomData,
            }),
            None => Err(self.fetch_err()),
        }
    }

    /// Wraps a new reference returned by CPython; None on NULL, the exception left set (for
    /// code called from Python, which returns NULL in turn).
    fn own_raised(self, ptr: *mut ffi::PyObject) -> Option<Obj<'py>> {
        NonNull::new(ptr).map(|ptr| Obj {
            ptr,
            _gil: PhantomData,
        })
    }

    fn borrowed(self, ptr: *mut ffi::PyObject) -> Obj<'py> {
        // SAFETY: `ptr` is a valid borrowed reference; take a strong one.
        unsafe { ffi::Py_INCREF(ptr) };
        Obj {
            ptr: NonNull::new(ptr).expect("borrowed reference is not NULL"),
            _gil: PhantomData,
        }
    }

    /// Takes the current exception (or describes its absence) as text and clears it.
    #[allow(deprecated)] // PyErr_Fetch is the call that exists on every supported version.
    pub fn fetch_err(self) -> PyErr {
        // SAFETY: GIL held; reading the error indicator.
        if unsafe { ffi::PyErr_Occurred() }.is_null() {
            return PyErr {
                text: "error without a Python exception set".into(),
            };
        }
        let v = take_exception(self);
        let formatted = self.import("traceback").and_then(|m| {
            // SAFETY: GIL held; the type of a live object.
            let t = self.borrowed(unsafe { ffi::Py_TYPE(v.ptr.as_ptr()) }.cast());
            let tb = v.getattr("__traceback__")?;
            let lines = m.getattr("format_exception")?.call(&[&t, &v, &tb])?;
            self.str("")?.getattr("join")?.call(&[&lines])
        });
        let text = match formatted {
            Ok(s) => s.to_string_lossy(),
            Err(_) => v.to_string_lossy(),
        };
        PyErr { text }
    }

    pub fn none(self) -> Obj<'py> {
        // SAFETY: Py_None is immortal/valid while initialised.
        self.borrowed(unsafe { ffi::Py_None() })
    }

    pub fn bool(self, b: bool) -> Obj<'py> {
        // SAFETY: Py_True/Py_False are valid while initialised.
        self.borrowed(unsafe {
            if b {
                ffi::Py_True()
            } else {
                ffi::Py_False()
            }
        })
    }

    pub fn int(self, v: i64) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held.
        self.own(unsafe { ffi::PyLong_FromLongLong(v) })
    }

    /// A `str` from UTF-8 text.
    pub fn str(self, s: &str) -> PyResult<Obj<'py>> {
        // SAFETY: pointer and length describe `s`.
        self.own(unsafe {
            ffi::PyUnicode_FromStringAndSize(s.as_ptr().cast(), s.len() as ffi::Py_ssize_t)
        })
    }

    /// A `str` whose code points are the bytes (PEP 3333's native strings).
    pub fn latin1(self, b: &[u8]) -> PyResult<Obj<'py>> {
        // SAFETY: pointer and length describe `b`; errors pointer may be NULL.
        self.own(unsafe {
            ffi::PyUnicode_DecodeLatin1(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t, ptr::null())
        })
    }

    pub fn bytes(self, b: &[u8]) -> PyResult<Obj<'py>> {
        // SAFETY: pointer and length describe `b`.
        self.own(unsafe {
            ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t)
        })
    }

    pub fn dict(self) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held.
        self.own(unsafe { ffi::PyDict_New() })
    }

    pub fn tuple(self, items: &[&Obj<'py>]) -> PyResult<Obj<'py>> {
        // SAFETY: PyTuple_SetItem steals a reference, so each item is incref'd first.
        unsafe {
            let t = self.own(ffi::PyTuple_New(items.len() as ffi::Py_ssize_t))?;
            for (i, item) in items.iter().enumerate() {
                ffi::Py_INCREF(item.ptr.as_ptr());
                ffi::PyTuple_SetItem(t.ptr.as_ptr(), i as ffi::Py_ssize_t, item.ptr.as_ptr());
            }
            Ok(t)
        }
    }

    pub fn list(self, items: &[Obj<'py>]) -> PyResult<Obj<'py>> {
        // SAFETY: PyList_SetItem steals a reference, so each item is incref'd first.
        unsafe {
            let l = self.own(ffi::PyList_New(items.len() as ffi::Py_ssize_t))?;
            for (i, item) in items.iter().enumerate() {
                ffi::Py_INCREF(item.ptr.as_ptr());
                ffi::PyList_SetItem(l.ptr.as_ptr(), i as ffi::Py_ssize_t, item.ptr.as_ptr());
            }
            Ok(l)
        }
    }

    pub fn import(self, name: &str) -> PyResult<Obj<'py>> {
        let name = CString::new(name).expect("module name without NUL");
        // SAFETY: GIL held; valid C string.
        self.own(unsafe { ffi::PyImport_ImportModule(name.as_ptr()) })
    }

    /// Executes `source` as a new module called `name` (not placed in `sys.modules`) and
    /// returns the module's dict. `compiled`: the module's code, `marshal.dumps` of it by a
    /// Python of this version, used instead of compiling `source` (the compiler's memory stays
    /// with the process's heap); when empty or unreadable, `source` is compiled.
    pub fn exec_module(
        self,
        name: &str,
        filename: &str,
        source: &str,
        compiled: &[u8],
    ) -> PyResult<Obj<'py>> {
        let cname = CString::new(name).expect("no NUL");
        // SAFETY: GIL held; the module dict is borrowed from the module we own; marshal reads
        // `compiled` within its length.
        unsafe {
            let module = self.own(ffi::PyModule_New(cname.as_ptr()))?;
            let dict = self.borrowed(ffi::PyModule_GetDict(module.ptr.as_ptr()));
            let builtins = self.borrowed(ffi::PyEval_GetBuiltins());
            dict.set_item(&self.str("__builtins__")?, &builtins)?;
            let mut loaded = None;
            if !compiled.is_empty() {
                match self.own(ffi::PyMarshal_ReadObjectFromString(
                    compiled.as_ptr().cast(),
                    compiled.len() as ffi::Py_ssize_t,
                )) {
                    Ok(code) if ffi::PyCode_Check(code.ptr.as_ptr()) != 0 => loaded = Some(code),
                    _ => ffi::PyErr_Clear(),
                }
            }
            let code = match loaded {
                Some(code) => code,
                None => {
                    let cfile = CString::new(filename).expect("no NUL");
                    let csrc = CString::new(source).expect("no NUL");
                    self.own(ffi::Py_CompileString(
                        csrc.as_ptr(),
                        cfile.as_ptr(),
                        ffi::Py_file_input,
                    ))?
                }
            };
            self.own(ffi::PyEval_EvalCode(
                code.ptr.as_ptr(),
                dict.ptr.as_ptr(),
                dict.ptr.as_ptr(),
            ))?;
            Ok(dict)
        }
    }

    /// Creates a sub-interpreter, runs `setup` in it, and returns to the calling thread state.
    /// Without `own_gil` it shares this GIL (mod_wsgi's application groups: isolation of
    /// modules and `sys`, not parallelism); with it (Python 3.12+), it gets a GIL of its own
    /// and runs Python at the same time as the other interpreters, with its own allocator and
    /// only extension modules that support several interpreters.
    pub fn new_interpreter<R>(
        self,
        own_gil: bool,
        setup: impl FnOnce(Gil<'_>) -> R,
    ) -> Result<(SubInterpreter, R), String> {
        // SAFETY: we hold the GIL with a current thread state (`prev`). Both calls make a new
        // interpreter and thread state and make it current (holding the new interpreter's
        // GIL); afterwards we swap `prev` back in, the way CPython's own `_interpreters`
        // module does: PyThreadState_Swap lets go of the new interpreter's GIL and takes
        // back `prev`'s (the same GIL when it is shared).
        unsafe {
            let prev = ffi::PyThreadState_Get();
            let ts = if own_gil {
                new_own_gil_interpreter()?
            } else {
                ffi::Py_NewInterpreter()
            };
            if ts.is_null() {
                ffi::PyThreadState_Swap(prev);
                return Err("Py_NewInterpreter failed to create a sub-interpreter".into());
            }
            let interp = InterpId(ffi::PyThreadState_GetInterpreter(ts));
            let r = setup(Gil(PhantomData));
            ffi::PyThreadState_Swap(prev);
            Ok((
                SubInterpreter {
                    interp,
                    ts,
                    own_gil,
                    turn: if own_gil {
                        Arc::default()
                    } else {
                        GilTurn::shared()
                    },
                },
                r,
            ))
        }
    }

    /// Raises `exc` (an exception class) asynchronously in the thread `ident` of this
    /// interpreter, at its next bytecode; `None` clears a pending one. Returns whether a thread
    /// was found.
    pub fn set_async_exc(self, ident: u64, exc: Option<&Obj<'py>>) -> bool {
        let exc = exc.map_or(ptr::null_mut(), |e| e.ptr.as_ptr());
        // SAFETY: GIL held; `exc` is a live object (the call takes its own reference) or NULL.
        let found = unsafe { ffi::PyThreadState_SetAsyncExc(ident as std::ffi::c_long, exc) };
        found > 0
    }

    /// Releases the GIL while `f` runs (it must not touch Python), then takes it back.
    pub fn allow_threads<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(*mut ffi::PyThreadState, *const GilTurn);
        impl Drop for Restore {
            fn drop(&mut self) {
                // SAFETY: re-attach the state detached below, also when `f` unwinds. A turn
                // is that of the ThreadState whose `with_gil` this runs within, alive until
                // that call returns.
                unsafe {
                    match self.1.as_ref() {
                        Some(turn) => attach(self.0, turn, false),
                        None => ffi::PyEval_RestoreThread(self.0),
                    }
                }
            }
        }
        // SAFETY: the GIL is held (Gil token); SaveThread detaches this thread's state.
        let _restore = Restore(unsafe { ffi::PyEval_SaveThread() }, TURN.with(Cell::get));
        f()
    }

    /// Puts the gateway's callbacks (`_gw_send`, `_gw_recv`, `_gw_log`, `_gw_settle`,
    /// `_gw_sendfile`, `_gw_print`, `_gw_ext_enter`, `_gw_ext_leave`) into `dict` (a module
    /// namespace of this interpreter).
    pub fn install_callbacks(self, dict: &Obj<'py>) -> PyResult<()> {
        for def in CALLBACKS.0.iter() {
            // SAFETY: `def` is 'static; the function object is made in this interpreter.
            let func = self.own(unsafe {
                ffi::PyCFunction_NewEx(
                    ptr::from_ref(def).cast_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            })?;
            // SAFETY: ml_name is a static C string.
            let name = unsafe { CStr::from_ptr(def.ml_name) }
                .to_str()
                .expect("ascii");
            dict.set_item(&self.str(name)?, &func)?;
        }
        Ok(())
    }
}

/// `Py_NewInterpreterFromConfig` with a GIL of its own: its own object allocator (required by
/// an own GIL), only multi-phase-init extension modules, threads (daemon ones too, like the
/// shared-GIL groups), `subprocess` but no `os.fork()`. Returns its thread state, current; on
/// failure the calling thread state is current again.
#[cfg(Py_3_12)]
unsafe fn new_own_gil_interpreter() -> Result<*mut ffi::PyThreadState, String> {
    let prev = ffi::PyThreadState_Get();
    let config = ffi::PyInterpreterConfig {
        use_main_obmalloc: 0,
        allow_fork: 0,
        allow_exec: 1,
        allow_threads: 1,
        allow_daemon_threads: 1,
        check_multi_interp_extensions: 1,
        gil: ffi::PyInterpreterConfig_OWN_GIL,
    };
    let mut ts: *mut ffi::PyThreadState = ptr::null_mut();
    let status = ffi::Py_NewInterpreterFromConfig(&mut ts, &config);
    if let Some(err) = status_error(&status) {
        // A failed creation leaves the caller's state current on 3.12 and 3.13; make sure.
        if ffi::PyThreadState_Get() != prev {
            ffi::PyThreadState_Swap(prev);
        }
        return Err(format!(
            "creating a sub-interpreter with its own GIL failed: {err}"
        ));
    }
    Ok(ts)
}

#[cfg(not(Py_3_12))]
unsafe fn new_own_gil_interpreter() -> Result<*mut ffi::PyThreadState, String> {
    Err("own-gil needs Python 3.12 or later".into())
}

impl<'py> Obj<'py> {
    fn gil(&self) -> Gil<'py> {
        Gil(PhantomData)
    }

    pub fn getattr(&self, name: &str) -> PyResult<Obj<'py>> {
        let name = CString::new(name).expect("no NUL");
        // SAFETY: GIL held; valid object and C string.
        self.gil()
            .own(unsafe { ffi::PyObject_GetAttrString(self.ptr.as_ptr(), name.as_ptr()) })
    }

    /// `getattr(self, key)` with a str object for the name.
    pub fn getattr_key(&self, key: &Obj<'py>) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held; valid objects.
        self.gil()
            .own(unsafe { ffi::PyObject_GetAttr(self.ptr.as_ptr(), key.ptr.as_ptr()) })
    }

    /// `setattr(self, key, value)` with a str object for the name.
    pub fn setattr_key(&self, key: &Obj<'py>, value: &Obj<'py>) -> PyResult<()> {
        // SAFETY: GIL held; valid objects.
        let rc = unsafe {
            ffi::PyObject_SetAttr(self.ptr.as_ptr(), key.ptr.as_ptr(), value.ptr.as_ptr())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.gil().fetch_err())
        }
    }

    /// Calls the object with positional arguments.
    pub fn call(&self, args: &[&Obj<'py>]) -> PyResult<Obj<'py>> {
        let got = self.vectorcall(args);
        self.gil().own(got)
    }

    /// `self(*args)`: a new reference, or NULL with the exception set.
    fn vectorcall(&self, args: &[&Obj<'py>]) -> *mut ffi::PyObject {
        let mut few = [ptr::null_mut(); 8];
        let many: Vec<*mut ffi::PyObject>;
        let ptrs = if args.len() <= few.len() {
            for (p, a) in few.iter_mut().zip(args) {
                *p = a.ptr.as_ptr();
            }
            &few[..args.len()]
        } else {
            many = args.iter().map(|a| a.ptr.as_ptr()).collect();
            &many[..]
        };
        // SAFETY: GIL held; `ptrs` holds borrowed references kept alive by `args`.
        unsafe {
            ffi::PyObject_Vectorcall(
                self.ptr.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                ptr::null_mut(),
            )
        }
    }

    /// `self[key] = value` (dicts take the fast path).
    pub fn set_item(&self, key: &Obj<'py>, value: &Obj<'py>) -> PyResult<()> {
        // SAFETY: GIL held; valid objects.
        let rc = unsafe {
            if ffi::PyDict_Check(self.ptr.as_ptr()) != 0 {
                ffi::PyDict_SetItem(self.ptr.as_ptr(), key.ptr.as_ptr(), value.ptr.as_ptr())
            } else {
                ffi::PyObject_SetItem(self.ptr.as_ptr(), key.ptr.as_ptr(), value.ptr.as_ptr())
            }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.gil().fetch_err())
        }
    }

    /// `self[key]` for a dict, `None` when absent.
    pub fn dict_get(&self, key: &str) -> PyResult<Option<Obj<'py>>> {
        let key = self.gil().str(key)?;
        // SAFETY: GIL held; PyDict_GetItemWithError returns a borrowed reference.
        unsafe {
            let v = ffi::PyDict_GetItemWithError(self.ptr.as_ptr(), key.ptr.as_ptr());
            if v.is_null() {
                if ffi::PyErr_Occurred().is_null() {
                    return Ok(None);
                }
                return Err(self.gil().fetch_err());
            }
            Ok(Some(self.gil().borrowed(v)))
        }
    }

    /// `self.setdefault(key, value)` for a dict: the value already under `key`, or `value`
    /// once inserted (one lookup either way).
    pub fn dict_set_default(&self, key: &Obj<'py>, value: &Obj<'py>) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held; valid objects (a non-dict gets an exception, not a crash);
        // PyDict_SetDefault returns a borrowed reference.
        unsafe {
            let v = ffi::PyDict_SetDefault(self.ptr.as_ptr(), key.ptr.as_ptr(), value.ptr.as_ptr());
            if v.is_null() {
                return Err(self.gil().fetch_err());
            }
            Ok(self.gil().borrowed(v))
        }
    }

    /// Whether `self` and `other` are the same object (`is`).
    pub fn is(&self, other: &Obj<'py>) -> bool {
        self.ptr == other.ptr
    }

    /// `self + other` for two strs.
    pub fn str_concat(&self, other: &Obj<'py>) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held; valid objects (non-strs get an exception).
        self.gil()
            .own(unsafe { ffi::PyUnicode_Concat(self.ptr.as_ptr(), other.ptr.as_ptr()) })
    }

    pub fn dict_copy(&self) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held; valid dict.
        self.gil()
            .own(unsafe { ffi::PyDict_Copy(self.ptr.as_ptr()) })
    }

    /// Whether this object's type is exactly `ty` (no subclass).
    pub fn is_exactly(&self, ty: &Obj<'py>) -> bool {
        // SAFETY: GIL held; reading an object's type pointer.
        unsafe { ffi::Py_TYPE(self.ptr.as_ptr()).cast::<ffi::PyObject>() == ty.ptr.as_ptr() }
    }

    /// Python truthiness (`bool(self)`); an exception counts as false.
    pub fn is_true(&self) -> bool {
        // SAFETY: GIL held; PyObject_IsTrue returns -1 with an exception set on failure.
        match unsafe { ffi::PyObject_IsTrue(self.ptr.as_ptr()) } {
            1 => true,
            0 => false,
            _ => {
                // SAFETY: clear the exception raised by __bool__.
                unsafe { ffi::PyErr_Clear() };
                false
            }
        }
    }

    /// `str(self)` as Rust text (lossy).
    pub fn to_string_lossy(&self) -> String {
        // SAFETY: GIL held; PyObject_Str returns a new reference or NULL.
        let s = match self
            .gil()
            .own(unsafe { ffi::PyObject_Str(self.ptr.as_ptr()) })
        {
            Ok(s) => s,
            Err(e) => return format!("<unprintable: {e}>"),
        };
        let mut len: ffi::Py_ssize_t = 0;
        // SAFETY: `s` is a str; the UTF-8 buffer lives as long as `s`.
        unsafe {
            let p = ffi::PyUnicode_AsUTF8AndSize(s.ptr.as_ptr(), &mut len);
            if p.is_null() {
                ffi::PyErr_Clear();
                return "<not UTF-8>".into();
            }
            String::from_utf8_lossy(std::slice::from_raw_parts(p.cast(), len as usize)).into_owned()
        }
    }
}

fn bytes_of<'a>(p: *mut ffi::PyObject) -> Option<&'a [u8]> {
    // SAFETY: checked to be bytes; the buffer lives as long as the object (held by caller).
    unsafe {
        if ffi::PyBytes_Check(p) == 0 {
            return None;
        }
        let data = ffi::PyBytes_AsString(p);
        let len = ffi::PyBytes_Size(p);
        Some(std::slice::from_raw_parts(data.cast(), len as usize))
    }
}

/// What Python calls back into, for one request.
pub trait Host: Send + Sync {
    /// Sends `head` (may be empty) then `body`, and ends the response when `done`; false when
    /// the client is gone.
    fn send(&self, gil: Gil<'_>, head: &[u8], body: &[u8], done: bool) -> bool;
    /// Hands up to `max` body bytes (any amount when `max` is 0) to `sink`; with `exact`,
    /// `max` bytes unless the body ends first.
    fn recv(&self, gil: Gil<'_>, max: usize, exact: bool, sink: &mut dyn BodySink) -> Recv;
    /// Body bytes not yet handed to the app (`usize::MAX` when the body's length is not known).
    fn body_left(&self) -> usize;
    /// A line (or lines) for the log, from `wsgi.errors` or the gateway's Python side;
    /// `error`: the application failed (an exception and its traceback).
    fn log(&self, text: &str, error: bool);
    /// The request's outcome is known (its response is whole, or failed): no interrupt is
    /// raised in its thread from now on, and one sent but not yet raised is withdrawn.
    fn settle(&self, gil: Gil<'_>);
    /// Streams `count` bytes (to the end when `None`) of `file` from `offset`; Ok(false) when
    /// the client is gone.
    fn sendfile(
        &self,
        gil: Gil<'_>,
        file: File,
        offset: u64,
        count: Option<u64>,
    ) -> Result<bool, String>;
}

/// How a body read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// The sink got bytes (or the end).
    Done,
    /// The client is gone.
    Gone,
    /// No body byte came within this long.
    TimedOut(std::time::Duration),
}

const CAPSULE_NAME: &CStr = c"wsgi_gateway.host";

unsafe extern "C" fn drop_host_capsule(cap: *mut ffi::PyObject) {
    // SAFETY: the capsule was made by request_context with a Box<HostSlot>.
    let p = ffi::PyCapsule_GetPointer(cap, CAPSULE_NAME.as_ptr());
    if !p.is_null() {
        drop(Box::from_raw(p.cast::<HostSlot>()));
    }
}

type Fast = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *mut *mut ffi::PyObject,
    ffi::Py_ssize_t,
) -> *mut ffi::PyObject;

const fn method(name: &'static CStr, f: Fast) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: f },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: ptr::null(),
    }
}

struct Defs([ffi::PyMethodDef; 8]);
// SAFETY: plain constant C data, never mutated.
unsafe impl Sync for Defs {}

static CALLBACKS_DEFS: Defs = Defs([
    method(c"_gw_send", gw_send),
    method(c"_gw_recv", gw_recv),
    method(c"_gw_log", gw_log),
    method(c"_gw_settle", gw_settle),
    method(c"_gw_sendfile", gw_sendfile),
    method(c"_gw_print", gw_print),
    method(c"_gw_ext_enter", gw_ext_enter),
    method(c"_gw_ext_leave", gw_ext_leave),
]);
static CALLBACKS: &Defs = &CALLBACKS_DEFS;

fn raise(kind: *mut ffi::PyObject, msg: &str) -> *mut ffi::PyObject {
    let msg = CString::new(msg.replace('\0', " ")).expect("no NUL");
    // SAFETY: GIL held inside a callback; kind is a builtin exception type.
    unsafe { ffi::PyErr_SetString(kind, msg.as_ptr()) };
    ptr::null_mut()
}

/// Runs a callback body: checks arity, finds the host, turns panics into RuntimeError.
fn callback(
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    want: usize,
    body: impl FnOnce(Gil<'_>, &dyn Host, &[*mut ffi::PyObject]) -> *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython passes `nargs` valid borrowed references; we hold the GIL.
    unsafe {
        if nargs as usize != want {
            return raise(ffi::PyExc_TypeError, &format!("expected {want} arguments"));
        }
        let args = std::slice::from_raw_parts(args, want);
        let slot = ffi::PyCapsule_GetPointer(args[0], CAPSULE_NAME.as_ptr());
        if slot.is_null() {
            return ptr::null_mut();
        }
        let slot: &HostSlot = &*slot.cast::<HostSlot>();
        // Taken out of the slot: the callback may wait with the GIL released.
        let Some(host) = lock(&slot.0).clone() else {
            return raise(ffi::PyExc_ValueError, "this request is over");
        };
        let gil = Gil(PhantomData);
        match catch_unwind(AssertUnwindSafe(|| body(gil, host.as_ref(), &args[1..]))) {
            Ok(r) => r,
            Err(_) => raise(
                ffi::PyExc_RuntimeError,
                "internal error in the gateway (panic)",
            ),
        }
    }
}

fn ret_bool(gil: Gil<'_>, b: bool) -> *mut ffi::PyObject {
    let o = gil.bool(b);
    let p = o.ptr.as_ptr();
    std::mem::forget(o);
    p
}

fn ret(obj: PyResult<Obj<'_>>) -> *mut ffi::PyObject {
    match obj {
        Ok(o) => {
            let p = o.ptr.as_ptr();
            std::mem::forget(o);
            p
        }
        Err(_) => ptr::null_mut(),
    }
}

fn arg_int(p: *mut ffi::PyObject) -> Option<i64> {
    // SAFETY: GIL held; PyLong_AsLongLong sets an exception on failure.
    let v = unsafe { ffi::PyLong_AsLongLong(p) };
    // SAFETY: checking the error indicator.
    (v != -1 || unsafe { ffi::PyErr_Occurred().is_null() }).then_some(v)
}

unsafe extern "C" fn gw_send(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    callback(args, nargs, 4, |gil, host, a| {
        let (Some(head), Some(body)) = (bytes_of(a[0]), bytes_of(a[1])) else {
            // SAFETY: builtin exception type.
            return raise(unsafe { ffi::PyExc_TypeError }, "_gw_send takes bytes");
        };
        let done = gil.borrowed(a[2]).is_true();
        ret_bool(gil, host.send(gil, head, body, done))
    })
}

unsafe extern "C" fn gw_recv(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    callback(args, nargs, 3, |gil, host, a| {
        let Some(max) = arg_int(a[0]) else {
            return ptr::null_mut();
        };
        let exact = gil.borrowed(a[1]).is_true();
        let max = max.max(0) as usize;
        let mut sink = BytesSink {
            gil,
            // Exact reads fill one object of the size asked for (no larger than the rest of
            // the body); others one of the size of the piece handed over.
            size: if exact {
                match host.body_left() {
                    usize::MAX => max.min(EXACT_UNKNOWN),
                    left => left.min(max),
                }
            } else {
                0
            },
            buf: None,
            filled: 0,
            got: None,
        };
        match host.recv(gil, max, exact, &mut sink) {
            Recv::Done => ret(sink.finish()),
            Recv::Gone => ret(Ok(gil.none())),
            Recv::TimedOut(after) => raise(
                // SAFETY: builtin exception type.
                unsafe { ffi::PyExc_TimeoutError },
                &format!(
                    "request body: no data for {:.1}s (body-timeout)",
                    after.as_secs_f64()
                ),
            ),
        }
    })
}

/// The most an exact read of a body of unknown length allocates ahead; it grows as bytes come.
const EXACT_UNKNOWN: usize = 1 << 20;

/// A body read's result, built in one bytes object: bytes handed over are copied into it, and
/// the socket may be read straight into it.
struct BytesSink<'py> {
    gil: Gil<'py>,
    /// The size to allocate at first (0: as much as the first piece needs).
    size: usize,
    /// The bytes object being filled, its size, and how much is filled.
    buf: Option<(Obj<'py>, usize)>,
    filled: usize,
    /// A failure to allocate or resize.
    got: Option<PyResult<Obj<'py>>>,
}

impl<'py> BytesSink<'py> {
    /// Makes sure the bytes object has room for `n` more bytes (allocating or growing it).
    fn reserve(&mut self, n: usize) -> Option<()> {
        let need = self.filled + n;
        match self.buf.take() {
            Some((obj, len)) if len >= need => self.buf = Some((obj, len)),
            Some((obj, len)) => {
                // Grown by half at least: a long read in many pieces is not quadratic.
                let to = need.max(len + len / 2);
                let grown = self.resize(obj, to)?;
                self.buf = Some((grown, to));
            }
            None => {
                let len = need.max(self.size);
                // SAFETY: a new bytes object of `len` uninitialised bytes; it is filled (or
                // shrunk to what was filled) before Python sees it.
                let obj = self.gil.own(unsafe {
                    ffi::PyBytes_FromStringAndSize(ptr::null(), len as ffi::Py_ssize_t)
                });
                match obj {
                    Ok(obj) => self.buf = Some((obj, len)),
                    Err(e) => {
                        self.got = Some(Err(e));
                        return None;
                    }
                }
            }
        }
        Some(())
    }

    /// `obj` resized to `len` bytes (kept up to the shorter of the two lengths).
    fn resize(&mut self, obj: Obj<'py>, len: usize) -> Option<Obj<'py>> {
        let mut p = obj.ptr.as_ptr();
        std::mem::forget(obj);
        // SAFETY: `p` is a bytes object with refcount 1 that no Python code has seen (the
        // condition for resizing it); on failure it is freed and `p` set to NULL.
        let rc = unsafe { _PyBytes_Resize(&mut p, len as ffi::Py_ssize_t) };
        if rc == 0 {
            self.gil.own(p).ok()
        } else {
            self.got = Some(Err(self.gil.fetch_err()));
            None
        }
    }

    /// The bytes read (empty at the end of the body).
    fn finish(mut self) -> PyResult<Obj<'py>> {
        if let Some(got) = self.got.take() {
            return got;
        }
        match self.buf.take() {
            None => self.gil.bytes(b""),
            Some((obj, len)) if len == self.filled => Ok(obj),
            Some((obj, _)) => {
                let filled = self.filled;
                match self.resize(obj, filled) {
                    Some(obj) => Ok(obj),
                    None => self.got.take().unwrap_or_else(|| self.gil.bytes(b"")),
                }
            }
        }
    }
}

impl BodySink for BytesSink<'_> {
    fn put(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(room) = self.room(data.len()) {
            room[..data.len()].copy_from_slice(data);
            self.commit(data.len());
        }
    }

    fn room(&mut self, n: usize) -> Option<&mut [u8]> {
        if self.got.is_some() {
            return None;
        }
        self.reserve(n)?;
        let (obj, len) = self.buf.as_ref()?;
        // SAFETY: the object is a bytes object of `len` bytes that only this sink holds (no
        // Python code has seen it), so writing into its buffer is allowed; the slice lives no
        // longer than the sink's borrow.
        let all = unsafe {
            std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(obj.ptr.as_ptr()).cast(), *len)
        };
        Some(&mut all[self.filled..self.filled + n])
    }

    fn commit(&mut self, n: usize) {
        self.filled += n;
    }

    fn filled(&self) -> usize {
        self.filled
    }
}

unsafe extern "C" fn gw_log(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    callback(args, nargs, 3, |gil, host, a| {
        let text = gil.borrowed(a[0]).to_string_lossy();
        host.log(&text, gil.borrowed(a[1]).is_true());
        ret(Ok(gil.none()))
    })
}

unsafe extern "C" fn gw_settle(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    callback(args, nargs, 1, |gil, host, _| {
        host.settle(gil);
        ret(Ok(gil.none()))
    })
}

/// The text of an exact `str` (its UTF-8), or None (with no exception set).
fn str_of<'a>(p: *mut ffi::PyObject) -> Option<&'a str> {
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: GIL held; `p` is a valid object kept alive by the caller for 'a; the UTF-8
    // buffer of a str lives as long as the str. CPython encodes it strictly: a str it can
    // encode (no lone surrogate) gives valid UTF-8, so it is not checked again.
    unsafe {
        if ffi::PyUnicode_CheckExact(p) == 0 {
            return None;
        }
        let data = ffi::PyUnicode_AsUTF8AndSize(p, &mut len);
        if data.is_null() {
            // Lone surrogates: not latin-1 either.
            ffi::PyErr_Clear();
            return None;
        }
        Some(std::str::from_utf8_unchecked(std::slice::from_raw_parts(
            data.cast(),
            len as usize,
        )))
    }
}

/// The arguments of a callback that takes no request context: exactly `want` borrowed
/// references, or a TypeError raised (the `Err` is the NULL to return).
fn plain_args<'a>(
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    want: usize,
) -> Result<&'a [*mut ffi::PyObject], *mut ffi::PyObject> {
    if nargs as usize != want {
        // SAFETY: builtin exception type.
        return Err(raise(
            unsafe { ffi::PyExc_TypeError },
            &format!("expected {want} arguments"),
        ));
    }
    // SAFETY: CPython passes `nargs` valid borrowed references, alive for the call.
    Ok(unsafe { std::slice::from_raw_parts(args, want) })
}

/// `_gw_print(text)`: a line the interpreter wrote to sys.stderr (or sys.stdout), for the
/// log: with the context of the request this thread runs, if any.
unsafe extern "C" fn gw_print(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    let a = match plain_args(args, nargs, 1) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let gil = Gil(PhantomData);
    let text = gil.borrowed(a[0]).to_string_lossy();
    let cap = CURRENT_CTX.with(|c| c.get());
    // SAFETY: a non-null CURRENT_CTX is this thread's live capsule (its thread state owns a
    // reference until end_request clears CURRENT_CTX), made by request_context.
    let host = (!cap.is_null())
        .then(|| unsafe { ffi::PyCapsule_GetPointer(cap, CAPSULE_NAME.as_ptr()) })
        .filter(|p| !p.is_null())
        .and_then(|p| lock(&unsafe { &*p.cast::<HostSlot>() }.0).clone());
    match host {
        Some(host) => host.log(&text, false),
        None => crate::warn!("{text}"),
    }
    ret(Ok(gil.none()))
}

unsafe extern "C" fn gw_sendfile(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    callback(args, nargs, 4, |gil, host, a| {
        let (Some(fd), Some(offset), Some(count)) = (arg_int(a[0]), arg_int(a[1]), arg_int(a[2]))
        else {
            return ptr::null_mut();
        };
        if fd < 0 || offset < 0 {
            // SAFETY: builtin exception type.
            return raise(
                unsafe { ffi::PyExc_ValueError },
                "bad file descriptor or offset",
            );
        }
        // SAFETY: the Python side passes a descriptor it duplicated for us (os.dup): we own it.
        let file = unsafe { File::from_raw_fd(fd as c_int) };
        let count = (count >= 0).then_some(count as u64);
        match host.sendfile(gil, file, offset as u64, count) {
            Ok(sent) => ret_bool(gil, sent),
            // SAFETY: builtin exception type.
            Err(e) => raise(unsafe { ffi::PyExc_OSError }, &e),
        }
    })
}

/// `_gw_ext_enter(origin)`: takes the process's extension-loading lock (letting go of the GIL
/// while it waits); returns CPython's message when an own-GIL interpreter refused the file
/// `origin` before, else None. Pair it with `_gw_ext_leave` (see `python::imports`).
unsafe extern "C" fn gw_ext_enter(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    let a = match plain_args(args, nargs, 1) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let gil = Gil(PhantomData);
    let origin = gil.borrowed(a[0]).to_string_lossy();
    gil.allow_threads(super::imports::enter);
    match super::imports::refusal(&origin) {
        Some(message) => ret(gil.str(&message)),
        None => ret(Ok(gil.none())),
    }
}

/// `_gw_ext_leave(origin, refusal)`: remembers `refusal` (CPython's message, or None) for the
/// file `origin` and lets go of one `_gw_ext_enter`.
unsafe extern "C" fn gw_ext_leave(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    let a = match plain_args(args, nargs, 2) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let gil = Gil(PhantomData);
    let (origin, refusal) = (a[0], a[1]);
    // SAFETY: comparing with the None singleton.
    if refusal != unsafe { ffi::Py_None() } {
        super::imports::record_refusal(
            &gil.borrowed(origin).to_string_lossy(),
            &gil.borrowed(refusal).to_string_lossy(),
        );
    }
    super::imports::leave();
    ret(Ok(gil.none()))
}

// ---------------------------------------------------------------------------------------------
// The response object: start_response, write and the body's sending, in Rust.

/// One request's response (`wsgi_gateway.Response`): what start_response set and what was
/// sent. Only Rust makes them ([`Gil::new_response`]); the type is made per interpreter.
#[repr(C)]
struct ResponseObj {
    base: ffi::PyObject,
    /// The request's context capsule (owned), or NULL in an object Python made itself.
    ctx: *mut ffi::PyObject,
    /// The head start_response made (an owned bytes object), or NULL before it.
    head: *mut ffi::PyObject,
    /// The Content-Length the app set (-1: none) and the body bytes sent so far.
    length: i64,
    written: i64,
    sent: bool,
    is_head: bool,
    /// The response's end went out: with its last body byte, when the body reached its
    /// Content-Length.
    ended: bool,
}

/// The names the type looks its Python helpers up by (attributes set by [`Gil::response_type`]).
const CHECK_HEAD: &CStr = c"_check_head";
const INVALID_RESPONSE: &CStr = c"_InvalidResponse";
const CLIENT_DISCONNECTED: &CStr = c"_ClientDisconnected";

type FastKw = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

struct ResponseDefs {
    methods: [ffi::PyMethodDef; 5],
    getset: [ffi::PyGetSetDef; 6],
}
// SAFETY: plain constant C data, never mutated.
unsafe impl Sync for ResponseDefs {}

const GET_HEAD: usize = 0;
const GET_LENGTH: usize = 1;
const GET_SENT: usize = 2;
const GET_IS_HEAD: usize = 3;
const GET_ENDED: usize = 4;

const fn getter(name: &'static CStr, which: usize) -> ffi::PyGetSetDef {
    ffi::PyGetSetDef {
        name: name.as_ptr(),
        get: Some(response_get),
        set: None,
        doc: ptr::null(),
        closure: which as *mut std::ffi::c_void,
    }
}

static RESPONSE_DEFS: ResponseDefs = ResponseDefs {
    methods: [
        ffi::PyMethodDef {
            ml_name: c"start_response".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: response_start as FastKw,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: ptr::null(),
        },
        ffi::PyMethodDef {
            ml_name: c"write".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: response_write,
            },
            ml_flags: ffi::METH_O,
            ml_doc: ptr::null(),
        },
        method(c"send", response_send_method),
        ffi::PyMethodDef {
            ml_name: c"finish".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunction: response_finish,
            },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: ptr::null(),
        },
        ffi::PyMethodDef::zeroed(),
    ],
    getset: [
        getter(c"head", GET_HEAD),
        getter(c"length", GET_LENGTH),
        getter(c"sent", GET_SENT),
        getter(c"is_head", GET_IS_HEAD),
        getter(c"ended", GET_ENDED),
        ffi::PyGetSetDef {
            name: ptr::null(),
            get: None,
            set: None,
            doc: ptr::null(),
            closure: ptr::null_mut(),
        },
    ],
};

unsafe extern "C" fn response_dealloc(o: *mut ffi::PyObject) {
    let r = o.cast::<ResponseObj>();
    ffi::Py_XDECREF((*r).ctx);
    ffi::Py_XDECREF((*r).head);
    let ty = ffi::Py_TYPE(o);
    ffi::PyObject_Free(o.cast());
    // Instances of a heap type hold a reference to it.
    ffi::Py_DECREF(ty.cast());
}

/// Raises the type's Python exception class `which` (an attribute of the type) with `msg`.
unsafe fn raise_own(o: *mut ffi::PyObject, which: &CStr, msg: &str) -> *mut ffi::PyObject {
    let kind = ffi::PyObject_GetAttrString(ffi::Py_TYPE(o).cast(), which.as_ptr());
    if kind.is_null() {
        return ptr::null_mut();
    }
    raise(kind, msg);
    ffi::Py_DECREF(kind);
    ptr::null_mut()
}

/// The request behind a response's context, or None (with an exception set) once it is over.
unsafe fn response_host(r: *mut ResponseObj) -> Option<Arc<dyn Host>> {
    let ctx = (*r).ctx;
    if ctx.is_null() {
        raise(ffi::PyExc_ValueError, "this response belongs to no request");
        return None;
    }
    let slot = ffi::PyCapsule_GetPointer(ctx, CAPSULE_NAME.as_ptr());
    if slot.is_null() {
        return None;
    }
    let host = lock(&(*slot.cast::<HostSlot>()).0).clone();
    if host.is_none() {
        raise(ffi::PyExc_ValueError, "this request is over");
    }
    host
}

/// What `Response.send(data, done)` does: sends body bytes (the head first, once), cut to the
/// Content-Length, none for HEAD; `done` ends the response. NULL with an exception set, else
/// a new reference to None.
unsafe fn response_send(o: *mut ffi::PyObject, data: &[u8], done: bool) -> *mut ffi::PyObject {
    let r = o.cast::<ResponseObj>();
    if (*r).head.is_null() {
        return raise_own(
            o,
            INVALID_RESPONSE,
            "the application did not call start_response()",
        );
    }
    let Some(host) = response_host(r) else {
        return ptr::null_mut();
    };
    let gil = Gil(PhantomData);
    if (*r).ended {
        // Nothing goes past the Content-Length, and the end went out with it.
        return ret(Ok(gil.none()));
    }
    // The head is held: while the GIL is let go another thread could replace it.
    let head = (!(*r).sent).then(|| gil.borrowed((*r).head));
    (*r).sent = true;
    let mut data = data;
    if (*r).length >= 0 {
        let room = ((*r).length - (*r).written).max(0) as usize;
        if data.len() > room {
            data = &data[..room];
        }
    }
    if (*r).is_head {
        data = b"";
    }
    (*r).written += data.len() as i64;
    // A body that reached its Content-Length is complete: its end goes with its last bytes
    // (one write, not a second one for the end when the iterable is exhausted).
    let done = done || ((*r).length >= 0 && (*r).written == (*r).length && !(*r).is_head);
    (*r).ended = done;
    if done && (*r).length >= 0 && (*r).written < (*r).length && !(*r).is_head {
        host.log(
            &format!(
                "response shorter than its Content-Length ({} of {} bytes)",
                (*r).written,
                (*r).length
            ),
            false,
        );
    }
    let head_bytes = head.as_ref().and_then(|h| bytes_of(h.ptr.as_ptr()));
    let sent = match catch_unwind(AssertUnwindSafe(|| {
        host.send(gil, head_bytes.unwrap_or(b""), data, done)
    })) {
        Ok(sent) => sent,
        Err(_) => {
            return raise(
                ffi::PyExc_RuntimeError,
                "internal error in the gateway (panic)",
            )
        }
    };
    if !sent {
        return raise_own(
            o,
            CLIENT_DISCONNECTED,
            "response write failed: client disconnected",
        );
    }
    ret(Ok(gil.none()))
}

/// `start_response(status, headers, exc_info=None)`: returns `write`.
unsafe extern "C" fn response_start(
    o: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let r = o.cast::<ResponseObj>();
    let gil = Gil(PhantomData);
    // status, headers, exc_info: positional or by name (PEP 3333 names the second
    // response_headers).
    let mut a: [*mut ffi::PyObject; 3] = [ptr::null_mut(); 3];
    let npos = ffi::PyVectorcall_NARGS(nargs as usize) as usize;
    let nkw = if kwnames.is_null() {
        0
    } else {
        ffi::PyTuple_GET_SIZE(kwnames) as usize
    };
    if npos > 3 {
        return raise(
            ffi::PyExc_TypeError,
            "start_response() takes at most 3 arguments",
        );
    }
    let all = std::slice::from_raw_parts(args, npos + nkw);
    a[..npos].copy_from_slice(&all[..npos]);
    for k in 0..nkw {
        let name = str_of(ffi::PyTuple_GET_ITEM(kwnames, k as ffi::Py_ssize_t)).unwrap_or("");
        let at = match name {
            "status" => 0,
            "headers" | "response_headers" => 1,
            "exc_info" => 2,
            _ => {
                return raise(
                    ffi::PyExc_TypeError,
                    &format!("start_response() got an unexpected keyword argument '{name}'"),
                )
            }
        };
        if !a[at].is_null() {
            return raise(
                ffi::PyExc_TypeError,
                &format!("start_response() got multiple values for argument '{name}'"),
            );
        }
        a[at] = all[npos + k];
    }
    let [status, headers, exc_info] = a;
    if status.is_null() || headers.is_null() {
        return raise(
            ffi::PyExc_TypeError,
            "start_response() takes the status and the header list",
        );
    }
    if !exc_info.is_null() && exc_info != ffi::Py_None() {
        if (*r).sent {
            // The response began: the error can only be raised (PEP 3333).
            let value = ffi::PySequence_GetItem(exc_info, 1);
            if value.is_null() {
                return ptr::null_mut();
            }
            let tb = ffi::PySequence_GetItem(exc_info, 2);
            if tb.is_null() {
                ffi::Py_DECREF(value);
                return ptr::null_mut();
            }
            if ffi::PyExceptionInstance_Check(value) == 0 {
                ffi::Py_DECREF(value);
                ffi::Py_DECREF(tb);
                return raise(
                    ffi::PyExc_TypeError,
                    "exc_info must be (type, value, traceback)",
                );
            }
            let tb = if ffi::PyTraceBack_Check(tb) != 0 {
                ffi::PyException_SetTraceback(value, tb);
                tb
            } else {
                ffi::Py_DECREF(tb);
                ffi::PyException_GetTraceback(value)
            };
            let kind = ffi::Py_TYPE(value).cast::<ffi::PyObject>();
            ffi::Py_INCREF(kind);
            // Steals the three references.
            ffi::PyErr_Restore(kind, value, tb);
            return ptr::null_mut();
        }
    } else if !(*r).head.is_null() {
        return raise(
            ffi::PyExc_AssertionError,
            "start_response() called twice without exc_info",
        );
    }
    let (head, length) = match fast_head(gil, status, headers) {
        Some(Some(made)) => made,
        Some(None) => return ptr::null_mut(),
        None => {
            // What Rust does not make, gateway.py checks (and says what is wrong).
            // (An exception raised here is left set: it is start_response's.)
            let check = ffi::PyObject_GetAttrString(ffi::Py_TYPE(o).cast(), CHECK_HEAD.as_ptr());
            let Some(check) = gil.own_raised(check) else {
                return ptr::null_mut();
            };
            let made = check.vectorcall(&[&gil.borrowed(status), &gil.borrowed(headers)]);
            let Some(made) = gil.own_raised(made) else {
                return ptr::null_mut();
            };
            let made = made.ptr.as_ptr();
            if ffi::PyTuple_CheckExact(made) == 0 || ffi::PyTuple_GET_SIZE(made) != 2 {
                return raise(ffi::PyExc_TypeError, "_check_head gives (head, length)");
            }
            let head = gil.borrowed(ffi::PyTuple_GET_ITEM(made, 0));
            let length = ffi::PyTuple_GET_ITEM(made, 1);
            let length = if length == ffi::Py_None() {
                None
            } else {
                match arg_int(length) {
                    Some(l) if l >= 0 => Some(l as u64),
                    _ => return raise(ffi::PyExc_TypeError, "_check_head gives a bad length"),
                }
            };
            if ffi::PyBytes_CheckExact(head.ptr.as_ptr()) == 0 {
                return raise(ffi::PyExc_TypeError, "_check_head gives bytes");
            }
            (head, length)
        }
    };
    let old = std::mem::replace(&mut (*r).head, head.ptr.as_ptr());
    std::mem::forget(head);
    ffi::Py_XDECREF(old);
    (*r).length = length.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
    bound(o, &RESPONSE_DEFS.methods[1])
}

/// `write(data)`: bytes (or bytearray, memoryview) as the next part of the body.
unsafe extern "C" fn response_write(
    o: *mut ffi::PyObject,
    data: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let gil = Gil(PhantomData);
    let data = if ffi::PyBytes_CheckExact(data) != 0 {
        gil.borrowed(data)
    } else if ffi::PyBytes_Check(data) != 0
        || ffi::PyByteArray_Check(data) != 0
        || ffi::PyMemoryView_Check(data) != 0
    {
        match gil.own_raised(ffi::PyBytes_FromObject(data)) {
            Some(d) => d,
            None => return ptr::null_mut(),
        }
    } else {
        return raise_own(
            o,
            INVALID_RESPONSE,
            &format!(
                "response body must be bytes, not {}",
                type_name(ffi::Py_TYPE(data))
            ),
        );
    };
    let bytes = bytes_of(data.ptr.as_ptr()).unwrap_or(b"");
    if bytes.is_empty() && (*o.cast::<ResponseObj>()).sent {
        return ret(Ok(gil.none()));
    }
    response_send(o, bytes, false)
}

/// `send(data, done)`, for gateway.py.
unsafe extern "C" fn response_send_method(
    o: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    let a = match plain_args(args, nargs, 2) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Some(data) = bytes_of(a[0]) else {
        return raise(ffi::PyExc_TypeError, "send() takes bytes");
    };
    let done = Gil(PhantomData).borrowed(a[1]).is_true();
    response_send(o, data, done)
}

/// `finish()`: ends the response (saying `Content-Length: 0` when no body was sent at all,
/// so the web server need not wait for the end).
unsafe extern "C" fn response_finish(
    o: *mut ffi::PyObject,
    _: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let r = o.cast::<ResponseObj>();
    if !(*r).sent && (*r).length < 0 && !(*r).head.is_null() && !(*r).is_head {
        let gil = Gil(PhantomData);
        let head = bytes_of((*r).head).unwrap_or(b"");
        let mut with = head[..head.len().saturating_sub(2)].to_vec();
        with.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let new = ffi::PyBytes_FromStringAndSize(with.as_ptr().cast(), with.len() as _);
        let Some(new) = gil.own_raised(new) else {
            return ptr::null_mut();
        };
        let old = std::mem::replace(&mut (*r).head, new.ptr.as_ptr());
        std::mem::forget(new);
        ffi::Py_DECREF(old);
    }
    response_send(o, b"", true)
}

/// The getters `head`, `length`, `sent`, `is_head` and `ended`, told apart by their closure.
unsafe extern "C" fn response_get(
    o: *mut ffi::PyObject,
    which: *mut std::ffi::c_void,
) -> *mut ffi::PyObject {
    let r = o.cast::<ResponseObj>();
    let gil = Gil(PhantomData);
    match which as usize {
        GET_HEAD if (*r).head.is_null() => ret(Ok(gil.none())),
        GET_HEAD => ret(Ok(gil.borrowed((*r).head))),
        GET_LENGTH if (*r).length < 0 => ret(Ok(gil.none())),
        GET_LENGTH => ret(gil.int((*r).length)),
        GET_SENT => ret_bool(gil, (*r).sent),
        GET_ENDED => ret_bool(gil, (*r).ended),
        _ => ret_bool(gil, (*r).is_head),
    }
}

/// The name of a type, for messages.
unsafe fn type_name(ty: *mut ffi::PyTypeObject) -> String {
    CStr::from_ptr((*ty).tp_name).to_string_lossy().into_owned()
}

/// The head of a start_response() whose status and header list are exact str/list/tuple and
/// certainly valid (see `wsgi::head::build`), with its Content-Length; None when gateway.py
/// must check them; Some(None) when the bytes object could not be made (the exception set).
///
/// # Safety
/// The GIL is held and `status`, `headers` are valid objects alive for the call.
unsafe fn fast_head<'py>(
    gil: Gil<'py>,
    status: *mut ffi::PyObject,
    list: *mut ffi::PyObject,
) -> Option<Option<(Obj<'py>, Option<u64>)>> {
    let status = str_of(status)?;
    if ffi::PyList_CheckExact(list) == 0 {
        return None;
    }
    // The items are read as `build` goes; the first that is not a (str, str) tuple ends
    // the list early, and `bad` says so. No Python code runs meanwhile: the list and its
    // tuples and strs stay alive and unchanged.
    let bad = std::cell::Cell::new(false);
    let pairs = (0..ffi::PyList_GET_SIZE(list)).map_while(|i| {
        let item = ffi::PyList_GET_ITEM(list, i);
        let pair = (ffi::PyTuple_CheckExact(item) != 0 && ffi::PyTuple_GET_SIZE(item) == 2)
            .then(|| {
                let name = str_of(ffi::PyTuple_GET_ITEM(item, 0))?;
                Some((name, str_of(ffi::PyTuple_GET_ITEM(item, 1))?))
            })
            .flatten();
        bad.set(pair.is_none());
        pair
    });
    // The head is made in a buffer each thread reuses; Python gets its copy.
    HEAD_SCRATCH.with(|scratch| {
        let mut head = scratch.take();
        head.clear();
        let length = crate::wsgi::head::build(status, pairs, &mut head);
        let made = match length {
            Some(l) if !bad.get() => Some(
                gil.own_raised(ffi::PyBytes_FromStringAndSize(
                    head.as_ptr().cast(),
                    head.len() as ffi::Py_ssize_t,
                ))
                .map(|h| (h, l)),
            ),
            _ => None,
        };
        scratch.set(head);
        made
    })
}

impl<'py> Gil<'py> {
    /// Makes this interpreter's response type; gateway.py's `check_head(status, headers)`
    /// (the head and its length, or an error saying what is wrong), `InvalidResponse` and
    /// `ClientDisconnected` are what it calls and raises.
    pub fn response_type(
        self,
        check_head: &Obj<'py>,
        invalid: &Obj<'py>,
        disconnected: &Obj<'py>,
    ) -> PyResult<Obj<'py>> {
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: response_dealloc as *mut std::ffi::c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_methods,
                pfunc: RESPONSE_DEFS.methods.as_ptr().cast_mut().cast(),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_getset,
                pfunc: RESPONSE_DEFS.getset.as_ptr().cast_mut().cast(),
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: ptr::null_mut(),
            },
        ];
        let mut spec = ffi::PyType_Spec {
            name: c"wsgi_gateway.Response".as_ptr(),
            basicsize: std::mem::size_of::<ResponseObj>() as c_int,
            itemsize: 0,
            flags: ffi::Py_TPFLAGS_DEFAULT as _,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: GIL held; the spec and slots are read during the call (the method and
        // getset tables are 'static).
        let ty = self.own(unsafe { ffi::PyType_FromSpec(&mut spec) })?;
        for (name, value) in [
            (CHECK_HEAD, check_head),
            (INVALID_RESPONSE, invalid),
            (CLIENT_DISCONNECTED, disconnected),
        ] {
            // SAFETY: GIL held; a heap type without Py_TPFLAGS_IMMUTABLETYPE takes attributes.
            if unsafe {
                ffi::PyObject_SetAttrString(ty.ptr.as_ptr(), name.as_ptr(), value.ptr.as_ptr())
            } != 0
            {
                return Err(self.fetch_err());
            }
        }
        Ok(ty)
    }

    /// A new response of the type `ty` (made by [`Gil::response_type`]) for the request whose
    /// context is `ctx`.
    pub fn new_response(self, ty: &Obj<'py>, ctx: &Obj<'py>, is_head: bool) -> PyResult<Obj<'py>> {
        // SAFETY: GIL held. The type is checked to be a response type before its memory is used as a ResponseObj; PyType_GenericAlloc zeroes it.
        unsafe {
            let t = ty.ptr.as_ptr().cast::<ffi::PyTypeObject>();
            if ffi::PyType_Check(ty.ptr.as_ptr()) == 0 || !is_response_type(t) {
                return Err(PyErr {
                    text: "not a response type".into(),
                });
            }
            let o = self.own(ffi::PyType_GenericAlloc(t, 0))?;
            let r = o.ptr.as_ptr().cast::<ResponseObj>();
            ffi::Py_INCREF(ctx.ptr.as_ptr());
            (*r).ctx = ctx.ptr.as_ptr();
            (*r).length = -1;
            (*r).is_head = is_head;
            Ok(o)
        }
    }
}

impl<'py> Obj<'py> {
    /// For a response (see [`Gil::new_response`]): its bound `start_response`.
    pub fn response_start_response(&self) -> PyResult<Obj<'py>> {
        self.response()?;
        // SAFETY: GIL held; `self` is a response.
        self.gil()
            .own(unsafe { bound(self.ptr.as_ptr(), &RESPONSE_DEFS.methods[0]) })
    }

    /// For a response whose app returned `result`: when `result` is a list of one bytes object
    /// and start_response was called, sends it as the whole body and ends the response:
    /// `Some(true)`, or `Some(false)` when the client is gone (logged); `None` otherwise
    /// (nothing done: gateway.py handles the result).
    pub fn response_send_single(&self, result: &Obj<'py>) -> Option<bool> {
        let r = self.response().ok()?;
        // SAFETY: GIL held; `r` is this response's object; the list and its item stay alive
        // (held by `result`) for the call.
        unsafe {
            let list = result.ptr.as_ptr();
            if (*r).head.is_null()
                || ffi::PyList_CheckExact(list) == 0
                || ffi::PyList_GET_SIZE(list) != 1
            {
                return None;
            }
            let item = self.gil().borrowed(ffi::PyList_GET_ITEM(list, 0));
            if ffi::PyBytes_CheckExact(item.ptr.as_ptr()) == 0 {
                return None;
            }
            let data = bytes_of(item.ptr.as_ptr()).unwrap_or(b"");
            let done = response_send(self.ptr.as_ptr(), data, true);
            if !done.is_null() {
                ffi::Py_DECREF(done);
                return Some(true);
            }
            // What gateway.py does with a failure to send: log it, cut the response off.
            let e = take_exception(self.gil()).to_string_lossy();
            match response_host(r) {
                Some(host) => host.log(&e, false),
                None => ffi::PyErr_Clear(),
            }
            Some(false)
        }
    }

    fn response(&self) -> PyResult<*mut ResponseObj> {
        // SAFETY: GIL held; reading the object's type.
        unsafe {
            let t = ffi::Py_TYPE(self.ptr.as_ptr());
            if !is_response_type(t) {
                return Err(PyErr {
                    text: "not a response".into(),
                });
            }
        }
        Ok(self.ptr.as_ptr().cast())
    }

    /// Calls the object; an exception it raises is given back as the exception object (its
    /// traceback attached), to be raised again in Python.
    pub fn call_catching(&self, args: &[&Obj<'py>]) -> Result<Obj<'py>, Obj<'py>> {
        let got = self.vectorcall(args);
        if let Some(ptr) = NonNull::new(got) {
            return Ok(Obj {
                ptr,
                _gil: PhantomData,
            });
        }
        Err(take_exception(self.gil()))
    }
}

/// Whether `t` is a response type: made by [`Gil::response_type`], it has its method table.
///
/// # Safety
/// `t` is a live type object.
unsafe fn is_response_type(t: *mut ffi::PyTypeObject) -> bool {
    ptr::eq((*t).tp_methods, RESPONSE_DEFS.methods.as_ptr())
}

/// `def` (one of the response type's methods) bound to the response `o`: a new reference.
///
/// # Safety
/// The GIL is held and `o` is a response.
unsafe fn bound(o: *mut ffi::PyObject, def: &'static ffi::PyMethodDef) -> *mut ffi::PyObject {
    ffi::PyCFunction_NewEx(ptr::from_ref(def).cast_mut(), o, ptr::null_mut())
}

/// Takes the exception being raised: its object, normalised, with its traceback attached
/// (None if, against the rules, none is set).
fn take_exception(gil: Gil<'_>) -> Obj<'_> {
    // SAFETY: GIL held; PyErr_Fetch transfers the three references to us.
    unsafe {
        let (mut t, mut v, mut tb) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        if t.is_null() {
            return gil.none();
        }
        ffi::PyErr_NormalizeException(&mut t, &mut v, &mut tb);
        if !tb.is_null() && !v.is_null() {
            ffi::PyException_SetTraceback(v, tb);
        }
        ffi::Py_XDECREF(t);
        ffi::Py_XDECREF(tb);
        match NonNull::new(v) {
            Some(ptr) => Obj {
                ptr,
                _gil: PhantomData,
            },
            None => gil.none(),
        }
    }
}
