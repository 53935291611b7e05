//! `wsgi-gateway import-apache`: translates an Apache httpd + mod_wsgi setup into a gateway
//! configuration, and on request into the nginx server blocks and the Apache mod_proxy_fcgi
//! lines that replace the mod_wsgi ones.
//!
//! - [`parse`] reads httpd's configuration files (includes, sections, quoting, continuations);
//! - [`table`] says what each mod_wsgi directive and daemon option becomes;
//! - [`translate`] resolves mod_wsgi's model (which process and application group serves each
//!   mount) into the gateway's process groups and mounts;
//! - [`gateway_toml`], [`nginx`] and [`apache`] write the outputs.
//!
//! Whatever is not translated is reported on standard error with its file and line; the exit
//! status is non-zero only when no mount came out.

mod apache;
#[cfg(test)]
mod corpus;
mod gateway_toml;
mod nginx;
mod parse;
mod table;
mod translate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use translate::{ListenArg, Note, Options, Plan, Proto};

/// Default directory of the gateway's Unix sockets (systemd's `RuntimeDirectory=wsgi-gateway`).
pub const RUNTIME_DIR: &str = "/run/wsgi-gateway";

/// Translate an Apache httpd + mod_wsgi configuration into a gateway configuration.
///
/// Reads FILE (apache2.conf, httpd.conf or one site's file) and what it includes. Every
/// mod_wsgi directive or option that is not translated is listed on standard error with its
/// file and line.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Apache configuration file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write the gateway configuration here [default: standard output].
    #[arg(short = 'o', long = "output", value_name = "OUT.toml")]
    pub output: Option<PathBuf>,
    /// Also write nginx server blocks that take the place of the Apache sites.
    #[arg(long, value_name = "OUT.conf")]
    pub nginx: Option<PathBuf>,
    /// Also write the Apache mod_proxy_fcgi lines that take the place of the mod_wsgi ones.
    #[arg(long, value_name = "OUT.conf")]
    pub apache: Option<PathBuf>,
    /// A FastCGI listener instead of a Unix socket in the runtime directory: GROUP=ADDR for
    /// one process group, or ADDR for the next group without one (repeatable).
    #[arg(long, value_name = "[GROUP=]ADDR")]
    pub fastcgi: Vec<String>,
    /// An SCGI listener, like --fastcgi (repeatable).
    #[arg(long, value_name = "[GROUP=]ADDR")]
    pub scgi: Vec<String>,
    /// A listener for both protocols, like --fastcgi (repeatable).
    #[arg(long, value_name = "[GROUP=]ADDR")]
    pub listen: Vec<String>,
    /// Directory of the process groups' Unix sockets (NAME.sock).
    #[arg(long, value_name = "DIR", default_value = RUNTIME_DIR)]
    pub runtime_dir: PathBuf,
    /// httpd's ServerRoot, for relative paths [default: FILE's directory].
    #[arg(long, value_name = "DIR")]
    pub server_root: Option<PathBuf>,
}

/// How files and lines are shown: relative to the main file's directory when under it.
pub struct Shown {
    pub main: PathBuf,
    base: PathBuf,
}

impl Shown {
    fn new(main: &Path) -> Shown {
        let main = if main.is_absolute() {
            main.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(main))
                .unwrap_or_else(|_| main.to_path_buf())
        };
        let base = main.parent().unwrap_or(Path::new("/")).to_path_buf();
        Shown { main, base }
    }

    /// `FILE:LINE`.
    pub fn place(&self, src: &parse::Source) -> String {
        let file = src.file.strip_prefix(&self.base).unwrap_or(&src.file);
        format!("{}:{}", file.display(), src.line)
    }

    fn note(&self, n: &Note) -> String {
        match &n.src {
            Some(src) => format!("{}: {}", self.place(src), n.text),
            None => n.text.clone(),
        }
    }
}

/// The variables of Debian's `envvars` (`export NAME=value` lines) in the server root.
fn envvars(root: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(root.join("envvars")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            (n.trim().to_string(), v.to_string())
        })
        .collect()
}

/// Everything the command produces, before it is written anywhere.
pub struct Output {
    pub plan: Plan,
    pub toml: String,
    pub nginx: String,
    pub apache: String,
    /// Lines for standard error, in order.
    pub notes: Vec<String>,
}

