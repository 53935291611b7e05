//! Front-end (nginx, lighttpd, Apache) harness helpers.
//!
//! Each server runs as a child process with a harness config in a fresh directory under
//! target/test-tmp that sets what a distro config would (pid file, logs, temp paths, modules)
//! and includes one of the repository's example files verbatim. The examples use fixed
//! addresses (web server on 127.0.0.1:8080, gateway on 127.0.0.1:9000 or
//! unix:/tmp/wsgi-gateway.sock), so the tests using them run one at a time (the `frontends`
//! test group in .config/nextest.toml).
//!
//! `Rig` holds a front end and a gateway; when a test fails while it is alive, the servers'
//! logs are printed with the failure.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{http, http_agent, http_response, path_str, root, tmpdir, Gateway, Response, TIMEOUT};

/// The port the examples' web servers listen on (127.0.0.1).
pub const FRONT_PORT: u16 = 8080;
/// The gateway's TCP address in the examples.
pub const GATEWAY_TCP: &str = "127.0.0.1:9000";
/// The gateway's Unix socket in the keepalive example.
pub const GATEWAY_UNIX: &str = "unix:/tmp/wsgi-gateway.sock";

/// A server binary on PATH or in the sbin directories (not always on a user's PATH).
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// An example config of the repository, e.g. `nginx-examples/fastcgi.conf`.
pub fn example(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(p.is_file(), "missing example {}", p.display());
    p
}

/// Whether the tests run as root (servers then need a user for their workers).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("({}: {e})", p.display()))
}

/// Fails early and clearly when a fixed address of the examples is taken (a leftover server,
/// or something else on the machine) instead of talking to the wrong process.
pub fn assert_port_free(addr: &str) {
    if let Err(e) = TcpListener::bind(addr) {
        panic!("{addr} is in use ({e}): the front-end tests need it free");
    }
}

pub enum Kind {
    Nginx,
    Lighttpd,
    Apache,
}

/// A running web server; stopped (SIGTERM, then SIGKILL, bounded) on drop.
pub struct Frontend {
    child: Option<Child>,
    pub name: &'static str,
    pub dir: PathBuf,
    pub port: u16,
    logs: Vec<PathBuf>,
}

