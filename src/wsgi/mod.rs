//! PEP 3333 on top of the embedded interpreter: the per-interpreter state (helper module,
//! environ template, mount targets), environ building and the request cycle. Rust calls the
//! app with a native response object (`start_response`, `write`: `python::ffi`) and sends a
//! one-item list itself; the rest of the cycle (iteration, close, file_wrapper, errors,
//! wsgi.input, wsgi.errors) is `gateway.py`, run in each interpreter.

pub mod head;

use rustc_hash::FxHashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::interpreters::ScriptFile;
use crate::python::{Gil, Host, Obj, PyObj, PyResult, Recv, ThreadState};
use crate::router::{Mount, Target};
use crate::server::{BodySink, Io, Job, Request, WaitError};

/// A Python module of the gateway's own, run in each interpreter that needs it.
struct Module {
    /// Its `__name__`.
    name: &'static str,
    /// The file name its code and tracebacks carry.
    filename: &'static str,
    source: &'static str,
    /// Its code compiled by the build's Python (build.rs), loaded instead of compiling
    /// `source`; empty: compiled when run.
    code: &'static [u8],
}

/// A module of `src/wsgi/` with the code build.rs compiled for it (named by the same rule).
macro_rules! compiled_module {
    ($name:literal, $file:literal) => {
        Module {
            name: $name,
            filename: concat!("<wsgi-gateway ", $file, ">"),
            source: include_str!($file),
            code: include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".marshal")),
        }
    };
}

const GATEWAY: Module = compiled_module!("wsgi_gateway", "gateway.py");
const DIAGNOSTICS: Module = compiled_module!("wsgi_gateway_diagnostics", "diagnostics.py");

impl Module {
    /// Runs the module in the current interpreter; its namespace.
    fn run<'py>(&self, gil: Gil<'py>) -> PyResult<Obj<'py>> {
        gil.exec_module(self.name, self.filename, self.source, self.code)
    }
}

/// Response bytes handed to the output buffer at a time (bounds the wait per piece).
const PIECE: usize = 128 * 1024;

/// Settings that shape every interpreter's environ.
/// What one interpreter is set up with.
pub struct Settings {
    /// sys.path entries put first (the mounts' own, then the global python-path).
    pub python_path: Vec<PathBuf>,
    /// A virtualenv activated in this interpreter (its site-packages ahead of the rest).
    pub venv: Option<PathBuf>,
    /// How the interpreter is named in messages (`%{GLOBAL}`, `mount /blog`...).
    pub label: String,
    /// Whether this is a sub-interpreter (for the C-extension hint on import failures).
    pub sub: bool,
    /// Whether it has a GIL of its own.
    pub own_gil: bool,
    /// Whether the process has own-GIL interpreters (extension-module loads are serialised).
    pub guard_imports: bool,
    pub threads: usize,
    pub multiprocess: bool,
}

/// What a request runs.
#[derive(Clone, Copy)]
pub enum Script<'a> {
    /// A script file and its generation (bumped when the file changes, to reload it).
    File(&'a ScriptFile, u64),
    Diagnostics,
}

/// CGI names whose key objects are made once per interpreter (nginx, lighttpd and Apache send
/// these on every request); other names get a new str per request.
const KNOWN_KEYS: &[&str] = &[
    "QUERY_STRING",
    "REQUEST_METHOD",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SCRIPT_NAME",
    "PATH_INFO",
    "REQUEST_URI",
    "DOCUMENT_URI",
    "DOCUMENT_ROOT",
    "SERVER_PROTOCOL",
    "REQUEST_SCHEME",
    "HTTPS",
    "GATEWAY_INTERFACE",
    "SERVER_SOFTWARE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REMOTE_USER",
    "SERVER_ADDR",
    "SERVER_PORT",
    "SERVER_NAME",
    "REDIRECT_STATUS",
    "SCRIPT_FILENAME",
    "PATH_TRANSLATED",
    "AUTH_TYPE",
    "HTTP_HOST",
    "HTTP_USER_AGENT",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_CONNECTION",
    "HTTP_COOKIE",
    "HTTP_REFERER",
    "HTTP_AUTHORIZATION",
    "HTTP_CACHE_CONTROL",
    "HTTP_UPGRADE_INSECURE_REQUESTS",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_REAL_IP",
    "HTTP_X_REQUESTED_WITH",
    "HTTP_ORIGIN",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_NONE_MATCH",
    "HTTP_SEC_FETCH_SITE",
    "HTTP_SEC_FETCH_MODE",
    "HTTP_SEC_FETCH_DEST",
];

