//! `wsgi-gateway import-apache` end to end: the same apps served by real Apache + mod_wsgi,
//! then, from the imported configuration, by the gateway behind real nginx and behind Apache's
//! mod_proxy_fcgi, compared request by request (status, the headers that matter, bodies,
//! SCRIPT_NAME/PATH_INFO at sub-mounts, isolation between application groups, the process
//! group each mount runs in).
//!
//! The three front ends take turns on one free port; every file is in a fresh directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::frontends::{find_bin, is_root, Frontend};
use support::{
    bin, connect, free_port, http, path_str, require, root, run_gateway, tmpdir, wait_for, Gateway,
    Response,
};

const MODULES: &str = "/usr/lib/apache2/modules";

fn prerequisites() -> bool {
    require(find_bin("apache2").is_some(), "apache2")
        && require(
            Path::new(MODULES).join("mod_wsgi.so").is_file(),
            "mod_wsgi (apt: libapache2-mod-wsgi-py3)",
        )
        && require(
            Path::new(MODULES).join("mod_proxy_fcgi.so").is_file(),
            "mod_proxy_fcgi",
        )
        && require(find_bin("nginx").is_some(), "nginx")
}

/// The apps and the libraries of each group, in `dir`.
fn lay_out(dir: &Path) {
    let probe =
        std::fs::read_to_string(root().join("tests/apps/import_apache_probe.wsgi")).unwrap();
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    for app in [
        "root", "own", "shared1", "shared2", "admin", "embedded", "callable",
    ] {
        std::fs::write(dir.join(format!("apps/{app}.wsgi")), &probe).unwrap();
    }
    for group in ["site", "admin", "embedded"] {
        let lib = dir.join(format!("lib-{group}"));
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("grouplib.py"), format!("NAME = '{group}'\n")).unwrap();
    }
    std::fs::create_dir_all(dir.join("lib-shared")).unwrap();
    std::fs::write(dir.join("lib-shared/state.py"), "value = None\n").unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
}

/// The mod_wsgi site: two daemon groups (one with its apps in named and own
/// sub-interpreters, one in the main interpreter), an embedded-mode mount, settings from the
/// virtual host, <Location> sections and WSGIScriptAlias options, quoting and a continuation.
fn site_conf(dir: &Path, port: u16) -> String {
    let d = path_str(dir);
    format!(
        "WSGIPythonPath {d}/lib-embedded:{d}/lib-shared\n\
         WSGIDaemonProcess site processes=1 threads=4 display-name=%{{GROUP}} \\\n\
         \x20   python-path={d}/lib-site:{d}/lib-shared\n\
         WSGIDaemonProcess admin processes=1 threads=2 python-path=\"{d}/lib-admin:{d}/lib-shared\"\n\
         \n\
         <VirtualHost 127.0.0.1:{port}>\n\
         \x20   ServerName localhost\n\
         \x20   WSGIProcessGroup site\n\
         \n\
         \x20   WSGIScriptAlias /shared1 {d}/apps/shared1.wsgi\n\
         \x20   WSGIScriptAlias /shared2 \"{d}/apps/shared2.wsgi\" application-group=shared\n\
         \x20   WSGIScriptAlias /own {d}/apps/own.wsgi\n\
         \x20   WSGIScriptAlias /admin {d}/apps/admin.wsgi process-group=admin application-group=%{{GLOBAL}}\n\
         \x20   WSGIScriptAlias /embedded {d}/apps/embedded.wsgi\n\
         \x20   WSGIScriptAlias /callable {d}/apps/callable.wsgi\n\
         \x20   WSGIScriptAlias / {d}/apps/root.wsgi\n\
         \n\
         \x20   <Location /shared1>\n\
         \x20       WSGIApplicationGroup shared\n\
         \x20   </Location>\n\
         \x20   <Location /embedded>\n\
         \x20       WSGIProcessGroup %{{GLOBAL}}\n\
         \x20   </Location>\n\
         \x20   <Location /callable>\n\
         \x20       WSGICallableObject handler\n\
         \x20       WSGIPassAuthorization On\n\
         \x20   </Location>\n\
         \x20   <Directory {d}/apps>\n\
         \x20       Require all granted\n\
         \x20   </Directory>\n\
         </VirtualHost>\n"
    )
}

