//! mod_wsgi's model, read from the configuration tree, turned into the gateway's: process
//! groups with their settings and mounts, and, per site, the routes the web server in front
//! needs.
//!
//! A mount's process group, application group, callable, `WSGIPassAuthorization` and
//! `WSGIScriptReloading` are resolved as mod_wsgi resolves them for a request: the
//! `WSGIScriptAlias` options win, then `<Location>` sections covering the mount (later ones
//! win), then `<Directory>` sections holding the script (deeper ones win), then the virtual
//! host, then the main server. A `WSGIScriptAlias` of the main server serves every virtual
//! host, resolved in each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::parse::{self, Directive, Node, Section, Source};
use super::table::{self, Conv, Front, Rule, Target};

/// Where a setting came from: the line and the text shown in comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub src: Source,
    pub text: String,
}

impl Origin {
    fn of(d: &Directive) -> Origin {
        Origin {
            src: d.src.clone(),
            text: d.text(),
        }
    }

    fn with(&self, text: String) -> Origin {
        Origin {
            src: self.src.clone(),
            text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(u64),
    Bool(bool),
    List(Vec<String>),
}

/// One key of the gateway configuration and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: &'static str,
    pub value: Value,
    pub origin: Origin,
}

/// A message about what was not translated, or translated with a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub src: Option<Source>,
    /// True: something was left out; false: translated, but worth knowing.
    pub dropped: bool,
    /// About the web server in front only: worth saying when its snippets are not written.
    pub front: bool,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    FastCgi,
    Scgi,
    /// Both (the gateway tells them apart); the web servers speak FastCGI to it.
    Auto,
}

impl Proto {
    pub fn key(self) -> &'static str {
        match self {
            Proto::FastCgi => "fastcgi",
            Proto::Scgi => "scgi",
            Proto::Auto => "listen",
        }
    }
}

/// A listener given on the command line: `[GROUP=]ADDR`.
#[derive(Debug, Clone)]
pub struct ListenArg {
    pub proto: Proto,
    pub group: Option<String>,
    pub addr: String,
}

impl ListenArg {
    pub fn parse(proto: Proto, arg: &str) -> ListenArg {
        match arg.split_once('=') {
            Some((g, a)) => ListenArg {
                proto,
                group: Some(g.to_string()),
                addr: a.to_string(),
            },
            None => ListenArg {
                proto,
                group: None,
                addr: arg.to_string(),
            },
        }
    }

    fn shown(&self) -> String {
        match &self.group {
            Some(g) => format!("--{} {g}={}", self.proto.key(), self.addr),
            None => format!("--{} {}", self.proto.key(), self.addr),
        }
    }
}

pub struct Options {
    pub listeners: Vec<ListenArg>,
    /// Where the Unix sockets of groups without a listener go.
    pub runtime_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountTarget {
    Script(PathBuf),
    Directory { dir: PathBuf, extension: String },
}

#[derive(Debug, Clone)]
pub struct MountPlan {
    pub prefix: String,
    pub target: MountTarget,
    pub origin: Origin,
    /// callable, application-group, reload.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub proto: Proto,
    pub addr: String,
    /// How the address was chosen, for the comment above it.
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub name: String,
    /// The WSGIDaemonProcess line; `None` for an embedded-mode group.
    pub origin: Option<Origin>,
    pub entries: Vec<Entry>,
    pub listeners: Vec<Listener>,
    pub mounts: Vec<MountPlan>,
    /// Settings for the web server in front (seconds).
    pub front: Vec<(Front, u64, Origin)>,
}

/// How the web server reaches one mount.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub group: usize,
    pub origin: Origin,
    /// `WSGIPassAuthorization On` applied (the line), else the app never saw Authorization.
    pub pass_auth: Option<Origin>,
}

/// A static `Alias URL PATH`.
#[derive(Debug, Clone)]
pub struct StaticAlias {
    pub url: String,
    pub path: String,
    pub origin: Origin,
}

/// One site the web server serves: a virtual host, or the main server when there is none.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// `<VirtualHost ...>`: the section's line and its addresses.
    pub vhost: Option<(Origin, Vec<String>)>,
    pub server_name: Option<String>,
    pub server_aliases: Vec<String>,
    /// `Listen` addresses of the main server (for a site without a virtual host).
    pub listen: Vec<String>,
    pub document_root: Option<(String, Origin)>,
    pub statics: Vec<StaticAlias>,
    pub ssl: Option<Ssl>,
    pub limit_request_body: Option<(u64, Origin)>,
    pub routes: Vec<Route>,
    /// Directives of this site that the nginx server block does not carry over.
    pub not_carried: Vec<Origin>,
}

#[derive(Debug, Clone, Default)]
pub struct Ssl {
    pub certificate: Option<(String, Origin)>,
    pub key: Option<(String, Origin)>,
}

#[derive(Debug)]
pub struct Plan {
    pub top: Vec<Entry>,
    pub groups: Vec<GroupPlan>,
    pub sites: Vec<Site>,
    pub notes: Vec<Note>,
}

impl Plan {
    /// Whether anything usable came out (at least one mount).
    pub fn usable(&self) -> bool {
        self.groups.iter().any(|g| !g.mounts.is_empty())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading mod_wsgi's model from the tree.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    ProcessGroup,
    ApplicationGroup,
    Callable,
    PassAuth,
    Reloading,
    Env(String),
}

#[derive(Debug, Clone)]
struct Setting {
    kind: Kind,
    value: String,
    origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtxKind {
    Location,
    Directory,
}

/// A `<Location>` or `<Directory>` section with the settings in it.
#[derive(Debug, Clone)]
struct Ctx {
    kind: CtxKind,
    path: String,
    settings: Vec<Setting>,
    origin: Origin,
}

#[derive(Debug, Clone)]
struct ScriptAlias {
    url: String,
    path: String,
    options: Vec<(String, String)>,
    origin: Origin,
    regex: bool,
}

#[derive(Debug, Clone, Default)]
struct Scope {
    vhost: Option<(Origin, Vec<String>)>,
    server_name: Option<String>,
    server_aliases: Vec<String>,
    listen: Vec<String>,
    settings: Vec<Setting>,
    ctxs: Vec<Ctx>,
    aliases: Vec<ScriptAlias>,
    statics: Vec<StaticAlias>,
    document_root: Option<(String, Origin)>,
    ssl_engine: bool,
    ssl: Ssl,
    limit_request_body: Option<(u64, Origin)>,
    not_carried: Vec<Origin>,
}

#[derive(Debug, Clone)]
struct Daemon {
    name: String,
    options: Vec<(String, String)>,
    origin: Origin,
}

#[derive(Debug, Clone)]
struct ImportScript {
    path: String,
    process_group: Option<String>,
    application_group: Option<String>,
    origin: Origin,
}

struct Model {
    scopes: Vec<Scope>,
    daemons: Vec<Daemon>,
    python_home: Option<(String, Origin)>,
    python_path: Option<(Vec<String>, Origin)>,
    restrict_embedded: Option<Origin>,
    imports: Vec<ImportScript>,
    server_root: PathBuf,
    notes: Vec<Note>,
}

impl Model {
    fn dropped(&mut self, src: &Source, text: String) {
        self.notes.push(Note {
            src: Some(src.clone()),
            dropped: true,
            front: false,
            text,
        });
    }