/// One interpreter's WSGI state: objects made in and only used by that interpreter.
pub struct WsgiState {
    /// gateway.py's `complete`: what follows the app's call unless the gateway finished it.
    complete: PyObj,
    /// The response type, wsgi.input's and wsgi.errors' classes, and their environ keys.
    response_type: PyObj,
    input_type: PyObj,
    errors_type: PyObj,
    input_key: PyObj,
    errors_key: PyObj,
    /// `Errors._pending`: a partial line to flush at the end.
    pending_key: PyObj,
    /// Where Input and Errors keep the request's context.
    ctx_key: PyObj,
    base_environ: PyObj,
    keys: KeyTable,
    url_scheme_key: PyObj,
    https: PyObj,
    /// The built-in diagnostics app, loaded when first served (it imports `html`).
    diagnostics: Mutex<Option<PyObj>>,
    load: PyObj,
    /// The apps loaded in this interpreter: by script, with the generation loaded.
    apps: Mutex<FxHashMap<u64, (u64, PyObj)>>,
    /// The type of what `load` gives for a script that failed to import.
    unloadable: PyObj,
    /// The exceptions raised in a request's thread: interrupt-timeout, cancel-on-disconnect.
    interrupt_timeout: PyObj,
    cancelled: PyObj,
}

impl WsgiState {
    /// Loads the helper module into the current interpreter, applies python-path and builds
    /// the environ template.
    pub fn setup(gil: Gil<'_>, settings: &Settings) -> PyResult<Self> {
        let ns = GATEWAY.run(gil)?;
        gil.install_callbacks(&ns)?;
        let get = |name: &str| {
            ns.dict_get(name)?.ok_or_else(|| crate::python::PyErr {
                text: format!("gateway.py defines no {name}"),
            })
        };
        let paths: Vec<Obj<'_>> = settings
            .python_path
            .iter()
            .map(|p| gil.str(&p.to_string_lossy()))
            .collect::<PyResult<_>>()?;
        let venv = match &settings.venv {
            Some(v) => gil.str(&v.to_string_lossy())?,
            None => gil.none(),
        };
        get("init_interpreter")?.call(&[
            &gil.list(&paths)?,
            &venv,
            &gil.str(&settings.label)?,
            &gil.bool(settings.sub),
            &gil.bool(settings.own_gil),
            &gil.bool(settings.guard_imports),
        ])?;
        let env = gil.dict()?;
        let set = |k: &str, v: Obj<'_>| env.set_item(&gil.str(k)?, &v);
        let (one, zero) = (gil.int(1)?, gil.int(0)?);
        set("wsgi.version", gil.tuple(&[&one, &zero])?)?;
        set("wsgi.url_scheme", gil.str("http")?)?;
        set("wsgi.multithread", gil.bool(settings.threads > 1))?;
        set("wsgi.multiprocess", gil.bool(settings.multiprocess))?;
        set("wsgi.run_once", gil.bool(false))?;
        set("wsgi.input_terminated", gil.bool(true))?;
        set("wsgi.file_wrapper", get("FileWrapper")?)?;
        for (k, v) in [
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", ""),
            ("PATH_INFO", ""),
            ("QUERY_STRING", ""),
            ("SERVER_NAME", "localhost"),
            ("SERVER_PORT", "80"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
        ] {
            set(k, gil.str(v)?)?;
        }

        let keys = KeyTable::new(gil)?;
        let response_type = gil.response_type(
            &get("check_head")?,
            &get("InvalidResponse")?,
            &get("ClientDisconnected")?,
        )?;
        Ok(WsgiState {
            complete: PyObj::new(get("complete")?),
            response_type: PyObj::new(response_type),
            input_type: PyObj::new(get("Input")?),
            errors_type: PyObj::new(get("Errors")?),
            input_key: PyObj::new(gil.str("wsgi.input")?),
            errors_key: PyObj::new(gil.str("wsgi.errors")?),
            pending_key: PyObj::new(gil.str("_pending")?),
            ctx_key: PyObj::new(gil.str("_ctx")?),
            base_environ: PyObj::new(env),
            keys,
            url_scheme_key: PyObj::new(gil.str("wsgi.url_scheme")?),
            https: PyObj::new(gil.str("https")?),
            diagnostics: Mutex::new(None),
            load: PyObj::new(get("load")?),
            apps: Mutex::new(FxHashMap::default()),
            unloadable: PyObj::new(get("Unloadable")?),
            interrupt_timeout: PyObj::new(get("InterruptTimeout")?),
            cancelled: PyObj::new(get("Cancelled")?),
        })
    }

    /// Drops every reference this state holds, in its own interpreter, before it ends.
    pub fn release(&self, gil: Gil<'_>) {
        for obj in [
            &self.complete,
            &self.response_type,
            &self.input_type,
            &self.errors_type,
            &self.input_key,
            &self.errors_key,
            &self.pending_key,
            &self.ctx_key,
            &self.base_environ,
            &self.url_scheme_key,
            &self.https,
            &self.load,
            &self.unloadable,
            &self.interrupt_timeout,
            &self.cancelled,
        ] {
            obj.release(gil);
        }
        self.keys.release(gil);
        if let Some(diagnostics) = lock(&self.diagnostics).take() {
            diagnostics.release(gil);
        }
        for (_, app) in lock(&self.apps).drain() {
            app.1.release(gil);
        }
    }

    /// The built-in diagnostics app, loaded in this interpreter when first served.
    fn diagnostics<'py>(&self, gil: Gil<'py>) -> PyResult<Obj<'py>> {
        if let Some(app) = lock(&self.diagnostics).as_ref() {
            return Ok(app.bind(gil));
        }
        // Not under the lock: running the module may let another thread take the GIL, and
        // that thread may come here too. The first to finish is kept.
        let app = DIAGNOSTICS
            .run(gil)?
            .dict_get("application")?
            .expect("diagnostics app");
        let mut slot = lock(&self.diagnostics);
        match slot.as_ref() {
            Some(first) => Ok(first.bind(gil)),
            None => {
                *slot = Some(PyObj::new(app.clone()));
                Ok(app)
            }
        }
    }

    /// The WSGI callable of `script`: loaded once per generation of the script and kept
    /// (the module is imported again when the file changed). A script that fails to import
    /// gives an object that raises its error when called (the request cycle answers it), and
    /// is imported again next time.
    pub fn app<'py>(
        &self,
        gil: Gil<'py>,
        script: Script<'_>,
        callable: &str,
    ) -> PyResult<Obj<'py>> {
        let (file, generation) = match script {
            Script::Diagnostics => return self.diagnostics(gil),
            Script::File(file, generation) => (file, generation),
        };
        if let Some((loaded, app)) = lock(&self.apps).get(&file.id) {
            if *loaded == generation {
                return Ok(app.bind(gil));
            }
        }
        let app = self.load.bind(gil).call(&[
            &gil.str(&file.path.to_string_lossy())?,
            &gil.str(callable)?,
            &gil.int(generation as i64)?,
        ])?;
        if !app.is_exactly(&self.unloadable.bind(gil)) {
            let old = lock(&self.apps).insert(file.id, (generation, PyObj::new(app.clone())));
            if let Some((_, old)) = old {
                old.release(gil);
            }
        }
        Ok(app)
    }

    /// Imports a script ahead of its first request (preload); its import error, if any.
    pub fn preload(&self, gil: Gil<'_>, script: Script<'_>, callable: &str) -> PyResult<()> {
        let app = self.app(gil, script, callable)?;
        if app.is_exactly(&self.unloadable.bind(gil)) {
            return Err(crate::python::PyErr {
                text: app.getattr("text")?.to_string_lossy(),
            });
        }
        Ok(())
    }

    /// Runs one request to its end on this thread's state `ts` of this interpreter; returns
    /// whether the response is complete (false: cut off).
    pub fn handle(&self, ts: &ThreadState, job: &Job, script: Script<'_>, callable: &str) -> bool {
        ts.with_gil(|gil| {
            let ident = crate::python::ffi::thread_ident();
            job.python.ident.store(ident, Ordering::SeqCst);
            let result = self.call(gil, ts, job, script, callable);
            if job.python.interrupted().is_some() {
                // An interrupt that came too late to be raised is not left for the next
                // request of this thread.
                gil.set_async_exc(ident, None);
            }
            job.python.ident.store(0, Ordering::SeqCst);
            ts.end_request(gil);
            let e = match result {
                Ok(complete) => return complete,
                Err(e) => e,
            };
            // An interrupt raised in the gateway's own Python, before `complete` settled the
            // request (between the app's return and `complete`'s first line), or a failure of
            // that Python itself.
            match job.python.interrupted() {
                Some(crate::server::Interrupt::Cancelled) => crate::request_log!(
                    warn,
                    job.log_fields(),
                    "{}: cancelled: the client went away ({})",
                    label(job),
                    e.text.lines().last().unwrap_or_default()
                ),
                Some(crate::server::Interrupt::Timeout) => crate::request_log!(
                    error,
                    job.log_fields(),
                    "{}: interrupted (interrupt-timeout) as the request ended; response cut \
                     off: {e}",
                    label(job)
                ),
                None => crate::request_log!(
                    error,
                    job.log_fields(),
                    "{}: request failed in the gateway: {e}",
                    label(job)
                ),
            }
            false
        })
    }

    /// Raises the interrupt's exception in the thread running `job`'s app, if it still runs
    /// it (`gil` is this interpreter's).
    pub fn interrupt(&self, gil: Gil<'_>, job: &Job, why: crate::server::Interrupt) -> bool {
        let ident = job.python.ident.load(Ordering::SeqCst);
        if ident == 0 || job.python.settled.load(Ordering::SeqCst) {
            return false;
        }
        job.python.interrupted.store(why as u8, Ordering::SeqCst);
        let exc = match why {
            crate::server::Interrupt::Timeout => &self.interrupt_timeout,
            crate::server::Interrupt::Cancelled => &self.cancelled,
        };
        gil.set_async_exc(ident, Some(&exc.bind(gil)))
    }

    fn call(
        &self,
        gil: Gil<'_>,
        ts: &ThreadState,
        job: &Job,
        script: Script<'_>,
        callable: &str,
    ) -> PyResult<bool> {
        let diagnostics = matches!(script, Script::Diagnostics);
        let (env, is_head) = self.environ(gil, job, diagnostics)?;
        let ctx = ts.request_context(gil, job.clone())?;
        let app = self.app(gil, script, callable)?;
        // wsgi.input and wsgi.errors: made with no arguments, their context set.
        let ctx_key = self.ctx_key.bind(gil);
        let input = self.input_type.bind(gil).call(&[])?;
        input.setattr_key(&ctx_key, &ctx)?;
        let errors = self.errors_type.bind(gil).call(&[])?;
        errors.setattr_key(&ctx_key, &ctx)?;
        env.set_item(&self.input_key.bind(gil), &input)?;
        env.set_item(&self.errors_key.bind(gil), &errors)?;
        let response = gil.new_response(&self.response_type.bind(gil), &ctx, is_head)?;
        let (result, error) = match app.call_catching(&[&env, &response.response_start_response()?])
        {
            Ok(result) => {
                // The usual end: a list of one bytes object, sent here.
                if let Some(complete) = response.response_send_single(&result) {
                    if errors.getattr_key(&self.pending_key.bind(gil))?.is_true() {
                        errors.getattr("flush")?.call(&[])?;
                    }
                    return Ok(complete);
                }
                (result, gil.none())
            }
            Err(error) => (gil.none(), error),
        };
        let complete = self.complete.bind(gil);
        Ok(complete
            .call(&[&ctx, &response, &errors, &result, &error])?
            .is_true())
    }

    /// The request's environ, and whether it is a HEAD request.
    fn environ<'py>(
        &self,
        gil: Gil<'py>,
        job: &Job,
        diagnostics: bool,
    ) -> PyResult<(Obj<'py>, bool)> {
        let env = self.base_environ.bind(gil).dict_copy()?;
        let mut https = false;
        let mut is_head = false;
        for (name, value) in job.head.iter() {
            let mut join = None;
            let key = match self.keys.find(name) {
                Some(known) => {
                    match known.special {
                        // The gateway derives these; nginx and lighttpd also repeat CONTENT_*
                        // as HTTP_*.
                        Special::Skip => continue,
                        Special::Https => {
                            https |= value.eq_ignore_ascii_case(b"on") || value == b"1"
                        }
                        Special::Scheme => https |= value.eq_ignore_ascii_case(b"https"),
                        Special::Method => is_head = value == b"HEAD",
                        Special::List(sep) => join = Some(sep),
                        Special::None => {}
                    }
                    known.key.bind(gil)
                }
                None => gil.latin1(name)?,
            };
            let value = gil.latin1(value)?;
            match join {
                // A list-valued header given twice (nginx before 1.23 sends it twice) is one
                // value, joined as HTTP joins it (what a web server that joins it sends).
                Some(sep) => {
                    let had = env.dict_set_default(&key, &value)?;
                    if !had.is(&value) {
                        let joined = had.str_concat(&gil.str(sep)?)?.str_concat(&value)?;
                        env.set_item(&key, &joined)?;
                    }
                }
                // Any other name given twice: the last one wins (a `fastcgi_param` that
                // overrides one of an included file, HTTP_HOST in Debian's included ones).
                None => env.set_item(&key, &value)?,
            }
        }
        env.set_item(
            &self.key(gil, b"SCRIPT_NAME")?,
            &gil.latin1(&job.route.script_name)?,
        )?;
        env.set_item(
            &self.key(gil, b"PATH_INFO")?,
            &gil.latin1(&job.route.path_info)?,
        )?;
        if https {
            env.set_item(&self.url_scheme_key.bind(gil), &self.https.bind(gil))?;
        }
        if diagnostics {
            let params = job
                .head
                .iter()
                .map(|(n, v)| gil.tuple(&[&gil.latin1(n)?, &gil.latin1(v)?]))
                .collect::<PyResult<Vec<_>>>()?;
            env.set_item(&gil.str("wsgi_gateway.params")?, &gil.list(&params)?)?;
            env.set_item(&gil.str("wsgi_gateway.route")?, &gil.str(job.route.source)?)?;
        }
        Ok((env, is_head))
    }
}

