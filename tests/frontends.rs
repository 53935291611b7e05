//! The gateway behind the real web servers (nginx, lighttpd, Apache httpd), each configured
//! with the repository's example files verbatim (nginx-examples/, lighttpd-examples/,
//! apache-examples/). The examples use fixed addresses, so these tests run one at a time
//! (the `frontends` test group in .config/nextest.toml).
//!
//! Missing servers or test venv skip a test locally and fail it in CI (`require`).

mod support;

use support::frontends::*;
use support::*;

fn echo() -> String {
    app("frontend_echo.wsgi")
}

fn have(bin: &str) -> bool {
    require(find_bin(bin).is_some(), bin)
}

fn have_apache() -> bool {
    require(
        find_bin("apache2").is_some()
            && std::path::Path::new("/usr/lib/apache2/modules/mod_proxy_fcgi.so").is_file(),
        "apache2 with mod_proxy_fcgi in /usr/lib/apache2/modules",
    )
}

/// Gateway arguments: `flag addr`, the echo app at `/` and at `/app`.
fn echo_both_mounts(flag: &'static str, addr: &'static str) -> Vec<String> {
    vec![
        flag.into(),
        addr.into(),
        "--threads".into(),
        "4".into(),
        "--mount".into(),
        format!("/={}", echo()),
        "--mount".into(),
        format!("/app={}", echo()),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// GET `path` answers 200 from the echo app with this SCRIPT_NAME / PATH_INFO.
fn check_route(rig: &Rig, path: &str, script_name: &str, path_info: &str) {
    let r = rig.ok("GET", path, &[("X-Test", "front-end")], b"");
    let e = Echo::parse(&r);
    let got = (e.get("SCRIPT_NAME"), e.get("PATH_INFO"));
    if got != (script_name, path_info) {
        panic!(
            "GET {path} through {}: SCRIPT_NAME/PATH_INFO {got:?}, want {:?}\n{}",
            rig.front.name,
            (script_name, path_info),
            rig.logs()
        );
    }
    assert_eq!(e.get("REQUEST_METHOD"), "GET");
    assert_eq!(e.get("HTTP_X_TEST"), "front-end", "request headers pass");
}

/// A POST body arrives intact (length and sha256 as the app computed them).
fn check_post(rig: &Rig, path: &str, len: usize) {
    let body = pseudo_random(len, len as u64 + 7);
    let r = rig.ok(
        "POST",
        path,
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    let e = Echo::parse(&r);
    assert_eq!(e.get("REQUEST_METHOD"), "POST");
    assert_eq!(e.get("BODY_LENGTH"), len.to_string(), "POST {path} length");
    assert_eq!(
        e.get("BODY_SHA256"),
        sha256_hex(&body),
        "POST {path} sha256"
    );
    assert_eq!(e.get("CONTENT_TYPE"), "application/octet-stream");
}

/// A POST body sent chunked (no Content-Length from the client) arrives intact.
fn check_post_chunked(rig: &Rig, path: &str, len: usize) {
    let body = pseudo_random(len, len as u64 + 11);
    let r = rig.post_chunked(path, &body, 7000);
    if r.status != 200 {
        panic!(
            "chunked POST {path} through {}: status {}\n{}",
            rig.front.name,
            r.status,
            rig.logs()
        );
    }
    let e = Echo::parse(&r);
    assert_eq!(
        e.get("BODY_LENGTH"),
        len.to_string(),
        "chunked POST {path} length"
    );
    assert_eq!(
        e.get("BODY_SHA256"),
        sha256_hex(&body),
        "chunked POST {path} sha256"
    );
}

/// The common checks for an example that sends the whole site to a gateway serving the echo
/// app at `/` and at `/app`; `chunked`: whether the front end takes chunked request bodies.
fn check_root_and_submount(rig: &Rig, chunked: bool) {
    check_route(rig, "/", "", "/");
    check_route(rig, "/hello/x", "", "/hello/x");
    check_route(rig, "/app", "/app", "");
    check_route(rig, "/app/", "/app", "/");
    check_route(rig, "/app/hello/x", "/app", "/hello/x");
    check_route(rig, "/application", "", "/application");
    // Percent-decoded PATH_INFO; the query string passes as is.
    let r = rig.ok("GET", "/app/a%20b/c?q=1&r=%2F", &[], b"");
    let e = Echo::parse(&r);
    assert_eq!(e.get("PATH_INFO"), "/a b/c");
    assert_eq!(e.get("QUERY_STRING"), "q=1&r=%2F");
    check_post(rig, "/upload", 256 * 1024 + 3);
    check_post(rig, "/app/upload", 1000);
    if chunked {
        check_post_chunked(rig, "/app/upload", 300 * 1024 + 5);
    }
    check_repeated_header(rig);
}

/// A list-valued header given twice is one environ value, its values joined with ", "
/// (Apache, lighttpd and nginx 1.23+ join them themselves; nginx before 1.23 sends it twice).
fn check_repeated_header(rig: &Rig) {
    let xff = [
        ("X-Forwarded-For", "192.0.2.1"),
        ("X-Forwarded-For", "192.0.2.2"),
    ];
    let r = rig.get_verbatim_with("/app/", &xff);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        Echo::parse(&r).get("HTTP_X_FORWARDED_FOR"),
        "192.0.2.1, 192.0.2.2"
    );
}

// ---- nginx ----

#[test]
fn nginx_fastcgi_root_and_submount() {
    if !have("nginx") {
        return;
    }
    let a = echo_both_mounts("--fastcgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Nginx, "nginx-examples/fastcgi.conf", &args(&a));
    check_root_and_submount(&rig, true);
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_fastcgi_builtin_diagnostics() {
    if !have("nginx") {
        return;
    }
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &["--fastcgi", GATEWAY_TCP],
    );
    let r = rig.ok("GET", "/some/where?x=1", &[], b"");
    let text = r.text();
    assert!(
        text.contains("SCRIPT_NAME='' PATH_INFO='/some/where' (REQUEST_URI)"),
        "{text}"
    );
    // What nginx's stock fastcgi_params sent is listed.
    assert!(text.contains("REQUEST_URI='/some/where?x=1'"), "{text}");
    assert!(text.contains("SERVER_SOFTWARE='nginx/"), "{text}");
    let html = rig.ok("GET", "/x", &[("Accept", "text/html")], b"");
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html.text().contains("wsgi-gateway diagnostics"));
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_fastcgi_submount_example() {
    if !have("nginx") {
        return;
    }
    let mount = format!("/app={}", echo());
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi-submount.conf",
        &["--fastcgi", GATEWAY_TCP, "--mount", &mount],
    );
    check_route(&rig, "/app/", "/app", "/");
    check_route(&rig, "/app/hello/x", "/app", "/hello/x");
    check_post(&rig, "/app/upload", 4096);
    check_post_chunked(&rig, "/app/upload", 100_000);
    // nginx redirects /app to /app/ for a location ending in a slash.
    let r = rig.get("/app");
    assert_eq!(r.status, 301, "{}", r.text());
    assert!(r.header("location").unwrap().ends_with("/app/"));
    // The rest of the site is nginx's own, not the gateway's.
    let r = rig.get("/not-the-app/missing.txt");
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("SCRIPT_NAME="));
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_fastcgi_keepalive_unix_socket() {
    if !have("nginx") {
        return;
    }
    let a = echo_both_mounts("--fastcgi", GATEWAY_UNIX);
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi-keepalive.conf",
        &args(&a),
    );
    let sock = GATEWAY_UNIX.strip_prefix("unix:").unwrap();
    assert!(
        unix_connections(sock).is_empty(),
        "no connection before the first request"
    );
    let mut pids = Vec::new();
    let mut first_conn: Option<String> = None;
    for i in 0..6 {
        let r = if i % 2 == 0 {
            rig.ok("GET", &format!("/app/hello/{i}"), &[], b"")
        } else {
            let body = pseudo_random(10_000 + i, i as u64);
            let r = rig.ok("POST", "/upload", &[], &body);
            assert_eq!(Echo::parse(&r).get("BODY_SHA256"), sha256_hex(&body));
            r
        };
        let e = Echo::parse(&r);
        if i % 2 == 0 {
            assert_eq!(e.get("SCRIPT_NAME"), "/app");
            assert_eq!(e.get("PATH_INFO"), format!("/hello/{i}"));
        }
        pids.push(e.get("PID").to_string());
        // nginx (one worker) keeps its one connection to the gateway open between the
        // sequential requests and reuses it: after every request there is exactly one
        // connected socket, and it is the same one (same inode) as after the first request.
        // Without fastcgi_keep_conn the gateway closes it after each response; a new
        // connection per request would show up as another inode.
        let conns = unix_connections(sock);
        let first = first_conn.get_or_insert_with(|| conns.first().cloned().unwrap_or_default());
        if conns.len() != 1 || conns[0] != *first {
            panic!(
                "after request {i}: connections to {sock} (socket inodes) {conns:?}, want \
                 exactly the one of the first request [{first}]: kept and reused\n{}",
                rig.logs()
            );
        }
    }
    assert!(pids.iter().all(|p| *p == pids[0]), "one gateway process");

    // Concurrent requests: nginx opens more connections as needed and afterwards keeps at
    // most `keepalive 4` of them idle; the gateway sees the others close. Every answer is
    // exact.
    let failures: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8usize)
            .map(|t| {
                sc.spawn(move || -> Result<(), String> {
                    for k in 0..4usize {
                        let body = pseudo_random(50_000 + t * 100 + k, (t * 10 + k) as u64);
                        let r = http(FRONT_PORT, "POST", "/app/upload", &[], &body)?;
                        let got = Echo::parse(&r);
                        if r.status != 200 || got.get("BODY_SHA256") != sha256_hex(&body) {
                            return Err(format!("client {t} request {k}: {}", r.text()));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    if !failures.is_empty() {
        panic!("concurrent requests: {failures:?}\n{}", rig.logs());
    }
    wait_for("nginx to keep 1..=4 idle connections", || {
        (1..=4).contains(&unix_connections(sock).len())
    });
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_scgi_root_and_submount() {
    if !have("nginx") {
        return;
    }
    let a = echo_both_mounts("--scgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Nginx, "nginx-examples/scgi.conf", &args(&a));
    check_root_and_submount(&rig, true);
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_uwsgi_root_and_submount() {
    if !have("nginx") {
        return;
    }
    let mut a = echo_both_mounts("--uwsgi", GATEWAY_TCP);
    a.extend(["--uwsgi".to_string(), "127.0.0.1:9001".to_string()]);
    let rig = Rig::start(Kind::Nginx, "nginx-examples/uwsgi.conf", &args(&a));
    check_route(&rig, "/", "", "/");
    check_route(&rig, "/hello/x", "", "/hello/x");
    check_route(&rig, "/app/", "/app", "/");
    check_route(&rig, "/app/hello/x", "/app", "/hello/x");
    check_route(&rig, "/application", "", "/application");
    check_post(&rig, "/upload", 256 * 1024 + 3);
    check_post_chunked(&rig, "/app/upload", 300 * 1024 + 5);
    check_repeated_header(&rig);
    // nginx redirects /app to /app/ for a location ending in a slash.
    assert_eq!(rig.get("/app").status, 301);
    let body = pseudo_random(10 << 20, 43);
    let r = rig.ok("POST", "/app/upload", &[], &body);
    assert_eq!(Echo::parse(&r).get("BODY_SHA256"), sha256_hex(&body));
    // A streamed response (a generator of 64 KiB chunks), at / and at the sub-mount.
    for path in ["/big?mib=20", "/app/big?mib=20"] {
        let r = rig.ok("GET", path, &[], b"");
        assert_eq!(r.body.len(), 20 << 20, "{path}: response length");
        assert_eq!(sha256_hex(&r.body), big_response_sha256(20), "{path}");
    }
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_fastcgi_10mib_upload_is_hash_exact() {
    if !have("nginx") {
        return;
    }
    let a = echo_both_mounts("--fastcgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Nginx, "nginx-examples/fastcgi.conf", &args(&a));
    let body = pseudo_random(10 << 20, 42);
    let r = rig.ok(
        "POST",
        "/app/upload",
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    let e = Echo::parse(&r);
    assert_eq!(e.get("BODY_LENGTH"), (10usize << 20).to_string());
    assert_eq!(e.get("BODY_SHA256"), sha256_hex(&body));
    // The same body sent chunked (nginx buffers it and passes CONTENT_LENGTH on).
    let r = rig.post_chunked("/app/upload", &body, 1 << 16);
    let e = Echo::parse(&r);
    assert_eq!(r.status, 200);
    assert_eq!(e.get("BODY_LENGTH"), (10usize << 20).to_string());
    assert_eq!(e.get("BODY_SHA256"), sha256_hex(&body));
    rig.assert_gateway_quiet();
}

#[test]
fn nginx_fastcgi_50mib_response_is_hash_exact() {
    if !have("nginx") {
        return;
    }
    let a = echo_both_mounts("--fastcgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Nginx, "nginx-examples/fastcgi.conf", &args(&a));
    let r = rig.ok("GET", "/app/big?mib=50", &[], b"");
    assert_eq!(r.body.len(), 50 << 20, "response length");
    assert_eq!(
        sha256_hex(&r.body),
        big_response_sha256(50),
        "response sha256"
    );
    rig.assert_gateway_quiet();
}

// ---- lighttpd ----

/// lighttpd-examples/fastcgi-spawn.conf: lighttpd starts the gateway itself with the
/// listening socket on its standard input. The example is used as shipped but for the two
/// paths an installation changes (the gateway's binary and the app's script).
#[test]
fn lighttpd_spawns_the_gateway_with_its_socket_on_standard_input() {
    if !have("lighttpd") {
        return;
    }
    let _serial = serial_guard();
    let dir = tmpdir("lighttpd-spawn");
    let shipped = std::fs::read_to_string(example("lighttpd-examples/fastcgi-spawn.conf")).unwrap();
    let conf = shipped
        .replace("/usr/local/bin/wsgi-gateway", bin())
        .replace("/srv/myapp/app.wsgi", &echo());
    assert_ne!(conf, shipped, "the example names the two paths");
    let path = dir.join("fastcgi-spawn.conf");
    std::fs::write(&path, conf).unwrap();
    let front = Frontend::start(Kind::Lighttpd, path_str(&path));
    let mut last = String::new();
    let served = (0..200).any(|_| {
        match http(FRONT_PORT, "GET", "/app/hello/x", &[], b"") {
            Ok(r) if r.status == 200 => {
                let e = Echo::parse(&r);
                assert_eq!(
                    (e.get("SCRIPT_NAME"), e.get("PATH_INFO")),
                    ("/app", "/hello/x")
                );
                return true;
            }
            Ok(r) => last = format!("{} {}", r.status, r.text()),
            Err(e) => last = e,
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        false
    });
    assert!(served, "{last}\n{}", front.log_text());
    let body = pseudo_random(100_000, 5);
    let r = http(FRONT_PORT, "POST", "/app/upload", &[], &body).unwrap();
    assert_eq!(Echo::parse(&r).get("BODY_SHA256"), sha256_hex(&body));
}

#[test]
fn lighttpd_fastcgi_submount() {
    if !have("lighttpd") {
        return;
    }
    let mount = format!("/app={}", echo());
    let rig = Rig::start(
        Kind::Lighttpd,
        "lighttpd-examples/fastcgi.conf",
        &["--fastcgi", GATEWAY_TCP, "--mount", &mount],
    );
    check_route(&rig, "/app", "/app", "");
    check_route(&rig, "/app/", "/app", "/");
    check_route(&rig, "/app/hello/x", "/app", "/hello/x");
    let r = rig.ok("GET", "/app/a%20b?q=%2F", &[], b"");
    let e = Echo::parse(&r);
    assert_eq!(e.get("PATH_INFO"), "/a b");
    assert_eq!(e.get("QUERY_STRING"), "q=%2F");
    check_post(&rig, "/app/upload", 256 * 1024 + 3);
    check_post_chunked(&rig, "/app/upload", 300 * 1024 + 5);
    // Outside /app lighttpd serves its document root itself.
    let r = rig.ok("GET", "/static.txt", &[], b"");
    assert_eq!(r.text(), "static file from lighttpd\n");
    rig.assert_gateway_quiet();
}

#[test]
fn lighttpd_scgi_root_and_submount() {
    if !have("lighttpd") {
        return;
    }
    let a = echo_both_mounts("--scgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Lighttpd, "lighttpd-examples/scgi.conf", &args(&a));
    check_root_and_submount(&rig, true);
    rig.assert_gateway_quiet();
}

// ---- Apache httpd ----

fn check_authorization_passes(rig: &Rig) {
    let r = rig.ok(
        "GET",
        "/app/auth",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        b"",
    );
    assert_eq!(
        Echo::parse(&r).get("HTTP_AUTHORIZATION"),
        "Basic dXNlcjpwYXNz",
        "CGIPassAuth On passes Authorization"
    );
}

#[test]
fn apache_fastcgi_root_and_submount() {
    if !have_apache() {
        return;
    }
    let a = echo_both_mounts("--fastcgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Apache, "apache-examples/fastcgi.conf", &args(&a));
    check_root_and_submount(&rig, true);
    check_authorization_passes(&rig);
    rig.assert_gateway_quiet();
}

#[test]
fn apache_uwsgi_root_and_submount() {
    if !have_apache() {
        return;
    }
    let a = echo_both_mounts("--uwsgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Apache, "apache-examples/uwsgi.conf", &args(&a));
    check_root_and_submount(&rig, false);
    check_authorization_passes(&rig);
    rig.assert_gateway_quiet();
}

#[test]
fn apache_scgi_root_and_submount() {
    if !have_apache() {
        return;
    }
    let a = echo_both_mounts("--scgi", GATEWAY_TCP);
    let rig = Rig::start(Kind::Apache, "apache-examples/scgi.conf", &args(&a));
    check_root_and_submount(&rig, false);
    check_authorization_passes(&rig);
    // mod_proxy_scgi refuses chunked request bodies itself (411), as the example says: the
    // request never reaches the gateway.
    let r = rig.post_chunked("/app/upload", b"chunked body", 4);
    assert_eq!(r.status, 411, "{}", r.text());
    rig.assert_gateway_quiet();
}

// ---- Flask and Django behind nginx ----

/// Gateway arguments: `script` at `/` and at `/sub`, from the test venv.
fn venv_app_at_root_and_sub(venv: &std::path::Path, script: &str) -> Vec<String> {
    vec![
        "--fastcgi".into(),
        GATEWAY_TCP.into(),
        "--python-home".into(),
        path_str(venv).into(),
        "--threads".into(),
        "4".into(),
        "--mount".into(),
        format!("/={script}"),
        "--mount".into(),
        format!("/sub={script}"),
    ]
}

#[test]
fn flask_behind_nginx_fastcgi() {
    flask_behind("nginx-examples/fastcgi.conf", &["--fastcgi", GATEWAY_TCP]);
}

#[test]
fn flask_behind_nginx_uwsgi() {
    flask_behind("nginx-examples/uwsgi.conf", UWSGI_BOTH);
}

#[test]
fn django_behind_nginx_fastcgi() {
    django_behind("nginx-examples/fastcgi.conf", &["--fastcgi", GATEWAY_TCP]);
}

#[test]
fn django_behind_nginx_uwsgi() {
    django_behind("nginx-examples/uwsgi.conf", UWSGI_BOTH);
}

/// nginx-examples/uwsgi.conf passes / to 127.0.0.1:9000 and /app/ to 127.0.0.1:9001: one
/// gateway listens on both.
const UWSGI_BOTH: &[&str] = &["--uwsgi", GATEWAY_TCP, "--uwsgi", "127.0.0.1:9001"];

/// The Flask app at `/` and `/sub` behind nginx with `example`.
fn flask_behind(example: &str, listeners: &[&str]) {
    let venv = test_venv();
    if !have("nginx") || !require(venv.is_some(), "test venv (tools/make-test-venv.sh)") {
        return;
    }
    let mut a = venv_app_at_root_and_sub(&venv.unwrap(), &app("flask_app.wsgi"));
    a.splice(0..2, listeners.iter().map(|s| s.to_string()));
    let rig = Rig::start(Kind::Nginx, example, &args(&a));
    assert_eq!(
        rig.ok("GET", "/", &[], b"").text(),
        "flask index script_root=\n"
    );
    assert_eq!(
        rig.ok("GET", "/hello/bob", &[], b"").text(),
        "hello bob url=/hello/x\n"
    );
    assert_eq!(
        rig.ok("GET", "/sub/", &[], b"").text(),
        "flask index script_root=/sub\n"
    );
    assert_eq!(
        rig.ok("GET", "/sub/hello/bob", &[], b"").text(),
        "hello bob url=/sub/hello/x\n",
        "url_for carries the mount prefix"
    );
    assert_eq!(rig.get("/sub/nope").status, 404, "Flask's own 404");
    rig.assert_gateway_quiet();
}

/// The Django project at `/` and `/sub` behind nginx with `example`.
fn django_behind(example: &str, listeners: &[&str]) {
    let venv = test_venv();
    if !have("nginx") || !require(venv.is_some(), "test venv (tools/make-test-venv.sh)") {
        return;
    }
    let mut a = venv_app_at_root_and_sub(&venv.unwrap(), &app("django_project/project.wsgi"));
    a.splice(0..2, listeners.iter().map(|s| s.to_string()));
    let rig = Rig::start(Kind::Nginx, example, &args(&a));
    assert_eq!(
        rig.ok("GET", "/", &[], b"").text(),
        "django index script_name=\n"
    );
    assert_eq!(
        rig.ok("GET", "/hello/bob/", &[], b"").text(),
        "hello bob url=/hello/x/\n"
    );
    assert_eq!(
        rig.ok("GET", "/sub/", &[], b"").text(),
        "django index script_name=/sub\n"
    );
    assert_eq!(
        rig.ok("GET", "/sub/hello/bob/", &[], b"").text(),
        "hello bob url=/sub/hello/x/\n",
        "reverse() carries the mount prefix"
    );
    assert_eq!(rig.get("/sub/nope/").status, 404, "Django's own 404");
    rig.assert_gateway_quiet();
}

/// Two process groups with their own python-home, on their own sockets, behind one nginx
/// (examples/process-groups.toml and nginx-examples/process-groups.conf, verbatim).
#[test]
fn nginx_two_process_groups_with_their_own_python_home() {
    if !require(have("nginx"), "nginx") {
        return;
    }
    let _serial = serial_guard();
    support::example_venvs();
    let config = support::root().join("examples/process-groups.toml");
    let (code, out) = run_gateway(&["check", "--config", path_str(&config)]);
    assert_eq!(code, 0, "{out}");
    let gw = Gateway::start_as_is(&["--config", path_str(&config)]);
    for sock in [
        "unix:/tmp/wsgi-gateway-shop.sock",
        "unix:/tmp/wsgi-gateway-legacy.sock",
    ] {
        wait_for("the group's socket", || connect(sock).is_ok());
    }
    let front = Frontend::start(Kind::Nginx, "nginx-examples/process-groups.conf");
    let get = |path: &str| {
        let mut last = String::new();
        for _ in 0..100 {
            match http(FRONT_PORT, "GET", path, &[], b"") {
                Ok(r) if r.status == 200 => return r.text(),
                Ok(r) => last = format!("{} {}", r.status, r.text()),
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "{path}: {last}\n{}\n--- gateway:\n{}",
            front.log_text(),
            gw.log_text()
        );
    };
    let shop = get("/shop/cart");
    let legacy = get("/legacy/cart");
    assert!(shop.starts_with("shop on shopkit 2."), "{shop}");
    assert!(shop.contains("examples/venvs/shop"), "{shop}");
    assert!(legacy.starts_with("legacy shop on shopkit 1."), "{legacy}");
    assert!(legacy.contains("examples/venvs/legacy"), "{legacy}");
    let log = gw.log_text();
    assert!(log.contains("worker shop/1 started"), "{log}");
    assert!(log.contains("worker legacy/0 started"), "{log}");
}

/// The supervisor behind real nginx: a worker killed under load is respawned and only the
/// requests it held fail; SIGHUP under load fails none.
#[test]
fn nginx_worker_kill_and_sighup_under_load() {
    if !require(have("nginx"), "nginx") {
        return;
    }
    let script = support::app("pep3333.wsgi");
    let rig = Rig::start(
        Kind::Nginx,
        "nginx-examples/fastcgi.conf",
        &[
            "--fastcgi",
            GATEWAY_TCP,
            "--processes",
            "2",
            "--threads",
            "2",
            &script,
        ],
    );
    wait_for("two workers", || child_pids(rig.gw.pid()).len() == 2);
    rig.ok("GET", "/slow?ms=1", &[], b"");

    // kill -9 of a worker under load.
    let load = http_load(4, "/slow?ms=20");
    load.wait_served(20);
    let before = child_pids(rig.gw.pid());
    let victim = *before.iter().next().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    wait_for("a replacement", || {
        let now = child_pids(rig.gw.pid());
        now.len() == 2 && !now.contains(&victim)
    });
    load.wait_served(20);
    let (ok, errors) = load.finish();
    assert!(ok > 20, "ok={ok}");
    assert!(errors.len() <= 4, "{errors:?}\n{}", rig.logs());

    // SIGHUP under load: not one failed request.
    let load = http_load(4, "/slow?ms=10");
    load.wait_served(20);
    let serving = child_pids(rig.gw.pid());
    rig.gw.hup();
    wait_for("new workers", || {
        let now = child_pids(rig.gw.pid());
        now.len() == 2 && now.is_disjoint(&serving)
    });
    load.wait_served(20);
    let (ok, errors) = load.finish();
    assert!(ok > 20, "ok={ok}");
    assert!(errors.is_empty(), "{errors:?}\n{}", rig.logs());
}