/// The requests, in order (state carries from one to the next).
fn requests() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("GET", "/shared1/a/b?set=A", vec![]),
        ("GET", "/shared2/", vec![]),
        ("GET", "/", vec![]),
        ("GET", "/own/x", vec![]),
        ("GET", "/admin/x?set=B", vec![]),
        ("GET", "/shared1", vec![]),
        ("GET", "/admin", vec![]),
        ("GET", "/own/?set=C", vec![]),
        ("GET", "/shared2/y", vec![]),
        ("GET", "/embedded/y", vec![]),
        ("GET", "/callable/z?q=1", vec![]),
        ("GET", "/shared10", vec![]),
        ("GET", "/shared1/%7Euser/a%20b?x=%20y", vec![]),
        ("GET", "/?status=404", vec![]),
        ("GET", "/own?redirect=/elsewhere", vec![]),
        (
            "POST",
            "/shared2/upload",
            (0..100_000u32).map(|i| (i % 251) as u8).collect(),
        ),
    ]
}

const HEADERS: &[&str] = &["Content-Type", "X-Probe", "Set-Cookie", "Location"];

fn run_requests(port: u16, front: &Frontend) -> Vec<Response> {
    requests()
        .into_iter()
        .map(|(method, path, body)| {
            http(
                port,
                method,
                path,
                &[("Authorization", "Basic dXNlcjpwdw==")],
                &body,
            )
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", front.log_text()))
        })
        .collect()
}

/// Request by request: status, the headers that matter, the body.
fn compare(what: &str, want: &[Response], got: &[Response], logs: &str) {
    for (i, ((method, path, _), (w, g))) in requests().iter().zip(want.iter().zip(got)).enumerate()
    {
        let head = |r: &Response| -> Vec<(String, Option<String>)> {
            HEADERS
                .iter()
                .map(|h| (h.to_string(), r.header(h).map(str::to_string)))
                .collect()
        };
        if w.status != g.status || head(w) != head(g) || w.body != g.body {
            panic!(
                "request {} ({method} {path}) differs between Apache + mod_wsgi and {what}:\n\
                 --- mod_wsgi: {} {:?}\n{}\n--- {what}: {} {:?}\n{}\n{logs}",
                i + 1,
                w.status,
                head(w),
                w.text(),
                g.status,
                head(g),
                g.text()
            );
        }
    }
}

fn field(r: &Response, key: &str) -> String {
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key} in {:?}", r.text()))
}