impl WsgiState {
    fn key<'py>(&self, gil: Gil<'py>, name: &[u8]) -> PyResult<Obj<'py>> {
        match self.keys.find(name) {
            Some(k) => Ok(k.key.bind(gil)),
            None => gil.latin1(name),
        }
    }
}

/// What environ building does with a CGI name beyond copying it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    /// Derived by the gateway (SCRIPT_NAME, PATH_INFO), or a repeat of CONTENT_* as HTTP_*.
    Skip,
    Https,
    Scheme,
    Method,
    /// A header whose value is a list: repeats are joined with this separator.
    List(&'static str),
}

/// The names the gateway treats specially, on top of [`KNOWN_KEYS`].
const SPECIAL_KEYS: &[(&str, Special)] = &[
    ("SCRIPT_NAME", Special::Skip),
    ("PATH_INFO", Special::Skip),
    ("HTTP_CONTENT_LENGTH", Special::Skip),
    ("HTTP_CONTENT_TYPE", Special::Skip),
    ("HTTPS", Special::Https),
    ("REQUEST_SCHEME", Special::Scheme),
    ("REQUEST_METHOD", Special::Method),
    // Headers defined as lists (RFC 9110 and others), which a client may send as several
    // lines: their values are joined. Any other repeat is taken as an override (the last
    // wins), as a singleton header (Host, Authorization...) may not repeat in a request, and a
    // web server's configuration may set a param its included file sets too.
    ("HTTP_COOKIE", Special::List("; ")),
    ("HTTP_ACCEPT", Special::List(", ")),
    ("HTTP_ACCEPT_CHARSET", Special::List(", ")),
    ("HTTP_ACCEPT_ENCODING", Special::List(", ")),
    ("HTTP_ACCEPT_LANGUAGE", Special::List(", ")),
    ("HTTP_CACHE_CONTROL", Special::List(", ")),
    ("HTTP_CONNECTION", Special::List(", ")),
    ("HTTP_FORWARDED", Special::List(", ")),
    ("HTTP_IF_MATCH", Special::List(", ")),
    ("HTTP_IF_NONE_MATCH", Special::List(", ")),
    ("HTTP_PRAGMA", Special::List(", ")),
    ("HTTP_PREFER", Special::List(", ")),
    ("HTTP_TE", Special::List(", ")),
    ("HTTP_UPGRADE", Special::List(", ")),
    ("HTTP_VIA", Special::List(", ")),
    ("HTTP_X_FORWARDED_FOR", Special::List(", ")),
];

