//! Apache httpd lines that take the place of the mod_wsgi ones: `ProxyPass` to each process
//! group's socket through mod_proxy_fcgi (or mod_proxy_scgi), and `CGIPassAuth On` where
//! `WSGIPassAuthorization On` was.

use std::fmt::Write;

use super::gateway_toml::one_line;
use super::table::Front;
use super::translate::{GroupPlan, Plan, Proto, Route, Site};
use super::Shown;

/// The backend URL of a group's first listener, without a path. httpd tells proxy workers
/// apart by the URL after `unix:PATH|`, longest match first: with `fcgi://localhost` for
/// every socket, requests for one group would go to another's. So each group's URL names a
/// host of its own (never resolved for a Unix socket).
fn backend(plan: &Plan, group: usize) -> String {
    let g = &plan.groups[group];
    let l = &g.listeners[0];
    let scheme = match l.proto {
        Proto::Scgi => "scgi",
        Proto::FastCgi | Proto::Auto => "fcgi",
    };
    match l.addr.strip_prefix("unix:") {
        Some(path) => format!("unix:{path}|{scheme}://{}", host_name(plan, group)),
        None => format!("{scheme}://{}", l.addr),
    }
}

/// A host name for a group: its name in lower case letters, digits and dashes, unique among
/// the groups (else `group-N`).
fn host_name(plan: &Plan, group: usize) -> String {
    let name = |g: &GroupPlan| -> String {
        let mut h: String = g
            .name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        while h.contains("--") {
            h = h.replace("--", "-");
        }
        h.trim_matches('-').to_string()
    };
    let mine = name(&plan.groups[group]);
    let clash = plan
        .groups
        .iter()
        .enumerate()
        .any(|(i, g)| i != group && name(g) == mine);
    if mine.is_empty() || clash {
        format!("group-{}", group + 1)
    } else {
        mine
    }
}

/// `timeout=` and `connectiontimeout=` from the group's mod_wsgi timeouts.
fn params(g: &GroupPlan) -> String {
    let mut p = String::new();
    for (front, secs, _) in &g.front {
        match front {
            Front::ConnectTimeout => {
                let _ = write!(p, " connectiontimeout={secs}");
            }
            Front::IoTimeout => {
                let _ = write!(p, " timeout={secs}");
            }
        }
    }
    p
}

pub fn write(plan: &Plan, shown: &Shown) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Apache httpd configuration, written by `wsgi-gateway import-apache` from\n\
         # {}.\n\
         # These lines take the place of the mod_wsgi ones (WSGIScriptAlias, WSGIDaemonProcess,\n\
         # WSGIProcessGroup...): in each site, keep everything else as it is and use the\n\
         # ProxyPass lines and <Location> blocks below instead. Needs mod_proxy_fcgi\n\
         # (`a2enmod proxy_fcgi`), no longer mod_wsgi (`a2dismod wsgi`). The gateway runs with\n\
         # its own configuration (wsgi-gateway --config FILE).",
        shown.main.display()
    );
    for site in &plan.sites {
        out.push('\n');
        site_block(&mut out, plan, site, shown);
    }
    out
}

fn site_block(out: &mut String, plan: &Plan, site: &Site, shown: &Shown) {
    let indent = if let Some((origin, addrs)) = &site.vhost {
        let _ = writeln!(
            out,
            "# {}: {}",
            shown.place(&origin.src),
            one_line(&origin.text)
        );
        let _ = writeln!(out, "<VirtualHost {}>", addrs.join(" "));
        if let Some(name) = &site.server_name {
            let _ = writeln!(out, "    ServerName {name}");
        }
        if !site.server_aliases.is_empty() {
            let _ = writeln!(out, "    ServerAlias {}", site.server_aliases.join(" "));
        }
        "    "
    } else {
        ""
    };
    // httpd tries ProxyPass lines in order: the longest prefixes first, and before them the
    // static Aliases under a mount (mod_wsgi let Alias win; ProxyPass would not).
    let mut routes: Vec<&Route> = site.routes.iter().collect();
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    for a in &site.statics {
        if routes
            .iter()
            .any(|r| covers(&r.prefix, a.url.trim_end_matches('/')))
        {
            let _ = writeln!(
                out,
                "{indent}# {}: {} (served by httpd, not proxied)",
                shown.place(&a.origin.src),
                one_line(&a.origin.text)
            );
            let _ = writeln!(out, "{indent}ProxyPass \"{}\" \"!\"", a.url);
        }
    }
    for r in &routes {
        let g = &plan.groups[r.group];
        let _ = writeln!(
            out,
            "{indent}# {}: {} (process group {})",
            shown.place(&r.origin.src),
            one_line(&r.origin.text),
            g.name
        );
        let url = backend(plan, r.group);
        let params = params(g);
        if r.prefix == "/" {
            let _ = writeln!(out, "{indent}ProxyPass \"/\" \"{url}/\"{params}");
        } else {
            let _ = writeln!(
                out,
                "{indent}ProxyPassMatch \"^{}(/|$)\" \"{url}\"{params}",
                regex_escape(&r.prefix)
            );
        }
    }
    // Locations merge in order, later ones winning: the shortest prefixes first.
    routes.reverse();
    for r in &routes {
        let covering = routes
            .iter()
            .filter(|o| o.prefix.len() < r.prefix.len() && covers(&o.prefix, &r.prefix))
            .max_by_key(|o| o.prefix.len());
        let inherited = covering.is_some_and(|o| o.pass_auth.is_some());
        match (&r.pass_auth, inherited) {
            (Some(o), false) => {
                let _ = writeln!(
                    out,
                    "{indent}# {}: {}",
                    shown.place(&o.src),
                    one_line(&o.text)
                );
                let _ = writeln!(
                    out,
                    "{indent}<Location \"{}\">\n{indent}    CGIPassAuth On\n{indent}</Location>",
                    r.prefix
                );
            }
            (None, true) => {
                let _ = writeln!(
                    out,
                    "{indent}# {}: WSGIPassAuthorization Off for this mount",
                    shown.place(&r.origin.src)
                );
                let _ = writeln!(
                    out,
                    "{indent}<Location \"{}\">\n{indent}    CGIPassAuth Off\n{indent}</Location>",
                    r.prefix
                );
            }
            _ => {}
        }
    }
    if site.vhost.is_some() {
        out.push_str("</VirtualHost>\n");
    }
}

fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// A URL prefix as a literal in a regex.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()[]{}|^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
