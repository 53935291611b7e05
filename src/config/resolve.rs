//! From merged [`Settings`] to one process group's checked [`ProcessGroup`]: each part of the
//! configuration has its function (listeners, mounts, Python, lifecycle, identity). Every
//! problem is reported through the [`Ctx`], which knows where each setting was written.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::problem::{KeyPath, Origin, Problem, Source};
use super::settings::{AllowList, LogDest, MountSpec, Seconds, Settings};
use super::{Connections, Lifecycle, ProcessGroup, Python, Status};
use crate::log;
use crate::router::{AppGroup, Mount, Target};
use crate::server::{Addr, ListenerSpec, Proto};
use crate::sys;
use crate::venv::{self, Home};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
const DEFAULT_EXTENSION: &str = ".wsgi";
const DEFAULT_THREADS: usize = 8;
const DEFAULT_BACKLOG: u32 = 1024;
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CALLABLE: &str = "application";
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const DEFAULT_BUFFER_BODY: usize = 1 << 20;
const DEFAULT_BUFFER_BODY_TOTAL: usize = 1 << 20;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATUS_ALLOW: &str = "127.0.0.0/8,::1";

/// What the resolution of one process group needs to know about where settings came from.
pub struct Ctx<'a> {
    /// The keys given on the command line (kebab-case).
    pub cli_keys: &'a [String],
    /// How many of the merged mounts came from the command line (they come first).
    pub cli_mounts: usize,
    pub source: Option<&'a Source>,
    /// The `[[process-group]]` table's index and name, when there are such tables.
    pub group: Option<(usize, String)>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Ctx<'_> {
    /// Where the setting `key` (kebab-case) of this process group was written.
    fn origin(&self, key: &str) -> Origin {
        if self.cli_keys.iter().any(|k| k == key) {
            return Origin::CommandLine;
        }
        let Some(src) = self.source else {
            return Origin::Derived;
        };
        let in_group = self.group.as_ref().and_then(|(g, _)| {
            src.line(&KeyPath::key("process-group").push_index(*g).push_key(key))
        });
        match in_group.or_else(|| src.line(&KeyPath::key(key))) {
            Some(line) => Origin::File {
                path: src.path.clone(),
                line: Some(line),
            },
            None => Origin::Derived,
        }
    }

    /// The subject of a message about this process group's setting `key`.
    fn subject(&self, what: &str) -> String {
        match &self.group {
            Some((_, name)) if what.is_empty() => format!("process-group {name:?}"),
            Some((_, name)) => format!("process-group {name:?}: {what}"),
            None => what.to_string(),
        }
    }

    /// A problem with the setting `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let p = Problem::new(self.subject(key), message).at(self.origin(key));
        self.problems.push(p);
    }

    /// A problem with the setting `key`, whose message names it already.
    pub fn problem_named(&mut self, key: &str, message: impl Into<String>) {
        let p = Problem::new(self.subject(""), message).at(self.origin(key));
        self.problems.push(p);
    }

    /// A problem with the process group as a whole.
    pub fn group_problem(&mut self, message: impl Into<String>) {
        let origin = match (self.source, &self.group) {
            (Some(src), Some((g, _))) => Origin::File {
                path: src.path.clone(),
                line: src.line(&KeyPath::key("process-group").push_index(*g)),
            },
            _ => Origin::Derived,
        };
        let p = Problem::new(self.subject(""), message).at(origin);
        self.problems.push(p);
    }

    /// A problem with field `field` of merged mount number `index`.
    fn mount_problem(&mut self, index: usize, prefix: &str, field: &str, message: String) {
        let origin = if index < self.cli_mounts {
            Origin::CommandLine
        } else {
            let j = index - self.cli_mounts;
            let path = match &self.group {
                Some((g, _)) => KeyPath::key("process-group")
                    .push_index(*g)
                    .push_key("mount"),
                None => KeyPath::key("mount"),
            }
            .push_index(j);
            match self.source {
                Some(src) => Origin::File {
                    path: src.path.clone(),
                    line: src
                        .line(&path.clone().push_key(field))
                        .or_else(|| src.line(&path)),
                },
                None => Origin::Derived,
            }
        };
        let p = Problem::new(self.subject(&format!("mount {prefix}")), message).at(origin);
        self.problems.push(p);
    }
}