struct KnownKey {
    key: PyObj,
    special: Special,
}

/// The known CGI names: their key objects, made once per interpreter, and what environ
/// building does with them.
struct KeyTable(FxHashMap<&'static [u8], KnownKey>);

impl KeyTable {
    fn new(gil: Gil<'_>) -> PyResult<Self> {
        let mut table = FxHashMap::default();
        let names = KNOWN_KEYS.iter().map(|k| (*k, Special::None));
        for (name, special) in names.chain(SPECIAL_KEYS.iter().copied()) {
            let key = match table.remove(name.as_bytes()) {
                Some(KnownKey { key, .. }) => key,
                None => PyObj::new(gil.str(name)?),
            };
            table.insert(name.as_bytes(), KnownKey { key, special });
        }
        Ok(KeyTable(table))
    }

    fn find(&self, name: &[u8]) -> Option<&KnownKey> {
        self.0.get(name)
    }

    fn release(&self, gil: Gil<'_>) {
        for k in self.0.values() {
            k.key.release(gil);
        }
    }
}

/// For `wsgi-gateway check`: every script of every mount compiles and defines its callable.
pub fn check_scripts(gil: Gil<'_>, mounts: &[Mount]) -> Vec<String> {
    let check = match GATEWAY.run(gil).and_then(|ns| ns.dict_get("check_script")) {
        Ok(Some(f)) => f,
        Ok(None) => return vec!["gateway.py defines no check_script".into()],
        Err(e) => return vec![format!("loading the gateway's Python helper failed: {e}")],
    };
    let mut problems = Vec::new();
    for m in mounts {
        let scripts: Vec<PathBuf> = match &m.target {
            Target::Script(p) => vec![p.clone()],
            Target::Directory { dir, extension } => {
                // The scripts the server would run: not hidden, not leading out of the dir.
                let served = |p: &PathBuf| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    name.is_some_and(|n| !n.starts_with('.') && n.ends_with(extension.as_str()))
                        && std::fs::canonicalize(p)
                            .is_ok_and(|real| real.starts_with(dir) && real.is_file())
                };
                let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(served)
                            .collect()
                    })
                    .unwrap_or_default();
                found.sort();
                found
            }
            Target::Diagnostics => Vec::new(),
        };
        for script in scripts {
            let result = gil
                .str(&script.to_string_lossy())
                .and_then(|p| check.call(&[&p, &gil.str(&m.callable)?]));
            match result {
                Ok(r) if r.is_true() => problems.push(format!(
                    "mount {}: {}",
                    m.shown_prefix(),
                    r.to_string_lossy()
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("mount {}: {e}", m.shown_prefix())),
            }
        }
    }
    problems
}

