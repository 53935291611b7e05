//! Every setting of the gateway, as the command line and the config file give it: one struct
//! that derives both `clap::Args` (a long flag per field) and `serde::Deserialize` (a
//! kebab-case key per field). Nothing here checks values against the system; that is
//! [`super::resolve`]'s work.
//!
//! Every field is an `Option` (or a list) so that "not given" can be told from a default:
//! [`Settings::merge`] puts the command line over a process group's table over the file's top
//! level, and the resolution applies the defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// How one kind of value combines when a higher source (the command line) meets a lower one
/// (the config file).
pub trait Merge {
    fn merge(self, lower: Self) -> Self;
}

impl<T> Merge for Option<T> {
    fn merge(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// Listeners given on the command line replace the file's.
impl Merge for Vec<ListenAddr> {
    fn merge(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

/// Mounts from every source are all served (the command line's first).
impl Merge for Vec<MountSpec> {
    fn merge(mut self, lower: Self) -> Self {
        self.extend(lower);
        self
    }
}

/// Process groups come from the file only.
impl Merge for Vec<Settings> {
    fn merge(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

impl Merge for bool {
    fn merge(self, lower: Self) -> Self {
        self || lower
    }
}

/// Whether a setting was given at all.
pub trait Given {
    fn is_given(&self) -> bool;
}

impl<T> Given for Option<T> {
    fn is_given(&self) -> bool {
        self.is_some()
    }
}

impl<T> Given for Vec<T> {
    fn is_given(&self) -> bool {
        !self.is_empty()
    }
}

impl Given for bool {
    fn is_given(&self) -> bool {
        *self
    }
}

/// The keys a type's serde `Deserialize` knows (its fields, as written in a config file):
/// for suggestions when a key is unknown.
pub fn field_names<T: Deserialize<'static>>() -> &'static [&'static str] {
    struct Catch(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Catch {
        type Error = de::value::Error;
        fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("fields caught"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut catch = Catch(&[]);
    let _ = T::deserialize(&mut catch);
    catch.0
}

/// Defines [`Settings`] and its field-by-field [`Merge`]; each field carries its clap and
/// serde attributes, and its doc comment is the flag's help.
macro_rules! settings {
    ($( $(#[$meta:meta])* $field:ident : $ty:ty, )*) => {
        /// Every setting (see the module documentation).
        #[derive(Args, Deserialize, Debug, Default, Clone, PartialEq)]
        // Unknown keys are found by the loader, all of them with their lines and suggestions
        // (serde's deny_unknown_fields would stop at the first).
        #[serde(rename_all = "kebab-case")]
        pub struct Settings {
            $( $(#[$meta])* pub $field: $ty, )*
        }

        impl Merge for Settings {
            fn merge(self, lower: Self) -> Self {
                Settings { $( $field: Merge::merge(self.$field, lower.$field), )* }
            }
        }

        impl Settings {
            /// The settings given (set, or a non-empty list), by their kebab-case names.
            pub fn given_keys(&self) -> Vec<String> {
                let mut keys = Vec::new();
                $( if Given::is_given(&self.$field) {
                    keys.push(stringify!($field).replace('_', "-"));
                } )*
                keys
            }
        }
    };
}

settings! {
    /// WSGI script (or directory of scripts) served at `/` (same as `--mount /=PATH`).
    #[arg(value_name = "SCRIPT")]
    #[serde(skip)]
    script: Option<ConfigPath>,
    /// A TOML config file (listeners, Python, mounts with their application groups and venvs,
    /// process groups). Its keys are these flags' names; a flag given here wins over it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<ConfigPath>,
    /// A process group's name (config file, inside `[[process-group]]`).
    #[arg(skip)]
    name: Option<String>,
    /// Listen for FastCGI on HOST:PORT or unix:PATH (repeatable).
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    fastcgi: Vec<ListenAddr>,
    /// Listen for SCGI on HOST:PORT or unix:PATH (repeatable).
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    scgi: Vec<ListenAddr>,
    /// Listen for uwsgi (nginx's uwsgi_pass, Apache's mod_proxy_uwsgi) on HOST:PORT or
    /// unix:PATH (repeatable).
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    uwsgi: Vec<ListenAddr>,
    /// Listen for FastCGI, SCGI and uwsgi (told apart by the first byte) on HOST:PORT or
    /// unix:PATH (repeatable). Without any listener: 127.0.0.1:9000.
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    listen: Vec<ListenAddr>,
    /// Mode of Unix socket files, in octal [default: 660].
    #[arg(long, value_name = "MODE")]
    socket_mode: Option<Octal>,
    /// Owner of Unix socket files (when started as root).
    #[arg(long, value_name = "USER")]
    socket_user: Option<String>,
    /// Group of Unix socket files (when started as root).
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// TCP clients allowed to connect: addresses or CIDR blocks, `,`-separated (php-fpm's
    /// listen.allowed_clients) [default: FCGI_WEB_SERVER_ADDRS when set, else any]. Others are
    /// closed at accept. Unix sockets are governed by their mode and owner.
    #[arg(long, value_name = "CIDRS")]
    allow_from: Option<AllowList>,
    /// Backlog of the listening sockets [default: 1024].
    #[arg(long, value_name = "N")]
    listen_backlog: Option<u32>,
    /// Mount a script or a directory of scripts: PREFIX=PATH, or PATH for `/` (repeatable).
    #[arg(long, value_name = "PREFIX=PATH")]
    #[serde(default)]
    mount: Vec<MountSpec>,
    /// Name of the WSGI callable in the scripts [default: application].
    #[arg(long, value_name = "NAME")]
    callable: Option<String>,
    /// Interpreter of the mounts: %{GLOBAL} (the main interpreter), a name shared by mounts,
    /// or empty for a sub-interpreter per mount [default: empty].
    #[arg(long, value_name = "GROUP")]
    application_group: Option<String>,
    /// Give the mounts' sub-interpreters a GIL of their own, so that application groups run
    /// Python at the same time in one process (Python 3.12 or later) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    own_gil: Option<bool>,
    /// Reload a script when its file changes [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    reload: Option<bool>,
    /// Do not reload scripts that change on disk (same as --reload=false).
    #[arg(long)]
    #[serde(skip)]
    no_reload: bool,
    /// Virtualenv root (the directory holding pyvenv.cfg) or Python installation prefix.
    #[arg(long, value_name = "DIR")]
    python_home: Option<ConfigPath>,
    /// Extra directories for sys.path, `:`-separated (added with site.addsitedir, first).
    #[arg(long, value_name = "DIRS")]
    python_path: Option<PathList>,
    /// Worker threads of a process (requests running at once) [default: 8].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Worker processes under a supervisor that respawns them (without it: one process, no
    /// supervisor).
    #[arg(long, value_name = "N")]
    processes: Option<usize>,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT and on a reload
    /// [default: 30].
    #[arg(long, value_name = "SECS")]
    graceful_timeout: Option<Seconds>,
    /// Largest request head (all params) in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_params_bytes: Option<usize>,
    /// Largest request body in bytes: a larger CONTENT_LENGTH is answered 413 before the app
    /// runs [default: no limit].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<u64>,
    /// Body bytes collected before a request takes a thread, so a slow upload holds no
    /// thread and no GIL while it arrives; a larger body streams to the app after that many
    /// [default: 1048576; 0: run at once and stream the body].
    #[arg(long, value_name = "BYTES")]
    buffer_body: Option<usize>,
    /// Body bytes one worker process holds at most for its requests, collected or waiting for
    /// their apps (what was sent, not what was announced): past it, bodies are not collected
    /// (their requests wait for a thread, their bodies stay with the web server until the app
    /// reads them) [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    buffer_body_total: Option<usize>,
    /// Connections one worker process holds at most; more wait in the listen backlog
    /// [default: 4096].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a connection may take to send a complete request head [default: 60].
    #[arg(long, value_name = "SECS")]
    header_timeout: Option<Seconds>,
    /// Seconds reading a request body (or writing a response) may make no progress: a body
    /// read raises OSError in the app, and the client gets 408 if no response began
    /// [default: 60].
    #[arg(long, value_name = "SECS")]
    body_timeout: Option<Seconds>,
    /// Seconds a kept connection (FastCGI keep-conn) may stay idle between requests
    /// [default: 120].
    #[arg(long, value_name = "SECS")]
    keepalive_timeout: Option<Seconds>,
    /// Seconds a connection is read to the end of its input after its response before it is
    /// closed anyway (a close with unread input resets the web server) [default: 5].
    #[arg(long, value_name = "SECS")]
    linger_timeout: Option<Seconds>,
    /// Recycle a worker process after it served about N requests (±10% jitter, so workers do
    /// not recycle together). Needs --processes.
    #[arg(long, value_name = "N")]
    maximum_requests: Option<u64>,
    /// Recycle a worker process after about this many seconds (±10%). Needs --processes.
    #[arg(long, value_name = "SECS")]
    restart_interval: Option<Seconds>,
    /// Recycle a worker process that served no request for this many seconds. Needs
    /// --processes.
    #[arg(long, value_name = "SECS")]
    inactivity_timeout: Option<Seconds>,
    /// Recycle a worker process whose resident memory exceeds this many MiB. Needs
    /// --processes.
    #[arg(long, value_name = "MIB")]
    reload_on_rss: Option<u64>,
    /// A request running longer than this many seconds is logged with the Python stack of
    /// every thread of its worker process, which is then recycled. Needs --processes.
    #[arg(long, value_name = "SECS")]
    request_timeout: Option<Seconds>,
    /// A request that waited longer than this many seconds for a free thread gets 503 instead
    /// of running late.
    #[arg(long, value_name = "SECS")]
    queue_timeout: Option<Seconds>,
    /// A request still running after this many seconds gets the Python stack of its thread
    /// logged, once (php-fpm's request_slowlog_timeout); the request carries on.
    #[arg(long, value_name = "SECS")]
    slowlog_timeout: Option<Seconds>,
    /// A request running longer than this many seconds gets wsgi_gateway.InterruptTimeout
    /// raised in its thread: its finally blocks and close() run, the client gets 504 if no
    /// response began, and the worker process lives on.
    #[arg(long, value_name = "SECS")]
    interrupt_timeout: Option<Seconds>,
    /// When the web server aborts a request or closes its connection, raise
    /// wsgi_gateway.Cancelled in the thread running it, even if it is not writing.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    cancel_on_disconnect: Option<bool>,
    /// A worker holding more than its share of its group's kept connections hands those
    /// waiting for a request to another worker (their sockets pass over a Unix socket); false:
    /// it closes them, and the web server opens new ones [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    hand_over_kept: Option<bool>,
    /// Path of the status page the gateway answers itself, whatever the mounts (php-fpm's
    /// pm.status_path), e.g. /status; ?json, ?xml, ?html, ?openmetrics, ?full [default: none].
    #[arg(long, value_name = "PATH")]
    status_path: Option<String>,
    /// Clients (REMOTE_ADDR) that may read the status page: addresses or CIDR blocks,
    /// `,`-separated; others get 403 [default: 127.0.0.0/8,::1].
    #[arg(long, value_name = "CIDRS")]
    status_allow: Option<AllowList>,
    /// Import every script when a worker process starts instead of on its first request.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    preload: Option<bool>,
    /// Process name shown by ps and top (worker processes add their process group and number).
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,
    /// Run the worker processes as this user (when started as root).
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Run the worker processes with this Unix group [default: the user's].
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// umask of the worker processes, in octal (e.g. 022).
    #[arg(long, value_name = "MASK")]
    umask: Option<Octal>,
    /// The least severe log lines written: error, warn, info or debug [default: info]. The
    /// WSGI_GATEWAY_LOG environment variable (RUST_LOG syntax, e.g.
    /// `wsgi_gateway::server=debug`) is read over it. For the whole gateway.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<crate::log::Level>,
    /// Log lines as text, or as json (one object per line, fields not text) [default: text].
    /// For the whole gateway.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<crate::log::Format>,
    /// Write the log (and whatever else goes to stderr) to this file instead of stderr;
    /// SIGUSR1 reopens it (logrotate). For the whole gateway.
    #[arg(long, value_name = "PATH")]
    log_file: Option<ConfigPath>,
    /// Write an access log, one line per request, to this file (reopened on SIGUSR1), or to
    /// the standard output with `-` [default: none].
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<LogDest>,
    /// The access log's lines: combined, json, or a template of $fields like nginx's
    /// log_format, e.g. '$remote_addr "$request" $status $duration_us' [default: combined].
    #[arg(long, value_name = "FORMAT")]
    access_log_format: Option<String>,
    /// Process groups (config file only): `[[process-group]]` tables with their own
    /// listeners, mounts, python-home and limits; each takes the top-level settings it does
    /// not set.
    #[arg(skip)]
    #[serde(default)]
    process_group: Vec<Settings>,
}

impl Settings {
    /// The settings a process group inherits from the file's top level: all but its
    /// listeners and mounts (a group has its own) and the group tables themselves.
    pub fn inherited(&self) -> Settings {
        Settings {
            name: None,
            fastcgi: Vec::new(),
            scgi: Vec::new(),
            uwsgi: Vec::new(),
            listen: Vec::new(),
            mount: Vec::new(),
            process_group: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether any listener is given.
    pub fn has_listeners(&self) -> bool {
        !(self.fastcgi.is_empty()
            && self.scgi.is_empty()
            && self.uwsgi.is_empty()
            && self.listen.is_empty())
    }
}

thread_local! {
    /// The directory relative paths are resolved against while a source is read: the config
    /// file's directory, or the working directory for the command line.
    static BASE: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (which reads one source of settings) with relative paths resolved against `base`.
pub fn with_base<R>(base: &Path, f: impl FnOnce() -> R) -> R {
    BASE.with(|b| *b.borrow_mut() = Some(base.to_path_buf()));
    let r = f();
    BASE.with(|b| *b.borrow_mut() = None);
    r
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    BASE.with(|b| match &*b.borrow() {
        Some(base) => base.join(p),
        None => std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf()),
    })
}

/// A path as written in a setting, made absolute against its source's directory (a relative
/// path in a config file is relative to the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath(pub PathBuf);

impl ConfigPath {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl FromStr for ConfigPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("an empty path".into());
        }
        Ok(ConfigPath(absolute(Path::new(s))))
    }
}

impl<'de> Deserialize<'de> for ConfigPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A listener address as written: `HOST:PORT` or `unix:PATH` (a relative socket path in a
/// config file is relative to the file). Parsed into an address by the resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(pub String);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(ListenAddr(match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => format!("unix:{}", absolute(Path::new(p)).display()),
            _ => s.to_string(),
        }))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Where a log goes: `-` (the standard output) or a file (a relative path in a config file
/// is relative to the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    Stdout,
    File(ConfigPath),
}

impl FromStr for LogDest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "-" => Ok(LogDest::Stdout),
            path => path.parse().map(LogDest::File),
        }
    }
}

/// Values written as a word (`info`, `json`...): parsed by their `FromStr`.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(de::Error::custom)
            }
        }
    )*};
}

deserialize_from_str!(LogDest, crate::log::Level, crate::log::Format);

/// Directories for sys.path: a `:`-separated string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathList(pub Vec<PathBuf>);

impl FromStr for PathList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(PathList(
            s.split(':')
                .filter(|p| !p.is_empty())
                .map(|p| absolute(Path::new(p)))
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for PathList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::One(s) => s.parse().map_err(de::Error::custom),
            Form::Many(v) => Ok(PathList(
                v.iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| absolute(Path::new(p)))
                    .collect(),
            )),
        }
    }
}

/// Client addresses: CIDR blocks or single addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(pub Vec<ipnet::IpNet>);

impl AllowList {
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        f.write_str(&items.join(","))
    }
}

impl FromStr for AllowList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in s.split([',', ' ']).map(str::trim).filter(|i| !i.is_empty()) {
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(n) => n,
                Err(_) => match item.parse::<std::net::IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{item:?} is neither an address nor a CIDR block (e.g. 10.0.0.0/8)"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        if nets.is_empty() {
            return Err("an empty list would refuse everyone".into());
        }
        Ok(AllowList(nets))
    }
}

