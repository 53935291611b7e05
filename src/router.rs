//! Mounts: which script serves a request, and the SCRIPT_NAME / PATH_INFO it sees.
//!
//! Both are derived from the mount prefix and the request URI, whatever the front end sends
//! (nginx's stock params put the whole URI in SCRIPT_NAME and send no PATH_INFO; lighttpd
//! splits at its own prefix; Apache adds `proxy:` paths).

use std::path::PathBuf;

use protocol::RequestHead;

/// What a mount runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A WSGI script file.
    Script(PathBuf),
    /// A directory whose `NAME<extension>` files serve `PREFIX/NAME`.
    Directory { dir: PathBuf, extension: String },
    /// The built-in diagnostics app.
    Diagnostics,
}

/// Which interpreter runs a mount (mod_wsgi's application group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppGroup {
    /// `%{GLOBAL}`: the main interpreter.
    Global,
    /// The default: a sub-interpreter of the mount's own (one per script of a directory mount,
    /// like mod_wsgi's `%{RESOURCE}`).
    Own,
    /// A sub-interpreter shared by every mount that names it.
    Named(String),
}

impl AppGroup {
    pub const GLOBAL: &'static str = "%{GLOBAL}";
    /// mod_wsgi's name for the default (a sub-interpreter of the mount's own), as log lines
    /// show it.
    pub const RESOURCE: &'static str = "%{RESOURCE}";

    /// The group's name in log lines: `%{GLOBAL}`, `%{RESOURCE}` or the shared name.
    pub fn name(&self) -> &str {
        match self {
            AppGroup::Global => Self::GLOBAL,
            AppGroup::Own => Self::RESOURCE,
            AppGroup::Named(n) => n,
        }
    }

    /// `%{GLOBAL}`, or any other name (a shared sub-interpreter); empty means the default.
    pub fn parse(name: &str) -> AppGroup {
        match name {
            "" => AppGroup::Own,
            Self::GLOBAL => AppGroup::Global,
            other => AppGroup::Named(other.to_string()),
        }
    }
}

impl std::fmt::Display for AppGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppGroup::Global => f.write_str(Self::GLOBAL),
            AppGroup::Own => f.write_str("its own sub-interpreter"),
            AppGroup::Named(n) => write!(f, "{n:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// URL prefix without a trailing slash; empty for the root.
    pub prefix: String,
    pub target: Target,
    pub callable: String,
    pub group: AppGroup,
    /// Its sub-interpreter has a GIL of its own (Python 3.12+; never `%{GLOBAL}`).
    pub own_gil: bool,
    /// A virtualenv activated in this mount's interpreter (checked root).
    pub venv: Option<PathBuf>,
    /// Extra sys.path entries for this mount's interpreter.
    pub python_path: Vec<PathBuf>,
    /// Reload the script when its file changes.
    pub reload: bool,
}

impl Mount {
    /// The prefix as users write it.
    pub fn shown_prefix(&self) -> &str {
        if self.prefix.is_empty() {
            "/"
        } else {
            &self.prefix
        }
    }
}

impl Mount {
    /// Normalises a user-given prefix: a leading slash, no trailing slash, `/` = root.
    pub fn normalise_prefix(prefix: &str) -> Result<String, String> {
        if !prefix.starts_with('/') {
            return Err(format!("mount prefix {prefix:?} must start with '/'"));
        }
        Ok(prefix.trim_end_matches('/').to_string())
    }
}

/// The mount chosen for a request and the paths the app sees (bytes: PEP 3333 native strings
/// carry the decoded path as latin-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub mount: usize,
    pub script_name: Vec<u8>,
    pub path_info: Vec<u8>,
    /// For a directory mount: the script's name (`NAME` of `NAME.wsgi`), already checked to be
    /// a plain file name.
    pub resource: Option<String>,
    /// How the path was found, for the diagnostics page.
    pub source: &'static str,
    /// The status page (status-path), which the gateway answers itself: no mount runs.
    pub status: bool,
}

pub struct Router {
    mounts: Vec<Mount>,
    /// Indices into `mounts`, longest prefix first.
    order: Vec<usize>,
    /// The status page's path (status-path), answered before any mount.
    status_path: Option<Vec<u8>>,
}

impl Router {
    pub fn new(mounts: Vec<Mount>) -> Self {
        let mut order: Vec<usize> = (0..mounts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(mounts[i].prefix.len()));
        Router {
            mounts,
            order,
            status_path: None,
        }
    }