    fn note(&mut self, src: &Source, text: String) {
        self.notes.push(Note {
            src: Some(src.clone()),
            dropped: false,
            front: false,
            text,
        });
    }

    fn front_note(&mut self, src: &Source, text: String) {
        self.notes.push(Note {
            src: Some(src.clone()),
            dropped: false,
            front: true,
            text,
        });
    }
}

/// Where a node sits: the scope (0 = main server), and the section around it.
#[derive(Clone)]
enum Place {
    Server,
    Ctx(usize),
    /// A section whose scope is not evaluated (regex sections, `<Files>`, `<If>`...).
    Unevaluated(String),
}

/// Directives that never need reporting to nginx users: translated, or without effect there.
const CARRIED: &[&str] = &[
    "ServerName",
    "ServerAlias",
    "DocumentRoot",
    "Alias",
    "SSLEngine",
    "SSLCertificateFile",
    "SSLCertificateKeyFile",
    "LimitRequestBody",
    "SetEnv",
    "Options",
    "AllowOverride",
];

fn read_model(config: parse::Config) -> Model {
    let mut m = Model {
        scopes: vec![Scope::default()],
        daemons: Vec::new(),
        python_home: None,
        python_path: None,
        restrict_embedded: None,
        imports: Vec::new(),
        server_root: config.server_root.clone(),
        notes: Vec::new(),
    };
    for p in &config.problems {
        m.dropped(&p.src, p.text.clone());
    }
    walk(&mut m, &config.nodes, 0, &Place::Server);
    m
}

fn walk(m: &mut Model, nodes: &[Node], scope: usize, place: &Place) {
    for node in nodes {
        match node {
            Node::Section(s) => section(m, s, scope, place),
            Node::Directive(d) => directive(m, d, scope, place),
        }
    }
}

fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

fn section(m: &mut Model, s: &Section, scope: usize, place: &Place) {
    let args = parse::words(&s.args);
    let origin = Origin {
        src: s.src.clone(),
        text: s.text(),
    };
    if s.is("VirtualHost") {
        if scope != 0 {
            m.dropped(&s.src, "<VirtualHost> inside a virtual host".into());
            return;
        }
        m.scopes.push(Scope {
            vhost: Some((origin, args)),
            ..Scope::default()
        });
        let idx = m.scopes.len() - 1;
        walk(m, &s.body, idx, &Place::Server);
        return;
    }
    let kind = if s.is("Location") {
        Some(CtxKind::Location)
    } else if s.is("Directory") {
        Some(CtxKind::Directory)
    } else {
        None
    };
    if let (Some(kind), Place::Server) = (kind, place) {
        let path = args.first().cloned().unwrap_or_default();
        if args.len() == 1 && !is_pattern(&path) {
            let path = match kind {
                CtxKind::Directory => absolute_in(&m.server_root, &path),
                CtxKind::Location => path,
            };
            m.scopes[scope].ctxs.push(Ctx {
                kind,
                path,
                settings: Vec::new(),
                origin,
            });
            let idx = m.scopes[scope].ctxs.len() - 1;
            walk(m, &s.body, scope, &Place::Ctx(idx));
            return;
        }
    }
    let transparent = [
        "Limit",
        "LimitExcept",
        "RequireAll",
        "RequireAny",
        "RequireNone",
    ]
    .iter()
    .any(|n| s.is(n));
    if transparent {
        walk(m, &s.body, scope, place);
    } else {
        walk(m, &s.body, scope, &Place::Unevaluated(s.text()));
    }
}

fn on_off(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("on") {
        Some(true)
    } else if value.eq_ignore_ascii_case("off") {
        Some(false)
    } else {
        None
    }
}

fn absolute_in(root: &Path, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        root.join(p).to_string_lossy().into_owned()
    }
}

/// mod_wsgi's `name=value` options after the leading words: values may be quoted.
fn mod_wsgi_options(mut rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    loop {
        let s = rest.trim_start();
        if s.is_empty() {
            return Ok(out);
        }
        let end = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(s.len());
        let name = &s[..end];
        if !s[end..].starts_with('=') {
            return Err(format!("option {name:?} is not name=value"));
        }
        let mut after = &s[end + 1..];
        if after.is_empty() || after.starts_with(char::is_whitespace) {
            return Err(format!("option {name} has no value"));
        }
        let value = parse::next_word(&mut after).unwrap_or_default();
        out.push((name.to_string(), value));
        rest = after;
    }
}

fn directive(m: &mut Model, d: &Directive, scope: usize, place: &Place) {
    let name = d.name.as_str();
    if name.len() > 4 && name[..4].eq_ignore_ascii_case("WSGI") {
        wsgi_directive(m, d, scope, place);
        return;
    }
    let setting_kind = if d.is("SetEnv") {
        d.words().first().map(|n| Kind::Env(n.clone()))
    } else {
        None
    };
    if let Some(kind) = setting_kind {
        let value = d.words().get(1).cloned().unwrap_or_default();
        add_setting(m, d, scope, place, kind, value);
        return;
    }
    let words = d.words();
    let first = words.first().cloned().unwrap_or_default();
    if let Place::Server = place {
        let s = &mut m.scopes[scope];
        if d.is("ServerName") {
            // `ServerName host:port`: the name alone.
            let host = match first.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
                _ => first.as_str(),
            };
            s.server_name = Some(host.to_string());
        } else if d.is("ServerAlias") {
            s.server_aliases.extend(words);
        } else if d.is("Listen") && scope == 0 {
            s.listen.push(first);
        } else if d.is("DocumentRoot") {
            s.document_root = Some((absolute_in(&m.server_root, &first), Origin::of(d)));
        } else if d.is("Alias") && words.len() >= 2 {
            s.statics.push(StaticAlias {
                url: words[0].clone(),
                path: absolute_in(&m.server_root, &words[1]),
                origin: Origin::of(d),
            });
        } else if d.is("SSLEngine") {
            s.ssl_engine = on_off(&first).unwrap_or(false);
        } else if d.is("SSLCertificateFile") {
            s.ssl.certificate = Some((absolute_in(&m.server_root, &first), Origin::of(d)));
        } else if d.is("SSLCertificateKeyFile") {
            s.ssl.key = Some((absolute_in(&m.server_root, &first), Origin::of(d)));
        } else if d.is("LimitRequestBody") {
            if let Ok(n) = first.parse() {
                s.limit_request_body = Some((n, Origin::of(d)));
            }
        }
    }
    let trivial = (d.is("Require") && d.args.eq_ignore_ascii_case("all granted"))
        || (d.is("Allow") && d.args.eq_ignore_ascii_case("from all"))
        || d.is("Order")
        || d.is("Satisfy");
    if scope != 0 && !trivial && !CARRIED.iter().any(|c| d.is(c)) {
        m.scopes[scope].not_carried.push(Origin::of(d));
    }
}