/// Resolves one process group: what could be resolved (a mount with a problem is left out),
/// every problem in `ctx`.
pub fn process_group(s: &Settings, name: &str, ctx: &mut Ctx<'_>) -> ProcessGroup {
    let listeners = listeners(s, ctx);
    let mounts = mounts(s, ctx);
    let python = python(s, &mounts, ctx);
    let threads = s.threads.unwrap_or(DEFAULT_THREADS);
    if threads == 0 {
        ctx.problem("threads", "must be at least 1");
    }
    if s.processes == Some(0) {
        ctx.problem("processes", "must be at least 1");
    }
    let lifecycle = lifecycle(s, ctx);
    let limits = protocol::Limits {
        max_params_bytes: s
            .max_params_bytes
            .unwrap_or(protocol::Limits::DEFAULT_MAX_PARAMS_BYTES),
        ..protocol::Limits::default()
    };
    let connections = connections(s, ctx);
    let access_log = access_log(s, ctx);
    let status = status(s, ctx);
    ProcessGroup {
        name: name.to_string(),
        listeners,
        mounts,
        python,
        threads,
        processes: s.processes,
        graceful_timeout: secs(s.graceful_timeout).unwrap_or(DEFAULT_GRACEFUL_TIMEOUT),
        limits,
        connections,
        lifecycle,
        access_log,
        status,
        warnings: std::mem::take(&mut ctx.warnings),
    }
}

/// The status page: status-path (a path the gateway answers itself) and status-allow.
fn status(s: &Settings, ctx: &mut Ctx<'_>) -> Option<Status> {
    let Some(path) = &s.status_path else {
        if s.status_allow.is_some() {
            ctx.problem(
                "status-allow",
                "needs status-path (e.g. --status-path /status)",
            );
        }
        return None;
    };
    if !path.starts_with('/') || path.contains(['?', '#']) {
        ctx.problem(
            "status-path",
            format!(
                "{path:?} must be a URL path starting with '/', without a query (e.g. /status)"
            ),
        );
        return None;
    }
    let allow = s.status_allow.clone().unwrap_or_else(|| {
        DEFAULT_STATUS_ALLOW
            .parse()
            .expect("the default is a valid list")
    });
    Some(Status {
        path: path.clone(),
        allow,
    })
}

fn secs(s: Option<Seconds>) -> Option<Duration> {
    s.map(|s| s.0)
}

/// The limits and timeouts of connections.
fn connections(s: &Settings, ctx: &mut Ctx<'_>) -> Connections {
    let c = Connections {
        max_connections: s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_body_bytes: s.max_body_bytes,
        buffer_body: s.buffer_body.unwrap_or(DEFAULT_BUFFER_BODY),
        buffer_body_total: s.buffer_body_total.unwrap_or(DEFAULT_BUFFER_BODY_TOTAL),
        header_timeout: secs(s.header_timeout).unwrap_or(DEFAULT_HEADER_TIMEOUT),
        body_timeout: secs(s.body_timeout).unwrap_or(DEFAULT_BODY_TIMEOUT),
        keepalive_timeout: secs(s.keepalive_timeout).unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
        linger_timeout: secs(s.linger_timeout).unwrap_or(DEFAULT_LINGER_TIMEOUT),
    };
    if c.max_connections == 0 {
        ctx.problem("max-connections", "must be at least 1");
    }
    for (key, t) in [
        ("header-timeout", c.header_timeout),
        ("body-timeout", c.body_timeout),
        ("keepalive-timeout", c.keepalive_timeout),
    ] {
        if t.is_zero() {
            ctx.problem(key, "must be more than 0 seconds");
        }
    }
    c
}

/// The log of the whole gateway: level, format, file.
pub fn logging(s: &Settings) -> log::Config {
    log::Config {
        level: s.log_level.unwrap_or_default(),
        format: s.log_format.unwrap_or_default(),
        file: s.log_file.as_ref().map(|p| p.path().to_path_buf()),
    }
}

