//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (Python ",
    env!("WSGI_GATEWAY_PY_FULL_VERSION"),
    ")"
);

/// A FastCGI/SCGI application server for Python WSGI apps.
///
/// With no script it serves a built-in diagnostics app that shows what the web server sent.
#[derive(Parser, Debug)]
#[command(name = "wsgi-gateway", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send one request to a running gateway and print the response.
    Request(RequestCli),
    /// Check the configuration (config file, venvs, scripts, listeners) without serving.
    Check(Box<ServeArgs>),
    /// Translate an Apache httpd + mod_wsgi configuration into a gateway configuration.
    ImportApache(crate::import_apache::Args),
}

/// Settings of the server. Each long flag is named like its key in the config file; a flag
/// given on the command line wins over the file.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// WSGI script (or directory of scripts) served at `/` (same as `--mount /=PATH`).
    #[arg(value_name = "SCRIPT")]
    pub script: Option<PathBuf>,
    /// A TOML config file (listeners, Python, mounts with their groups and venvs).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen for FastCGI on HOST:PORT or unix:PATH (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub fastcgi: Vec<String>,
    /// Listen for SCGI on HOST:PORT or unix:PATH (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub scgi: Vec<String>,
    /// Listen for FastCGI and SCGI (told apart by the first byte) on HOST:PORT or unix:PATH
    /// (repeatable). Without any listener: 127.0.0.1:9000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Mode of Unix socket files, in octal [default: 660].
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Backlog of the listening sockets [default: 1024].
    #[arg(long, value_name = "N")]
    pub listen_backlog: Option<u32>,
    /// Mount a script or a directory of scripts: PREFIX=PATH, or PATH for `/` (repeatable).
    #[arg(long, value_name = "PREFIX=PATH")]
    pub mount: Vec<String>,
    /// Name of the WSGI callable in the scripts [default: application].
    #[arg(long, value_name = "NAME")]
    pub callable: Option<String>,
    /// Interpreter of the command-line mounts: %{GLOBAL} (the main interpreter), a name shared
    /// by mounts, or empty for a sub-interpreter per mount [default: empty].
    #[arg(long, value_name = "GROUP")]
    pub application_group: Option<String>,
    /// Virtualenv root (the directory holding pyvenv.cfg) or Python installation prefix.
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,
    /// Extra directories for sys.path, `:`-separated (added with site.addsitedir, first).
    #[arg(long, value_name = "DIRS")]
    pub python_path: Option<String>,
    /// Worker threads (requests running at once) [default: 8].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT [default: 30].
    #[arg(long, value_name = "SECS")]
    pub graceful_timeout: Option<u64>,
    /// Largest request head (all params) in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_params_bytes: Option<usize>,
    /// Do not reload scripts that change on disk.
    #[arg(long)]
    pub no_reload: bool,
    /// Run N worker processes under a supervisor that respawns them (without it: one process,
    /// no supervisor).
    #[arg(long, value_name = "N")]
    pub processes: Option<usize>,
    /// Recycle a worker process after it served about N requests (±10% jitter, so workers do
    /// not recycle together). Needs --processes.
    #[arg(long, value_name = "N")]
    pub maximum_requests: Option<u64>,
    /// Recycle a worker process after about this many seconds (±10%). Needs --processes.
    #[arg(long, value_name = "SECS")]
    pub restart_interval: Option<u64>,
    /// Recycle a worker process that served no request for this many seconds. Needs
    /// --processes.
    #[arg(long, value_name = "SECS")]
    pub inactivity_timeout: Option<u64>,
    /// Recycle a worker process whose resident memory exceeds this many MiB. Needs --processes.
    #[arg(long, value_name = "MIB")]
    pub reload_on_rss: Option<u64>,
    /// A request running longer than this many seconds is logged with the Python stack of
    /// every thread of its worker, which is then recycled. Needs --processes.
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<u64>,
    /// A request that waited longer than this many seconds for a free thread gets 503 instead
    /// of running late.
    #[arg(long, value_name = "SECS")]
    pub queue_timeout: Option<u64>,
    /// Import every script when a worker starts instead of on its first request.
    #[arg(long)]
    pub preload: bool,
    /// Process name shown by ps and top (worker processes add their number).
    #[arg(long, value_name = "NAME")]
    pub display_name: Option<String>,
    /// Run the worker processes as this user (when started as root).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Run the worker processes with this group [default: the user's].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// umask of the worker processes, in octal (e.g. 022).
    #[arg(long, value_name = "MASK")]
    pub umask: Option<String>,
    /// Owner of Unix socket files (when started as root).
    #[arg(long, value_name = "USER")]
    pub socket_user: Option<String>,
    /// Group of Unix socket files (when started as root).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
}

#[derive(Args, Debug)]
pub struct RequestCli {
    /// Speak SCGI instead of FastCGI.
    #[arg(long)]
    pub scgi: bool,
    /// Print the response head too.
    #[arg(short, long)]
    pub include: bool,
    /// Header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Request body: text, or @FILE.
    #[arg(short, long, value_name = "DATA")]
    pub data: Option<String>,
    /// Seconds to wait for the gateway.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// HOST:PORT or unix:PATH of the gateway.
    pub addr: String,
    /// METHOD PATH, or just PATH (GET).
    #[arg(num_args = 1..=2, value_name = "[METHOD] PATH")]
    pub target: Vec<String>,
}