fn add_setting(
    m: &mut Model,
    d: &Directive,
    scope: usize,
    place: &Place,
    kind: Kind,
    value: String,
) {
    let setting = Setting {
        kind,
        value,
        origin: Origin::of(d),
    };
    match place {
        Place::Server => m.scopes[scope].settings.push(setting),
        Place::Ctx(i) => m.scopes[scope].ctxs[*i].settings.push(setting),
        Place::Unevaluated(section) => {
            if matches!(setting.kind, Kind::Env(_)) {
                return;
            }
            let text = format!(
                "{}: not translated: it is inside {section}, whose scope (a pattern, a file \
                 name or a run-time condition) is not evaluated; set it on the mount's \
                 <Location>, <Directory> or WSGIScriptAlias",
                d.name
            );
            m.dropped(&d.src, text);
        }
    }
}

fn wsgi_directive(m: &mut Model, d: &Directive, scope: usize, place: &Place) {
    let name = d.name.as_str();
    let rule = table::directive(name);
    let words = d.words();
    let first = words.first().cloned().unwrap_or_default();
    match rule {
        None => {
            m.dropped(
                &d.src,
                format!("{name}: not translated: not a mod_wsgi directive this command knows"),
            );
            return;
        }
        Some(Rule::Unsupported(why)) => {
            m.dropped(&d.src, format!("{name}: not translated: {why}"));
            return;
        }
        Some(Rule::Translated) => {}
    }
    let kind = if d.is("WSGIProcessGroup") {
        Some(Kind::ProcessGroup)
    } else if d.is("WSGIApplicationGroup") {
        Some(Kind::ApplicationGroup)
    } else if d.is("WSGICallableObject") {
        Some(Kind::Callable)
    } else if d.is("WSGIPassAuthorization") {
        Some(Kind::PassAuth)
    } else if d.is("WSGIScriptReloading") {
        Some(Kind::Reloading)
    } else {
        None
    };
    if let Some(kind) = kind {
        if matches!(kind, Kind::PassAuth | Kind::Reloading) && on_off(&first).is_none() {
            m.dropped(&d.src, format!("{name}: not translated: expects On or Off"));
            return;
        }
        add_setting(m, d, scope, place, kind, first);
        return;
    }
    let server_level = matches!(place, Place::Server);
    if !server_level {
        m.dropped(
            &d.src,
            format!("{name}: not translated: httpd allows it only outside sections"),
        );
        return;
    }
    if d.is("WSGIScriptAlias") || d.is("WSGIScriptAliasMatch") {
        let mut rest = d.args.as_str();
        let url = parse::next_word(&mut rest).unwrap_or_default();
        let path = parse::next_word(&mut rest).unwrap_or_default();
        if url.is_empty() || path.is_empty() {
            m.dropped(
                &d.src,
                format!("{name}: not translated: needs a URL and a path"),
            );
            return;
        }
        match mod_wsgi_options(rest) {
            Ok(options) => m.scopes[scope].aliases.push(ScriptAlias {
                url,
                path,
                options,
                origin: Origin::of(d),
                regex: d.is("WSGIScriptAliasMatch"),
            }),
            Err(e) => m.dropped(&d.src, format!("{name}: not translated: {e}")),
        }
    } else if d.is("WSGIDaemonProcess") {
        let mut rest = d.args.as_str();
        let group = parse::next_word(&mut rest).unwrap_or_default();
        if group.is_empty() {
            m.dropped(&d.src, format!("{name}: not translated: no group name"));
            return;
        }
        if m.daemons.iter().any(|x| x.name == group) {
            m.dropped(
                &d.src,
                format!("{name} {group}: not translated: a daemon process group of that name exists already"),
            );
            return;
        }
        match mod_wsgi_options(rest) {
            Ok(options) => m.daemons.push(Daemon {
                name: group,
                options,
                origin: Origin::of(d),
            }),
            Err(e) => m.dropped(&d.src, format!("{name} {group}: not translated: {e}")),
        }
    } else if scope != 0 && (d.is("WSGIPythonHome") || d.is("WSGIPythonPath")) {
        m.dropped(
            &d.src,
            format!(
                "{name}: not translated: httpd refuses it inside <VirtualHost> (it is for the \
                 whole server); use python-home/python-path on WSGIDaemonProcess"
            ),
        );
    } else if d.is("WSGIPythonHome") {
        let (prefix, exec_prefix) = first.split_once(':').unwrap_or((&first, &first));
        if prefix != exec_prefix {
            m.note(
                &d.src,
                format!(
                    "{name}: the exec_prefix {exec_prefix} is dropped: python-home is one directory"
                ),
            );
        }
        m.python_home = Some((absolute_in(&m.server_root, prefix), Origin::of(d)));
    } else if d.is("WSGIPythonPath") {
        let dirs = first
            .split(':')
            .filter(|p| !p.is_empty())
            .map(|p| absolute_in(&m.server_root, p))
            .collect();
        m.python_path = Some((dirs, Origin::of(d)));
    } else if d.is("WSGIRestrictEmbedded") {
        match on_off(&first) {
            Some(true) => m.restrict_embedded = Some(Origin::of(d)),
            Some(false) => m.restrict_embedded = None,
            None => m.dropped(&d.src, format!("{name}: not translated: expects On or Off")),
        }
    } else if d.is("WSGIImportScript") {
        let mut rest = d.args.as_str();
        let path = parse::next_word(&mut rest).unwrap_or_default();
        match mod_wsgi_options(rest) {
            Ok(options) => {
                let get = |k: &str| options.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                m.imports.push(ImportScript {
                    path: absolute_in(&m.server_root, &path),
                    process_group: get("process-group"),
                    application_group: get("application-group"),
                    origin: Origin::of(d),
                });
            }
            Err(e) => m.dropped(&d.src, format!("{name}: not translated: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resolving mounts and writing the plan.

/// The settings that apply to a mount, each with its origin.
#[derive(Default)]
struct Resolved {
    process_group: Option<(String, Origin)>,
    application_group: Option<(String, Origin)>,
    callable: Option<(String, Origin)>,
    pass_auth: Option<(bool, Origin)>,
    reloading: Option<(bool, Origin)>,
    env: HashMap<String, (String, Origin)>,
}

impl Resolved {
    fn apply(&mut self, s: &Setting) {
        let v = (s.value.clone(), s.origin.clone());
        match &s.kind {
            Kind::ProcessGroup => self.process_group = Some(v),
            Kind::ApplicationGroup => self.application_group = Some(v),
            Kind::Callable => self.callable = Some(v),
            Kind::PassAuth => self.pass_auth = on_off(&s.value).map(|b| (b, s.origin.clone())),
            Kind::Reloading => self.reloading = on_off(&s.value).map(|b| (b, s.origin.clone())),
            Kind::Env(name) => {
                self.env.insert(name.clone(), v);
            }
        }
    }
}

/// Whether URL `prefix` covers `path` on segment boundaries (`/app` covers `/app/x`).
fn url_covers(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty()
        || path == p
        || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
}

/// Whether directory `dir` holds `path` (or is it).
fn dir_covers(dir: &str, path: &str) -> bool {
    url_covers(dir, path)
}

fn components(p: &str) -> usize {
    p.split('/').filter(|c| !c.is_empty()).count()
}

/// A mount as mod_wsgi would see it, before it is put into a group.
struct Candidate {
    prefix: String,
    target: MountTarget,
    origin: Origin,
    /// Alias options that apply (process-group=... as Settings).
    options: Vec<Setting>,
}

/// The literal start of an anchored regex: `^/a\.b(...` → (`/a.b`, rest).
fn regex_literal(re: &str) -> Option<(String, &str)> {
    let body = re.strip_prefix('^')?;
    let mut lit = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&(_, n)) if !n.is_ascii_alphanumeric() => {
                    lit.push(n);
                    chars.next();
                }
                _ => return Some((lit, &body[i..])),
            },
            '.' | '*' | '+' | '?' | '[' | ']' | '(' | ')' | '{' | '}' | '|' | '^' | '$' => {
                return Some((lit, &body[i..]))
            }
            c => lit.push(c),
        }
    }
    Some((lit, ""))
}

/// Patterns matching one path segment, as `([^/]+)` does.
const SEGMENT_GROUPS: &[&str] = &["([^/]+)", "([^/]*)", "(\\w+)", "([\\w-]+)", "([-\\w]+)"];

/// `WSGIScriptAliasMatch` reduced to a mount, or why it cannot be.
fn match_alias(
    re: &str,
    target: &str,
    root: &Path,
) -> Result<(String, MountTarget, Option<String>), String> {
    let (lit, rest) =
        regex_literal(re).ok_or_else(|| format!("the pattern {re} is not anchored with ^"))?;
    if !lit.starts_with('/') {
        return Err(format!("the pattern {re} does not start with a URL path"));
    }
    if rest.is_empty() && !target.contains('$') {
        let note = (!lit.ends_with('/')).then(|| {
            format!(
                "WSGIScriptAliasMatch {re}: httpd also matched {lit}* (e.g. {lit}x); the \
                 gateway mounts {lit} on segment boundaries"
            )
        });
        return Ok((
            lit,
            MountTarget::Script(PathBuf::from(absolute_in(root, target))),
            note,
        ));
    }
    if let Some(group) = SEGMENT_GROUPS.iter().find(|g| rest == **g) {
        let _ = group;
        if let Some(prefix) = lit.strip_suffix('/') {
            if let Some((dir, ext)) = target.split_once("/$1") {
                let simple_ext = ext.starts_with('.') && ext.len() > 1 && !ext.contains(['/', '$']);
                if !dir.contains('$') && simple_ext {
                    return Ok((
                        if prefix.is_empty() {
                            "/".into()
                        } else {
                            prefix.into()
                        },
                        MountTarget::Directory {
                            dir: PathBuf::from(absolute_in(root, dir)),
                            extension: ext.to_string(),
                        },
                        None,
                    ));
                }
                if !dir.contains('$') && ext.is_empty() {
                    return Err(
                        "the scripts have no extension; a directory mount serves NAME from \
                         NAME.EXT, so rename them (e.g. NAME.wsgi)"
                            .into(),
                    );
                }
            }
        }
    }
    Err(format!(
        "the pattern {re} with {target} reduces neither to a URL prefix (one script) nor to \
         PREFIX/([^/]+) with DIR/$1.EXT (a directory of scripts)"
    ))
}

fn candidates(m: &mut Model, scope: usize) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let own = m.scopes[scope].aliases.clone();
    let inherited: Vec<ScriptAlias> = if scope == 0 {
        Vec::new()
    } else {
        m.scopes[0].aliases.clone()
    };
    for a in own.iter().chain(inherited.iter()) {
        if a.url.contains("${") || a.path.contains("${") {
            m.dropped(
                &a.origin.src,
                format!(
                    "{}: not translated: it uses an undefined variable",
                    a.origin.text
                ),
            );
            continue;
        }
        let (prefix, target) = if a.regex {
            match match_alias(&a.url, &a.path, &m.server_root) {
                Ok((p, t, note)) => {
                    if let Some(n) = note {
                        m.note(&a.origin.src, n);
                    }
                    (p, t)
                }
                Err(why) => {
                    m.dropped(
                        &a.origin.src,
                        format!("WSGIScriptAliasMatch: not translated: {why}"),
                    );
                    continue;
                }
            }
        } else {
            let path = absolute_in(&m.server_root, &a.path);
            let dir = a.path.ends_with('/') || Path::new(&path).is_dir();
            let target = if dir {
                m.note(
                    &a.origin.src,
                    format!(
                        "WSGIScriptAlias {} {}: a directory of scripts: httpd ran \
                         {}NAME.wsgi for the URL {}NAME.wsgi; the gateway runs it for {}NAME \
                         (SCRIPT_NAME changes accordingly)",
                        a.url,
                        a.path,
                        with_slash(&path),
                        with_slash(&a.url),
                        with_slash(&a.url)
                    ),
                );
                MountTarget::Directory {
                    dir: PathBuf::from(path.trim_end_matches('/')),
                    extension: ".wsgi".into(),
                }
            } else {
                MountTarget::Script(PathBuf::from(path))
            };
            (a.url.clone(), target)
        };
        let prefix = normal_prefix(&prefix);
        if out.iter().any(|c| c.prefix == prefix) {
            // A virtual host's own alias hides the main server's.
            continue;
        }
        let mut options = Vec::new();
        for (name, value) in &a.options {
            let kind = match name.as_str() {
                "process-group" => Kind::ProcessGroup,
                "application-group" => Kind::ApplicationGroup,
                "callable-object" => Kind::Callable,
                "pass-authorization" => Kind::PassAuth,
                other => {
                    m.dropped(
                        &a.origin.src,
                        format!("WSGIScriptAlias option {other}: not translated: unknown option"),
                    );
                    continue;
                }
            };
            options.push(Setting {
                kind,
                value: value.clone(),
                origin: a.origin.with(format!("{name}={value}")),
            });
        }
        out.push(Candidate {
            prefix,
            target,
            origin: a.origin.clone(),
            options,
        });
    }
    out
}

