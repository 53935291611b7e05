//! The logs: the access log field by field (combined and JSON, straight over FastCGI and
//! behind nginx), the main log as JSON with each request's context on the lines about it,
//! levels and the WSGI_GATEWAY_LOG filter, and SIGUSR1 reopening the files after a rename.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::frontends::*;
use support::*;

/// The requests every access-log test makes, and what each response was.
struct Made {
    what: &'static str,
    method: &'static str,
    uri: &'static str,
    body: &'static [u8],
    status: u16,
    sent: usize,
}

/// GET, POST with a body, a 404 of the app, an app exception (500), a streamed response,
/// and a 404 of the gateway (no mount), over FastCGI to a gateway serving /app.
fn make_requests(addr: &str) -> Vec<Made> {
    let cases: [(&str, &str, &str, &[u8]); 6] = [
        ("get", "GET", "/app/count?x=1", b""),
        ("post", "POST", "/app/upload", b"hello world"),
        ("app 404", "GET", "/app/missing", b""),
        ("exception", "GET", "/app/error-before", b""),
        ("streamed", "GET", "/app/stream?n=3&delay=0.05", b""),
        ("no mount", "GET", "/elsewhere", b""),
    ];
    cases
        .into_iter()
        .map(|(what, method, uri, body)| {
            let r = fcgi(addr, method, uri, body).unwrap_or_else(|e| panic!("{what}: {e}"));
            Made {
                what,
                method,
                uri,
                body,
                status: r.status,
                sent: r.body.len(),
            }
        })
        .collect()
}

/// The one line that contains `needle`.
fn of_request<'a>(lines: &'a [String], needle: &str) -> &'a String {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "{needle:?} in {lines:#?}");
    found[0]
}

