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
    /// The built-in diagnostics app.
    Diagnostics,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// URL prefix without a trailing slash; empty for the root.
    pub prefix: String,
    pub target: Target,
    pub callable: String,
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
    /// How the path was found, for the diagnostics page.
    pub source: &'static str,
}

pub struct Router {
    mounts: Vec<Mount>,
    /// Indices into `mounts`, longest prefix first.
    order: Vec<usize>,
}

impl Router {
    pub fn new(mounts: Vec<Mount>) -> Self {
        let mut order: Vec<usize> = (0..mounts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(mounts[i].prefix.len()));
        Router { mounts, order }
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The longest mount prefix matching the request path on a segment boundary.
    pub fn route(&self, head: &RequestHead) -> Option<Route> {
        let (path, source) = request_path(head);
        for &i in &self.order {
            let prefix = self.mounts[i].prefix.as_bytes();
            let matches = path.starts_with(prefix)
                && (path.len() == prefix.len() || path[prefix.len()] == b'/' || prefix.is_empty());
            if matches {
                return Some(Route {
                    mount: i,
                    script_name: prefix.to_vec(),
                    path_info: path[prefix.len()..].to_vec(),
                    source,
                });
            }
        }
        None
    }
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

    fn router() -> Router {
        let m = |p: &str, s: &str| Mount {
            prefix: Mount::normalise_prefix(p).unwrap(),
            target: Target::Script(s.into()),
            callable: "application".into(),
        };
        Router::new(vec![
            m("/", "root"),
            m("/app", "app"),
            m("/app/admin/", "admin"),
        ])
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
        let only_sub = Router::new(vec![Mount {
            prefix: "/sub".into(),
            target: Target::Diagnostics,
            callable: "application".into(),
        }]);
        assert!(only_sub
            .route(&head(&[("REQUEST_URI", "/other")]))
            .is_none());
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode(b"%41%zz%4"), b"A%zz%4");
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%e2%82%ac"), "€".as_bytes());
    }
}
