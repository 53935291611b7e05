//! The configuration: the command line and the TOML file merged ([`settings`]), every setting
//! checked and resolved into one [`ProcessGroup`] per process group ([`resolve`]), and every
//! problem reported at once with the place it was written ([`Problem`]).
//!
//! Adding a setting: a field in [`Settings`] (its doc comment is the flag's help, its name the
//! flag and the config key), and its resolution in the one function of [`resolve`] that
//! handles its part of the configuration.

mod problem;
mod resolve;
pub mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use problem::{Origin, Problem};
pub use settings::Settings;

use problem::{suggestion, KeyPath, Seg, Source};
use settings::{field_names, Merge, MountSpec};

use crate::router::Mount;
use crate::server::ListenerSpec;
use crate::sys;
use crate::venv::Home;

/// One process group, resolved and checked: what its worker processes serve and how.
#[derive(Debug)]
pub struct ProcessGroup {
    /// Its name (`main` without `[[process-group]]` tables).
    pub name: String,
    pub listeners: Vec<ListenerSpec>,
    pub mounts: Vec<Mount>,
    pub python: Python,
    /// Threads per worker process.
    pub threads: usize,
    /// Worker processes under a supervisor; `None`: a single process, no supervisor.
    pub processes: Option<usize>,
    pub graceful_timeout: Duration,
    pub limits: protocol::Limits,
    pub connections: Connections,
    pub lifecycle: Lifecycle,
    /// Its worker processes' access log, when there is one.
    pub access_log: Option<crate::log::access::Config>,
    /// The status page (status-path), if any.
    pub status: Option<Status>,
    /// Things worth saying at start-up and in `check` that do not stop the gateway.
    pub warnings: Vec<String>,
}

/// The status page: where, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub path: String,
    pub allow: settings::AllowList,
}

/// The embedded Python's environment.
#[derive(Debug, Clone)]
pub struct Python {
    pub home: Home,
    /// sys.path entries added to every interpreter (python-path).
    pub path: Vec<PathBuf>,
}

/// The limits and timeouts of connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connections {
    pub max_connections: usize,
    pub max_body_bytes: Option<u64>,
    pub buffer_body: usize,
    pub buffer_body_total: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub linger_timeout: Duration,
}

/// When worker processes are recycled, who they run as, and the per-request time limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub maximum_requests: Option<u64>,
    pub restart_interval: Option<Duration>,
    pub inactivity_timeout: Option<Duration>,
    pub reload_on_rss_mib: Option<u64>,
    pub request_timeout: Option<Duration>,
    pub queue_timeout: Option<Duration>,
    pub slowlog_timeout: Option<Duration>,
    pub interrupt_timeout: Option<Duration>,
    pub cancel_on_disconnect: bool,
    /// Kept connections pass to another worker of the group rather than close (balance).
    pub hand_over_kept: bool,
    pub preload: bool,
    pub display_name: Option<String>,
    /// Who the worker processes run as (resolved ids), and their umask.
    pub identity: Option<sys::Identity>,
    pub umask: Option<u32>,
}

impl Lifecycle {
    /// Whether any setting recycles worker processes (those need a supervisor).
    pub fn recycles(&self) -> bool {
        self.maximum_requests.is_some()
            || self.restart_interval.is_some()
            || self.inactivity_timeout.is_some()
            || self.reload_on_rss_mib.is_some()
            || self.request_timeout.is_some()
    }
}

/// What a configuration gave: its process groups as far as they resolved (a mount with a
/// problem is left out), and every problem found.
pub struct Loaded {
    pub groups: Vec<ProcessGroup>,
    /// The log settings of the whole gateway.
    pub logging: crate::log::Config,
    pub problems: Vec<Problem>,
}

impl Loaded {
    /// The process groups and the log settings, or every problem.
    pub fn into_result(self) -> Result<(Vec<ProcessGroup>, crate::log::Config), Vec<Problem>> {
        if self.problems.is_empty() {
            Ok((self.groups, self.logging))
        } else {
            Err(self.problems)
        }
    }
}

/// Reads the configuration: the command line's settings and the config file they name.
pub fn load(cli: &Settings) -> Loaded {
    let mut problems = Vec::new();
    let (file, source) = match &cli.config {
        Some(path) => match read_file(path.path(), &mut problems) {
            Some((file, source)) => (file, Some(source)),
            None => {
                return Loaded {
                    groups: Vec::new(),
                    logging: crate::log::Config::default(),
                    problems,
                }
            }
        },
        None => (Settings::default(), None),
    };
    let cli_keys = cli.given_keys();
    let cli_mounts = usize::from(cli.script.is_some()) + cli.mount.len();
    let mut ctx = resolve::Ctx {
        cli_keys: &cli_keys,
        cli_mounts,
        source: source.as_ref(),
        group: None,
        problems,
        warnings: Vec::new(),
    };
    let mut groups = Vec::new();
    let top = cli.clone().merge(file.clone());
    let logging;
    if file.process_group.is_empty() {
        logging = resolve::logging(&top);
        groups.push(resolve::process_group(&top, "main", &mut ctx));
    } else {
        logging = resolve::logging(&cli.clone().merge(file.inherited()));
        process_groups(cli, &file, &mut ctx, &mut groups);
    }
    resolve::inherited_listeners(&mut groups, &top, &mut ctx);
    Loaded {
        groups,
        logging,
        problems: ctx.problems,
    }
}