/// A process group's access log: where, and its format (a template is checked here).
fn access_log(s: &Settings, ctx: &mut Ctx<'_>) -> Option<log::access::Config> {
    let format = match s.access_log_format.as_deref() {
        None => log::access::Format::Combined,
        Some(f) => match log::access::Format::parse(f) {
            Ok(f) => f,
            Err(e) => {
                ctx.problem("access-log-format", e);
                return None;
            }
        },
    };
    let dest = match &s.access_log {
        None => {
            if s.access_log_format.is_some() {
                ctx.warnings
                    .push("access-log-format is set but access-log is not: no access log".into());
            }
            return None;
        }
        Some(LogDest::Stdout) => log::access::Dest::Stdout,
        Some(LogDest::File(p)) => log::access::Dest::File(p.path().to_path_buf()),
    };
    Some(log::access::Config { dest, format })
}

fn listeners(s: &Settings, ctx: &mut Ctx<'_>) -> Vec<ListenerSpec> {
    let mode = s.socket_mode.map_or(DEFAULT_SOCKET_MODE, |m| m.0);
    let unix = s
        .fastcgi
        .iter()
        .chain(&s.scgi)
        .chain(&s.uwsgi)
        .chain(&s.listen)
        .any(|a| a.0.starts_with("unix:"));
    if unix && mode & 0o002 != 0 {
        ctx.warnings.push(format!(
            "socket-mode {mode:o} lets any local user connect to the Unix sockets and send any \
             CGI param (REMOTE_USER, HTTPS...) that the app then believes; give the web \
             server's user the socket instead: socket-user (or socket-group) with mode 660"
        ));
    }
    let backlog = s.listen_backlog.unwrap_or(DEFAULT_BACKLOG);
    let owner = socket_owner(s, ctx);
    let allow = allow_list(s, ctx);
    let mut specs = Vec::new();
    let default = [DEFAULT_LISTEN.parse().expect("a valid address")];
    // Sockets the gateway was started with replace the default listener.
    let listen: &[_] = if s.has_listeners() || !crate::server::inherited().is_empty() {
        &s.listen
    } else {
        &default
    };
    for (key, addrs, proto) in [
        ("fastcgi", &s.fastcgi[..], Proto::FastCgi),
        ("scgi", &s.scgi[..], Proto::Scgi),
        ("uwsgi", &s.uwsgi[..], Proto::Uwsgi),
        ("listen", listen, Proto::Auto),
    ] {
        for a in addrs {
            match Addr::parse(&a.0) {
                Ok(addr) => specs.push(ListenerSpec {
                    addr,
                    proto,
                    mode,
                    backlog,
                    owner,
                    allow: allow.clone(),
                }),
                Err(e) => ctx.problem(key, e),
            }
        }
    }
    specs
}

/// The sockets the gateway was started with: each goes to the process group named like it
/// (LISTEN_FDNAMES), the others to the first group.
pub fn inherited_listeners(groups: &mut [ProcessGroup], s: &Settings, ctx: &mut Ctx<'_>) {
    let allow = allow_list(s, ctx);
    for (index, sock) in crate::server::inherited().iter().enumerate() {
        let named = groups
            .iter()
            .position(|g| sock.name.as_deref() == Some(g.name.as_str()));
        let Some(group) = named.or((!groups.is_empty()).then_some(0)) else {
            return;
        };
        let g = &mut groups[group];
        g.listeners.push(ListenerSpec {
            addr: Addr::Inherited { index, fd: sock.fd },
            proto: sock.proto(),
            mode: DEFAULT_SOCKET_MODE,
            backlog: DEFAULT_BACKLOG,
            owner: None,
            allow: allow.clone(),
        });
    }
}

/// The TCP clients allowed: allow-from, else the FastCGI spec's FCGI_WEB_SERVER_ADDRS
/// environment variable, else any.
fn allow_list(s: &Settings, ctx: &mut Ctx<'_>) -> Option<AllowList> {
    if let Some(list) = &s.allow_from {
        return Some(list.clone());
    }
    let env = std::env::var("FCGI_WEB_SERVER_ADDRS").ok()?;
    match env.parse::<AllowList>() {
        Ok(list) => Some(list),
        Err(e) => {
            ctx.problem(
                "allow-from",
                format!("the environment's FCGI_WEB_SERVER_ADDRS={env:?}: {e}"),
            );
            None
        }
    }
}