    /// The gateway answers `path` itself (the status page), whatever the mounts.
    pub fn with_status_path(mut self, path: Option<&str>) -> Self {
        self.status_path = path.map(|p| p.as_bytes().to_vec());
        self
    }

    /// Mount number `i` (a [`Route`]'s `mount`).
    pub fn mount(&self, i: usize) -> &Mount {
        &self.mounts[i]
    }

    /// The longest mount prefix matching the request path on a segment boundary. `None` when
    /// no mount matches, or a directory mount is asked for a name that cannot be a script
    /// (hidden, `..`, an encoded slash): a 404 either way.
    pub fn route(&self, head: &RequestHead) -> Option<Route> {
        let (path, source) = request_path(head);
        if self.status_path.as_deref() == Some(&path[..]) {
            return Some(Route {
                mount: 0,
                script_name: path,
                path_info: Vec::new(),
                resource: None,
                source,
                status: true,
            });
        }
        for &i in &self.order {
            let prefix = self.mounts[i].prefix.as_bytes();
            let matches = path.starts_with(prefix)
                && (path.len() == prefix.len() || path[prefix.len()] == b'/' || prefix.is_empty());
            if !matches {
                continue;
            }
            let rest = &path[prefix.len()..];
            let Target::Directory { .. } = self.mounts[i].target else {
                return Some(Route {
                    mount: i,
                    script_name: prefix.to_vec(),
                    path_info: rest.to_vec(),
                    resource: None,
                    source,
                    status: false,
                });
            };
            return directory_route(i, prefix, rest, head, source);
        }
        None
    }
}

/// `PREFIX/NAME/rest` → script `NAME`, SCRIPT_NAME `PREFIX/NAME`, PATH_INFO `/rest`;
/// `PREFIX` or `PREFIX/` → script `index`.
fn directory_route(
    mount: usize,
    prefix: &[u8],
    rest: &[u8],
    head: &RequestHead,
    source: &'static str,
) -> Option<Route> {
    let raw = head.get(b"REQUEST_URI").unwrap_or_default();
    let raw_path = &raw[..raw.iter().position(|&b| b == b'?').unwrap_or(raw.len())];
    let lower = raw_path.to_ascii_lowercase();
    if lower.windows(3).any(|w| w == b"%2f" || w == b"%5c") || rest.contains(&0) {
        return None;
    }
    let trimmed = rest.strip_prefix(b"/").unwrap_or(rest);
    let end = trimmed
        .iter()
        .position(|&b| b == b'/')
        .unwrap_or(trimmed.len());
    let name = &trimmed[..end];
    if name.is_empty() {
        return Some(Route {
            mount,
            script_name: prefix.to_vec(),
            path_info: rest.to_vec(),
            resource: Some("index".into()),
            source,
            status: false,
        });
    }
    let name = std::str::from_utf8(name).ok()?;
    if name.starts_with('.') || name.contains('\\') {
        return None;
    }
    let mut script_name = prefix.to_vec();
    script_name.push(b'/');
    script_name.extend_from_slice(name.as_bytes());
    Some(Route {
        mount,
        script_name,
        path_info: trimmed[end..].to_vec(),
        resource: Some(name.to_string()),
        source,
        status: false,
    })
}

/// The decoded request path: from REQUEST_URI (query string cut, percent-decoded), else from
/// the SCRIPT_NAME + PATH_INFO the web server sent, else DOCUMENT_URI.
pub fn request_path(head: &RequestHead) -> (Vec<u8>, &'static str) {
    if let Some(uri) = head.get(b"REQUEST_URI").filter(|u| !u.is_empty()) {
        let mut uri = uri;
        for scheme in [&b"http://"[..], b"https://"] {
            if uri.len() > scheme.len() && uri[..scheme.len()].eq_ignore_ascii_case(scheme) {
                let rest = &uri[scheme.len()..];
                uri = rest
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(&b"/"[..], |p| &rest[p..]);
            }
        }
        let end = uri
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(uri.len());
        return (percent_decode(&uri[..end]), "REQUEST_URI");
    }
    let script = head.get(b"SCRIPT_NAME").unwrap_or_default();
    let info = head.get(b"PATH_INFO").unwrap_or_default();
    if !script.is_empty() || !info.is_empty() {
        return ([script, info].concat(), "SCRIPT_NAME + PATH_INFO");
    }
    match head.get(b"DOCUMENT_URI") {
        Some(d) if !d.is_empty() => (d.to_vec(), "DOCUMENT_URI"),
        _ => (b"/".to_vec(), "default"),
    }
}