fn with_slash(p: &str) -> String {
    format!("{}/", p.trim_end_matches('/'))
}

fn normal_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// The settings for a candidate mount served by `scope`.
fn resolve(
    m: &mut Model,
    scope: usize,
    c: &Candidate,
    prefixes: &[String],
    reported: &mut Vec<Source>,
) -> Resolved {
    let mut r = Resolved::default();
    let mut layers: Vec<&Setting> = Vec::new();
    let scopes: Vec<usize> = if scope == 0 { vec![0] } else { vec![0, scope] };
    for &s in &scopes {
        layers.extend(m.scopes[s].settings.iter());
    }
    let fs_path = match &c.target {
        MountTarget::Script(p) => p.to_string_lossy().into_owned(),
        MountTarget::Directory { dir, .. } => dir.to_string_lossy().into_owned(),
    };
    let mut dirs: Vec<&Ctx> = scopes
        .iter()
        .flat_map(|&s| m.scopes[s].ctxs.iter())
        .filter(|x| x.kind == CtxKind::Directory && dir_covers(&x.path, &fs_path))
        .collect();
    dirs.sort_by_key(|x| components(&x.path));
    for x in dirs {
        layers.extend(x.settings.iter());
    }
    let mut partial = Vec::new();
    for &s in &scopes {
        for x in &m.scopes[s].ctxs {
            if x.kind != CtxKind::Location {
                continue;
            }
            if url_covers(&x.path, &c.prefix) {
                layers.extend(x.settings.iter());
            } else if url_covers(&c.prefix, &x.path)
                && x.settings.iter().any(|s| !matches!(s.kind, Kind::Env(_)))
                && !prefixes
                    .iter()
                    .any(|p| p != &c.prefix && url_covers(&c.prefix, p) && url_covers(p, &x.path))
            {
                partial.push(x.origin.clone());
            }
        }
    }
    layers.extend(c.options.iter());
    for s in layers {
        r.apply(s);
    }
    for o in partial {
        if !reported.contains(&o.src) {
            reported.push(o.src.clone());
            m.dropped(
                &o.src,
                format!(
                    "{}: not translated: it changes WSGI settings for part of the mount {} \
                     ({}); the gateway sets them per mount — mount that part on its own",
                    o.text, c.prefix, c.origin.text
                ),
            );
        }
    }
    r
}