/// `[[process-group]]` tables: each takes the command line, then its own settings, then the
/// file's top-level ones; listeners and mounts are its own.
fn process_groups(
    cli: &Settings,
    file: &Settings,
    ctx: &mut resolve::Ctx<'_>,
    groups: &mut Vec<ProcessGroup>,
) {
    if file.has_listeners() || !file.mount.is_empty() {
        let key = if file.has_listeners() {
            "listen"
        } else {
            "mount"
        };
        ctx.problem(
            key,
            "with [[process-group]] tables, listeners and mounts belong inside the groups",
        );
    }
    if cli.has_listeners() || ctx.cli_mounts > 0 {
        ctx.problems.push(Problem::new(
            "",
            "with [[process-group]] tables, listeners and mounts come from the config file, \
             not the command line",
        ));
    }
    let inherited = file.inherited();
    let mut names: Vec<String> = Vec::new();
    for (i, table) in file.process_group.iter().enumerate() {
        let name = table.name.clone().unwrap_or_default();
        if name.is_empty() {
            ctx.group = Some((i, format!("number {}", i + 1)));
            ctx.group_problem("has no name");
            continue;
        }
        ctx.group = Some((i, name.clone()));
        if names.contains(&name) {
            ctx.group_problem("is defined twice");
            continue;
        }
        names.push(name.clone());
        if !table.process_group.is_empty() {
            ctx.group_problem("process groups cannot be nested");
            continue;
        }
        if !table.has_listeners() {
            ctx.group_problem("has no listener (fastcgi, scgi, uwsgi or listen)");
            continue;
        }
        for (key, set) in [
            ("log-level", table.log_level.is_some()),
            ("log-format", table.log_format.is_some()),
            ("log-file", table.log_file.is_some()),
        ] {
            if set {
                ctx.problem(
                    key,
                    "is one for the whole gateway: set it at the top level of the file",
                );
            }
        }
        let merged = cli
            .clone()
            .merge(table.clone().merge(inherited.clone()))
            .with_processes_default();
        let group = resolve::process_group(&merged, &name, ctx);
        for l in &group.listeners {
            if let Some(other) = groups
                .iter()
                .find(|o| o.listeners.iter().any(|ol| ol.addr == l.addr))
            {
                ctx.group_problem(format!(
                    "listens on {} like process-group {:?}",
                    l.addr, other.name
                ));
            }
        }
        groups.push(group);
    }
    ctx.group = None;
}

impl Settings {
    /// Process groups run under the supervisor: one worker process unless told otherwise.
    fn with_processes_default(mut self) -> Settings {
        self.processes = self.processes.or(Some(1));
        self
    }
}

/// Reads and parses a config file. Syntax errors and unknown keys are problems with their
/// lines (every unknown key, each with a suggestion when one is close); `None` when nothing
/// usable came out.
fn read_file(path: &Path, problems: &mut Vec<Problem>) -> Option<(Settings, Source)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new("", e.to_string()).at(Origin::File {
                path: path.to_path_buf(),
                line: None,
            }));
            return None;
        }
    };
    let source = Source::new(path, text);
    let dir = path.parent().unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut unknown = Vec::new();
    let parsed: Result<Settings, toml::de::Error> = settings::with_base(&base, || {
        serde_ignored::deserialize(toml::Deserializer::new(source.text()), |p| {
            unknown.push(key_path(&p))
        })
    });
    for key in unknown {
        let leaf = key.leaf().unwrap_or_default().to_string();
        let inside_mount = key.0.iter().rev().nth(2) == Some(&Seg::Key("mount".into()));
        let known = if inside_mount {
            field_names::<MountSpec>()
        } else {
            field_names::<Settings>()
        };
        let hint = suggestion(&leaf, known)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        problems.push(
            Problem::new("", format!("unknown key `{key}`{hint}")).at(Origin::File {
                path: path.to_path_buf(),
                line: source.line(&key),
            }),
        );
    }
    match parsed {
        Ok(settings) => Some((settings, source)),
        Err(e) => {
            let line = e.span().map(|s| source.line_of(s.start));
            problems.push(
                Problem::new("", e.message().trim().to_string()).at(Origin::File {
                    path: path.to_path_buf(),
                    line,
                }),
            );
            None
        }
    }
}

