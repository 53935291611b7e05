//! The configuration: the TOML file and the command line merged, every setting checked, paths
//! absolute — ready to serve. Keys are kebab-case and match the long flags; a flag given on the
//! command line wins over the file (mounts given on both are all served).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::ServeArgs;
use crate::router::{Group, Mount, Target};
use crate::server::{Addr, ListenerSpec, Proto};
use crate::sys;
use crate::venv::{self, Home};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
const DEFAULT_EXTENSION: &str = ".wsgi";

/// When worker processes are recycled, and the per-request time limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub maximum_requests: Option<u64>,
    pub restart_interval: Option<Duration>,
    pub inactivity_timeout: Option<Duration>,
    pub reload_on_rss_mib: Option<u64>,
    pub request_timeout: Option<Duration>,
    pub queue_timeout: Option<Duration>,
    pub preload: bool,
    pub display_name: Option<String>,
    /// Who the worker processes run as (resolved ids), and their umask.
    pub identity: Option<sys::Identity>,
    pub umask: Option<u32>,
}

impl Lifecycle {
    /// Whether any setting recycles worker processes (those need a supervisor).
    fn recycles(&self) -> bool {
        self.maximum_requests.is_some()
            || self.restart_interval.is_some()
            || self.inactivity_timeout.is_some()
            || self.reload_on_rss_mib.is_some()
            || self.request_timeout.is_some()
    }
}

#[derive(Debug)]
pub struct Config {
    /// The process group's name (`main` without `[[process-group]]`).
    pub name: String,
    pub listeners: Vec<ListenerSpec>,
    pub mounts: Vec<Mount>,
    pub home: Home,
    pub python_path: Vec<PathBuf>,
    pub threads: usize,
    pub graceful_timeout: Duration,
    pub limits: protocol::Limits,
    /// Worker processes under a supervisor; `None`: a single process, no supervisor.
    pub processes: Option<usize>,
    pub lifecycle: Lifecycle,
    /// Things worth saying at start-up and in `check` that do not stop the gateway.
    pub warnings: Vec<String>,
}

/// `python-path` as a `:`-separated string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PathList {
    One(String),
    Many(Vec<String>),
}

