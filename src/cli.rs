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
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// WSGI script served at `/` (same as `--mount /=SCRIPT`).
    #[arg(value_name = "SCRIPT")]
    pub script: Option<PathBuf>,
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
    /// Mode of Unix socket files, in octal.
    #[arg(long, value_name = "MODE", default_value = "660")]
    pub socket_mode: String,
    /// Backlog of the listening sockets.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub listen_backlog: u32,
    /// Mount a script: PREFIX=SCRIPT, or SCRIPT for `/` (repeatable).
    #[arg(long, value_name = "PREFIX=SCRIPT")]
    pub mount: Vec<String>,
    /// Name of the WSGI callable in the scripts.
    #[arg(long, value_name = "NAME", default_value = "application")]
    pub callable: String,
    /// Virtualenv root (the directory holding pyvenv.cfg) or Python installation prefix.
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,
    /// Extra directories for sys.path, `:`-separated (added with site.addsitedir, first).
    #[arg(long, value_name = "DIRS")]
    pub python_path: Option<String>,
    /// Worker threads (requests running at once).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub threads: usize,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub graceful_timeout: u64,
    /// Largest request head (all params) in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = protocol::Limits::DEFAULT_MAX_PARAMS_BYTES)]
    pub max_params_bytes: usize,
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