/// Owner (uid, gid) of Unix socket files, from socket-user and socket-group.
fn socket_owner(s: &Settings, ctx: &mut Ctx<'_>) -> Option<(Option<u32>, Option<u32>)> {
    let (user, group) = (s.socket_user.as_deref(), s.socket_group.as_deref());
    if user.is_none() && group.is_none() {
        return None;
    }
    let key = if user.is_some() {
        "socket-user"
    } else {
        "socket-group"
    };
    if !sys::is_root() {
        ctx.problem(key, "takes effect only when the gateway is started as root");
        return None;
    }
    match sys::Identity::resolve(user, group) {
        Ok(id) => Some((user.map(|_| id.uid), group.or(user).map(|_| id.gid))),
        Err(e) => {
            ctx.problem(key, e);
            None
        }
    }
}

fn mounts(s: &Settings, ctx: &mut Ctx<'_>) -> Vec<Mount> {
    let callable = s.callable.as_deref().unwrap_or(DEFAULT_CALLABLE);
    let default_group = s.application_group.as_deref().unwrap_or_default();
    let reload = !s.no_reload && s.reload.unwrap_or(true);
    let script_mount = s.script.as_ref().map(|p| {
        format!("/={}", p.path().display())
            .parse::<MountSpec>()
            .expect("a path mount parses")
    });
    let specs: Vec<&MountSpec> = script_mount.iter().chain(&s.mount).collect();
    let mut mounts: Vec<Mount> = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let Some(m) = mount(
            i,
            spec,
            callable,
            default_group,
            s.own_gil,
            reload,
            s.no_reload,
            ctx,
        ) else {
            continue;
        };
        if let Some(other) = mounts.iter().find(|o| o.prefix == m.prefix) {
            let p = other.shown_prefix().to_string();
            ctx.mount_problem(i, &p, "prefix", "is mounted twice".into());
        } else {
            mounts.push(m);
        }
    }
    if mounts.is_empty() && ctx.problems.is_empty() {
        mounts.push(Mount {
            prefix: String::new(),
            target: Target::Diagnostics,
            callable: DEFAULT_CALLABLE.into(),
            group: AppGroup::Global,
            own_gil: false,
            venv: None,
            python_path: Vec::new(),
            reload: false,
        });
    }
    for problem in app_group_conflicts(&mounts) {
        ctx.problems
            .push(Problem::new("", problem).at(Origin::Derived));
    }
    own_gil(s, &mounts, ctx);
    mounts
}

/// own-gil: only for sub-interpreters, only on Python 3.12 or later.
fn own_gil(s: &Settings, mounts: &[Mount], ctx: &mut Ctx<'_>) {
    if s.own_gil == Some(true) && s.application_group.as_deref() == Some(AppGroup::GLOBAL) {
        ctx.problem("own-gil", NO_OWN_GIL_FOR_GLOBAL);
    }
    if !OWN_GIL_SUPPORTED && mounts.iter().any(|m| m.own_gil) {
        let message = format!(
            "needs Python 3.12 or later (a GIL per interpreter came with 3.12), but this gateway \
             embeds Python {}; rebuild it against Python 3.12+ (PYO3_PYTHON), or run CPU-bound \
             apps in parallel with processes (a process group per app)",
            crate::python::BUILD_VERSION
        );
        match s.mount.iter().position(|m| m.own_gil == Some(true)) {
            Some(j) if s.own_gil != Some(true) => {
                let index = j + usize::from(s.script.is_some());
                let prefix = s.mount[j].prefix.clone();
                ctx.mount_problem(index, &prefix, "own-gil", format!("own-gil {message}"));
            }
            _ => ctx.problem("own-gil", message),
        }
        return;
    }
    for m in mounts.iter().filter(|m| m.own_gil) {
        if let Some(w) = refusing_extensions_warning(m, s) {
            ctx.warnings.push(w);
        }
    }
}

/// Whether the embedded Python can give an interpreter a GIL of its own.
pub const OWN_GIL_SUPPORTED: bool = cfg!(Py_3_12);

const NO_OWN_GIL_FOR_GLOBAL: &str = "%{GLOBAL} is the main interpreter, which has the \
     process's GIL; own-gil applies to sub-interpreters (leave application-group empty or name \
     a group)";

/// Extension modules known to refuse any sub-interpreter (pyo3-built ones, and those keeping
/// process-wide state): by the name they are imported as.
pub const REFUSING_SUB_INTERPRETERS: &[&str] = &["pydantic_core", "cryptography", "rpds", "numpy"];