/// `%{ENV:NAME}` from a SetEnv that applies, or why not.
fn env_value(r: &Resolved, value: &str) -> Option<Result<(String, Origin), String>> {
    let name = value.strip_prefix("%{ENV:")?.strip_suffix('}')?;
    Some(r.env.get(name).cloned().ok_or_else(|| {
        format!(
            "{name} is set by no SetEnv that applies to this mount (RewriteRule [E=...] and \
             SetEnvIf decide it per request)"
        )
    }))
}

/// mod_wsgi's `%{SERVER}`: the server name, with the port when it is not 80 or 443.
fn server_group(site: &Scope) -> Option<String> {
    let name = site.server_name.clone()?;
    let port = site
        .vhost
        .as_ref()
        .and_then(|(_, addrs)| addrs.first().and_then(|a| a.rsplit_once(':')))
        .map(|(_, p)| p.to_string());
    Some(match port.as_deref() {
        Some(p) if p != "80" && p != "443" && p != "*" => format!("{name}:{p}"),
        _ => name,
    })
}

struct Builder {
    groups: Vec<GroupPlan>,
    /// Group index of each daemon (by daemon name).
    daemon_index: HashMap<String, usize>,
    /// Embedded-mode group per site key.
    embedded: Vec<(String, usize)>,
}