fn expected_status(what: &str) -> u16 {
    match what {
        "app 404" | "no mount" => 404,
        "exception" => 500,
        _ => 200,
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `path` has at least `n` lines; returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    wait_for(&format!("{n} line(s) in {}", path.display()), || {
        lines(path).len() >= n
    });
    lines(path)
}

fn start_app(extra: &[&str]) -> Gateway {
    let mount = format!("/app={}", app("pep3333.wsgi"));
    let mut args = vec!["--mount", &mount, "--threads", "2"];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`, taken apart.
struct Combined {
    remote_addr: String,
    remote_user: String,
    time: String,
    request: String,
    status: u16,
    sent: usize,
    referer: String,
    user_agent: String,
}

fn parse_combined(line: &str) -> Combined {
    let what = format!("not a combined line: {line:?}");
    let (remote_addr, rest) = line.split_once(' ').expect(&what);
    let (remote_user, rest) = rest
        .strip_prefix("- ")
        .and_then(|r| r.split_once(" ["))
        .expect(&what);
    let (time, rest) = rest.split_once("] \"").expect(&what);
    let (request, rest) = rest.split_once("\" ").expect(&what);
    let mut numbers = rest.splitn(3, ' ');
    let status = numbers.next().unwrap().parse().expect(&what);
    let sent = numbers.next().expect(&what).parse().expect(&what);
    // `"referer" "agent"` splits into ["", referer, " ", agent, ""].
    let quoted: Vec<&str> = numbers.next().expect(&what).split('"').collect();
    assert_eq!(quoted.len(), 5, "{what}");
    Combined {
        remote_addr: remote_addr.into(),
        remote_user: remote_user.into(),
        time: time.into(),
        request: request.into(),
        status,
        sent,
        referer: quoted[1].into(),
        user_agent: quoted[3].into(),
    }
}

/// `28/Nov/2026:14:08:30 +0000`
fn assert_time_local(t: &str) {
    let b = t.as_bytes();
    assert!(
        t.len() == 26 && b[2] == b'/' && b[6] == b'/' && b[11] == b':' && t.ends_with(" +0000"),
        "time_local {t:?}"
    );
}

/// `2026-11-28T14:08:30.123Z`
fn assert_iso_ms(t: &str) {
    let b = t.as_bytes();
    assert!(
        t.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && t.ends_with('Z'),
        "ISO 8601 time with milliseconds {t:?}"
    );
}

#[test]
fn access_log_combined_field_by_field() {
    let dir = tmpdir("access-combined");
    let access = dir.join("access.log");
    let gw = start_app(&["--access-log", path_str(&access)]);
    let made = make_requests(&gw.addr);
    let got = wait_lines(&access, made.len());
    assert_eq!(got.len(), made.len(), "{got:#?}");
    for m in &made {
        assert_eq!(m.status, expected_status(m.what), "{}", m.what);
        // A line is written once its request is done, so not always in the order made.
        let line = of_request(&got, &format!("\"{} {} ", m.method, m.uri));
        let c = parse_combined(line);
        assert_eq!(c.remote_addr, "127.0.0.1", "{line}");
        assert_eq!(c.remote_user, "-", "{line}");
        assert_time_local(&c.time);
        assert_eq!(
            c.request,
            format!("{} {} HTTP/1.1", m.method, m.uri),
            "{line}"
        );
        assert_eq!(c.status, m.status, "{}: {line}", m.what);
        assert_eq!(c.sent, m.sent, "{}: {line}", m.what);
        assert_eq!((c.referer.as_str(), c.user_agent.as_str()), ("-", "-"));
    }
}

#[test]
fn access_log_json_field_by_field() {
    let dir = tmpdir("access-json");
    let access = dir.join("access.log");
    let gw = start_app(&[
        "--access-log",
        path_str(&access),
        "--access-log-format",
        "json",
    ]);
    let made = make_requests(&gw.addr);
    let got = wait_lines(&access, made.len());
    assert_eq!(got.len(), made.len(), "{got:#?}");
    let mut ids = std::collections::HashSet::new();
    for m in &made {
        let line = of_request(&got, &format!("\"request_uri\":\"{}\"", m.uri));
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", m.what));
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {line}"));
        let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
        assert_iso_ms(s("time"));
        assert_eq!(s("remote_addr"), "127.0.0.1");
        assert!(v["remote_user"].is_null(), "{line}");
        assert_eq!(s("request_method"), m.method);
        assert_eq!(s("request_uri"), m.uri);
        assert_eq!(s("server_protocol"), "HTTP/1.1");
        assert_eq!(n("status"), u64::from(m.status), "{}: {line}", m.what);
        assert_eq!(n("body_bytes_sent"), m.sent as u64, "{}: {line}", m.what);
        assert_eq!(n("body_bytes_received"), m.body.len() as u64, "{line}");
        assert!(n("queued_us") <= n("duration_us"), "{line}");
        if m.what == "streamed" {
            assert!(
                n("duration_us") >= 100_000,
                "three chunks 50 ms apart: {line}"
            );
        }
        let (mount, group) = if m.what == "no mount" {
            (Value::Null, Value::Null)
        } else {
            ("/app".into(), "%{RESOURCE}".into())
        };
        assert_eq!((&v["mount"], &v["app_group"]), (&mount, &group), "{line}");
        assert_eq!(s("process_group"), "main");
        assert_eq!(n("pid"), u64::from(gw.pid()));
        let id = s("request_id");
        assert!(
            id.starts_with(&format!("{}-", gw.pid())) && ids.insert(id.to_string()),
            "request ids are PID-N and distinct: {line}"
        );
        assert!(v["http_referer"].is_null() && v["http_user_agent"].is_null());
    }
}

#[test]
fn access_log_template_and_stdout() {
    let gw = start_app(&[
        "--access-log",
        "-",
        "--access-log-format",
        "$remote_addr $request_method ${request_uri} $status $body_bytes_received $mount \
         $app_group $http_host",
    ]);
    let r = fcgi(&gw.addr, "POST", "/app/upload", b"12345").unwrap();
    assert_eq!(r.status, 200);
    let stdout = gw.log.with_file_name("stdout");
    let got = wait_lines(&stdout, 1);
    assert_eq!(
        got,
        ["127.0.0.1 POST /app/upload 200 5 /app %{RESOURCE} localhost"]
    );
}

#[test]
fn access_log_refuses_unknown_fields() {
    let (code, err) = run_gateway(&["check", "--access-log", "-", "--access-log-format", "$x $y"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown field $x"), "{err}");
    assert!(
        err.contains("$remote_addr"),
        "the known fields are listed: {err}"
    );
}

/// Every line of the main log parses as JSON, and the lines about a request (its traceback,
/// its wsgi.errors output, what it prints) carry its context, the same request id as its
/// access log line.
#[test]
fn main_log_json_with_request_context() {
    let dir = tmpdir("log-json");
    let access = dir.join("access.log");
    let gw = start_app(&[
        "--log-format",
        "json",
        "--access-log",
        path_str(&access),
        "--access-log-format",
        "$request_uri $request_id",
    ]);
    assert_eq!(
        fcgi(&gw.addr, "GET", "/app/error-before", b"")
            .unwrap()
            .status,
        500
    );
    assert_eq!(
        fcgi(&gw.addr, "GET", "/app/errors", b"").unwrap().status,
        200
    );
    let ids: Vec<(String, String)> = wait_lines(&access, 2)
        .iter()
        .map(|l| {
            let (uri, id) = l.split_once(' ').unwrap();
            (uri.to_string(), id.to_string())
        })
        .collect();
    wait_for("the wsgi.errors line", || {
        gw.log_text().contains("a line for the log")
    });
    let log = gw.log_text();
    let mut objects = Vec::new();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_iso_ms(v["time"].as_str().unwrap());
        assert_eq!(v["pid"].as_u64(), Some(u64::from(gw.pid())), "{line}");
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        objects.push(v);
    }
    let find = |needle: &str| {
        objects
            .iter()
            .find(|v| v["message"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{log}"))
    };
    assert!(find("listening on").get("request_id").is_none());
    for (needle, level, uri) in [
        (
            "RuntimeError: boom before start_response",
            "error",
            "/app/error-before",
        ),
        ("a line for the log", "warn", "/app/errors"),
        // print() to sys.stderr during the request.
        ("to stderr via print", "warn", "/app/errors"),
    ] {
        let v = find(needle);
        assert_eq!(v["level"], level, "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("GET {uri}: ")),
            "{v}"
        );
        assert_eq!(v["method"], "GET", "{v}");
        assert_eq!(v["uri"], uri, "{v}");
        assert_eq!(v["mount"], "/app", "{v}");
        assert_eq!(v["app_group"], "%{RESOURCE}", "{v}");
        assert!(v["thread"].as_u64().is_some_and(|t| t < 2), "{v}");
        let id = &ids.iter().find(|(u, _)| u == uri).unwrap().1;
        assert_eq!(v["request_id"].as_str(), Some(id.as_str()), "{v}");
    }
    // A traceback is one object, its lines in the message.
    let tb = find("Traceback (most recent call last)");
    assert!(
        tb["message"].as_str().unwrap().contains("\n  File "),
        "{tb}"
    );
}

/// In text, the first line about a request carries its fields, every line its id.
#[test]
fn text_lines_about_a_request_carry_its_id() {
    let gw = start_app(&[]);
    assert_eq!(
        fcgi(&gw.addr, "GET", "/app/error-before", b"")
            .unwrap()
            .status,
        500
    );
    wait_for("the traceback", || {
        gw.log_text().contains("RuntimeError: boom")
    });
    let log = gw.log_text();
    let first = log
        .lines()
        .find(|l| l.contains("Traceback"))
        .expect("a traceback");
    let id = format!("request_id={}-1", gw.pid());
    assert!(first.contains("[error]"), "{log}");
    // Values with spaces, quotes or braces are quoted.
    assert!(
        first.contains(&format!(
            " {{{id} method=GET uri=/app/error-before mount=/app app_group=\"%{{RESOURCE}}\" \
             thread="
        )),
        "{log}"
    );
    for line in log.lines().filter(|l| l.contains("  File ")) {
        assert!(line.contains(&format!("{{{id}}}: ")), "{line}");
    }
    // Millisecond timestamps and the pid on every line.
    for line in log.lines() {
        assert_iso_ms(&line[..24]);
        assert!(
            line.contains(&format!(" wsgi-gateway[{}]", gw.pid())),
            "{line}"
        );
    }
}

#[test]
fn log_level_warn_hides_info_lines() {
    let gw = start_app(&["--log-level", "warn"]);
    assert_eq!(
        fcgi(&gw.addr, "GET", "/app/errors", b"").unwrap().status,
        200
    );
    wait_for("the wsgi.errors line", || {
        gw.log_text().contains("a line for the log")
    });
    let log = gw.log_text();
    assert!(!log.contains("[info]"), "{log}");
    assert!(!log.contains("listening on"), "{log}");
    assert!(log.contains("[warn]"), "{log}");
}

/// A gateway started with an environment (the support helper inherits the test's).
struct WithEnv {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl WithEnv {
    fn start(env: &[(&str, &str)], args: &[&str]) -> WithEnv {
        let dir = tmpdir("log-env");
        let log = dir.join("gateway.log");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin())
            .args(args)
            .args(["--listen", &addr])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for("the gateway to listen", || connect(&addr).is_ok());
        WithEnv { child, addr, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WithEnv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// WSGI_GATEWAY_LOG (RUST_LOG syntax) is read over --log-level: per module, or as a level.
#[test]
fn the_environment_filter_goes_over_the_level() {
    let gw = WithEnv::start(
        &[(
            "WSGI_GATEWAY_LOG",
            "wsgi_gateway=info,wsgi_gateway::wsgi=off",
        )],
        &[
            "--log-level",
            "error",
            "--mount",
            &format!("/={}", app("pep3333.wsgi")),
        ],
    );
    assert_eq!(fcgi(&gw.addr, "GET", "/errors", b"").unwrap().status, 200);
    assert_eq!(fcgi(&gw.addr, "GET", "/count", b"").unwrap().status, 200);
    let log = gw.log_text();
    assert!(
        log.contains("[info]") && log.contains("listening on"),
        "{log}"
    );
    assert!(
        !log.contains("a line for the log"),
        "wsgi_gateway::wsgi is off:\n{log}"
    );

    let gw = WithEnv::start(&[("WSGI_GATEWAY_LOG", "not a=filter=at all")], &[]);
    assert!(
        gw.log_text()
            .contains("WSGI_GATEWAY_LOG=\"not a=filter=at all\" is not a filter"),
        "{}",
        gw.log_text()
    );
}

/// SIGUSR1 after logrotate's rename: the log and the access log are opened again, and the
/// next lines go to the new files; under a supervisor every process reopens its own.
#[test]
fn sigusr1_reopens_the_log_files() {
    for processes in [None, Some("2")] {
        let dir = tmpdir("reopen");
        let (log, access) = (dir.join("gateway.log"), dir.join("access.log"));
        let mut args = vec![
            "--log-file",
            path_str(&log),
            "--access-log",
            path_str(&access),
        ];
        if let Some(n) = processes {
            args.extend(["--processes", n]);
        }
        let gw = start_app(&args);
        wait_for("the workers to start", || {
            lines(&log).iter().any(|l| l.contains("listening on"))
                && processes.is_none_or(|_| child_pids(gw.pid()).len() == 2)
        });
        assert_eq!(
            fcgi(&gw.addr, "GET", "/app/count?n=1", b"").unwrap().status,
            200
        );
        wait_lines(&access, 1);
        let (log1, access1) = (dir.join("gateway.log.1"), dir.join("access.log.1"));
        std::fs::rename(&log, &log1).unwrap();
        std::fs::rename(&access, &access1).unwrap();
        let status = Command::new("kill")
            .args(["-USR1", &gw.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let reopened = if processes.is_some() { 3 } else { 1 };
        wait_for("every process to reopen its log file", || {
            lines(&log)
                .iter()
                .filter(|l| l.contains("SIGUSR1: reopened the log file"))
                .count()
                >= reopened
        });
        wait_for("the access logs to be reopened", || {
            lines(&log)
                .iter()
                .filter(|l| l.contains("SIGUSR1: reopened the access log"))
                .count()
                >= reopened.min(2)
        });
        assert_eq!(
            fcgi(&gw.addr, "GET", "/app/count?n=2", b"").unwrap().status,
            200
        );
        let new = wait_lines(&access, 1);
        assert!(new[0].contains("/app/count?n=2"), "{new:?}");
        let old = lines(&access1);
        assert_eq!(old.len(), 1, "{old:?}");
        assert!(old[0].contains("/app/count?n=1"), "{old:?}");
        assert!(
            lines(&log1).iter().any(|l| l.contains("listening on")),
            "the old log keeps the old lines"
        );
        assert!(
            !lines(&log).iter().any(|l| l.contains("[error]")),
            "{}",
            lines(&log).join("\n")
        );
    }
}

fn have_nginx() -> bool {
    require(find_bin("nginx").is_some(), "nginx")
}

/// Behind nginx with its stock fastcgi_params and `fastcgi_param REQUEST_ID $request_id`:
/// the access log has the browser's fields and nginx's request id, which the log lines
/// about the request carry too.
#[test]
fn behind_nginx_the_request_id_is_nginx_s() {
    if !have_nginx() {
        return;
    }
    let dir = tmpdir("logs-nginx");
    let access = dir.join("access.log");
    let gw = start_app(&[
        "--access-log",
        path_str(&access),
        "--access-log-format",
        "json",
    ]);
    let port = free_port();
    let conf = dir.join("site.conf");
    std::fs::write(
        &conf,
        format!(
            "server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   location / {{\n\
             \x20       include fastcgi_params;\n\
             \x20       fastcgi_param REQUEST_ID $request_id;\n\
             \x20       add_header X-Request-Id $request_id always;\n\
             \x20       fastcgi_pass {};\n\
             \x20   }}\n\
             }}\n",
            gw.addr
        ),
    )
    .unwrap();
    let front = Frontend::nginx_with(&conf, port);
    let headers = [
        ("User-Agent", "logs-test/1.0"),
        ("Referer", "http://example.test/"),
    ];
    let get = http(port, "GET", "/app/count", &headers, b"").unwrap();
    let post = http(port, "POST", "/app/upload", &headers, b"0123456789").unwrap();
    let boom = http(port, "GET", "/app/error-before", &headers, b"").unwrap();
    assert_eq!(
        (get.status, post.status, boom.status),
        (200, 200, 500),
        "{}",
        front.log_text()
    );
    let got = wait_lines(&access, 3);
    for (r, method, received) in [(&get, "GET", 0), (&post, "POST", 10), (&boom, "GET", 0)] {
        let id = r.header("X-Request-Id").expect("nginx's request id");
        let line = of_request(&got, id);
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["request_id"], id, "{line}");
        assert_eq!(v["request_method"], method, "{line}");
        assert_eq!(v["status"], r.status, "{line}");
        assert_eq!(v["body_bytes_sent"], r.body.len() as u64, "{line}");
        assert_eq!(v["body_bytes_received"], received, "{line}");
        assert_eq!(v["remote_addr"], "127.0.0.1", "{line}");
        assert_eq!(v["http_user_agent"], "logs-test/1.0", "{line}");
        assert_eq!(v["http_referer"], "http://example.test/", "{line}");
        assert_eq!(v["server_protocol"], "HTTP/1.1", "{line}");
    }
    let id = boom.header("X-Request-Id").unwrap();
    wait_for("the traceback", || {
        gw.log_text().contains("RuntimeError: boom")
    });
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("Traceback") && l.contains(&format!("{{request_id={id} "))),
        "{log}"
    );
}