/// A warning when the packages an own-GIL mount sees (its venv, else python-home's) hold
/// extension modules that cannot be loaded in a sub-interpreter.
fn refusing_extensions_warning(m: &Mount, s: &Settings) -> Option<String> {
    let root = match (&m.venv, &s.python_home) {
        (Some(v), _) => v.clone(),
        (None, Some(home)) => home.path().to_path_buf(),
        (None, None) => return None,
    };
    let site = root.join(format!(
        "lib/python{}/site-packages",
        venv::EMBEDDED_VERSION
    ));
    let entries: Vec<String> = std::fs::read_dir(&site)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let found: Vec<&str> = REFUSING_SUB_INTERPRETERS
        .iter()
        .copied()
        .filter(|name| {
            entries
                .iter()
                .any(|e| e == name || (e.starts_with(&format!("{name}.")) && e.ends_with(".so")))
        })
        .collect();
    if found.is_empty() {
        return None;
    }
    Some(format!(
        "mount {} has its own GIL, but {} holds extension modules that cannot be loaded in a \
         sub-interpreter: {}; an app importing them fails there: run it in application-group \
         = \"%{{GLOBAL}}\"",
        m.shown_prefix(),
        site.display(),
        found.join(", ")
    ))
}

/// One mount, checked: its target exists and is of the right kind, its venv passes the
/// preflight, its python-path entries are directories.
#[allow(clippy::too_many_arguments)]
fn mount(
    index: usize,
    spec: &MountSpec,
    callable: &str,
    default_group: &str,
    default_own_gil: Option<bool>,
    reload: bool,
    no_reload: bool,
    ctx: &mut Ctx<'_>,
) -> Option<Mount> {
    let shown = spec.prefix.clone();
    let prefix = match Mount::normalise_prefix(&spec.prefix) {
        Ok(p) => p,
        Err(e) => {
            ctx.mount_problem(index, &shown, "prefix", e);
            return None;
        }
    };
    let (path, directory) = match (&spec.script, &spec.directory) {
        (Some(s), None) => (s.path(), false),
        (None, Some(d)) => (d.path(), true),
        _ => {
            let msg = "give exactly one of script and directory".to_string();
            ctx.mount_problem(index, &shown, "prefix", msg);
            return None;
        }
    };
    let field = if directory { "directory" } else { "script" };
    let target = match target(path, directory, spec.extension.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            ctx.mount_problem(index, &shown, field, e);
            return None;
        }
    };
    let venv = match &spec.venv {
        None => None,
        Some(dir) => match venv::check("venv", dir.path()) {
            Ok(Home::Venv(root)) => Some(root),
            Ok(Home::Prefix(_)) => {
                let msg = format!(
                    "venv {} is a Python installation, not a virtualenv",
                    dir.path().display()
                );
                ctx.mount_problem(index, &shown, "venv", msg);
                return None;
            }
            Err(e) => {
                ctx.mount_problem(index, &shown, "venv", e);
                return None;
            }
        },
    };
    let mut python_path = Vec::new();
    for p in spec.python_path.iter().flat_map(|l| &l.0) {
        if !p.is_dir() {
            let msg = format!("python-path entry {} is not a directory", p.display());
            ctx.mount_problem(index, &shown, "python-path", msg);
        }
        python_path.push(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    }
    let group = AppGroup::parse(spec.application_group.as_deref().unwrap_or(default_group));
    // The gateway-wide own-gil is for the sub-interpreters; %{GLOBAL} mounts keep theirs.
    let own_gil = match (spec.own_gil, &group) {
        (Some(true), AppGroup::Global) => {
            ctx.mount_problem(index, &shown, "own-gil", NO_OWN_GIL_FOR_GLOBAL.into());
            return None;
        }
        (Some(own), _) => own,
        (None, AppGroup::Global) => false,
        (None, _) => default_own_gil.unwrap_or(false),
    };
    Some(Mount {
        prefix,
        target,
        callable: spec.callable.as_deref().unwrap_or(callable).to_string(),
        group,
        own_gil,
        venv,
        python_path,
        reload: !no_reload && spec.reload.unwrap_or(reload),
    })
}