impl Frontend {
    /// nginx with `example` (a file of `server {}` / `upstream {}` blocks) included in the
    /// http {} block. The harness config sits beside links to /etc/nginx's fastcgi_params and
    /// scgi_params, so the examples' relative `include fastcgi_params;` resolves to the
    /// stock files as it does for a config in /etc/nginx.
    pub fn nginx(example_rel: &str) -> Frontend {
        let bin = find_bin("nginx").expect("nginx");
        let dir = tmpdir("nginx");
        for f in [
            "fastcgi_params",
            "scgi_params",
            "uwsgi_params",
            "mime.types",
        ] {
            std::os::unix::fs::symlink(Path::new("/etc/nginx").join(f), dir.join(f)).unwrap();
        }
        let d = path_str(&dir);
        // Workers run as root when the tests do, so they may connect to the gateway's Unix
        // socket (mode 660, owned by the test user) and write the temp dirs under target/.
        let user = if is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   include mime.types;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   include {};\n\
             }}\n",
            path_str(&example(example_rel))
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-p", &format!("{d}/"), "-c", &format!("{d}/nginx.conf")])
            .args(["-e", &format!("{d}/error.log")]);
        Frontend::spawn(
            "nginx",
            cmd,
            dir.clone(),
            vec![dir.join("error.log")],
            FRONT_PORT,
        )
    }

    /// nginx running a complete configuration file of the repository as it is (`nginx -c`,
    /// the way its comment says to run it), with its prefix (pid file, logs, temp files) in a
    /// fresh directory.
    pub fn nginx_complete(example_rel: &str) -> Frontend {
        let bin = find_bin("nginx").expect("nginx");
        let dir = tmpdir("nginx");
        let d = path_str(&dir);
        let mut cmd = Command::new(bin);
        cmd.args(["-p", &format!("{d}/"), "-e", &format!("{d}/error.log")])
            .args(["-g", "daemon off;", "-c", path_str(&example(example_rel))]);
        Frontend::spawn(
            "nginx",
            cmd,
            dir.clone(),
            vec![dir.join("error.log")],
            FRONT_PORT,
        )
    }

    /// nginx with `conf` (a file of `server {}` blocks listening on 127.0.0.1:`port`) included
    /// in the http {} block, like [`Frontend::nginx`] does with an example.
    pub fn nginx_with(conf: &Path, port: u16) -> Frontend {
        let bin = find_bin("nginx").expect("nginx");
        let dir = tmpdir("nginx");
        for f in ["fastcgi_params", "scgi_params", "mime.types"] {
            std::os::unix::fs::symlink(Path::new("/etc/nginx").join(f), dir.join(f)).unwrap();
        }
        let d = path_str(&dir);
        let user = if is_root() { "user root;\n" } else { "" };
        let text = format!(
            "{user}daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   include mime.types;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   include {};\n\
             }}\n",
            path_str(conf)
        );
        std::fs::write(dir.join("nginx.conf"), text).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-p", &format!("{d}/"), "-c", &format!("{d}/nginx.conf")])
            .args(["-e", &format!("{d}/error.log")]);
        Frontend::spawn("nginx", cmd, dir.clone(), vec![dir.join("error.log")], port)
    }

    /// Apache httpd in the foreground with its usual processes (`-DFOREGROUND`, so mod_wsgi
    /// starts its daemon processes), listening on 127.0.0.1:`port`, with the modules
    /// `modules` (`(name, file)` in /usr/lib/apache2/modules) and `conf` included.
    pub fn apache_with(conf: &Path, port: u16, modules: &[(&str, &str)]) -> Frontend {
        let bin = find_bin("apache2")
            .or_else(|| find_bin("httpd"))
            .expect("apache2");
        let dir = tmpdir("apache");
        let d = path_str(&dir);
        let load: String = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
        ]
        .iter()
        .chain(modules)
        .map(|(m, f)| format!("LoadModule {m} /usr/lib/apache2/modules/{f}\n"))
        .collect();
        let user = if is_root() {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        let text = format!(
            "ServerRoot \"{d}\"\n\
             {load}\
             {user}\
             ServerName localhost\n\
             PidFile \"{d}/apache2.pid\"\n\
             DefaultRuntimeDir \"{d}\"\n\
             ErrorLog \"{d}/error.log\"\n\
             LogLevel info\n\
             Listen 127.0.0.1:{port}\n\
             Include \"{}\"\n",
            path_str(conf)
        );
        std::fs::write(dir.join("apache2.conf"), text).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-DFOREGROUND", "-d", d, "-f", &format!("{d}/apache2.conf")]);
        Frontend::spawn(
            "apache",
            cmd,
            dir.clone(),
            vec![dir.join("error.log")],
            port,
        )
    }

    /// lighttpd with a harness lighttpd.conf (port, document root, pid, logs) that includes
    /// `example` (a snippet of `server.modules += ...` and `fastcgi.server`/`scgi.server`).
    pub fn lighttpd(example_rel: &str) -> Frontend {
        let bin = find_bin("lighttpd").expect("lighttpd");
        let dir = tmpdir("lighttpd");
        let d = path_str(&dir);
        std::fs::create_dir_all(dir.join("htdocs")).unwrap();
        std::fs::create_dir_all(dir.join("uploads")).unwrap();
        std::fs::write(dir.join("htdocs/static.txt"), "static file from lighttpd\n").unwrap();
        let conf = format!(
            "server.bind = \"127.0.0.1\"\n\
             server.port = {FRONT_PORT}\n\
             server.document-root = \"{d}/htdocs\"\n\
             server.upload-dirs = ( \"{d}/uploads\" )\n\
             server.errorlog = \"{d}/error.log\"\n\
             server.pid-file = \"{d}/lighttpd.pid\"\n\
             server.modules = ( \"mod_access\" )\n\
             mimetype.assign = ( \".txt\" => \"text/plain\" )\n\
             include \"{}\"\n",
            path_str(&example(example_rel))
        );
        std::fs::write(dir.join("lighttpd.conf"), conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-D", "-f", &format!("{d}/lighttpd.conf")]);
        Frontend::spawn(
            "lighttpd",
            cmd,
            dir.clone(),
            vec![dir.join("error.log")],
            FRONT_PORT,
        )
    }

    /// Apache httpd in the foreground as one process (`-X`), with a harness config that loads
    /// the modules from /usr/lib/apache2/modules and includes `example` (Listen + VirtualHost).
    pub fn apache(example_rel: &str) -> Frontend {
        let bin = find_bin("apache2")
            .or_else(|| find_bin("httpd"))
            .expect("apache2");
        let dir = tmpdir("apache");
        let d = path_str(&dir);
        let modules = "/usr/lib/apache2/modules";
        let load: String = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("proxy_module", "mod_proxy.so"),
            ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
            ("proxy_scgi_module", "mod_proxy_scgi.so"),
            ("proxy_uwsgi_module", "mod_proxy_uwsgi.so"),
        ]
        .iter()
        .map(|(m, f)| format!("LoadModule {m} {modules}/{f}\n"))
        .collect();
        // As root, Apache drops to User/Group for the request threads (and refuses root).
        let user = if is_root() {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        let conf = format!(
            "ServerRoot \"{d}\"\n\
             {load}\
             {user}\
             ServerName localhost\n\
             PidFile \"{d}/apache2.pid\"\n\
             DefaultRuntimeDir \"{d}\"\n\
             ErrorLog \"{d}/error.log\"\n\
             LogLevel info\n\
             Include \"{}\"\n",
            path_str(&example(example_rel))
        );
        std::fs::write(dir.join("apache2.conf"), conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-X", "-d", d, "-f", &format!("{d}/apache2.conf")]);
        Frontend::spawn(
            "apache",
            cmd,
            dir.clone(),
            vec![dir.join("error.log")],
            FRONT_PORT,
        )
    }

    pub fn start(kind: Kind, example_rel: &str) -> Frontend {
        match kind {
            Kind::Nginx => Frontend::nginx(example_rel),
            Kind::Lighttpd => Frontend::lighttpd(example_rel),
            Kind::Apache => Frontend::apache(example_rel),
        }
    }

    fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: PathBuf,
        mut logs: Vec<PathBuf>,
        port: u16,
    ) -> Self {
        assert_port_free(&format!("127.0.0.1:{port}"));
        let out = dir.join("stdout+stderr");
        let f = std::fs::File::create(&out).unwrap();
        logs.push(out);
        // A process group of its own, stopped as a whole (see `stop`).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut fe = Frontend {
            child: Some(child),
            name,
            dir,
            port,
            logs,
        };
        fe.wait_ready();
        fe
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start listening:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's logs (error log and its own output).
    pub fn log_text(&self) -> String {
        self.logs
            .iter()
            .map(|p| format!("--- {} {}:\n{}", self.name, p.display(), read(p)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the server: SIGTERM, then SIGKILL after a bounded wait.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The server leads a process group of its own (see `spawn`): whatever of it outlives
        // the parent (mod_wsgi's daemon processes, a child still stopping) is killed with the
        // group, whose id is not reused while any member lives.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A web server in front of a gateway. Requests go through the web server; on failure
/// (a panic while the rig is alive) both servers' logs are printed.
pub struct Rig {
    pub front: Frontend,
    pub gw: Gateway,
    /// Set once the logs went into a panic message (not printed again on drop).
    logs_shown: std::cell::Cell<bool>,
    /// One rig at a time in this process too (plain `cargo test` runs tests on threads);
    /// dropped last, after the servers stopped.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One front-end test at a time in this process (for tests that do not use a `Rig`).
pub fn serial_guard() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

impl Rig {
    /// Starts the gateway with `gw_args` (which name the example's fixed listener), then
    /// the front end with the example config.
    pub fn start(kind: Kind, example_rel: &str, gw_args: &[&str]) -> Rig {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for (i, a) in gw_args.iter().enumerate() {
            if ["--fastcgi", "--scgi", "--listen"].contains(a)
                && !gw_args[i + 1].starts_with("unix:")
            {
                assert_port_free(gw_args[i + 1]);
            }
        }
        let gw = Gateway::start(gw_args);
        let front = Frontend::start(kind, example_rel);
        Rig {
            front,
            gw,
            logs_shown: std::cell::Cell::new(false),
            _serial: serial,
        }
    }

    /// A rig of a gateway and a front end started by the caller (`start` takes the lock
    /// first: hold [`serial_guard`] while starting them).
    pub fn from_parts(
        gw: Gateway,
        front: Frontend,
        serial: std::sync::MutexGuard<'static, ()>,
    ) -> Rig {
        Rig {
            front,
            gw,
            logs_shown: std::cell::Cell::new(false),
            _serial: serial,
        }
    }

    /// Both servers' logs, for a panic message.
    pub fn logs(&self) -> String {
        self.logs_shown.set(true);
        format!(
            "{}\n--- gateway {}:\n{}",
            self.front.log_text(),
            self.gw.log.display(),
            self.gw.log_text()
        )
    }

    /// One request through the web server; panics with both servers' logs on I/O errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http(self.front.port, method, path, headers, body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} through {}: {e}\n{}",
                self.front.name,
                self.logs()
            )
        })
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// A GET whose path goes out exactly as written (see [`super::http_verbatim`]).
    pub fn get_verbatim(&self, path: &str) -> Response {
        self.get_verbatim_with(path, &[])
    }

    /// A GET whose path and headers (repeats included) go out exactly as written.
    pub fn get_verbatim_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        super::http_verbatim(self.front.port, path, headers).unwrap_or_else(|e| {
            panic!(
                "GET {path} through {}: {e}\n{}",
                self.front.name,
                self.logs()
            )
        })
    }

    /// A request that must answer 200; returns the response.
    pub fn ok(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let r = self.request(method, path, headers, body);
        if r.status != 200 {
            panic!(
                "{method} {path} through {}: status {} body {:?}\n{}",
                self.front.name,
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(2000)]),
                self.logs()
            );
        }
        r
    }
}

