//! What each mod_wsgi directive and `WSGIDaemonProcess` option becomes: one table each, read
//! by the translation and by the tests (README's table in "Coming from mod_wsgi" follows them).
//!
//! A [`Target::Planned`] entry names a gateway key that does not exist yet: such an option is
//! reported as not translated, with the key it will map to. When the key lands, changing
//! `Planned` to `Key` in its entry is the whole change of the translation (the test
//! `planned_keys_wait_for_the_gateway` lists the entries still waiting, and README's table
//! says "not yet" for them).

/// How an option's value becomes the gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// A whole number of at least 1.
    Count,
    /// `threads`: a count, where 0 is mod_wsgi's managed-process mode.
    Threads,
    /// Whole seconds; 0 means "off" in mod_wsgi and writes nothing.
    Secs,
    /// A whole number where 0 means "no limit" in mod_wsgi and writes nothing.
    Limit,
    /// `%{GROUP}` becomes the group's name.
    DisplayName,
    /// An absolute directory.
    Path,
    /// `:`-separated directories.
    PathList,
    /// An octal mask such as 0022.
    Octal,
    /// A user name, or `#uid` (looked up in /etc/passwd).
    User,
    /// A group name, or `#gid` (looked up in /etc/group).
    Group,
}

/// A setting of the web server in front (written into the nginx and Apache snippets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// How long the web server waits to connect to the gateway.
    ConnectTimeout,
    /// How long the web server waits on one read or write with the gateway.
    IoTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Written as this gateway key.
    Key(&'static str, Conv),
    /// The gateway key this will be written as once it exists; reported as not translated
    /// until then.
    Planned(&'static str, Conv),
    /// Written into the web-server snippets.
    WebServer(Front),
    /// Not translated, because...
    Unsupported(&'static str),
}

pub struct DaemonOption {
    pub name: &'static str,
    pub targets: &'static [Target],
}

use Conv::*;
use Target::*;

/// `WSGIDaemonProcess` options.
pub const DAEMON_OPTIONS: &[DaemonOption] = &[
    opt("processes", &[Key("processes", Count)]),
    opt("threads", &[Key("threads", Threads)]),
    opt("display-name", &[Key("display-name", DisplayName)]),
    opt("home", &[Planned("chdir", Path)]),
    opt("user", &[Key("user", User)]),
    opt("group", &[Key("group", Group)]),
    opt("umask", &[Key("umask", Octal)]),
    opt("python-home", &[Key("python-home", Path)]),
    opt("python-path", &[Key("python-path", PathList)]),
    opt("maximum-requests", &[Key("maximum-requests", Limit)]),
    opt("restart-interval", &[Key("restart-interval", Secs)]),
    opt("inactivity-timeout", &[Key("inactivity-timeout", Secs)]),
    opt("request-timeout", &[Key("request-timeout", Secs)]),
    opt("queue-timeout", &[Key("queue-timeout", Secs)]),
    opt("graceful-timeout", &[Key("graceful-timeout", Secs)]),
    opt("listen-backlog", &[Key("listen-backlog", Count)]),
    opt("socket-user", &[Key("socket-user", User)]),
    opt("interrupt-timeout", &[Key("interrupt-timeout", Secs)]),
    opt(
        "socket-timeout",
        &[Key("body-timeout", Secs), WebServer(Front::IoTimeout)],
    ),
    opt("connect-timeout", &[WebServer(Front::ConnectTimeout)]),
    opt(
        "supplementary-groups",
        &[Unsupported(
            "the gateway's workers run with the user's primary group (or `group`) only",
        )],
    ),
    opt(
        "lang",
        &[Unsupported(
            "set LANG in the gateway's environment (e.g. Environment= in its systemd unit)",
        )],
    ),
    opt(
        "locale",
        &[Unsupported(
            "set LC_ALL in the gateway's environment (e.g. Environment= in its systemd unit)",
        )],
    ),
    opt(
        "chroot",
        &[Unsupported(
            "the gateway does not chroot; use systemd's RootDirectory= or a container",
        )],
    ),
    opt(
        "script-user",
        &[Unsupported(
            "the gateway does not check who owns a script; make the scripts writable by their owner only",
        )],
    ),
    opt(
        "script-group",
        &[Unsupported(
            "the gateway does not check who owns a script; make the scripts writable by their owner only",
        )],
    ),
    opt(
        "python-eggs",
        &[Unsupported(
            "set PYTHON_EGG_CACHE in the gateway's environment (eggs are long obsolete)",
        )],
    ),
    opt(
        "switch-interval",
        &[Unsupported(
            "the gateway keeps CPython's GIL switch interval; call sys.setswitchinterval() in the app",
        )],
    ),
    opt(
        "deadlock-timeout",
        &[Unsupported(
            "the gateway has no GIL-deadlock detector; request-timeout recycles a stuck worker",
        )],
    ),
    opt(
        "startup-timeout",
        &[Unsupported(
            "a worker whose app fails to load is restarted with a growing back-off instead",
        )],
    ),
    opt(
        "eviction-timeout",
        &[Unsupported(
            "on a reload (SIGHUP) the gateway gives in-flight requests graceful-timeout",
        )],
    ),
    opt(
        "shutdown-timeout",
        &[Unsupported(
            "the supervisor kills workers still running 5 s after graceful-timeout",
        )],
    ),
    opt(
        "cpu-time-limit",
        &[Unsupported(
            "the gateway has no CPU-time limit; restart-interval or reload-on-rss recycle workers",
        )],
    ),
    opt(
        "cpu-priority",
        &[Unsupported(
            "set the priority of the whole gateway (systemd's Nice=, or nice)",
        )],
    ),
    opt(
        "memory-limit",
        &[Unsupported(
            "use reload-on-rss (recycles a worker gracefully), or systemd's MemoryMax=",
        )],
    ),
    opt(
        "virtual-memory-limit",
        &[Unsupported(
            "use reload-on-rss (recycles a worker gracefully), or systemd's MemoryMax=",
        )],
    ),
    opt(
        "stack-size",
        &[Unsupported("the gateway's worker threads keep the default stack size")],
    ),
    opt(
        "receive-buffer-size",
        &[Unsupported("the gateway streams request bodies with bounded buffers of its own")],
    ),
    opt(
        "send-buffer-size",
        &[Unsupported("the gateway streams responses with bounded buffers of its own")],
    ),
    opt(
        "header-buffer-size",
        &[Unsupported(
            "the gateway has no response-header size limit; max-params-bytes bounds request heads",
        )],
    ),
    opt(
        "response-buffer-size",
        &[Unsupported(
            "response buffering is the web server's (fastcgi_buffers in nginx)",
        )],
    ),
    opt(
        "response-socket-timeout",
        &[Unsupported(
            "writing to the client is the web server's (send_timeout in nginx, Timeout in Apache)",
        )],
    ),
    opt(
        "server-metrics",
        &[Unsupported(
            "there is no Apache scoreboard behind the gateway (mod_wsgi.server_metrics())",
        )],
    ),
];

const fn opt(name: &'static str, targets: &'static [Target]) -> DaemonOption {
    DaemonOption { name, targets }
}

/// A `WSGIDaemonProcess` option's entry.
pub fn daemon_option(name: &str) -> Option<&'static DaemonOption> {
    DAEMON_OPTIONS.iter().find(|o| o.name == name)
}

/// What becomes of a mod_wsgi directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Translated (by the code that reads it).
    Translated,
    /// Not translated, because...
    Unsupported(&'static str),
}

use Rule::Translated;

/// mod_wsgi's directives. One missing here is reported as unknown.
pub const DIRECTIVES: &[(&str, Rule)] = &[
    ("WSGIScriptAlias", Translated),
    ("WSGIScriptAliasMatch", Translated),
    ("WSGIDaemonProcess", Translated),
    ("WSGIProcessGroup", Translated),
    ("WSGIApplicationGroup", Translated),
    ("WSGICallableObject", Translated),
    ("WSGIPythonHome", Translated),
    ("WSGIPythonPath", Translated),
    ("WSGIImportScript", Translated),
    ("WSGIPassAuthorization", Translated),
    ("WSGIScriptReloading", Translated),
    ("WSGIRestrictEmbedded", Translated),
    (
        "WSGISocketPrefix",
        Rule::Unsupported("not needed: the gateway's sockets are in the runtime directory"),
    ),
    (
        "WSGIAccessScript",
        Rule::Unsupported(
            "the gateway has no access-control hook; keep the check in the web server",
        ),
    ),
    (
        "WSGIAuthUserScript",
        Rule::Unsupported(
            "the gateway has no authentication hook; keep authentication in the web server",
        ),
    ),
    (
        "WSGIAuthGroupScript",
        Rule::Unsupported(
            "the gateway has no authorisation hook; keep authorisation in the web server",
        ),
    ),
    (
        "WSGIDispatchScript",
        Rule::Unsupported(
            "the gateway picks process and application groups per mount, not per request from Python",
        ),
    ),
    (
        "WSGIHandlerScript",
        Rule::Unsupported("the gateway runs scripts by mount, not through Apache handlers"),
    ),
    (
        "WSGIRestrictProcess",
        Rule::Unsupported("not needed: each mount names its process group"),
    ),
    (
        "WSGIPythonOptimize",
        Rule::Unsupported("the gateway runs CPython without -O"),
    ),
    (
        "WSGIPythonWarnings",
        Rule::Unsupported("call warnings.simplefilter() in the app"),
    ),
    (
        "WSGIPythonHashSeed",
        Rule::Unsupported("the gateway keeps CPython's random hash seed"),
    ),
    (
        "WSGIDontWriteBytecode",
        Rule::Unsupported("set sys.dont_write_bytecode in the app"),
    ),
    (
        "WSGIPythonEggs",
        Rule::Unsupported("set PYTHON_EGG_CACHE in the gateway's environment"),
    ),
    (
        "WSGIPythonExecutable",
        Rule::Unsupported("the gateway embeds the Python it was built against"),
    ),
    (
        "WSGIRestrictStdout",
        Rule::Unsupported("not needed: sys.stdout goes to the gateway's log"),
    ),
    (
        "WSGIRestrictStdin",
        Rule::Unsupported("not needed: sys.stdin is not the request body in the gateway"),
    ),
    (
        "WSGIRestrictSignal",
        Rule::Unsupported("not needed: apps run in worker threads, where signal.signal() fails"),
    ),
    (
        "WSGIAcceptMutex",
        Rule::Unsupported(
            "not needed: the kernel hands each new connection to one worker (EPOLLEXCLUSIVE)",
        ),
    ),
    (
        "WSGIChunkedRequest",
        Rule::Unsupported("not needed: chunked request bodies always reach the app"),
    ),
    (
        "WSGIMapHEADToGET",
        Rule::Unsupported("the app sees HEAD as HEAD; the gateway sends no body for it"),
    ),
    (
        "WSGIErrorOverride",
        Rule::Unsupported(
            "the web server does this: fastcgi_intercept_errors in nginx, ProxyErrorOverride in Apache",
        ),
    ),
    (
        "WSGIEnableSendfile",
        Rule::Unsupported("not needed: wsgi.file_wrapper files are always sent by the gateway"),
    ),
    (
        "WSGICaseSensitivity",
        Rule::Unsupported("mount prefixes are always case-sensitive"),
    ),
    (
        "WSGIPassApacheRequest",
        Rule::Unsupported("there is no Apache request object behind the gateway"),
    ),
    (
        "WSGIDestroyInterpreter",
        Rule::Unsupported("the gateway always finalises Python when a worker stops"),
    ),
    (
        "WSGILazyInitialization",
        Rule::Unsupported("not needed: workers start Python after the fork"),
    ),
    (
        "WSGIVerboseDebugging",
        Rule::Unsupported("the gateway has no such debug log"),
    ),
    (
        "WSGISlowRequests",
        Rule::Unsupported("request-timeout logs the stacks of requests that run too long"),
    ),
    (
        "WSGIServerMetrics",
        Rule::Unsupported("there is no Apache scoreboard behind the gateway"),
    ),
    (
        "WSGIIgnoreActivity",
        Rule::Unsupported("inactivity-timeout counts every request"),
    ),
    (
        "WSGITelemetryService",
        Rule::Unsupported("the gateway sends no mod_wsgi telemetry"),
    ),
    (
        "WSGITelemetryOptions",
        Rule::Unsupported("the gateway sends no mod_wsgi telemetry"),
    ),
    (
        "WSGITrustedProxies",
        Rule::Unsupported(
            "the web server decides the client address (real_ip_header in nginx, mod_remoteip in Apache)",
        ),
    ),
    (
        "WSGITrustedProxyHeaders",
        Rule::Unsupported(
            "the web server decides the client address (real_ip_header in nginx, mod_remoteip in Apache)",
        ),
    ),
    (
        "WSGIPerInterpreterGIL",
        Rule::Unsupported("the gateway's equivalent is own-gil = true (Python 3.12+): set it by hand"),
    ),
    (
        "WSGIInterpreterOptions",
        Rule::Unsupported("the gateway's equivalent is own-gil = true (Python 3.12+): set it by hand"),
    ),
    (
        "WSGIFreeThreading",
        Rule::Unsupported("the gateway embeds a CPython with the GIL"),
    ),
    (
        "WSGISwitchInterval",
        Rule::Unsupported("call sys.setswitchinterval() in the app"),
    ),
    (
        "WSGISocketRotation",
        Rule::Unsupported("not needed: the gateway's socket paths are fixed"),
    ),
];

/// A mod_wsgi directive's rule; `None` for a name mod_wsgi does not have.
pub fn directive(name: &str) -> Option<Rule> {
    DIRECTIVES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_and_directive_is_listed_once() {
        for (i, o) in DAEMON_OPTIONS.iter().enumerate() {
            assert!(!o.targets.is_empty(), "{}", o.name);
            assert!(
                DAEMON_OPTIONS[i + 1..].iter().all(|p| p.name != o.name),
                "{} twice",
                o.name
            );
        }
        for (i, (n, _)) in DIRECTIVES.iter().enumerate() {
            assert!(
                DIRECTIVES[i + 1..]
                    .iter()
                    .all(|(m, _)| !m.eq_ignore_ascii_case(n)),
                "{n} twice"
            );
        }
    }

    #[test]
    fn the_readme_table_names_every_directive_and_option() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let section = readme
            .split("## Coming from mod_wsgi")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a \"Coming from mod_wsgi\" section");
        let missing: Vec<&str> = DAEMON_OPTIONS
            .iter()
            .map(|o| o.name)
            .chain(DIRECTIVES.iter().map(|(n, _)| *n))
            .filter(|n| {
                !section.contains(&format!("`{n}`"))
                    && !section.contains(&format!("`{n} "))
                    && !section.contains(&format!("`{n}=`"))
            })
            .collect();
        assert!(missing.is_empty(), "not in README's table: {missing:?}");
    }

    #[test]
    fn planned_keys_wait_for_the_gateway() {
        let planned: Vec<(&str, &str)> = DAEMON_OPTIONS
            .iter()
            .flat_map(|o| {
                o.targets.iter().filter_map(move |t| match t {
                    Planned(k, _) => Some((o.name, *k)),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(planned, [("home", "chdir")]);
    }
}
