//! The command line.

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (Python ",
    env!("WSGI_GATEWAY_PY_FULL_VERSION"),
    ")"
);

/// `--version`: the gateway's version and the embedded Python's, with its prefix and library.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nPython ",
    env!("WSGI_GATEWAY_PY_SYS_VERSION"),
    "\nprefix ",
    env!("WSGI_GATEWAY_PY_PREFIX"),
    "\nlibpython ",
    env!("WSGI_GATEWAY_PY_LIBRARY"),
);

/// A FastCGI/SCGI application server for Python WSGI apps.
///
/// With no script it serves a built-in diagnostics app that shows what the web server sent.
#[derive(Parser, Debug)]
#[command(name = "wsgi-gateway", version = VERSION, long_version = LONG_VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Settings,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send one request to a running gateway and print the response.
    Request(RequestCli),
    /// Print the status page of a running gateway (its status-path), as php-fpm's.
    Status(StatusCli),
    /// Check the configuration (config file, venvs, scripts, listeners) without serving.
    Check(Box<Settings>),
    /// Translate an Apache httpd + mod_wsgi configuration into a gateway configuration.
    ImportApache(crate::import_apache::Args),
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

#[derive(Args, Debug)]
pub struct StatusCli {
    /// Speak SCGI instead of FastCGI.
    #[arg(long)]
    pub scgi: bool,
    /// JSON instead of plain text.
    #[arg(long, conflicts_with = "openmetrics")]
    pub json: bool,
    /// OpenMetrics (Prometheus) text instead of plain text.
    #[arg(long)]
    pub openmetrics: bool,
    /// One entry per worker thread too.
    #[arg(long)]
    pub full: bool,
    /// The gateway's status-path.
    #[arg(long, value_name = "PATH", default_value = "/status")]
    pub path: String,
    /// Seconds to wait for the gateway.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
    /// HOST:PORT or unix:PATH of the gateway.
    pub addr: String,
}