/// Reads and translates; `env` resolves `${NAME}` for names no Define set.
pub fn import(
    file: &Path,
    server_root: Option<&Path>,
    opts: &Options,
    env: parse::Env,
) -> Result<Output, String> {
    let config = parse::read(file, server_root, env)?;
    let shown = Shown::new(file);
    let plan = translate::translate(config, opts);
    let toml = gateway_toml::write(&plan, &shown);
    let (nginx, nginx_notes) = nginx::write(&plan, &shown);
    let apache = apache::write(&plan, &shown);
    let mut notes: Vec<String> = plan.notes.iter().map(|n| shown.note(n)).collect();
    notes.extend(
        nginx_notes
            .iter()
            .map(|n| format!("(nginx) {}", shown.note(n))),
    );
    Ok(Output {
        plan,
        toml,
        nginx,
        apache,
        notes,
    })
}

pub fn run(args: &Args) -> ExitCode {
    let mut listeners = Vec::new();
    for (proto, list) in [
        (Proto::FastCgi, &args.fastcgi),
        (Proto::Scgi, &args.scgi),
        (Proto::Auto, &args.listen),
    ] {
        listeners.extend(list.iter().map(|a| ListenArg::parse(proto, a)));
    }
    let runtime_dir = if args.runtime_dir.is_absolute() {
        args.runtime_dir.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&args.runtime_dir))
            .unwrap_or_else(|_| args.runtime_dir.clone())
    };
    let opts = Options {
        listeners,
        runtime_dir: runtime_dir.clone(),
    };
    let root = args
        .server_root
        .clone()
        .or_else(|| args.file.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let vars = envvars(&root);
    let env = Box::new(move |name: &str| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    });
    let out = match import(&args.file, args.server_root.as_deref(), &opts, env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wsgi-gateway import-apache: {e}");
            return ExitCode::from(1);
        }
    };
    let wants_nginx = args.nginx.is_some();
    let wants_front = wants_nginx || args.apache.is_some();
    for (n, text) in out.plan.notes.iter().zip(&out.notes) {
        if wants_front || !n.front {
            eprintln!("{text}");
        }
    }
    if wants_nginx {
        for text in &out.notes[out.plan.notes.len()..] {
            eprintln!("{text}");
        }
    }
    if !out.plan.usable() {
        eprintln!(
            "wsgi-gateway import-apache: nothing to write: no WSGIScriptAlias could be \
             translated from {}",
            args.file.display()
        );
        return ExitCode::from(1);
    }
    let mut failed = false;
    let mut write = |path: &Path, text: &str| {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("wsgi-gateway import-apache: {}: {e}", path.display());
            failed = true;
        }
    };
    match &args.output {
        Some(p) => write(p, &out.toml),
        None => print!("{}", out.toml),
    }
    if let Some(p) = &args.nginx {
        write(p, &out.nginx);
    }
    if let Some(p) = &args.apache {
        write(p, &out.apache);
    }
    if failed {
        return ExitCode::from(1);
    }
    let mounts: usize = out.plan.groups.iter().map(|g| g.mounts.len()).sum();
    let dropped = out.plan.notes.iter().filter(|n| n.dropped).count();
    eprintln!(
        "wsgi-gateway import-apache: {} process group(s), {mounts} mount(s){}; {dropped} \
         line(s) or option(s) not translated (listed above)",
        out.plan.groups.len(),
        args.output
            .as_ref()
            .map(|p| format!(" written to {}", p.display()))
            .unwrap_or_default()
    );
    let uses_runtime_dir = out.plan.groups.iter().flat_map(|g| &g.listeners).any(|l| {
        l.addr
            .starts_with(&format!("unix:{}/", runtime_dir.display()))
    });
    if uses_runtime_dir && !runtime_dir.is_dir() {
        eprintln!(
            "wsgi-gateway import-apache: the sockets' directory {} does not exist yet: create \
             it (systemd: RuntimeDirectory=wsgi-gateway) or choose another with --runtime-dir",
            runtime_dir.display()
        );
    }
    ExitCode::SUCCESS
}
