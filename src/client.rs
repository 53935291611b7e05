//! `wsgi-gateway request`: one request to a running gateway (or any FastCGI/SCGI app server)
//! over FastCGI or SCGI, the response printed — a health check and a debugging tool.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use protocol::fastcgi::{self, encode};
use protocol::{cgi, scgi};

use crate::server::Addr;

pub struct RequestArgs {
    pub scgi: bool,
    pub addr: Addr,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub include: bool,
    pub timeout: Duration,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn connect(addr: &Addr, timeout: Duration) -> io::Result<Box<dyn Conn>> {
    Ok(match addr {
        Addr::Tcp(a) => {
            let s = TcpStream::connect_timeout(a, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Box::new(s)
        }
        Addr::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Box::new(s)
        }
        Addr::Inherited { .. } => {
            return Err(io::Error::other("connect to HOST:PORT or unix:PATH"));
        }
    })
}

/// The CGI params a web server would send for this request.
pub fn params(args: &RequestArgs) -> Vec<(String, String)> {
    let (path, query) = args.path.split_once('?').unwrap_or((&args.path, ""));
    let (server, port) = match &args.addr {
        Addr::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
        Addr::Unix(_) | Addr::Inherited { .. } => ("localhost".to_string(), "80".to_string()),
    };
    let mut p = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "wsgi-gateway-request".into()),
        ("REQUEST_METHOD".into(), args.method.clone()),
        ("REQUEST_URI".into(), args.path.clone()),
        ("SCRIPT_NAME".into(), path.to_string()),
        ("QUERY_STRING".into(), query.to_string()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("SERVER_NAME".into(), server),
        ("SERVER_PORT".into(), port),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
    ];
    if !args.scgi {
        // SCGI puts CONTENT_LENGTH first itself.
        p.push(("CONTENT_LENGTH".into(), args.body.len().to_string()));
    }
    for (name, value) in &args.headers {
        let key = name.to_ascii_uppercase().replace('-', "_");
        match key.as_str() {
            "CONTENT_TYPE" => p.push((key, value.clone())),
            "CONTENT_LENGTH" => {}
            _ => p.push((format!("HTTP_{key}"), value.clone())),
        }
    }
    p
}

/// Sends the request and writes the response to `out`; returns the HTTP status.
pub fn run(args: &RequestArgs, out: &mut impl Write) -> Result<u16, String> {
    let params = params(args);
    let pairs = params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    let mut wire = Vec::new();
    if args.scgi {
        scgi::encode_request(args.body.len() as u64, pairs, &mut wire);
        wire.extend_from_slice(&args.body);
    } else {
        encode::begin_request(1, fastcgi::RESPONDER, 0, &mut wire);
        encode::params(1, pairs, &mut wire);
        encode::stream(fastcgi::STDIN, 1, &args.body, &mut wire);
        encode::stream_end(fastcgi::STDIN, 1, &mut wire);
    }
    let mut conn = connect(&args.addr, args.timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
    conn.write_all(&wire)
        .map_err(|e| format!("sending the request to {}: {e}", args.addr))?;
    let mut printer = Printer {
        out,
        head: Vec::new(),
        status: None,
        include: args.include,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(format!("reading the response: {e}")),
        };
        if args.scgi {
            if n == 0 {
                break;
            }
            printer.feed(&buf[..n])?;
            continue;
        }
        if n == 0 {
            return Err("connection closed before END_REQUEST (response cut off)".into());
        }
        pending.extend_from_slice(&buf[..n]);
        let mut pos = 0;
        let mut ended = false;
        while let Some((rec, used)) =
            fastcgi::parse_record(&pending[pos..]).map_err(|e| e.to_string())?
        {
            pos += used;
            match rec.header.record_type {
                fastcgi::STDOUT => printer.feed(rec.content)?,
                fastcgi::STDERR => eprint!("{}", String::from_utf8_lossy(rec.content)),
                fastcgi::END_REQUEST => {
                    let status = rec.content.get(4).copied().unwrap_or(0);
                    if status != 0 {
                        return Err(format!(
                            "request refused (FastCGI protocol status {status})"
                        ));
                    }
                    ended = true;
                    break;
                }
                other => return Err(format!("unexpected FastCGI record type {other}")),
            }
        }
        pending.drain(..pos);
        if ended {
            break;
        }
    }
    printer.status.ok_or_else(|| "no response head".to_string())
}

struct Printer<'a, W: Write> {
    out: &'a mut W,
    head: Vec<u8>,
    status: Option<u16>,
    include: bool,
}

impl<W: Write> Printer<'_, W> {
    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        let io = |e: io::Error| e.to_string();
        if self.status.is_some() {
            return self.out.write_all(data).map_err(io);
        }
        self.head.extend_from_slice(data);
        let Some(parsed) = cgi::parse_response_head(&self.head) else {
            return Ok(());
        };
        let (head, used) = parsed.map_err(|e| format!("bad response head: {e}"))?;
        self.status = Some(head.status);
        let mut text = format!("Status: {} {}\n", head.status, head.reason);
        for (n, v) in &head.headers {
            text.push_str(&format!("{n}: {v}\n"));
        }
        if self.include {
            self.out.write_all(text.as_bytes()).map_err(io)?;
            self.out.write_all(b"\n").map_err(io)?;
        }
        let body = self.head.split_off(used);
        self.out.write_all(&body).map_err(io)
    }
}