/// `%XX` decoding; malformed escapes are kept as they are.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> RequestHead {
        let mut h = RequestHead::new();
        for (n, v) in pairs {
            h.push(n.as_bytes(), v.as_bytes());
        }
        h
    }

    fn mount(prefix: &str, target: Target) -> Mount {
        Mount {
            prefix: Mount::normalise_prefix(prefix).unwrap(),
            target,
            callable: "application".into(),
            group: AppGroup::Own,
            own_gil: false,
            venv: None,
            python_path: Vec::new(),
            reload: true,
        }
    }

    fn router() -> Router {
        let m = |p: &str, s: &str| mount(p, Target::Script(s.into()));
        Router::new(vec![
            m("/", "root"),
            m("/app", "app"),
            m("/app/admin/", "admin"),
        ])
    }

    #[test]
    fn directory_mounts_pick_a_script_per_name() {
        let dir = Target::Directory {
            dir: "/srv/apps".into(),
            extension: ".wsgi".into(),
        };
        let r = Router::new(vec![mount("/apps", dir)]);
        let route = |uri: &str| r.route(&head(&[("REQUEST_URI", uri)]));
        let got = route("/apps/blog/post/1?x").unwrap();
        assert_eq!(got.resource.as_deref(), Some("blog"));
        assert_eq!(paths(&got), ("/apps/blog".into(), "/post/1".into()));
        let index = route("/apps/").unwrap();
        assert_eq!(index.resource.as_deref(), Some("index"));
        assert_eq!(paths(&index), ("/apps".into(), "/".into()));
        assert_eq!(route("/apps").unwrap().resource.as_deref(), Some("index"));
        for bad in [
            "/apps/../etc/passwd",
            "/apps/.hidden",
            "/apps/a%2Fb/c",
            "/apps/%2e%2e/x",
        ] {
            assert!(route(bad).is_none(), "{bad}");
        }
    }

    fn paths(r: &Route) -> (String, String) {
        (
            String::from_utf8(r.script_name.clone()).unwrap(),
            String::from_utf8(r.path_info.clone()).unwrap(),
        )
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let r = router();
        let cases = [
            ("/app/x?y=1", 1, "/app", "/x"),
            ("/app", 1, "/app", ""),
            ("/apple", 0, "", "/apple"),
            ("/app/admin/users", 2, "/app/admin", "/users"),
            ("/", 0, "", "/"),
            ("/a%20b/%2Fc", 0, "", "/a b//c"),
            ("http://example.com/app/z", 1, "/app", "/z"),
        ];
        for (uri, mount, script, info) in cases {
            // nginx's stock params: the whole URI as SCRIPT_NAME, no PATH_INFO.
            let route = r
                .route(&head(&[("SCRIPT_NAME", uri), ("REQUEST_URI", uri)]))
                .unwrap();
            assert_eq!(route.mount, mount, "{uri}");
            assert_eq!(paths(&route), (script.into(), info.into()), "{uri}");
        }
    }

    #[test]
    fn falls_back_to_what_the_server_split() {
        let r = router();
        let route = r
            .route(&head(&[("SCRIPT_NAME", "/app"), ("PATH_INFO", "/form")]))
            .unwrap();
        assert_eq!(route.mount, 1);
        assert_eq!(paths(&route), ("/app".into(), "/form".into()));
        assert_eq!(route.source, "SCRIPT_NAME + PATH_INFO");
        let only_sub = Router::new(vec![mount("/sub", Target::Diagnostics)]);
        assert!(only_sub
            .route(&head(&[("REQUEST_URI", "/other")]))
            .is_none());
    }

    #[test]
    fn the_status_path_is_answered_whatever_the_mounts() {
        let only_sub =
            Router::new(vec![mount("/sub", Target::Diagnostics)]).with_status_path(Some("/status"));
        let route = only_sub
            .route(&head(&[("REQUEST_URI", "/status?json&full")]))
            .unwrap();
        assert!(route.status);
        let r = router().with_status_path(Some("/app/status"));
        assert!(
            r.route(&head(&[("REQUEST_URI", "/app/status")]))
                .unwrap()
                .status
        );
        let app = r.route(&head(&[("REQUEST_URI", "/app/status/x")])).unwrap();
        assert!(!app.status);
        assert_eq!(app.mount, 1);
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode(b"%41%zz%4"), b"A%zz%4");
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%e2%82%ac"), "€".as_bytes());
    }
}