impl<'de> Deserialize<'de> for AllowList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::One(s) => s.parse().map_err(de::Error::custom),
            Form::Many(v) => v.join(",").parse().map_err(de::Error::custom),
        }
    }
}

/// A duration in seconds, written as a number (`30`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl Seconds {
    fn from_f64(secs: f64) -> Result<Self, String> {
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("{secs} is not a number of seconds"));
        }
        Ok(Seconds(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs_f64())
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        Seconds::from_f64(secs)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Int(i64),
            Float(f64),
        }
        let secs = match Form::deserialize(d)? {
            Form::Int(i) => i as f64,
            Form::Float(f) => f,
        };
        Seconds::from_f64(secs).map_err(de::Error::custom)
    }
}

/// A file mode or mask in octal: `"660"` (a string, as on the command line) or `0o660`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Octal(pub u32);

impl FromStr for Octal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 => Ok(Octal(m)),
            _ => Err(format!("{s:?} is not an octal mode such as 660")),
        }
    }
}

impl<'de> Deserialize<'de> for Octal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Int(i64),
        }
        match Form::deserialize(d)? {
            Form::Text(s) => s.parse().map_err(de::Error::custom),
            Form::Int(i) if (0..=0o777).contains(&i) => Ok(Octal(i as u32)),
            Form::Int(i) => Err(de::Error::custom(format!(
                "{i} is not an octal mode: write it as a string (\"660\") or as 0o660"
            ))),
        }
    }
}