/// A mount's target: a script file, or a directory of scripts with their extension.
fn target(path: &Path, directory: bool, extension: Option<&str>) -> Result<Target, String> {
    let kind = if directory { "directory" } else { "script" };
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{kind} {shown}: {e}"))?;
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match (directory, meta.is_dir()) {
        (true, true) => {
            let extension = extension.unwrap_or(DEFAULT_EXTENSION).to_string();
            if !extension.starts_with('.') || extension.len() < 2 {
                return Err(format!("extension {extension:?} must look like \".wsgi\""));
            }
            Ok(Target::Directory {
                dir: real,
                extension,
            })
        }
        (false, false) => Ok(Target::Script(real)),
        (true, false) => Err(format!("directory {shown} is not a directory")),
        (false, true) => Err(format!("script {shown} is a directory")),
    }
}

/// One interpreter cannot hold two venvs: mounts sharing an application group must agree.
fn app_group_conflicts(mounts: &[Mount]) -> Vec<String> {
    let mut by_group: HashMap<&AppGroup, Vec<&Mount>> = HashMap::new();
    for m in mounts {
        if m.group != AppGroup::Own {
            by_group.entry(&m.group).or_default().push(m);
        }
    }
    let mut problems = Vec::new();
    for (group, members) in by_group {
        if let Some(own) = members.iter().find(|m| m.own_gil) {
            if let Some(shared) = members.iter().find(|m| !m.own_gil) {
                problems.push(format!(
                    "mounts {} (own-gil) and {} (no own-gil) share application group {group}: \
                     one interpreter has one GIL; set own-gil alike on both",
                    own.shown_prefix(),
                    shared.shown_prefix()
                ));
            }
        }
        let Some(first) = members.iter().find(|m| m.venv.is_some()) else {
            continue;
        };
        if let Some(other) = members.iter().find(|m| m.venv != first.venv) {
            let shown = |m: &Mount| {
                m.venv
                    .as_ref()
                    .map_or("no venv".to_string(), |v| format!("venv {}", v.display()))
            };
            problems.push(format!(
                "mounts {} ({}) and {} ({}) share application group {group}: one interpreter \
                 cannot hold two venvs; give one of them its own application group",
                first.shown_prefix(),
                shown(first),
                other.shown_prefix(),
                shown(other)
            ));
        }
    }
    problems.sort();
    problems
}

/// python-home (checked by the preflight) and python-path.
fn python(s: &Settings, mounts: &[Mount], ctx: &mut Ctx<'_>) -> Python {
    let home = match &s.python_home {
        Some(dir) => venv::check("python-home", dir.path()).unwrap_or_else(|e| {
            ctx.problem_named("python-home", e);
            Home::build_default()
        }),
        // Installed into a venv (pip): that venv, unless told otherwise.
        None => match venv::installed_in() {
            Some(root) => venv::check("python-home (the gateway's own virtualenv)", &root)
                .unwrap_or_else(|e| {
                    ctx.problem_named("python-home", e);
                    Home::build_default()
                }),
            None => Home::build_default(),
        },
    };
    let mut path = Vec::new();
    for p in s.python_path.iter().flat_map(|l| &l.0) {
        if !p.is_dir() {
            let msg = format!("python-path entry {} is not a directory", p.display());
            ctx.problem_named("python-path", msg);
        }
        path.push(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    }
    if mounts.iter().any(|m| m.venv.is_some()) {
        if let Some(w) = base_packages_warning(&home) {
            ctx.warnings.push(w);
        }
    }
    Python { home, path }
}

/// Packages of the base installation that a mount venv's app could import by mistake.
fn base_packages_warning(home: &Home) -> Option<String> {
    let root = match home {
        Home::Venv(r) | Home::Prefix(r) => r,
    };
    let site = root.join(format!(
        "lib/python{}/site-packages",
        venv::EMBEDDED_VERSION
    ));
    let mut names: Vec<String> = std::fs::read_dir(&site)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dist = name.strip_suffix(".dist-info")?;
            let pkg = dist.split('-').next()?.to_string();
            (!["pip", "setuptools", "wheel", "distribute"].contains(&pkg.as_str())).then_some(pkg)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "the base site-packages {} holds packages that mounts with their own venv can still \
         import when their venv lacks them: {}; point python-home at an empty virtualenv",
        site.display(),
        names.join(", ")
    ))
}