/// A key's place as serde_ignored reports it.
fn key_path(p: &serde_ignored::Path<'_>) -> KeyPath {
    use serde_ignored::Path as P;
    match p {
        P::Root => KeyPath::default(),
        P::Seq { parent, index } => key_path(parent).push_index(*index),
        P::Map { parent, key } => key_path(parent).push_key(key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{AppGroup, Target};

    fn dir_with(config: &str) -> (Settings, PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gw-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wsgi"), "").unwrap();
        std::fs::write(dir.join("b.wsgi"), "").unwrap();
        let file = dir.join("gw.toml");
        std::fs::write(&file, config).unwrap();
        let cli = Settings {
            config: Some(settings::ConfigPath(file)),
            ..Settings::default()
        };
        (cli, dir)
    }

    #[test]
    fn file_mounts_groups_and_cli_precedence() {
        let (mut cli, dir) = dir_with(
            "fastcgi = [\"127.0.0.1:9999\"]\nthreads = 3\n\n[[mount]]\nprefix = \"/a\"\n\
             script = \"a.wsgi\"\napplication-group = \"%{GLOBAL}\"\n\n[[mount]]\n\
             prefix = \"/d\"\ndirectory = \".\"\n",
        );
        cli.threads = Some(5);
        let g = load(&cli).into_result().unwrap().0.remove(0);
        assert_eq!(g.threads, 5, "the flag wins");
        assert_eq!(g.listeners.len(), 1);
        assert_eq!(g.mounts.len(), 2);
        assert_eq!(g.mounts[0].group, AppGroup::Global);
        assert_eq!(g.mounts[1].group, AppGroup::Own);
        assert!(matches!(g.mounts[1].target, Target::Directory { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let (cli, dir) = dir_with(
            "threads = 0\nthreds = 3\n\n[[mount]]\nprefix = \"/a\"\nscript = \"missing.wsgi\"\n\
             aplication-group = \"x\"\n",
        );
        let problems: Vec<String> = load(&cli).problems.iter().map(|p| p.to_string()).collect();
        let file = dir.join("gw.toml");
        let at = |line: usize| format!("config file {}, line {line}: ", file.display());
        let expect = [
            format!("{}unknown key `threds`; did you mean `threads`?", at(2)),
            format!(
                "{}unknown key `mount[0].aplication-group`; did you mean `application-group`?",
                at(7)
            ),
            format!("{}threads: must be at least 1", at(1)),
        ];
        for e in &expect {
            assert!(problems.contains(e), "{e:?} not in {problems:#?}");
        }
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&at(6)) && p.contains("mount /a: script")),
            "{problems:#?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn log_settings_resolve_and_are_checked() {
        let (cli, dir) = dir_with(
            "log-level = \"warn\"\nlog-format = \"json\"\nlog-file = \"gw.log\"\n\
             access-log = \"-\"\naccess-log-format = \"$status $nope\"\n\n\
             [[process-group]]\nname = \"a\"\nfastcgi = [\"127.0.0.1:9997\"]\n\
             log-level = \"debug\"\naccess-log = \"a.log\"\naccess-log-format = \"json\"\n",
        );
        let loaded = load(&cli);
        let file = dir.join("gw.toml");
        assert_eq!(loaded.logging.level, crate::log::Level::Warn);
        assert_eq!(loaded.logging.format, crate::log::Format::Json);
        assert_eq!(loaded.logging.file, Some(dir.join("gw.log")));
        let a = &loaded.groups[0];
        let access = a.access_log.as_ref().expect("an access log");
        assert_eq!(
            access.dest,
            crate::log::access::Dest::File(dir.join("a.log"))
        );
        assert_eq!(access.format, crate::log::access::Format::Json);
        let problems: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with(&format!("config file {}, line 10: ", file.display()))
                && problems[0].contains("log-level: is one for the whole gateway"),
            "{problems:#?}"
        );
        // The top level's template is checked where a group uses it.
        let (cli, dir2) = dir_with("access-log = \"-\"\naccess-log-format = \"$status $nope\"\n");
        let problems: Vec<String> = load(&cli).problems.iter().map(|p| p.to_string()).collect();
        assert!(
            problems.len() == 1 && problems[0].contains("line 2") && problems[0].contains("$nope"),
            "{problems:#?}"
        );
        assert!(load(&Settings {
            log_level: Some(crate::log::Level::Debug),
            ..Settings::default()
        })
        .problems
        .is_empty());
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(dir2).unwrap();
    }

    #[test]
    fn syntax_errors_have_their_line() {
        let (cli, dir) = dir_with("threads = 2\n[[mount]\n");
        let p = load(&cli).problems;
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].to_string().contains("line 2"), "{}", p[0]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn process_groups_inherit_the_top_level() {
        let (cli, dir) = dir_with(
            "threads = 3\nqueue-timeout = 2\n\n[[process-group]]\nname = \"a\"\n\
             fastcgi = [\"127.0.0.1:9998\"]\n[[process-group.mount]]\nprefix = \"/\"\n\
             script = \"a.wsgi\"\n\n[[process-group]]\nname = \"b\"\nthreads = 1\n\
             fastcgi = [\"127.0.0.1:9998\"]\n",
        );
        let loaded = load(&cli);
        let problems: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0]
            .contains("process-group \"b\": listens on 127.0.0.1:9998 like process-group \"a\""));
        assert!(problems[0].contains("line 11"), "{}", problems[0]);
        let a = &loaded.groups[0];
        assert_eq!((a.threads, a.processes), (3, Some(1)));
        assert_eq!(a.lifecycle.queue_timeout, Some(Duration::from_secs(2)));
        assert_eq!(loaded.groups[1].threads, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