/// Compiled when used (rarely: the slow log and `?full`).
const DUMP_STACKS: Module = Module {
    name: "wsgi_gateway_stacks",
    filename: "<wsgi-gateway stacks>",
    code: &[],
    source: "\
import sys, threading, traceback
def dump(only=None):
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        if only is not None and ident != only:
            continue
        stack = ''.join(traceback.format_stack(frame))
        out.append('thread %s (%s):\\n%s' % (ident, names.get(ident, 'worker'), stack))
    return '\\n'.join(out)
",
};

/// The Python stack of every thread of this process (all interpreters), as text.
pub fn dump_stacks(gil: Gil<'_>) -> String {
    dump(gil, None)
}

/// The Python stack of the thread `ident` (whatever its interpreter), as text.
pub fn dump_stack_of(gil: Gil<'_>, ident: u64) -> String {
    dump(gil, Some(ident))
}

fn dump(gil: Gil<'_>, only: Option<u64>) -> String {
    let dumped = DUMP_STACKS
        .run(gil)
        .and_then(|ns| match ns.dict_get("dump")? {
            Some(f) => match only {
                None => f.call(&[]),
                Some(ident) => f.call(&[&gil.int(ident as i64)?]),
            },
            None => Ok(gil.none()),
        });
    match dumped {
        Ok(text) => text.to_string_lossy(),
        Err(e) => format!("(the stacks could not be read: {e})"),
    }
}