/// When worker processes are recycled, who they run as, and the request time limits.
fn lifecycle(s: &Settings, ctx: &mut Ctx<'_>) -> Lifecycle {
    let mut life = Lifecycle {
        maximum_requests: s.maximum_requests,
        restart_interval: secs(s.restart_interval),
        inactivity_timeout: secs(s.inactivity_timeout),
        reload_on_rss_mib: s.reload_on_rss,
        request_timeout: secs(s.request_timeout),
        queue_timeout: secs(s.queue_timeout),
        slowlog_timeout: secs(s.slowlog_timeout),
        interrupt_timeout: secs(s.interrupt_timeout),
        cancel_on_disconnect: s.cancel_on_disconnect.unwrap_or(false),
        hand_over_kept: s.hand_over_kept.unwrap_or(true),
        preload: s.preload.unwrap_or(false),
        display_name: s.display_name.clone(),
        identity: None,
        umask: s.umask.map(|m| m.0),
    };
    if (s.user.is_some() || s.group.is_some()) && !sys::is_root() {
        let key = if s.user.is_some() { "user" } else { "group" };
        ctx.problem(key, "takes effect only when the gateway is started as root");
    } else if s.user.is_some() || s.group.is_some() {
        match sys::Identity::resolve(s.user.as_deref(), s.group.as_deref()) {
            Ok(id) => life.identity = Some(id),
            Err(e) => ctx.problem(if s.user.is_some() { "user" } else { "group" }, e),
        }
    }
    if life.recycles() && s.processes.is_none() {
        let key = [
            ("maximum-requests", s.maximum_requests.is_some()),
            ("restart-interval", s.restart_interval.is_some()),
            ("inactivity-timeout", s.inactivity_timeout.is_some()),
            ("reload-on-rss", s.reload_on_rss.is_some()),
            ("request-timeout", s.request_timeout.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
        .unwrap_or("processes");
        ctx.problem(
            key,
            "recycles worker processes: it needs processes (e.g. --processes 1)",
        );
    }
    life
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn own_gil_mounts_are_warned_of_extensions_refusing_sub_interpreters() {
        let root = std::env::temp_dir().join(format!("own-gil-warn-{}", std::process::id()));
        let site = root.join(format!(
            "lib/python{}/site-packages",
            venv::EMBEDDED_VERSION
        ));
        std::fs::create_dir_all(site.join("numpy")).unwrap();
        std::fs::create_dir_all(site.join("flask")).unwrap();
        std::fs::write(site.join("rpds.cpython-312-x86_64-linux-gnu.so"), b"").unwrap();
        std::fs::write(site.join("cryptography.txt"), b"").unwrap();
        let mount = Mount {
            prefix: "/a".into(),
            target: Target::Diagnostics,
            callable: DEFAULT_CALLABLE.into(),
            group: AppGroup::Own,
            own_gil: true,
            venv: Some(root.clone()),
            python_path: Vec::new(),
            reload: true,
        };
        let w = refusing_extensions_warning(&mount, &Settings::default());
        std::fs::remove_dir_all(&root).unwrap();
        let w = w.expect("a warning");
        assert!(w.starts_with("mount /a has its own GIL"), "{w}");
        assert!(w.contains(": rpds, numpy;"), "{w}");
        assert!(!w.contains("flask") && !w.contains("cryptography"), "{w}");
        let bare = Mount {
            venv: None,
            ..mount
        };
        assert_eq!(
            refusing_extensions_warning(&bare, &Settings::default()),
            None
        );
    }

    #[test]
    fn a_shared_app_group_cannot_hold_two_venvs() {
        let m = |prefix: &str, group: AppGroup, venv: Option<&str>| Mount {
            prefix: prefix.into(),
            target: Target::Diagnostics,
            callable: DEFAULT_CALLABLE.into(),
            group,
            own_gil: false,
            venv: venv.map(PathBuf::from),
            python_path: Vec::new(),
            reload: true,
        };
        let problems = app_group_conflicts(&[
            m("/a", AppGroup::Global, Some("/v1")),
            m("/b", AppGroup::Global, Some("/v2")),
            m("/c", AppGroup::Named("x".into()), Some("/v1")),
            m("/d", AppGroup::Named("x".into()), Some("/v1")),
            m("/e", AppGroup::Own, Some("/v3")),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("share application group %{GLOBAL}"));
        assert!(problems[0].contains("one interpreter cannot hold two venvs"));
    }
}