impl Rig {
    /// A POST whose body is sent with `Transfer-Encoding: chunked` (`chunk` bytes a chunk).
    pub fn post_chunked(&self, path: &str, body: &[u8], chunk: usize) -> Response {
        http_chunked_post(self.front.port, path, body, chunk).unwrap_or_else(|e| {
            panic!(
                "chunked POST {path} through {}: {e}\n{}",
                self.front.name,
                self.logs()
            )
        })
    }

    /// Ends a test: the gateway logged no warning or error while it ran.
    pub fn assert_gateway_quiet(&self) {
        let log = self.gw.log_text();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("[warn]") || l.contains("[error]"))
            .collect();
        if !bad.is_empty() {
            panic!(
                "the gateway logged problems behind {}:\n{}\n{}",
                self.front.name,
                bad.join("\n"),
                self.logs()
            );
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.front.stop();
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("==== server logs ====\n{}", self.logs());
        }
    }
}

/// One HTTP/1.1 POST with a chunked request body (`Transfer-Encoding: chunked`, as a body
/// of unknown length is sent) to a front end on loopback; the body is read `chunk` bytes at a
/// time.
pub fn http_chunked_post(
    port: u16,
    path: &str,
    body: &[u8],
    chunk: usize,
) -> Result<Response, String> {
    /// Hands out at most `chunk` bytes per read.
    struct Pieces<'a>(&'a [u8], usize);
    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    http_response(
        http_agent()
            .post(&format!("http://127.0.0.1:{port}{path}"))
            .set("Content-Type", "application/octet-stream")
            .send(Pieces(body, chunk.max(1))),
    )
}