/// `METHOD URI` of a request, for log lines.
pub fn label(req: &Request) -> String {
    crate::server::request_label(req)
}

/// A body piece this large is written with the GIL released (its copy into the socket takes
/// longer than handing the GIL over), so that other threads run Python meanwhile.
const UNLOCKED_WRITE: usize = 32 * 1024;

/// Sends `head` and `body`, waiting (with the GIL released) while the connection's output is
/// full; false when the client is gone. With `done`, the response's end goes with the last
/// piece. A body of [`UNLOCKED_WRITE`] bytes or more is sent with the GIL released throughout.
fn write(req: &Request, gil: Gil<'_>, head: &[u8], body: &[u8], done: bool) -> bool {
    if body.len() >= UNLOCKED_WRITE {
        gil.allow_threads(|| send_all(req, head, body, done, &mut |wait| wait()))
    } else {
        send_all(req, head, body, done, &mut |wait| gil.allow_threads(wait))
    }
}

/// What [`write`] does, each wait for the socket run through `unlocked`.
fn send_all(
    req: &Request,
    mut head: &[u8],
    mut body: &[u8],
    done: bool,
    unlocked: &mut dyn FnMut(&mut dyn FnMut()),
) -> bool {
    loop {
        match req.send(head, body, done, unlocked) {
            Io::Ready(n) => {
                head = b"";
                body = &body[n..];
                if body.is_empty() {
                    return true;
                }
            }
            Io::Wait => {
                let mut waited = Ok(());
                unlocked(&mut || waited = req.wait_writable());
                match waited {
                    Ok(()) => {}
                    Err(WaitError::Gone) => return false,
                    Err(WaitError::TimedOut) => {
                        crate::request_log!(
                            warn,
                            req.log_fields(),
                            "{}: the web server took no response bytes within the body \
                             timeout; response cut off",
                            label(req)
                        );
                        return false;
                    }
                }
            }
            Io::Gone => return false,
        }
    }
}

