//! Shared test support: a gateway child process, FastCGI / SCGI / HTTP clients with bounded
//! timeouts, and the test venv. Everything talks to loopback or Unix sockets only.
#![allow(dead_code)]

pub mod frontends;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use protocol::fastcgi::{self, encode};
use protocol::{cgi, scgi, uwsgi};

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsgi-gateway")
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn app(name: &str) -> String {
    root()
        .join("tests/apps")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A fresh directory under target/ for one test.
pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = root().join("target/test-tmp").join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True in CI, where a missing prerequisite is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips a test (returns false) when a prerequisite is missing locally; fails in CI.
pub fn require(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "missing prerequisite in CI: {what}");
        eprintln!("SKIPPED: missing prerequisite: {what}");
    }
    ok
}

/// The venv the test command makes (Flask, Django, six...), or None: `WSGI_GATEWAY_TEST_VENV`,
/// else target/test-venv; only when it was made by the embedded Python's minor version.
pub fn test_venv() -> Option<PathBuf> {
    // A relative path is taken from the project root (where test.sh runs), not from a test's
    // own directory.
    let dir = std::env::var_os("WSGI_GATEWAY_TEST_VENV")
        .map(|d| root().join(d))
        .unwrap_or_else(|| root().join("target/test-venv"));
    let cfg = std::fs::read_to_string(dir.join("pyvenv.cfg")).ok()?;
    let made_by = cfg.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "version" || k.trim() == "version_info").then(|| v.trim().to_string())
    })?;
    if made_by != PY_VERSION && !made_by.starts_with(&format!("{PY_VERSION}.")) {
        eprintln!(
            "the test venv {} was made by Python {made_by}, this build embeds {PY_VERSION}: \
             set WSGI_GATEWAY_TEST_VENV (tools/make-test-venv.sh makes one)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

// The Python the gateway was built against, as build.rs recorded it: tests read these rather
// than naming an interpreter of one machine.

/// Its major.minor (`3.11`).
pub const PY_VERSION: &str = env!("WSGI_GATEWAY_PY_VERSION");
/// Its full version (`3.11.7`).
pub const PY_FULL_VERSION: &str = env!("WSGI_GATEWAY_PY_FULL_VERSION");
/// Its installation prefix (`sys.base_prefix`): the gateway's interpreter without python-home.
pub const PY_PREFIX: &str = env!("WSGI_GATEWAY_PY_PREFIX");
/// The interpreter the build ran (makes venvs of the embedded version).
pub const BUILD_PYTHON: &str = env!("WSGI_GATEWAY_BUILD_PYTHON");

/// Makes the example configs' small venvs (examples/venvs/shop and legacy) with the build
/// Python, unless they were made by it already (examples/make-venvs.sh).
pub fn example_venvs() {
    let out = Command::new(root().join("examples/make-venvs.sh"))
        .arg(BUILD_PYTHON)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "examples/make-venvs.sh {BUILD_PYTHON}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lib/pythonX.Y/site-packages` of the embedded version, relative to a venv or prefix.
pub fn site_rel() -> String {
    format!("lib/python{PY_VERSION}/site-packages")
}

/// The base installation's site-packages.
pub fn base_site() -> String {
    format!("{PY_PREFIX}/{}", site_rel())
}

/// A minor version other than the embedded one (for venvs that must be refused).
pub fn other_minor() -> &'static str {
    if PY_VERSION == "3.12" {
        "3.13"
    } else {
        "3.12"
    }
}

/// The major.minor of `python`, when it runs.
fn minor_of(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A CPython of another minor version than the embedded one, and its major.minor:
/// `WSGI_GATEWAY_TEST_OTHER_PYTHON` when set, else the first `python3.N` on PATH or under
/// `$(pyenv root)/versions` that runs and is not the embedded version. None (with a line
/// saying so) when there is none.
pub fn other_python() -> Option<(PathBuf, String)> {
    if let Some(p) = std::env::var_os("WSGI_GATEWAY_TEST_OTHER_PYTHON") {
        let p = PathBuf::from(p);
        let minor = minor_of(&p).unwrap_or_else(|| {
            panic!(
                "WSGI_GATEWAY_TEST_OTHER_PYTHON={} does not run",
                p.display()
            )
        });
        assert_ne!(
            minor, PY_VERSION,
            "WSGI_GATEWAY_TEST_OTHER_PYTHON must be another version than the embedded one"
        );
        return Some((p, minor));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("pyenv").arg("root").output().ok()?;
            let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !root.is_empty()).then(|| PathBuf::from(root))
        });
    if let Some(versions) = pyenv_root.map(|r| r.join("versions")) {
        let mut found: Vec<PathBuf> = std::fs::read_dir(versions)
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .collect();
        found.sort();
        dirs.extend(found);
    }
    for minor in 9..=14 {
        let version = format!("3.{minor}");
        if version == PY_VERSION {
            continue;
        }
        for dir in &dirs {
            let python = dir.join(format!("python{version}"));
            if python.is_file() && minor_of(&python).as_deref() == Some(&version) {
                return Some((python, version));
            }
        }
    }
    eprintln!(
        "SKIPPED: no Python of another version than {PY_VERSION} (set \
         WSGI_GATEWAY_TEST_OTHER_PYTHON, or put a python3.N on PATH)"
    );
    None
}

pub struct Gateway {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts the gateway with `args`; without a listener among them it listens on a free
    /// loopback port for both protocols. Waits until the socket accepts.
    pub fn start(args: &[&str]) -> Gateway {
        let mut gw = Self::start_unready(args);
        gw.wait_ready();
        gw
    }

    /// Starts the gateway without waiting for it to serve.
    pub fn start_unready(args: &[&str]) -> Gateway {
        Self::spawn(args, true, &[])
    }

    /// Starts the gateway with exactly `args` (listeners from a config file), not waiting.
    pub fn start_as_is(args: &[&str]) -> Gateway {
        Self::spawn(args, false, &[])
    }

    /// Like [`Gateway::start`], with variables added to its environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut gw = Self::spawn(args, true, env);
        gw.wait_ready();
        gw
    }

    /// Starts `exe` (a gateway installed elsewhere, e.g. by pip) with exactly `args`, and
    /// waits until it accepts on `addr`.
    pub fn start_exe(exe: &Path, args: &[&str], addr: &str) -> Gateway {
        let dir = tmpdir("gateway");
        let log = dir.join("gateway.log");
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let mut gw = Gateway {
            child,
            addr: addr.to_string(),
            log,
        };
        gw.wait_ready();
        gw
    }

    fn spawn(args: &[&str], add_listener: bool, env: &[(&str, &str)]) -> Gateway {
        let has_listener = !add_listener
            || args
                .iter()
                .any(|a| ["--fastcgi", "--scgi", "--uwsgi", "--listen"].contains(a));
        let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let addr = if has_listener {
            args.iter()
                .position(|a| ["--fastcgi", "--scgi", "--uwsgi", "--listen"].contains(a))
                .map(|i| args[i + 1].to_string())
                .unwrap_or_default()
        } else {
            let addr = format!("127.0.0.1:{}", free_port());
            argv.extend(["--listen".to_string(), addr.clone()]);
            addr
        };
        let dir = tmpdir("gateway");
        let log = dir.join("gateway.log");
        let child = Command::new(bin())
            .args(&argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Gateway { child, addr, log }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if connect(&self.addr).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("gateway exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the gateway SIGHUP (a reload).
    pub fn hup(&self) {
        signal(self.pid(), "HUP");
    }

    /// Sends a signal and waits (bounded) for the exit status.
    pub fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        self.wait_exit()
    }

    /// Waits (bounded) for the exit status of a gateway told to stop.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "gateway did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM first, so a supervisor stops its workers; then SIGKILL.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `pid` the signal `name` (as kill(1) names it).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
}

/// Runs the gateway to completion (for refusals) and returns (exit code, stderr).
pub fn run_gateway(args: &[&str]) -> (i32, String) {
    let (code, _, err) = run_gateway_output(args);
    (code, err)
}

/// Runs `wsgi-gateway ARGS` to completion: (exit code, stdout, stderr).
pub fn run_gateway_output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub fn connect(addr: &str) -> std::io::Result<Box<dyn Stream>> {
    connect_pair(addr).map(|(s, _)| s)
}

/// Two handles of one new connection (bounded timeouts on both): one to write with from
/// another thread while the other reads.
pub fn connect_pair(addr: &str) -> std::io::Result<(Box<dyn Stream>, Box<dyn Stream>)> {
    if let Some(path) = addr.strip_prefix("unix:") {
        let s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        let other = s.try_clone()?;
        Ok((Box::new(s), Box::new(other)))
    } else {
        let s = tcp_connect(addr)?;
        let other = s.try_clone()?;
        Ok((Box::new(s), Box::new(other)))
    }
}

/// A new TCP connection to `addr` (bounded timeouts), for a test that needs the socket itself
/// (shutdown, try_clone).
pub fn tcp(addr: &str) -> TcpStream {
    tcp_connect(addr).unwrap()
}

fn tcp_connect(addr: &str) -> std::io::Result<TcpStream> {
    let a: SocketAddr = addr.parse().unwrap();
    let s = TcpStream::connect_timeout(&a, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    Ok(s)
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// CGI params like nginx's stock fastcgi_params would send for `path`.
pub fn cgi_params(method: &str, uri: &str, body_len: usize) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    vec![
        ("QUERY_STRING".into(), query.into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("CONTENT_TYPE".into(), "application/octet-stream".into()),
        ("CONTENT_LENGTH".into(), body_len.to_string()),
        ("SCRIPT_NAME".into(), path.into()),
        ("REQUEST_URI".into(), uri.into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("HTTP_HOST".into(), "localhost".into()),
    ]
}

/// The bytes of one FastCGI request.
pub fn fcgi_bytes(id: u16, keep: bool, params: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let flags = if keep { fastcgi::KEEP_CONN } else { 0 };
    encode::begin_request(id, fastcgi::RESPONDER, flags, &mut wire);
    encode::params(
        id,
        params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &mut wire,
    );
    encode::stream(fastcgi::STDIN, id, body, &mut wire);
    encode::stream_end(fastcgi::STDIN, id, &mut wire);
    wire
}

/// Writes one FastCGI request without a body (id 1; `keep`: FCGI_KEEP_CONN) to `s`, without
/// reading its answer.
pub fn fcgi_send(s: &mut dyn Stream, keep: bool, method: &str, uri: &str) {
    s.write_all(&fcgi_bytes(1, keep, &cgi_params(method, uri, 0), b""))
        .unwrap();
}

/// Reads FastCGI records from one connection, keeping what arrived past the last whole record.
#[derive(Default)]
pub struct FcgiReader {
    pending: Vec<u8>,
}

impl FcgiReader {
    /// The next record: (request id, type, content).
    fn next_record(&mut self, s: &mut dyn Stream) -> Result<(u16, u8, Vec<u8>), String> {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some((rec, used)) =
                fastcgi::parse_record(&self.pending).map_err(|e| e.to_string())?
            {
                let next = (
                    rec.header.request_id,
                    rec.header.record_type,
                    rec.content.to_vec(),
                );
                self.pending.drain(..used);
                return Ok(next);
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before END_REQUEST".into());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Collects the STDOUT content of request `id` into `stdout` until `done(record type,
    /// stdout so far)` says so; records of other requests are skipped. Returns the type of the
    /// record that ended the wait.
    pub fn read_until(
        &mut self,
        s: &mut dyn Stream,
        id: u16,
        stdout: &mut Vec<u8>,
        mut done: impl FnMut(u8, &[u8]) -> bool,
    ) -> Result<u8, String> {
        loop {
            let (rid, kind, content) = self
                .next_record(s)
                .map_err(|e| format!("{e} ({} bytes of stdout)", stdout.len()))?;
            if rid != id {
                continue;
            }
            if kind == fastcgi::STDOUT {
                stdout.extend_from_slice(&content);
            }
            if done(kind, stdout) {
                return Ok(kind);
            }
        }
    }

    /// The STDOUT content of each of `n` requests multiplexed on one connection, by request
    /// id (every id that ended is a key), once `n` END_REQUESTs came.
    pub fn read_responses(
        &mut self,
        s: &mut dyn Stream,
        n: usize,
    ) -> Result<std::collections::HashMap<u16, Vec<u8>>, String> {
        let mut stdout = std::collections::HashMap::<u16, Vec<u8>>::new();
        let mut ended = 0;
        while ended < n {
            let (id, kind, content) = self.next_record(s)?;
            match kind {
                fastcgi::STDOUT => stdout.entry(id).or_default().extend_from_slice(&content),
                fastcgi::END_REQUEST => {
                    stdout.entry(id).or_default();
                    ended += 1;
                }
                _ => {}
            }
        }
        Ok(stdout)
    }
}

/// Reads FastCGI records until END_REQUEST for `id`; returns the parsed response.
pub fn fcgi_read_response(s: &mut dyn Stream, id: u16) -> Result<Response, String> {
    let mut stdout = Vec::new();
    FcgiReader::default().read_until(s, id, &mut stdout, |kind, _| kind == fastcgi::END_REQUEST)?;
    parse_cgi(&stdout)
}

pub fn parse_cgi(data: &[u8]) -> Result<Response, String> {
    let (head, used) = cgi::parse_response_head(data)
        .ok_or_else(|| format!("incomplete head: {:?}", String::from_utf8_lossy(data)))??;
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body: data[used..].to_vec(),
    })
}

/// One FastCGI request on a new connection.
pub fn fcgi(addr: &str, method: &str, uri: &str, body: &[u8]) -> Result<Response, String> {
    let mut s = connect(addr).map_err(|e| e.to_string())?;
    s.write_all(&fcgi_bytes(
        1,
        false,
        &cgi_params(method, uri, body.len()),
        body,
    ))
    .map_err(|e| e.to_string())?;
    fcgi_read_response(&mut *s, 1)
}

/// One SCGI request on a new connection.
pub fn scgi(addr: &str, method: &str, uri: &str, body: &[u8]) -> Result<Response, String> {
    scgi_with(addr, &cgi_params(method, uri, body.len()), body)
}

/// One SCGI request with these params on a new connection (CONTENT_LENGTH is the body's).
pub fn scgi_with(addr: &str, params: &[(String, String)], body: &[u8]) -> Result<Response, String> {
    let mut wire = Vec::new();
    scgi::encode_request(body.len() as u64, cgi_pairs(params), &mut wire);
    wire.extend_from_slice(body);
    parse_cgi(&exchange(addr, &wire)?)
}

/// One uwsgi request on a new connection (as nginx's `uwsgi_pass` sends it); the response
/// is HTTP.
pub fn uwsgi(addr: &str, method: &str, uri: &str, body: &[u8]) -> Result<Response, String> {
    uwsgi_with(addr, &cgi_params(method, uri, body.len()), body)
}

/// One uwsgi request with these params on a new connection (CONTENT_LENGTH is the body's).
pub fn uwsgi_with(
    addr: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    let mut wire = Vec::new();
    uwsgi::encode_request(body.len() as u64, cgi_pairs(params), &mut wire);
    wire.extend_from_slice(body);
    parse_http(&exchange(addr, &wire)?)
}

/// The params but CONTENT_LENGTH, which the SCGI and uwsgi encoders write themselves.
fn cgi_pairs(params: &[(String, String)]) -> impl Iterator<Item = (&[u8], &[u8])> {
    params
        .iter()
        .filter(|(n, _)| n != "CONTENT_LENGTH")
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
}

/// Sends `wire` on a new connection and reads until the gateway closes it.
fn exchange(addr: &str, wire: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = connect(addr).map_err(|e| e.to_string())?;
    s.write_all(wire).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// An HTTP client for the front ends: no connection reuse (every request is a connection of
/// its own, like the tests' load), no redirects followed, bounded timeouts.
pub fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .redirects(0)
        .timeout_connect(TIMEOUT)
        .timeout_read(TIMEOUT)
        .timeout_write(TIMEOUT)
        .build()
}

/// One HTTP/1.1 request to a front end on loopback (with `Content-Length`, also when the body
/// is empty); a 4xx or 5xx answer is a response like any other.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut req = http_agent().request(method, &format!("http://127.0.0.1:{port}{path}"));
    for (n, v) in headers {
        req = req.set(n, v);
    }
    http_response(req.send_bytes(body))
}

/// One GET whose request target and headers are sent exactly as written (`..` segments and
/// `%2e` included, a header given twice stays twice): an HTTP client library resolves dot
/// segments first, as browsers do, and merges headers, so tests of how the web server and the
/// gateway confine paths or see headers write the request themselves.
pub fn http_verbatim(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    let mut s = connect(&format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (n, v) in headers {
        req += &format!("{n}: {v}\r\n");
    }
    req += "Connection: close\r\n\r\n";
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_http(&raw)
}

/// A ureq answer as a [`Response`]: statuses are data, transport errors are errors.
pub fn http_response(r: Result<ureq::Response, ureq::Error>) -> Result<Response, String> {
    let r = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = r.status();
    let headers = r
        .headers_names()
        .iter()
        .flat_map(|n| r.all(n).into_iter().map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    r.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The HTTP head and body that a uwsgi response carries (the gateway writes the status line
/// and headers itself there).
pub fn parse_http(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pids of a process's children (a supervisor's workers).
pub fn child_pids(pid: u32) -> std::collections::HashSet<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until `f` is true (bounded).
/// A `/t/block` request (tests/apps/pep3333.wsgi mounted at /t) of `ms`, sent on a connection
/// of its own and running when this returns: with `--threads 1` it holds the only thread.
/// Its response is read from the returned connection.
pub fn blocking_request(addr: &str, tag: &str, ms: u64) -> Box<dyn Stream> {
    let marker = tmpdir(tag).join("running");
    let mut s = connect(addr).unwrap();
    let uri = format!("/t/block?marker={}&ms={ms}", marker.display());
    fcgi_send(&mut *s, false, "GET", &uri);
    wait_for("the blocking request to run", || marker.exists());
    s
}

/// [`blocking_request`] from a thread of its own, which gives its response.
pub fn blocking_request_in_thread(
    addr: &str,
    tag: &str,
    ms: u64,
) -> std::thread::JoinHandle<Result<Response, String>> {
    let marker = tmpdir(tag).join("running");
    let uri = format!("/t/block?marker={}&ms={ms}", marker.display());
    let addr = addr.to_string();
    let request = std::thread::spawn(move || fcgi(&addr, "GET", &uri, b""));
    wait_for("the blocking request to run", || marker.exists());
    request
}

/// A gateway of one thread serving `pep3333.wsgi` at /t, whose process holds 1 MiB of bodies
/// (`--buffer-body-total`) and waits 60 s for a body that stalls (`--body-timeout`).
pub fn one_thread_with_a_1mib_body_budget() -> Gateway {
    let mount = format!("/t={}", app("pep3333.wsgi"));
    Gateway::start(&[
        "--threads",
        "1",
        "--buffer-body-total",
        "1048576",
        "--body-timeout",
        "60",
        "--mount",
        &mount,
    ])
}

/// Sends three uploads (`wire`: the bytes of one, a body that stalls) and then a request, which
/// must be answered at once: the stalled uploads are collected without the only thread.
/// Behind an upload holding the thread, the answer would come after the body timeout (60 s),
/// past the client's read timeout (TIMEOUT, 30 s), and the read fails.
pub fn answered_behind_stalled_uploads(gw: &Gateway, wire: impl Fn() -> Vec<u8>) {
    let stalled: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect(&gw.addr).unwrap();
            c.write_all(&wire()).unwrap();
            c
        })
        .collect();
    let r = fcgi(&gw.addr, "GET", "/t/echo", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(stalled);
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