impl PathList {
    fn entries(&self) -> Vec<String> {
        match self {
            PathList::One(s) => s.split(':').map(str::to_owned).collect(),
            PathList::Many(v) => v.clone(),
        }
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    /// A process group's name (only inside `[[process-group]]`).
    name: Option<String>,
    #[serde(default)]
    fastcgi: Vec<String>,
    #[serde(default)]
    scgi: Vec<String>,
    #[serde(default)]
    listen: Vec<String>,
    socket_mode: Option<String>,
    listen_backlog: Option<u32>,
    callable: Option<String>,
    application_group: Option<String>,
    python_home: Option<PathBuf>,
    python_path: Option<PathList>,
    threads: Option<usize>,
    graceful_timeout: Option<u64>,
    max_params_bytes: Option<usize>,
    reload: Option<bool>,
    processes: Option<usize>,
    maximum_requests: Option<u64>,
    restart_interval: Option<u64>,
    inactivity_timeout: Option<u64>,
    reload_on_rss: Option<u64>,
    request_timeout: Option<u64>,
    queue_timeout: Option<u64>,
    preload: Option<bool>,
    display_name: Option<String>,
    user: Option<String>,
    group: Option<String>,
    umask: Option<String>,
    socket_user: Option<String>,
    socket_group: Option<String>,
    #[serde(default)]
    mount: Vec<FileMount>,
    #[serde(default)]
    process_group: Vec<FileConfig>,
}

impl FileConfig {
    /// A process group's settings: its own, else the file's top-level ones. Listeners and
    /// mounts are the group's only.
    fn merged_into(&self, group: &FileConfig) -> FileConfig {
        let g = group.clone();
        FileConfig {
            name: g.name,
            fastcgi: g.fastcgi,
            scgi: g.scgi,
            listen: g.listen,
            socket_mode: g.socket_mode.or(self.socket_mode.clone()),
            listen_backlog: g.listen_backlog.or(self.listen_backlog),
            callable: g.callable.or(self.callable.clone()),
            application_group: g.application_group.or(self.application_group.clone()),
            python_home: g.python_home.or(self.python_home.clone()),
            python_path: g.python_path.or(self.python_path.clone()),
            threads: g.threads.or(self.threads),
            graceful_timeout: g.graceful_timeout.or(self.graceful_timeout),
            max_params_bytes: g.max_params_bytes.or(self.max_params_bytes),
            reload: g.reload.or(self.reload),
            processes: g.processes.or(self.processes).or(Some(1)),
            maximum_requests: g.maximum_requests.or(self.maximum_requests),
            restart_interval: g.restart_interval.or(self.restart_interval),
            inactivity_timeout: g.inactivity_timeout.or(self.inactivity_timeout),
            reload_on_rss: g.reload_on_rss.or(self.reload_on_rss),
            request_timeout: g.request_timeout.or(self.request_timeout),
            queue_timeout: g.queue_timeout.or(self.queue_timeout),
            preload: g.preload.or(self.preload),
            display_name: g.display_name.or(self.display_name.clone()),
            user: g.user.or(self.user.clone()),
            group: g.group.or(self.group.clone()),
            umask: g.umask.or(self.umask.clone()),
            socket_user: g.socket_user.or(self.socket_user.clone()),
            socket_group: g.socket_group.or(self.socket_group.clone()),
            mount: g.mount,
            process_group: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileMount {
    prefix: String,
    script: Option<PathBuf>,
    directory: Option<PathBuf>,
    extension: Option<String>,
    callable: Option<String>,
    application_group: Option<String>,
    venv: Option<PathBuf>,
    python_path: Option<PathList>,
    reload: Option<bool>,
}

/// Reads and parses a config file; syntax errors and unknown keys come with line numbers.
fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message();
        match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("config file {}, line {line}: {msg}", path.display())
            }
            None => format!("config file {}: {msg}", path.display()),
        }
    })
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// One mount as written, before its checks.
struct MountSpec {
    origin: String,
    prefix: String,
    path: PathBuf,
    directory: bool,
    extension: String,
    callable: String,
    group: Group,
    venv: Option<PathBuf>,
    python_path: Vec<PathBuf>,
    reload: bool,
}

impl Config {
    /// The process groups of the configuration, every setting checked; all problems found,
    /// one message each. Without `[[process-group]]` tables there is one group, `main`.
    pub fn load(args: &ServeArgs) -> Result<Vec<Config>, Vec<String>> {
        let (file, base) = match &args.config {
            Some(path) => match read_file(path) {
                Ok(f) => {
                    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                    (f, std::fs::canonicalize(&dir).unwrap_or(dir))
                }
                Err(e) => return Err(vec![e]),
            },
            None => (FileConfig::default(), PathBuf::from(".")),
        };
        if file.process_group.is_empty() {
            return Self::build(args, &file, &base, "main").map(|c| vec![c]);
        }
        let mut problems = Vec::new();
        let top_level = !(file.fastcgi.is_empty()
            && file.scgi.is_empty()
            && file.listen.is_empty()
            && file.mount.is_empty());
        if top_level {
            problems.push(
                "with [[process-group]] tables, listeners and mounts belong inside the groups"
                    .into(),
            );
        }
        let cli_targets = args.script.is_some()
            || !args.mount.is_empty()
            || !(args.fastcgi.is_empty() && args.scgi.is_empty() && args.listen.is_empty());
        if cli_targets {
            problems.push(
                "with [[process-group]] tables, listeners and mounts come from the config file, \
                 not the command line"
                    .into(),
            );
        }
        let mut configs: Vec<Config> = Vec::new();
        for (i, group) in file.process_group.iter().enumerate() {
            let name = match &group.name {
                Some(n) if !n.is_empty() => n.clone(),
                _ => {
                    problems.push(format!("process-group number {} has no name", i + 1));
                    continue;
                }
            };
            if configs.iter().any(|c| c.name == name) || !group.process_group.is_empty() {
                problems.push(format!("process-group {name:?} is defined twice or nested"));
                continue;
            }
            if group.fastcgi.is_empty() && group.scgi.is_empty() && group.listen.is_empty() {
                problems.push(format!("process-group {name:?} has no listener"));
                continue;
            }
            match Self::build(args, &file.merged_into(group), &base, &name) {
                Ok(c) => {
                    for l in &c.listeners {
                        if let Some(other) = configs
                            .iter()
                            .find(|o| o.listeners.iter().any(|ol| ol.addr == l.addr))
                        {
                            problems.push(format!(
                                "process-groups {:?} and {name:?} both listen on {}",
                                other.name, l.addr
                            ));
                        }
                    }
                    configs.push(c);
                }
                Err(p) => problems.extend(
                    p.into_iter()
                        .map(|p| format!("process-group {name:?}: {p}")),
                ),
            }
        }
        if problems.is_empty() {
            Ok(configs)
        } else {
            Err(problems)
        }
    }