/// The Rust side of a request, as Python sees it through the callbacks.
impl Host for Request {
    fn send(&self, gil: Gil<'_>, head: &[u8], body: &[u8], done: bool) -> bool {
        if head.is_empty() && body.is_empty() && done && self.is_gone() {
            // Nothing left to deliver is not a failure: a web server may close as soon as it
            // has the Content-Length it was promised.
            return true;
        }
        write(self, gil, head, body, done)
    }

    fn recv(&self, gil: Gil<'_>, max: usize, exact: bool, sink: &mut dyn BodySink) -> Recv {
        loop {
            let before = sink.filled();
            let want = if exact { max - before } else { max };
            match Request::recv(self, want, sink, &mut |read| gil.allow_threads(read)) {
                Io::Ready(()) => {
                    // Nothing handed over: the body's end.
                    let got = sink.filled() - before;
                    if !exact || got == 0 || sink.filled() >= max {
                        return Recv::Done;
                    }
                }
                Io::Gone => return Recv::Gone,
                Io::Wait => match gil.allow_threads(|| self.wait_readable()) {
                    Ok(()) => {}
                    Err(WaitError::Gone) => return Recv::Gone,
                    Err(WaitError::TimedOut) => {
                        let after = self.body_timeout();
                        crate::request_log!(
                            warn,
                            self.log_fields(),
                            "{}: the request body made no progress for {:.1}s (body-timeout)",
                            label(self),
                            after.as_secs_f64()
                        );
                        return Recv::TimedOut(after);
                    }
                },
            }
        }
    }

