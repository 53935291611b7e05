//! The gateway's log, on `tracing`. Every line is an event (the crate's `info!`, `warn!`...
//! are tracing's macros), written by [`line::Lines`] as text or JSON to stderr, with a UTC
//! timestamp in milliseconds and the process id. `--log-file` points stderr (fd 2) at a file,
//! so that whatever else writes there (Python's `print`, a crash message) lands in it too;
//! SIGUSR1 opens the file again (logrotate). The level filter is tracing-subscriber's
//! `EnvFilter`: `--log-level` is the default directive, `WSGI_GATEWAY_LOG` (RUST_LOG syntax)
//! is read over it. The access log is [`access`].

pub mod access;
mod line;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The environment variable holding a filter in RUST_LOG syntax (`debug`,
/// `wsgi_gateway::server=debug,warn`...).
pub const FILTER_ENV: &str = "WSGI_GATEWAY_LOG";

/// The least severe level written (`--log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl Level {
    fn filter(self) -> LevelFilter {
        match self {
            Level::Error => LevelFilter::ERROR,
            Level::Warn => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(Level::Error),
            "warn" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(format!(
                "{s:?} is not a log level: error, warn, info or debug"
            )),
        }
    }
}

/// How lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `2026-11-28T14:08:30.123Z [info] wsgi-gateway[PID]: message`
    #[default]
    Text,
    /// One JSON object per line: time, level, pid, target, message and the event's fields.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("{s:?} is not a log format: text or json")),
        }
    }
}

/// The main log's settings, for the whole gateway (every process writes with them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub level: Level,
    pub format: Format,
    /// The file stderr is pointed at; `None`: stderr as the gateway was started with.
    pub file: Option<PathBuf>,
}

static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The log file now open on fd 2, and the stderr the gateway was started with (kept once a
/// file replaced it, to go back to it when a reload drops log-file).
static FILE: Mutex<(Option<PathBuf>, Option<OwnedFd>)> = Mutex::new((None, None));

fn format() -> Format {
    match FORMAT.load(Ordering::Relaxed) {
        1 => Format::Json,
        _ => Format::Text,
    }
}

/// Installs the log (info and above, text, stderr; `WSGI_GATEWAY_LOG` read) before anything
/// is logged. [`configure`] applies the settings once they are read.
pub fn init() {
    let (filter, problem) = filter(Level::Info);
    let (layer, handle) = reload::Layer::new(filter);
    let _ = FILTER.set(handle);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(line::Lines)
        .try_init();
    if let Some(p) = problem {
        crate::warn!("{p}");
    }
}

/// `--log-level` as the default, with `WSGI_GATEWAY_LOG` over it; a filter that does not
/// parse is reported and left out.
fn filter(level: Level) -> (EnvFilter, Option<String>) {
    let builder = EnvFilter::builder().with_default_directive(level.filter().into());
    match std::env::var(FILTER_ENV) {
        Ok(spec) if !spec.trim().is_empty() => match builder.clone().parse(&spec) {
            Ok(f) => (f, None),
            Err(e) => (
                builder.parse_lossy(""),
                Some(format!(
                    "{FILTER_ENV}={spec:?} is not a filter ({e}); it is ignored"
                )),
            ),
        },
        _ => (builder.parse_lossy(""), None),
    }
}

/// Applies the log settings: the level filter, the format and the file (opened now, as the
/// user the gateway was started as).
pub fn configure(config: &Config) -> Result<(), String> {
    {
        let mut file = lock();
        match &config.file {
            Some(path) => {
                if file.1.is_none() {
                    file.1 = crate::sys::dup_stderr().ok();
                }
                point_stderr_at(path)?;
            }
            None => {
                if let (Some(_), Some(original)) = (&file.0, &file.1) {
                    let _ = crate::sys::redirect_stderr(original);
                }
            }
        }
        file.0 = config.file.clone();
    }
    FORMAT.store(config.format as u8, Ordering::Relaxed);
    let (filter, problem) = filter(config.level);
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(filter);
    }
    if let Some(p) = problem {
        crate::warn!("{p}");
    }
    Ok(())
}

fn lock() -> std::sync::MutexGuard<'static, (Option<PathBuf>, Option<OwnedFd>)> {
    FILE.lock().unwrap_or_else(|e| e.into_inner())
}

fn point_stderr_at(path: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("log-file {}: {e}", path.display()))?;
    crate::sys::redirect_stderr(&file).map_err(|e| format!("log-file {}: {e}", path.display()))
}

/// SIGUSR1: opens the log file again (after logrotate renamed it), in this process.
pub fn reopen() {
    let path = lock().0.clone();
    let Some(path) = path else {
        return;
    };
    match point_stderr_at(&path) {
        Ok(()) => crate::info!("SIGUSR1: reopened the log file {}", path.display()),
        Err(e) => crate::error!("SIGUSR1: cannot reopen the {e}; still writing to the old file"),
    }
}

/// What a line about a request says about it: its id, method and URI, the mount and
/// application group that serve it, and the worker thread that runs it (the process id is
/// on every line).
#[derive(Debug, Clone, Default)]
pub struct RequestFields {
    pub id: String,
    pub method: String,
    pub uri: String,
    pub mount: String,
    pub app_group: String,
    /// The worker thread running the request, when one does.
    pub thread: Option<u64>,
}

/// A request's id: the web server's `REQUEST_ID` param (nginx: `fastcgi_param REQUEST_ID
/// $request_id;`) when it sends one, else `PID-N`, N counting the requests of the process.
pub fn request_id(head: &protocol::RequestHead, pid: u32, seq: u64) -> String {
    match head.get(b"REQUEST_ID") {
        Some(id) if !id.is_empty() => String::from_utf8_lossy(id).into_owned(),
        _ => format!("{pid}-{seq}"),
    }
}

/// The crate's log macros: tracing's, under the names the code has always used.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { ::tracing::debug!($($arg)*) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { ::tracing::info!($($arg)*) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { ::tracing::warn!($($arg)*) };
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { ::tracing::error!($($arg)*) };
}

/// An event about a request: `request_log!(warn, fields, "format", args...)`, with the
/// request's [`RequestFields`] as the event's fields.
#[macro_export]
macro_rules! request_log {
    ($level:ident, $fields:expr, $($arg:tt)+) => {{
        let f: &$crate::log::RequestFields = &$fields;
        ::tracing::$level!(
            request_id = f.id.as_str(),
            method = f.method.as_str(),
            uri = f.uri.as_str(),
            mount = f.mount.as_str(),
            app_group = f.app_group.as_str(),
            thread = f.thread,
            $($arg)+
        )
    }};
}
