//! nginx `server` blocks that take the place of the Apache sites: each mount prefix goes to its
//! process group's socket, static `Alias`es and the document root are served by nginx.

use std::fmt::Write;
use std::path::Path;

use super::gateway_toml::one_line;
use super::table::Front;
use super::translate::{GroupPlan, Note, Origin, Plan, Proto, Site};
use super::Shown;

/// The directive pair for a group's first listener: (params file, pass directive, prefix of
/// the timeout directives, address).
fn pass(g: &GroupPlan) -> (&'static str, &'static str, &'static str, String) {
    let l = &g.listeners[0];
    let (params, pass, timeouts) = match l.proto {
        Proto::Scgi => ("scgi_params", "scgi_pass", "scgi"),
        Proto::FastCgi | Proto::Auto => ("fastcgi_params", "fastcgi_pass", "fastcgi"),
    };
    (params, pass, timeouts, l.addr.clone())
}

fn comment(out: &mut String, indent: &str, shown: &Shown, o: &Origin) {
    let _ = writeln!(
        out,
        "{indent}# {}: {}",
        shown.place(&o.src),
        one_line(&o.text)
    );
}

/// `listen` arguments for an Apache address (`*:80`, `127.0.0.1:8080`, `[::]:443`, `*`).
fn listen_arg(addr: &str, default_port: &str) -> String {
    let addr = addr.trim();
    if !addr.is_empty() && addr.chars().all(|c| c.is_ascii_digit()) {
        return addr.to_string();
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (format!("[{h}]"), p.to_string()),
            None => (format!("[{}", rest), default_port.to_string()),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.to_string()),
            None => (addr.to_string(), default_port.to_string()),
        }
    };
    let port = if port == "*" {
        default_port.to_string()
    } else {
        port
    };
    match host.as_str() {
        "*" | "_default_" | "" => port,
        h => format!("{h}:{port}"),
    }
}

pub fn write(plan: &Plan, shown: &Shown) -> (String, Vec<Note>) {
    let mut out = String::new();
    let mut notes = Vec::new();
    let _ = writeln!(
        out,
        "# nginx server blocks, written by `wsgi-gateway import-apache` from\n\
         # {}.\n\
         # They take the place of the Apache sites that ran WSGI apps: include this file in\n\
         # nginx's http {{}} block (e.g. as /etc/nginx/conf.d/wsgi-gateway.conf), then\n\
         # `nginx -t && systemctl reload nginx`. The gateway runs with its own configuration\n\
         # (wsgi-gateway --config FILE). What could not be carried over from Apache was\n\
         # listed by the command.",
        shown.main.display()
    );
    for site in &plan.sites {
        out.push('\n');
        server(&mut out, plan, site, shown);
        for o in &site.not_carried {
            notes.push(Note {
                src: Some(o.src.clone()),
                dropped: true,
                front: false,
                text: format!("{}: not carried into the nginx server block", o.text),
            });
        }
    }
    (out, notes)
}