pub fn translate(config: parse::Config, opts: &Options) -> Plan {
    let mut m = read_model(config);
    let mut b = Builder {
        groups: Vec::new(),
        daemon_index: HashMap::new(),
        embedded: Vec::new(),
    };
    for d in m.daemons.clone() {
        let plan = daemon_group(&mut m, &d);
        b.daemon_index.insert(d.name.clone(), b.groups.len());
        b.groups.push(plan);
    }
    let site_scopes: Vec<usize> = if m.scopes.len() > 1 {
        (1..m.scopes.len()).collect()
    } else {
        vec![0]
    };
    let mut sites = Vec::new();
    let mut reported = Vec::new();
    let mut preload_origins: Vec<(usize, Origin)> = Vec::new();
    let mut embedded_keys: Vec<String> = Vec::new();
    for &scope in &site_scopes {
        let key = m.scopes[scope]
            .server_name
            .clone()
            .or_else(|| m.scopes[scope].vhost.as_ref().map(|(o, _)| o.text.clone()))
            .unwrap_or_else(|| "main".into());
        let mut site = site_of(&m, scope);
        let found = candidates(&mut m, scope);
        let prefixes: Vec<String> = found.iter().map(|c| c.prefix.clone()).collect();
        for c in found {
            let r = resolve(&mut m, scope, &c, &prefixes, &mut reported);
            let Some(group) = choose_group(&mut m, &mut b, &r, &c, &key, &mut embedded_keys) else {
                continue;
            };
            let mut entries = Vec::new();
            if let Some((name, origin)) = &r.callable {
                if name != "application" {
                    entries.push(Entry {
                        key: "callable",
                        value: Value::Str(name.clone()),
                        origin: origin.clone(),
                    });
                }
            }
            let scope_info = m.scopes[scope].clone();
            if let Some(g) = application_group(&mut m, &r, &c, &scope_info) {
                entries.push(g);
            }
            if let Some((false, origin)) = &r.reloading {
                entries.push(Entry {
                    key: "reload",
                    value: Value::Bool(false),
                    origin: origin.clone(),
                });
            }
            let both = ["process-group", "application-group"]
                .iter()
                .all(|k| c.options.iter().any(|s| s.origin.text.starts_with(k)));
            if both {
                preload_origins.push((
                    group,
                    c.origin.with(format!(
                        "{} (process-group and application-group both set: preloaded)",
                        c.origin.text
                    )),
                ));
            }
            let mount = MountPlan {
                prefix: c.prefix.clone(),
                target: c.target.clone(),
                origin: c.origin.clone(),
                entries,
            };
            add_mount(&mut m, &mut b.groups[group], mount);
            site.routes.push(Route {
                prefix: c.prefix.clone(),
                group,
                origin: c.origin.clone(),
                pass_auth: match &r.pass_auth {
                    Some((true, o)) => Some(o.clone()),
                    _ => None,
                },
            });
        }
        if !site.routes.is_empty() {
            sites.push(site);
        }
    }
    if let (Some((_, origin)), true) = (&m.python_path, b.embedded.is_empty()) {
        let src = origin.src.clone();
        m.dropped(
            &src,
            "WSGIPythonPath: not written: it applies to embedded mode only, and no mount runs \
             in embedded mode (daemon groups take python-path=)"
                .into(),
        );
    }
    name_embedded(&mut b);
    for (group, origin) in preload_origins {
        set_preload(&mut b.groups[group], origin);
    }
    imports(&mut m, &mut b);
    let mut top = Vec::new();
    if let Some((home, origin)) = &m.python_home {
        top.push(Entry {
            key: "python-home",
            value: Value::Str(home.clone()),
            origin: origin.clone(),
        });
    }
    // Drop groups no mount uses, keeping indices of routes right.
    let mut keep = Vec::new();
    let mut remap = vec![usize::MAX; b.groups.len()];
    for (i, g) in b.groups.iter().enumerate() {
        if g.mounts.is_empty() {
            if let Some(o) = &g.origin {
                m.dropped(
                    &o.src,
                    format!(
                        "WSGIDaemonProcess {}: not written: no mount runs in it",
                        g.name
                    ),
                );
            }
            continue;
        }
        remap[i] = keep.len();
        keep.push(g.clone());
    }
    for s in &mut sites {
        for r in &mut s.routes {
            r.group = remap[r.group];
        }
    }
    let mut groups = keep;
    assign_listeners(&mut m, opts, &mut groups);
    let mut notes = Vec::new();
    for n in m.notes {
        if !notes.contains(&n) {
            notes.push(n);
        }
    }
    Plan {
        top,
        groups,
        sites,
        notes,
    }
}

fn site_of(m: &Model, scope: usize) -> Site {
    let s = &m.scopes[scope];
    let main = &m.scopes[0];
    let mut statics = s.statics.clone();
    if scope != 0 {
        for a in &main.statics {
            if !statics.iter().any(|x| x.url == a.url) {
                statics.push(a.clone());
            }
        }
    }
    Site {
        vhost: s.vhost.clone(),
        server_name: s
            .server_name
            .clone()
            .or_else(|| (scope == 0).then(|| main.server_name.clone()).flatten()),
        server_aliases: s.server_aliases.clone(),
        listen: main.listen.clone(),
        document_root: s.document_root.clone().or(main.document_root.clone()),
        statics,
        ssl: s.ssl_engine.then(|| s.ssl.clone()),
        limit_request_body: s
            .limit_request_body
            .clone()
            .or(main.limit_request_body.clone()),
        routes: Vec::new(),
        not_carried: s.not_carried.clone(),
    }
}

/// The group a mount runs in, or None (reported) when it cannot be known.
fn choose_group(
    m: &mut Model,
    b: &mut Builder,
    r: &Resolved,
    c: &Candidate,
    key: &str,
    embedded_keys: &mut Vec<String>,
) -> Option<usize> {
    let (value, origin) = match &r.process_group {
        Some((v, o)) => (v.clone(), Some(o.clone())),
        None => (String::new(), None),
    };
    let value = match env_value(r, &value) {
        Some(Ok((v, _))) => v,
        Some(Err(why)) => {
            let o = origin.expect("an %{ENV} value has an origin");
            m.dropped(
                &c.origin.src,
                format!(
                    "{}: not translated: its process group {} ({}:{}): {why}",
                    c.origin.text,
                    o.text,
                    o.src.file.display(),
                    o.src.line
                ),
            );
            return None;
        }
        None => value,
    };
    if value.is_empty() || value == "%{GLOBAL}" {
        if let Some(o) = m.restrict_embedded.clone() {
            m.dropped(
                &c.origin.src,
                format!(
                    "{}: not translated: it runs in embedded mode, which {} at {}:{} refuses",
                    c.origin.text,
                    o.text,
                    o.src.file.display(),
                    o.src.line
                ),
            );
            return None;
        }
        if let Some((_, i)) = b.embedded.iter().find(|(k, _)| k == key) {
            return Some(*i);
        }
        m.note(
            &c.origin.src,
            format!(
                "{}: embedded mode (no WSGIProcessGroup): it, and the site's other mounts \
                 without one, ran inside Apache's own processes; the gateway runs them in a \
                 process group of their own (set its processes and threads to what the Apache \
                 MPM gave them)",
                c.origin.text
            ),
        );
        let mut entries = Vec::new();
        if let Some((dirs, origin)) = &m.python_path {
            entries.push(Entry {
                key: "python-path",
                value: Value::List(dirs.clone()),
                origin: origin.clone(),
            });
        }
        b.groups.push(GroupPlan {
            name: String::new(),
            origin: None,
            entries,
            listeners: Vec::new(),
            mounts: Vec::new(),
            front: Vec::new(),
        });
        let i = b.groups.len() - 1;
        b.embedded.push((key.to_string(), i));
        embedded_keys.push(key.to_string());
        return Some(i);
    }
    match b.daemon_index.get(&value) {
        Some(i) => Some(*i),
        None => {
            let o = origin.expect("a named group has an origin");
            m.dropped(
                &c.origin.src,
                format!(
                    "{}: not translated: no WSGIDaemonProcess is named {value:?} ({} at {}:{})",
                    c.origin.text,
                    o.text,
                    o.src.file.display(),
                    o.src.line
                ),
            );
            None
        }
    }
}