/// The `KEY=value` lines of tests/apps/frontend_echo.wsgi as a lookup.
pub struct Echo(pub Vec<(String, String)>);

impl Echo {
    pub fn parse(r: &Response) -> Echo {
        Echo(
            r.text()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in the echo answer {:?}", self.0))
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), for request bodies.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The sha256 of what frontend_echo.wsgi's `/big?mib=N` yields.
pub fn big_response_sha256(mib: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for i in 0..mib * 16 {
        h.update(Sha256::digest(i.to_string().as_bytes()).repeat(2048));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The inodes of the server-side connected sockets of the Unix socket `path`, from
/// /proc/net/unix: accepted connections carry the listening socket's path, state 03 is
/// connected (the listener is 01). A connection keeps its inode for its lifetime.
pub fn unix_connections(path: &str) -> Vec<String> {
    read(Path::new("/proc/net/unix"))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == path && f[5] == "03").then(|| f[6].to_string())
        })
        .collect()
}

/// HTTP load through the front end: `n` clients sending GET `path` one after the other until
/// `finish` (at most 60 s).
pub struct HttpLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

pub fn http_load(n: usize, path: &'static str) -> HttpLoad {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let threads = (0..n)
        .map(|_| {
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    match http(FRONT_PORT, "GET", path, &[], b"") {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => errors.push(format!("status {}", r.status)),
                        Err(e) => errors.push(e),
                    }
                }
                errors
            })
        })
        .collect();
    HttpLoad { stop, ok, threads }
}

impl HttpLoad {
    /// Waits until `n` more requests were answered 200.
    pub fn wait_served(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let target = self.ok.load(Ordering::SeqCst) + n;
        super::wait_for("the load to be served", || {
            self.ok.load(Ordering::SeqCst) >= target
        });
    }

    /// Stops the clients: the requests answered 200, and the failures.
    pub fn finish(self) -> (usize, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (self.ok.load(Ordering::SeqCst), errors)
    }
}