fn server(out: &mut String, plan: &Plan, site: &Site, shown: &Shown) {
    let ssl = site.ssl.is_some();
    let default_port = if ssl { "443" } else { "80" };
    let listens: Vec<String> = match &site.vhost {
        Some((origin, addrs)) => {
            comment(out, "", shown, origin);
            let main_port = site
                .listen
                .first()
                .map(|l| listen_arg(l, "80"))
                .map(|l| l.rsplit(':').next().unwrap_or("80").to_string())
                .unwrap_or_else(|| default_port.to_string());
            addrs.iter().map(|a| listen_arg(a, &main_port)).collect()
        }
        None if site.listen.is_empty() => vec![default_port.to_string()],
        None => site.listen.iter().map(|a| listen_arg(a, "80")).collect(),
    };
    out.push_str("server {\n");
    for l in listens {
        let _ = writeln!(out, "    listen {l}{};", if ssl { " ssl" } else { "" });
    }
    let mut names: Vec<String> = site.server_name.iter().cloned().collect();
    names.extend(site.server_aliases.iter().cloned());
    if names.is_empty() {
        names.push("_".into());
    }
    let _ = writeln!(out, "    server_name {};", names.join(" "));
    if let Some(ssl) = &site.ssl {
        if let Some((cert, o)) = &ssl.certificate {
            comment(out, "    ", shown, o);
            let _ = writeln!(out, "    ssl_certificate {cert};");
        }
        if let Some((key, o)) = &ssl.key {
            comment(out, "    ", shown, o);
            let _ = writeln!(out, "    ssl_certificate_key {key};");
        }
    }
    match &site.limit_request_body {
        Some((n, o)) => {
            comment(out, "    ", shown, o);
            let _ = writeln!(out, "    client_max_body_size {n};");
        }
        None => out.push_str(
            "    # Apache's default LimitRequestBody (1 GiB); nginx's own default is 1 MiB.\n    \
             client_max_body_size 1g;\n",
        ),
    }
    if let Some((root, o)) = &site.document_root {
        comment(out, "    ", shown, o);
        let _ = writeln!(out, "    root {root};");
    }
    for a in &site.statics {
        out.push('\n');
        comment(out, "    ", shown, &a.origin);
        let url = a.url.trim_end_matches('/');
        let last = url.rsplit('/').next().unwrap_or("");
        let p = Path::new(&a.path);
        let is_dir = a.path.ends_with('/')
            || p.is_dir()
            || (!p.exists() && (a.url.ends_with('/') || !last.contains('.')));
        if is_dir {
            let _ = writeln!(
                out,
                "    location {url}/ {{\n        alias {}/;\n    }}",
                a.path.trim_end_matches('/')
            );
        } else {
            let _ = writeln!(
                out,
                "    location = {} {{\n        alias {};\n    }}",
                a.url, a.path
            );
        }
    }
    let mut routes: Vec<_> = site.routes.iter().collect();
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    for r in routes {
        let g = &plan.groups[r.group];
        out.push('\n');
        let _ = writeln!(
            out,
            "    # {}: {} (process group {})",
            shown.place(&r.origin.src),
            one_line(&r.origin.text),
            g.name
        );
        let mut body = String::new();
        let (params, pass, timeouts, addr) = pass(g);
        let _ = writeln!(body, "        include {params};");
        match &r.pass_auth {
            Some(o) => {
                let _ = writeln!(
                    body,
                    "        # {}: {} (nginx passes Authorization)",
                    shown.place(&o.src),
                    one_line(&o.text)
                );
            }
            None => {
                let _ = writeln!(
                    body,
                    "        # mod_wsgi hid the Authorization header (WSGIPassAuthorization Off)\n        \
                     {timeouts}_param HTTP_AUTHORIZATION \"\" if_not_empty;"
                );
            }
        }
        for (front, secs, o) in &g.front {
            let _ = writeln!(
                body,
                "        # {}: {}",
                shown.place(&o.src),
                one_line(&o.text)
            );
            match front {
                Front::ConnectTimeout => {
                    let _ = writeln!(body, "        {timeouts}_connect_timeout {secs}s;");
                }
                Front::IoTimeout => {
                    let _ = writeln!(
                        body,
                        "        {timeouts}_read_timeout {secs}s;\n        {timeouts}_send_timeout {secs}s;"
                    );
                }
            }
        }
        let _ = writeln!(body, "        {pass} {addr};");
        if r.prefix == "/" {
            let _ = write!(out, "    location / {{\n{body}    }}\n");
        } else {
            let _ = write!(
                out,
                "    location = {p} {{\n{body}    }}\n    location {p}/ {{\n{body}    }}\n",
                p = r.prefix
            );
        }
    }
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_arguments_from_apache_addresses() {
        assert_eq!(listen_arg("*:80", "80"), "80");
        assert_eq!(listen_arg("127.0.0.1:8080", "80"), "127.0.0.1:8080");
        assert_eq!(listen_arg("[::]:443", "80"), "[::]:443");
        assert_eq!(listen_arg("*", "8000"), "8000");
        assert_eq!(listen_arg("_default_:443", "80"), "443");
        assert_eq!(listen_arg("example.com", "80"), "example.com:80");
        assert_eq!(listen_arg("8080", "80"), "8080");
    }
}