/// Names embedded-mode groups: `embedded`, or `embedded-SITE` when several sites have them;
/// never the name of a daemon group.
fn name_embedded(b: &mut Builder) {
    let several = b.embedded.len() > 1;
    let taken: Vec<String> = b.daemon_index.keys().cloned().collect();
    for (key, i) in b.embedded.clone() {
        let base = if several {
            format!("embedded-{key}")
        } else {
            "embedded".to_string()
        };
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) || b.groups.iter().any(|g| g.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        b.groups[i].name = name;
    }
}

fn application_group(m: &mut Model, r: &Resolved, c: &Candidate, site: &Scope) -> Option<Entry> {
    let (value, origin) = r.application_group.clone()?;
    let (value, origin) = match env_value(r, &value) {
        Some(Ok((v, o))) => (
            v,
            origin.with(format!("{} (SetEnv: {})", origin.text, o.text)),
        ),
        Some(Err(why)) => {
            m.dropped(
                &origin.src,
                format!(
                    "{}: not translated for {}: {why}; the mount gets its own sub-interpreter",
                    origin.text, c.prefix
                ),
            );
            return None;
        }
        None => (value, origin),
    };
    let value = match value.as_str() {
        "%{RESOURCE}" | "" => return None,
        "%{GLOBAL}" => value,
        "%{SERVER}" => match server_group(site) {
            Some(name) => name,
            None => {
                m.note(
                    &origin.src,
                    format!(
                        "{}: no ServerName here, so the group is named \"%{{SERVER}}\" (one \
                         group shared by the mounts of this site)",
                        origin.text
                    ),
                );
                value
            }
        },
        v if v.contains("%{") => {
            m.dropped(
                &origin.src,
                format!(
                    "{}: not translated: unknown expansion; the mount gets its own sub-interpreter",
                    origin.text
                ),
            );
            return None;
        }
        _ => value,
    };
    Some(Entry {
        key: "application-group",
        value: Value::Str(value),
        origin,
    })
}

fn add_mount(m: &mut Model, g: &mut GroupPlan, mount: MountPlan) {
    if let Some(other) = g.mounts.iter().find(|o| o.prefix == mount.prefix) {
        let same = other.target == mount.target
            && other
                .entries
                .iter()
                .map(|e| (&e.key, &e.value))
                .eq(mount.entries.iter().map(|e| (&e.key, &e.value)));
        if !same {
            m.dropped(
                &mount.origin.src,
                format!(
                    "{}: not translated: process group {} already mounts {} from {}:{} \
                     differently (the gateway routes by path, not by host; give one of the \
                     sites its own WSGIDaemonProcess)",
                    mount.origin.text,
                    if g.name.is_empty() {
                        "(embedded)"
                    } else {
                        &g.name
                    },
                    mount.prefix,
                    other.origin.src.file.display(),
                    other.origin.src.line
                ),
            );
        }
        return;
    }
    g.mounts.push(mount);
}

fn set_preload(g: &mut GroupPlan, origin: Origin) {
    if !g.entries.iter().any(|e| e.key == "preload") {
        g.entries.push(Entry {
            key: "preload",
            value: Value::Bool(true),
            origin,
        });
    }
}

/// `WSGIImportScript`: preload the group when the script is one of its mounts.
fn imports(m: &mut Model, b: &mut Builder) {
    for imp in m.imports.clone() {
        let pg = imp.process_group.clone().unwrap_or_default();
        let group = if pg.is_empty() || pg == "%{GLOBAL}" {
            b.embedded.first().map(|(_, i)| *i)
        } else {
            b.daemon_index.get(&pg).copied()
        };
        let wanted = match imp.application_group.as_deref() {
            None | Some("%{RESOURCE}") => None,
            Some(g) => Some(g.to_string()),
        };
        let found = group.filter(|&g| {
            b.groups[g].mounts.iter().any(|mnt| {
                let script =
                    matches!(&mnt.target, MountTarget::Script(p) if p == Path::new(&imp.path));
                let app = mnt
                    .entries
                    .iter()
                    .find(|e| e.key == "application-group")
                    .and_then(|e| match &e.value {
                        Value::Str(s) => Some(s.clone()),
                        _ => None,
                    });
                script && app == wanted
            })
        });
        match found {
            Some(g) => set_preload(&mut b.groups[g], imp.origin.clone()),
            None => m.dropped(
                &imp.origin.src,
                format!(
                    "{}: not translated: the gateway preloads mount scripts only, and no mount \
                     of that process group runs {} in that application group",
                    imp.origin.text, imp.path
                ),
            ),
        }
    }
}