    /// One process group's configuration from the (merged) file settings and the flags.
    fn build(
        args: &ServeArgs,
        file: &FileConfig,
        base: &Path,
        name: &str,
    ) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let base = base.to_path_buf();
        let cwd = PathBuf::from(".");

        let socket_mode = args
            .socket_mode
            .clone()
            .or(file.socket_mode.clone())
            .unwrap_or_else(|| "660".into());
        let mode = match u32::from_str_radix(&socket_mode, 8) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                problems.push(format!(
                    "socket-mode {socket_mode:?} is not an octal file mode such as 660"
                ));
                0o660
            }
        };
        let backlog = args.listen_backlog.or(file.listen_backlog).unwrap_or(1024);
        let cli_listeners =
            !(args.fastcgi.is_empty() && args.scgi.is_empty() && args.listen.is_empty());
        // A relative unix: path in the file is relative to the file, like every other path.
        let from_file = |addrs: &[String]| -> Vec<String> {
            addrs
                .iter()
                .map(|a| match a.strip_prefix("unix:") {
                    Some(p) if !Path::new(p).is_absolute() && !p.is_empty() => {
                        format!("unix:{}", base.join(p).display())
                    }
                    _ => a.clone(),
                })
                .collect()
        };
        let (fastcgi, scgi, mut listen) = if cli_listeners {
            (args.fastcgi.clone(), args.scgi.clone(), args.listen.clone())
        } else {
            (
                from_file(&file.fastcgi),
                from_file(&file.scgi),
                from_file(&file.listen),
            )
        };
        if fastcgi.is_empty() && scgi.is_empty() && listen.is_empty() {
            listen.push(DEFAULT_LISTEN.to_string());
        }
        let mut listeners = Vec::new();
        for (addrs, proto) in [
            (&fastcgi, Proto::FastCgi),
            (&scgi, Proto::Scgi),
            (&listen, Proto::Auto),
        ] {
            for a in addrs {
                match Addr::parse(a) {
                    Ok(addr) => listeners.push(ListenerSpec {
                        addr,
                        proto,
                        mode,
                        backlog,
                        owner: None,
                    }),
                    Err(e) => problems.push(e),
                }
            }
        }

        let callable = args
            .callable
            .clone()
            .or(file.callable.clone())
            .unwrap_or_else(|| "application".into());
        let default_group = args
            .application_group
            .clone()
            .or(file.application_group.clone())
            .unwrap_or_default();
        let reload = !args.no_reload && file.reload.unwrap_or(true);

        let mut specs = Vec::new();
        for m in &file.mount {
            let (path, directory) = match (&m.script, &m.directory) {
                (Some(s), None) => (absolute(&base, s), false),
                (None, Some(d)) => (absolute(&base, d), true),
                _ => {
                    problems.push(format!(
                        "mount {}: give exactly one of script and directory",
                        m.prefix
                    ));
                    continue;
                }
            };
            specs.push(MountSpec {
                origin: format!("mount {}", m.prefix),
                prefix: m.prefix.clone(),
                path,
                directory,
                extension: m
                    .extension
                    .clone()
                    .unwrap_or_else(|| DEFAULT_EXTENSION.into()),
                callable: m.callable.clone().unwrap_or_else(|| callable.clone()),
                group: Group::parse(m.application_group.as_deref().unwrap_or(&default_group)),
                venv: m.venv.as_ref().map(|v| absolute(&base, v)),
                python_path: m
                    .python_path
                    .iter()
                    .flat_map(PathList::entries)
                    .map(|p| absolute(&base, Path::new(&p)))
                    .collect(),
                reload: !args.no_reload && m.reload.unwrap_or(reload),
            });
        }
        let cli_mounts = args
            .script
            .iter()
            .map(|s| format!("/={}", s.display()))
            .chain(args.mount.iter().cloned());
        for spec in cli_mounts {
            let (prefix, path) = match spec.split_once('=') {
                Some((p, s)) if p.starts_with('/') => (p.to_string(), s.to_string()),
                _ => ("/".to_string(), spec.clone()),
            };
            let path = absolute(&cwd, Path::new(&path));
            specs.push(MountSpec {
                origin: format!("mount {prefix}"),
                prefix,
                directory: path.is_dir(),
                path,
                extension: DEFAULT_EXTENSION.into(),
                callable: callable.clone(),
                group: Group::parse(&default_group),
                venv: None,
                python_path: Vec::new(),
                reload,
            });
        }

        let mut mounts: Vec<Mount> = Vec::new();
        for spec in specs {
            match resolve_mount(spec) {
                Ok(m) => {
                    if let Some(other) = mounts.iter().find(|o| o.prefix == m.prefix) {
                        problems.push(format!(
                            "two mounts for the prefix {}",
                            other.shown_prefix()
                        ));
                    } else {
                        mounts.push(m);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        if mounts.is_empty() {
            mounts.push(Mount {
                prefix: String::new(),
                target: Target::Diagnostics,
                callable: "application".into(),
                group: Group::Global,
                venv: None,
                python_path: Vec::new(),
                reload: false,
            });
        }
        problems.extend(group_conflicts(&mounts));

        let home = match args
            .python_home
            .clone()
            .or(file.python_home.as_ref().map(|p| absolute(&base, p)))
        {
            Some(dir) => venv::check("python-home", &dir).unwrap_or_else(|e| {
                problems.push(e);
                Home::build_default()
            }),
            None => Home::build_default(),
        };
        let path_entries: Vec<(PathBuf, String)> = match &args.python_path {
            Some(p) => PathList::One(p.clone())
                .entries()
                .into_iter()
                .map(|e| (absolute(&cwd, Path::new(&e)), e))
                .collect(),
            None => file
                .python_path
                .iter()
                .flat_map(PathList::entries)
                .map(|e| (absolute(&base, Path::new(&e)), e))
                .collect(),
        };
        let mut python_path = Vec::new();
        for (path, shown) in path_entries {
            if !path.is_dir() {
                problems.push(format!("python-path entry {shown} is not a directory"));
            }
            python_path.push(std::fs::canonicalize(&path).unwrap_or(path));
        }
        for m in &mounts {
            for p in &m.python_path {
                if !p.is_dir() {
                    problems.push(format!(
                        "mount {}: python-path entry {} is not a directory",
                        m.shown_prefix(),
                        p.display()
                    ));
                }
            }
        }
        if mounts.iter().any(|m| m.venv.is_some()) {
            if let Some(w) = base_packages_warning(&home) {
                warnings.push(w);
            }
        }

        let threads = args.threads.or(file.threads).unwrap_or(8);
        if threads == 0 {
            problems.push("threads must be at least 1".into());
        }
        let limits = protocol::Limits {
            max_params_bytes: args
                .max_params_bytes
                .or(file.max_params_bytes)
                .unwrap_or(protocol::Limits::DEFAULT_MAX_PARAMS_BYTES),
            ..protocol::Limits::default()
        };
        let graceful = args
            .graceful_timeout
            .or(file.graceful_timeout)
            .unwrap_or(30);
        let processes = args.processes.or(file.processes);
        if processes == Some(0) {
            problems.push("processes must be at least 1".into());
        }
        let secs = |a: Option<u64>, f: Option<u64>| a.or(f).map(Duration::from_secs);
        let lifecycle = Lifecycle {
            maximum_requests: args.maximum_requests.or(file.maximum_requests),
            restart_interval: secs(args.restart_interval, file.restart_interval),
            inactivity_timeout: secs(args.inactivity_timeout, file.inactivity_timeout),
            reload_on_rss_mib: args.reload_on_rss.or(file.reload_on_rss),
            request_timeout: secs(args.request_timeout, file.request_timeout),
            queue_timeout: secs(args.queue_timeout, file.queue_timeout),
            preload: args.preload || file.preload.unwrap_or(false),
            display_name: args.display_name.clone().or(file.display_name.clone()),
            identity: None,
            umask: None,
        };
        let mut lifecycle = lifecycle;
        let user = args.user.clone().or(file.user.clone());
        let group = args.group.clone().or(file.group.clone());
        let is_root = sys::is_root();
        match (&user, &group) {
            (None, None) => {}
            (Some(_), _) | (_, Some(_)) if !is_root => {
                problems.push("user and group take effect only when started as root".into())
            }
            _ => match sys::Identity::resolve(user.as_deref(), group.as_deref()) {
                Ok(id) => lifecycle.identity = Some(id),
                Err(e) => problems.push(e),
            },
        }
        if let Some(mask) = args.umask.clone().or(file.umask.clone()) {
            match u32::from_str_radix(&mask, 8) {
                Ok(m) if m <= 0o777 => lifecycle.umask = Some(m),
                _ => problems.push(format!("umask {mask:?} is not an octal mask such as 022")),
            }
        }
        let socket_user = args.socket_user.clone().or(file.socket_user.clone());
        let socket_group = args.socket_group.clone().or(file.socket_group.clone());
        if socket_user.is_some() || socket_group.is_some() {
            if !is_root {
                problems
                    .push("socket-user and socket-group need the gateway started as root".into());
            } else {
                match sys::Identity::resolve(socket_user.as_deref(), socket_group.as_deref()) {
                    Ok(id) => {
                        for l in &mut listeners {
                            l.owner = Some((
                                socket_user.as_ref().map(|_| id.uid),
                                socket_group
                                    .as_ref()
                                    .or(socket_user.as_ref())
                                    .map(|_| id.gid),
                            ));
                        }
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        if lifecycle.recycles() && processes.is_none() {
            problems.push(
                "maximum-requests, restart-interval, inactivity-timeout, reload-on-rss and \
                 request-timeout recycle worker processes: they need processes (e.g. --processes 1)"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(Config {
                name: name.to_string(),
                listeners,
                mounts,
                home,
                python_path,
                threads,
                graceful_timeout: Duration::from_secs(graceful),
                limits,
                processes,
                lifecycle,
                warnings,
            })
        } else {
            Err(problems)
        }
    }
}

fn resolve_mount(spec: MountSpec) -> Result<Mount, String> {
    let prefix = Mount::normalise_prefix(&spec.prefix)?;
    let shown = spec.path.display();
    let kind = if spec.directory {
        "directory"
    } else {
        "script"
    };
    let meta = std::fs::metadata(&spec.path)
        .map_err(|e| format!("{}: {kind} {shown}: {e}", spec.origin))?;
    let path = std::fs::canonicalize(&spec.path).unwrap_or(spec.path.clone());
    let target = match (spec.directory, meta.is_dir()) {
        (true, true) => {
            if !spec.extension.starts_with('.') || spec.extension.len() < 2 {
                return Err(format!(
                    "{}: extension {:?} must look like \".wsgi\"",
                    spec.origin, spec.extension
                ));
            }
            Target::Directory {
                dir: path,
                extension: spec.extension,
            }
        }
        (false, false) => Target::Script(path),
        (true, false) => {
            return Err(format!(
                "{}: directory {shown} is not a directory",
                spec.origin
            ))
        }
        (false, true) => return Err(format!("{}: script {shown} is a directory", spec.origin)),
    };
    let venv = match &spec.venv {
        None => None,
        Some(dir) => match venv::check(&format!("{} venv", spec.origin), dir)? {
            Home::Venv(root) => Some(root),
            Home::Prefix(_) => {
                return Err(format!(
                    "{}: venv {} is a Python installation, not a virtualenv",
                    spec.origin,
                    dir.display()
                ))
            }
        },
    };
    Ok(Mount {
        prefix,
        target,
        callable: spec.callable,
        group: spec.group,
        venv,
        python_path: spec
            .python_path
            .into_iter()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect(),
        reload: spec.reload,
    })
}

/// One interpreter cannot hold two venvs: mounts sharing a group must agree.
fn group_conflicts(mounts: &[Mount]) -> Vec<String> {
    let mut by_group: HashMap<&Group, Vec<&Mount>> = HashMap::new();
    for m in mounts {
        if m.group != Group::Own {
            by_group.entry(&m.group).or_default().push(m);
        }
    }
    let mut problems = Vec::new();
    for (group, members) in by_group {
        let venvs: Vec<&Mount> = members
            .iter()
            .copied()
            .filter(|m| m.venv.is_some())
            .collect();
        if let Some(first) = venvs.first() {
            for other in &members {
                if other.venv != first.venv {
                    let shown = |m: &Mount| {
                        m.venv
                            .as_ref()
                            .map_or("no venv".to_string(), |v| format!("venv {}", v.display()))
                    };
                    problems.push(format!(
                        "mounts {} ({}) and {} ({}) share application group {group}: one \
                         interpreter cannot hold two venvs; give one of them its own group",
                        first.shown_prefix(),
                        shown(first),
                        other.shown_prefix(),
                        shown(other)
                    ));
                    break;
                }
            }
        }
    }
    problems.sort();
    problems
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &str) -> (ServeArgs, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("gw-config-{}-{}", std::process::id(), config.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wsgi"), "").unwrap();
        std::fs::write(dir.join("b.wsgi"), "").unwrap();
        let file = dir.join("gw.toml");
        std::fs::write(&file, config).unwrap();
        (
            ServeArgs {
                config: Some(file),
                ..ServeArgs::default()
            },
            dir,
        )
    }

    #[test]
    fn file_mounts_groups_and_cli_precedence() {
        let (mut a, dir) = args(
            "fastcgi = [\"127.0.0.1:9999\"]\nthreads = 3\n\n[[mount]]\nprefix = \"/a\"\nscript = \"a.wsgi\"\n\
             application-group = \"%{GLOBAL}\"\n\n[[mount]]\nprefix = \"/d\"\ndirectory = \".\"\n",
        );
        a.threads = Some(5);
        let c = Config::load(&a).unwrap().remove(0);
        assert_eq!(c.threads, 5, "the flag wins");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(c.mounts[0].group, Group::Global);
        assert_eq!(c.mounts[1].group, Group::Own);
        assert!(matches!(c.mounts[1].target, Target::Directory { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_syntax_errors_have_line_numbers() {
        let (a, dir) = args("threads = 2\nthreds = 3\n");
        let e = Config::load(&a).unwrap_err();
        assert!(
            e[0].contains("line 2") && e[0].contains("unknown field `threds`"),
            "{e:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
        let (a, dir) = args("threads = 2\n[[mount]\n");
        let e = Config::load(&a).unwrap_err();
        assert!(e[0].contains("line 2"), "{e:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_shared_group_cannot_hold_two_venvs() {
        let m = |prefix: &str, group: Group, venv: Option<&str>| Mount {
            prefix: prefix.into(),
            target: Target::Diagnostics,
            callable: "application".into(),
            group,
            venv: venv.map(PathBuf::from),
            python_path: Vec::new(),
            reload: true,
        };
        let problems = group_conflicts(&[
            m("/a", Group::Global, Some("/v1")),
            m("/b", Group::Global, Some("/v2")),
            m("/c", Group::Named("x".into()), Some("/v1")),
            m("/d", Group::Named("x".into()), Some("/v1")),
            m("/e", Group::Own, Some("/v3")),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("share application group %{GLOBAL}"));
        assert!(problems[0].contains("one interpreter cannot hold two venvs"));
    }
}