/// One mount as written: a `[[mount]]` table, or `PREFIX=PATH` (or a bare `PATH` for `/`) on
/// the command line, where PATH is a script or a directory of scripts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MountSpec {
    pub prefix: String,
    pub script: Option<ConfigPath>,
    pub directory: Option<ConfigPath>,
    /// The file extension of a directory mount's scripts [default: .wsgi].
    pub extension: Option<String>,
    pub callable: Option<String>,
    pub application_group: Option<String>,
    /// A GIL of its own for this mount's sub-interpreter (Python 3.12+).
    pub own_gil: Option<bool>,
    /// A virtualenv activated in this mount's interpreter only.
    pub venv: Option<ConfigPath>,
    pub python_path: Option<PathList>,
    pub reload: Option<bool>,
}

impl FromStr for MountSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (prefix, path) = match s.split_once('=') {
            Some((p, path)) if p.starts_with('/') => (p, path),
            _ => ("/", s),
        };
        let path: ConfigPath = path.parse()?;
        let directory = path.0.is_dir();
        Ok(MountSpec {
            prefix: prefix.to_string(),
            script: (!directory).then(|| path.clone()),
            directory: directory.then_some(path),
            extension: None,
            callable: None,
            application_group: None,
            own_gil: None,
            venv: None,
            python_path: None,
            reload: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_puts_the_higher_source_first() {
        let cli = Settings {
            threads: Some(5),
            mount: vec!["/a=/x.wsgi".parse().unwrap()],
            ..Settings::default()
        };
        let file = Settings {
            threads: Some(3),
            processes: Some(2),
            fastcgi: vec!["127.0.0.1:1".parse().unwrap()],
            mount: vec!["/b=/y.wsgi".parse().unwrap()],
            ..Settings::default()
        };
        let m = cli.merge(file);
        assert_eq!(m.threads, Some(5));
        assert_eq!(m.processes, Some(2));
        assert_eq!(m.fastcgi.len(), 1);
        let prefixes: Vec<&str> = m.mount.iter().map(|m| m.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/a", "/b"], "mounts of both sources are served");
    }

    #[test]
    fn values_parse_from_text_and_toml() {
        assert_eq!("660".parse::<Octal>(), Ok(Octal(0o660)));
        assert!("999".parse::<Octal>().is_err());
        assert_eq!(
            "0.5".parse::<Seconds>(),
            Ok(Seconds(Duration::from_millis(500)))
        );
        assert!("-1".parse::<Seconds>().is_err());
        let s: Settings = with_base(Path::new("/etc/gw"), || {
            toml::from_str(
                "socket-mode = 0o600\numask = \"022\"\ngraceful-timeout = 2.5\n\
                 python-path = ['lib', '/abs']\nfastcgi = ['unix:run/gw.sock']\n\
                 [[mount]]\nprefix = '/'\nscript = 'app.wsgi'\n",
            )
        })
        .unwrap();
        assert_eq!(s.socket_mode, Some(Octal(0o600)));
        assert_eq!(s.umask, Some(Octal(0o22)));
        assert_eq!(
            s.graceful_timeout,
            Some(Seconds(Duration::from_millis(2500)))
        );
        assert_eq!(
            s.python_path.unwrap().0,
            [PathBuf::from("/etc/gw/lib"), PathBuf::from("/abs")]
        );
        assert_eq!(s.fastcgi[0].0, "unix:/etc/gw/run/gw.sock");
        assert_eq!(
            s.mount[0].script.as_ref().unwrap().path(),
            Path::new("/etc/gw/app.wsgi")
        );
        let err = toml::from_str::<Settings>("socket-mode = 660\n").unwrap_err();
        assert!(err.message().contains("0o660"), "{err}");
    }

    #[test]
    fn keys_known_and_given() {
        let keys = field_names::<Settings>();
        assert!(keys.contains(&"python-home") && keys.contains(&"process-group"));
        assert!(!keys.contains(&"script"), "command-line only");
        assert!(field_names::<MountSpec>().contains(&"application-group"));
        let s = Settings {
            threads: Some(2),
            no_reload: true,
            ..Settings::default()
        };
        assert_eq!(s.given_keys(), ["no-reload", "threads"]);
    }
}