/// A WSGIDaemonProcess as a group: its options through the table.
fn daemon_group(m: &mut Model, d: &Daemon) -> GroupPlan {
    let mut entries = Vec::new();
    let mut front = Vec::new();
    for (name, value) in &d.options {
        let origin = d.origin.with(format!("{name}={value}"));
        let Some(option) = table::daemon_option(name) else {
            m.dropped(
                &d.origin.src,
                format!(
                    "WSGIDaemonProcess {}: option {name}: not translated: not a \
                     WSGIDaemonProcess option this command knows",
                    d.name
                ),
            );
            continue;
        };
        let for_web = option
            .targets
            .iter()
            .any(|t| matches!(t, Target::WebServer(_)));
        let planned = option
            .targets
            .iter()
            .any(|t| matches!(t, Target::Planned(..)));
        for target in option.targets {
            match *target {
                Target::Key(key, conv) => match convert(conv, value, &d.name) {
                    Ok(Some(v)) => {
                        if key == "python-path" {
                            site_packages_note(m, &origin, &v);
                        }
                        entries.retain(|e: &Entry| e.key != key);
                        entries.push(Entry {
                            key,
                            value: v,
                            origin: origin.clone(),
                        });
                    }
                    Ok(None) => {}
                    Err(why) => m.dropped(
                        &d.origin.src,
                        format!(
                            "WSGIDaemonProcess {}: {name}={value}: not translated: {why}",
                            d.name
                        ),
                    ),
                },
                Target::Planned(key, _) => {
                    let web = if for_web {
                        "the web server's side is written into the nginx and Apache outputs; "
                    } else {
                        ""
                    };
                    m.dropped(
                        &d.origin.src,
                        format!(
                            "WSGIDaemonProcess {}: {name}={value}: {web}not translated yet: it \
                             will be the gateway's {key} setting",
                            d.name
                        ),
                    )
                }
                Target::WebServer(f) => match convert(Conv::Secs, value, &d.name) {
                    Ok(Some(Value::Int(secs))) => {
                        if !planned {
                            m.front_note(
                                &d.origin.src,
                                format!(
                                    "WSGIDaemonProcess {}: {name}={value}: for the web server \
                                     in front: written into the nginx and Apache outputs",
                                    d.name
                                ),
                            );
                        }
                        front.push((f, secs, origin.clone()))
                    }
                    Ok(_) => {}
                    Err(why) => m.dropped(
                        &d.origin.src,
                        format!(
                            "WSGIDaemonProcess {}: {name}={value}: not translated: {why}",
                            d.name
                        ),
                    ),
                },
                Target::Unsupported(why) => m.dropped(
                    &d.origin.src,
                    format!(
                        "WSGIDaemonProcess {}: {name}={value}: not translated: {why}",
                        d.name
                    ),
                ),
            }
        }
    }
    if !d.options.iter().any(|(n, _)| n == "threads") {
        entries.push(Entry {
            key: "threads",
            value: Value::Int(15),
            origin: d.origin.with("threads: mod_wsgi's default, 15".into()),
        });
    }
    GroupPlan {
        name: d.name.clone(),
        origin: Some(d.origin.clone()),
        entries,
        listeners: Vec::new(),
        mounts: Vec::new(),
        front,
    }
}

/// `python-path` pointing into a virtualenv's site-packages: the old way of using one.
fn site_packages_note(m: &mut Model, origin: &Origin, v: &Value) {
    let Value::List(dirs) = v else { return };
    for d in dirs {
        let p = Path::new(d);
        let is_site = p.file_name().is_some_and(|n| n == "site-packages")
            && p.parent()
                .and_then(|l| l.file_name())
                .is_some_and(|n| n.to_string_lossy().starts_with("python"));
        if let Some(venv) = is_site
            .then(|| p.parent().and_then(Path::parent).and_then(Path::parent))
            .flatten()
        {
            m.note(
                &origin.src,
                format!(
                    "python-path {d} is a virtualenv's site-packages: kept as it is, but \
                     python-home = \"{}\" is the way to use a virtualenv",
                    venv.display()
                ),
            );
        }
    }
}

fn lookup_id(file: &str, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == id).then(|| f[0].to_string())
    })
}

fn convert(conv: Conv, value: &str, group: &str) -> Result<Option<Value>, String> {
    let number = || {
        value
            .parse::<u64>()
            .map_err(|_| format!("{value:?} is not a whole number"))
    };
    Ok(Some(match conv {
        Conv::Count => match number()? {
            0 => return Err("must be at least 1".into()),
            n => Value::Int(n),
        },
        Conv::Threads => match number()? {
            0 => {
                return Err(
                    "threads=0 is mod_wsgi's managed-process mode (a WSGIImportScript that \
                     runs forever), which the gateway has not"
                        .into(),
                )
            }
            n => Value::Int(n),
        },
        Conv::Secs | Conv::Limit => match number()? {
            0 => return Ok(None),
            n => Value::Int(n),
        },
        Conv::DisplayName => {
            if value == "%{GROUP}" {
                Value::Str(group.to_string())
            } else {
                Value::Str(value.to_string())
            }
        }
        Conv::Path => {
            if !value.starts_with('/') {
                return Err("not an absolute path".into());
            }
            Value::Str(value.to_string())
        }
        Conv::PathList => Value::List(
            value
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        Conv::Octal => {
            if value.is_empty() || !value.chars().all(|c| ('0'..='7').contains(&c)) {
                return Err(format!("{value:?} is not an octal mask"));
            }
            Value::Str(value.to_string())
        }
        Conv::User | Conv::Group => match value.strip_prefix('#') {
            Some(id) => {
                let file = if conv == Conv::User {
                    "/etc/passwd"
                } else {
                    "/etc/group"
                };
                match lookup_id(file, id) {
                    Some(name) => Value::Str(name),
                    None => return Err(format!("no entry with id {id} in {file}")),
                }
            }
            None => Value::Str(value.to_string()),
        },
    }))
}

/// One listener per group: from the command line, else a Unix socket in the runtime dir.
fn assign_listeners(m: &mut Model, opts: &Options, groups: &mut [GroupPlan]) {
    let mut bare = Vec::new();
    for l in &opts.listeners {
        match &l.group {
            Some(name) => match groups.iter_mut().find(|g| &g.name == name) {
                Some(g) => g.listeners.push(Listener {
                    proto: l.proto,
                    addr: l.addr.clone(),
                    why: l.shown(),
                }),
                None => m.notes.push(Note {
                    src: None,
                    dropped: true,
                    front: false,
                    text: format!(
                        "{}: not used: no process group {name:?} was written",
                        l.shown()
                    ),
                }),
            },
            None => bare.push(l.clone()),
        }
    }
    let mut bare = bare.into_iter();
    for g in groups.iter_mut() {
        if !g.listeners.is_empty() {
            continue;
        }
        if let Some(l) = bare.next() {
            g.listeners.push(Listener {
                proto: l.proto,
                addr: l.addr.clone(),
                why: format!(
                    "{} (the listeners given, in the order of the groups)",
                    l.shown()
                ),
            });
        }
    }
    for l in bare {
        m.notes.push(Note {
            src: None,
            dropped: true,
            front: false,
            text: format!(
                "{}: not used: more listeners than process groups ({})",
                l.shown(),
                groups.len()
            ),
        });
    }
    let mut used: Vec<String> = Vec::new();
    for g in groups.iter_mut() {
        if !g.listeners.is_empty() {
            continue;
        }
        let base: String = g
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = base.trim_start_matches('.').to_string();
        let mut file = base.clone();
        let mut n = 2;
        while used.contains(&file) {
            file = format!("{base}-{n}");
            n += 1;
        }
        used.push(file.clone());
        g.listeners.push(Listener {
            proto: Proto::FastCgi,
            addr: format!(
                "unix:{}",
                opts.runtime_dir.join(format!("{file}.sock")).display()
            ),
            why: format!(
                "one Unix socket per process group in the runtime directory {} (--runtime-dir)",
                opts.runtime_dir.display()
            ),
        });
    }
}