    fn body_left(&self) -> usize {
        Request::body_left(self).map_or(usize::MAX, |left| {
            usize::try_from(left).unwrap_or(usize::MAX)
        })
    }

    fn log(&self, text: &str, error: bool) {
        let fields = self.log_fields();
        if error {
            crate::request_log!(error, fields, "{}: {}", label(self), text);
        } else {
            crate::request_log!(warn, fields, "{}: {}", label(self), text);
        }
    }

    fn settle(&self, gil: Gil<'_>) {
        // Under the GIL, as `interrupt` sends: an interrupt is either withdrawn here or never
        // sent.
        self.python.settled.store(true, Ordering::SeqCst);
        if self.python.interrupted().is_some() {
            gil.set_async_exc(crate::python::ffi::thread_ident(), None);
        }
    }

    fn sendfile(
        &self,
        gil: Gil<'_>,
        file: File,
        offset: u64,
        count: Option<u64>,
    ) -> Result<bool, String> {
        // Reading the file and writing it out touch no Python: the GIL is let go throughout.
        gil.allow_threads(|| {
            let mut buf = vec![0u8; PIECE];
            let mut pos = offset;
            let mut left = count.unwrap_or(u64::MAX);
            while left > 0 {
                let want = (left.min(PIECE as u64)) as usize;
                let n = file
                    .read_at(&mut buf[..want], pos)
                    .map_err(|e| format!("reading the file to send: {e}"))?;
                if n == 0 {
                    break;
                }
                if !send_all(self, b"", &buf[..n], false, &mut |wait| wait()) {
                    return Ok(false);
                }
                pos += n as u64;
                left -= n as u64;
            }
            Ok(true)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's modules run from the code build.rs compiled; code that cannot be read
    /// (not marshal data, or not a code object) falls back to compiling the source.
    #[test]
    fn modules_run_from_their_compiled_code_else_from_their_source() {
        crate::python::with_python(|main| {
            main.with_gil(|gil| {
                let run = |compiled: &[u8]| {
                    let ns = gil
                        .exec_module("t", "<t>", "FROM_SOURCE = 1", compiled)
                        .unwrap();
                    let from_source = ns.dict_get("FROM_SOURCE").unwrap().is_some();
                    let gateway = ns.dict_get("check_head").unwrap().is_some();
                    (from_source, gateway)
                };
                assert_eq!(run(GATEWAY.code), (false, true));
                assert_eq!(run(b"\xffnot marshal data"), (true, false));
                // marshal.dumps(1): readable, but an int.
                assert_eq!(run(b"\xe9\x01\x00\x00\x00"), (true, false));
                assert_eq!(run(&[]), (true, false));
                let diag = gil.exec_module("d", "<d>", "", DIAGNOSTICS.code).unwrap();
                assert!(diag.dict_get("application").unwrap().is_some());
            })
        });
    }
}