#[test]
fn mod_wsgi_and_the_imported_gateway_answer_alike() {
    if !prerequisites() {
        return;
    }
    let _serial = support::frontends::serial_guard();
    let dir = tmpdir("import-apache");
    lay_out(&dir);
    let port = free_port();
    let site = dir.join("site.conf");
    std::fs::write(&site, site_conf(&dir, port)).unwrap();

    // 1. Apache + mod_wsgi.
    let mut apache = Frontend::apache_with(&site, port, &[("wsgi_module", "mod_wsgi.so")]);
    let want = run_requests(port, &apache);
    let logs = apache.log_text();
    apache.stop();
    // What the requests show about mod_wsgi itself, so that a comparison with a broken
    // reference cannot pass.
    assert_eq!(want[0].status, 200, "{}\n{logs}", want[0].text());
    assert_eq!(field(&want[0], "SCRIPT_NAME"), "/shared1", "{logs}");
    assert_eq!(field(&want[0], "PATH_INFO"), "/a/b");
    assert_eq!(
        field(&want[1], "state"),
        "A",
        "shared1 and shared2 share an interpreter"
    );
    assert_eq!(field(&want[2], "state"), "None", "/ has its own");
    assert_eq!(field(&want[4], "group"), "admin");
    assert_eq!(field(&want[6], "state"), "B");
    assert_eq!(field(&want[8], "state"), "A", "/own's value stayed in /own");
    assert_eq!(field(&want[9], "group"), "embedded");
    assert_eq!(field(&want[10], "app"), "handler");
    assert_eq!(field(&want[10], "authorization"), "Basic dXNlcjpwdw==");
    assert_eq!(field(&want[0], "authorization"), "(none)");
    assert_eq!(field(&want[11], "app"), "root.wsgi");
    assert_eq!(field(&want[12], "PATH_INFO"), "/~user/a b");
    assert_eq!(want[13].status, 404);
    assert_eq!(want[14].header("Location"), Some("/elsewhere"));

    // 2. Import, and check what was written with the real binary.
    let toml = dir.join("gateway.toml");
    let nginx_conf = dir.join("nginx.conf");
    let proxy_conf = dir.join("apache-proxy.conf");
    let out = Command::new(bin())
        .args(["import-apache", path_str(&site), "-o", path_str(&toml)])
        .args([
            "--nginx",
            path_str(&nginx_conf),
            "--apache",
            path_str(&proxy_conf),
        ])
        .args(["--runtime-dir", path_str(&dir.join("run"))])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import-apache failed:\n{stderr}");
    assert!(
        stderr.contains("site.conf:14: WSGIScriptAlias /embedded")
            && stderr.contains("embedded mode"),
        "{stderr}"
    );
    let (code, check) = run_gateway(&["check", "--config", path_str(&toml)]);
    assert_eq!(
        code,
        0,
        "check refused the imported config:\n{check}\n{}",
        std::fs::read_to_string(&toml).unwrap()
    );

    // 3. The gateway, from the imported file as it is (its sockets open to the web server's
    // user, as a deployment behind Apache would set).
    let mut args = vec!["--config", path_str(&toml)];
    if is_root() {
        args.extend(["--socket-group", "www-data"]);
    }
    let start = || {
        let gw = Gateway::start_as_is(&args);
        for group in ["site", "admin", "embedded"] {
            let addr = format!("unix:{}", dir.join(format!("run/{group}.sock")).display());
            wait_for(&format!("the {group} group's socket"), || {
                connect(&addr).is_ok()
            });
        }
        gw
    };
    let gw = start();

    // 4. Behind nginx, with the imported server block.
    let nginx = Frontend::nginx_with(&nginx_conf, port);
    let got = run_requests(port, &nginx);
    compare(
        "the gateway behind nginx",
        &want,
        &got,
        &format!("{}\n--- gateway:\n{}", nginx.log_text(), gw.log_text()),
    );
    drop(nginx);
    drop(gw);

    // 5. Behind Apache's mod_proxy_fcgi, with the imported lines (a fresh gateway: the
    // requests set state again).
    let gw = start();
    let proxy = Frontend::apache_with(
        &proxy_conf,
        port,
        &[
            ("proxy_module", "mod_proxy.so"),
            ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
        ],
    );
    let got = run_requests(port, &proxy);
    compare(
        "the gateway behind Apache mod_proxy_fcgi",
        &want,
        &got,
        &format!("{}\n--- gateway:\n{}", proxy.log_text(), gw.log_text()),
    );
}

/// The command's contract: notes with file and line on stderr, the TOML on stdout without
/// -o, and exit 1 with nothing written when no mount came out.
#[test]
fn reports_lines_it_cannot_translate_and_fails_only_when_nothing_is_usable() {
    let dir = tmpdir("import-apache-cli");
    let conf = dir.join("apache.conf");
    std::fs::write(
        &conf,
        "WSGIDaemonProcess app threads=2 lang=C.UTF-8\n\
         WSGIAccessScript /srv/access.wsgi\n\
         WSGIScriptAlias / /srv/app.wsgi process-group=app\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["import-apache", path_str(&conf)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("[[process-group]]\nname = \"app\""),
        "{stdout}"
    );
    assert!(stdout.contains("script = \"/srv/app.wsgi\""), "{stdout}");
    assert!(
        stderr.contains("apache.conf:1: WSGIDaemonProcess app: lang=C.UTF-8: not translated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apache.conf:2: WSGIAccessScript: not translated"),
        "{stderr}"
    );

    std::fs::write(&conf, "WSGIDaemonProcess app\nWSGIProcessGroup app\n").unwrap();
    let toml = dir.join("out.toml");
    let out = Command::new(bin())
        .args(["import-apache", path_str(&conf), "-o", path_str(&toml)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to write"), "{stderr}");
    assert!(!toml.exists(), "nothing is written when nothing is usable");

    let missing: PathBuf = dir.join("missing.conf");
    let out = Command::new(bin())
        .args(["import-apache", path_str(&missing)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
