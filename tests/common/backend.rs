//! Upstream servers for the proxy tests, started by the tests themselves on
//! loopback (TCP or a unix socket): a thread per connection, plain
//! `std::net`, and a behaviour chosen by the request's path:
//!
//! - `/`: 200 with `BODY`;
//! - `/slowecho`: the echo, reading the request body slowly;
//! - `/echo...`: 200 with the request head as the body, and the request
//!   body's length and checksum in `X-Body-Len` / `X-Body-Sum`;
//! - `/cl/N`, `/chunked/N`, `/close/N`: N pattern bytes (`pattern`), framed
//!   by Content-Length, chunked (odd chunk sizes), or the connection close;
//! - `/die/N`: promises N bytes, sends half, closes;
//! - `/delay/MS`: answers after MS milliseconds;
//! - `/status/N`: an empty response with that status;
//! - `/hints`: a 103 Early Hints, then 200;
//! - `/cuthead`: half a response head, then a close;
//! - `/badhead`: a head with two different lengths;
//! - `/continue`: with `Expect: 100-continue`, a 100 then the echo;
//! - `/stale`: answered on a connection's first request only, the next
//!   one on it is met with a close (a server that dropped a kept-alive
//!   connection the moment it was reused);
//! - `/hangup`, on a backend named `closer...`: the request is read, the
//!   connection closed, nothing said (other backends echo it);
//! - `/closeidle`: answered, then the connection closed while idle.
//! - `/healthz`: an empty response with the status `set_health` chose
//!   (200 at first; 0: the request is read and never answered), counted
//!   by `health_checks()` and not by `requests()`.
//!
//! Every response says which backend (`X-Backend`) and which of its
//! connections (`X-Conn`) answered; `connections()` and `requests()` count.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// What `/` answers.
pub const BODY: &[u8] = b"hello from the backend\n";

/// Byte `i` of every generated body.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// FNV-1a, as `X-Body-Sum` is computed.
pub fn checksum(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

pub struct Backend {
    pub port: u16,
    pub name: String,
    pub path: Option<PathBuf>,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Connections that ended (EOF or error from the proxy's side, or our
    /// own close).
    closed: Arc<AtomicUsize>,
    health: Arc<Health>,
    /// What TLS handshakes showed (`start_tls`).
    tls_seen: Arc<super::pki::Seen>,
}

/// What `/healthz` answers, and how often it was asked.
struct Health {
    status: AtomicU16,
    hits: AtomicUsize,
}

/// Connections opened and ended, and the health endpoint.
#[derive(Clone)]
struct Counters {
    conns: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    health: Arc<Health>,
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

impl Backend {
    /// A backend on a free loopback port.
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        Self::serve_tcp(name, listener, port)
    }

    /// A backend on `port` (a server coming back where one was).
    pub fn start_on(name: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
        Self::serve_tcp(name, listener, port)
    }

    fn serve_tcp(name: &str, listener: TcpListener, port: u16) -> Backend {
        listener.set_nonblocking(true).expect("nonblocking");
        let b = Backend::new(name, port, None);
        let (conns, requests, stop, name) = b.shared();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_nodelay(true).ok();
                        spawn_conn(Box::new(s), &conns, &requests, &name, &stop);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        b
    }

    /// A backend speaking HTTPS with `tls` on a free loopback port: each
    /// accepted connection is counted (a failed handshake too), then served
    /// through a rustls session as a plain one is.
    pub fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let b = Backend::new(name, port, None);
        let (conns, requests, stop, name) = b.shared();
        let seen = b.tls_seen.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_nodelay(true).ok();
                        let Ok(session) = rustls::ServerConnection::new(tls.clone()) else {
                            continue;
                        };
                        let conn = super::pki::TlsConn::new(session, s, &seen);
                        spawn_conn(Box::new(conn), &conns, &requests, &name, &stop);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        b
    }

    /// A backend on a unix socket at `path`.
    pub fn start_unix(name: &str, path: PathBuf) -> Backend {
        let listener = UnixListener::bind(&path).expect("bind unix backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let b = Backend::new(name, 0, Some(path));
        let (conns, requests, stop, name) = b.shared();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).ok();
                        spawn_conn(Box::new(s), &conns, &requests, &name, &stop);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        b
    }

    fn new(name: &str, port: u16, path: Option<PathBuf>) -> Backend {
        Backend {
            port,
            name: name.to_owned(),
            path,
            conns: Arc::new(AtomicUsize::new(0)),
            requests: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            closed: Arc::new(AtomicUsize::new(0)),
            health: Arc::new(Health {
                status: AtomicU16::new(200),
                hits: AtomicUsize::new(0),
            }),
            tls_seen: Arc::default(),
        }
    }

    fn shared(&self) -> (Counters, Arc<AtomicUsize>, Arc<AtomicBool>, String) {
        (
            Counters {
                conns: self.conns.clone(),
                closed: self.closed.clone(),
                health: self.health.clone(),
            },
            self.requests.clone(),
            self.stop.clone(),
            self.name.clone(),
        )
    }

    pub fn address(&self) -> String {
        match &self.path {
            Some(p) => format!("unix:{}", p.display()),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Connections that have ended.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Requests answered (or begun) so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// What `/healthz` answers from now on (0: never answers).
    pub fn set_health(&self, status: u16) {
        self.health.status.store(status, Ordering::SeqCst);
    }

    /// TLS handshakes that resumed a session (a TLS backend's).
    pub fn resumed(&self) -> usize {
        self.tls_seen.resumed.load(Ordering::SeqCst)
    }

    /// The server name (SNI) each completed TLS handshake asked for, in
    /// order (`None`: no SNI).
    pub fn sni(&self) -> Vec<Option<String>> {
        self.tls_seen
            .names
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// `/healthz` requests so far.
    pub fn health_checks(&self) -> usize {
        self.health.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    /// Stops accepting (the listener closes within a few ms); open
    /// connections close on their next request, unanswered.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn spawn_conn(
    s: Box<dyn Io>,
    conns: &Counters,
    requests: &Arc<AtomicUsize>,
    name: &str,
    stop: &Arc<AtomicBool>,
) {
    let id = conns.conns.fetch_add(1, Ordering::SeqCst) + 1;
    let closed = conns.closed.clone();
    let health = conns.health.clone();
    let requests = requests.clone();
    let stop = stop.clone();
    let name = name.to_owned();
    thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut n = 0;
        while let Some(()) = serve_one(&mut r, id, n, &requests, &name, &stop, &health) {
            n += 1;
        }
        closed.fetch_add(1, Ordering::SeqCst);
    });
}

/// One request and its response; `None` ends the connection.
fn serve_one(
    r: &mut BufReader<Box<dyn Io>>,
    id: usize,
    on_conn: usize,
    requests: &AtomicUsize,
    name: &str,
    stop: &AtomicBool,
    health: &Health,
) -> Option<()> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    // A stopped backend is gone: its kept-alive connections too.
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let first = text.lines().next().unwrap_or_default().to_owned();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let header = |n: &str| {
        text.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(n)
                .then(|| v.trim().to_owned())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let close_asked = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut seg = path.trim_start_matches('/').split('/');
    let kind = seg.next().unwrap_or_default().to_owned();
    // `/stale`: a kept-alive connection that the server has given up on
    // (its close not seen yet): the second request on it gets nothing.
    if kind == "stale" && on_conn > 0 {
        return None;
    }
    // `/hangup` on a backend named `closer...`: reads the request, closes
    // without a word (the others answer it as an echo).
    if kind == "hangup" && name.starts_with("closer") {
        return None;
    }
    if kind == "healthz" {
        health.hits.fetch_add(1, Ordering::SeqCst);
        let status = health.status.load(Ordering::SeqCst);
        if status == 0 {
            // Never answers: holds the connection until the checker gives
            // up (its close ends the read) or the backend stops.
            let _ = r.get_mut().flush();
            let mut sink = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                match r.read(&mut sink) {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            return None;
        }
        w_status(r, status, name)?;
        return None;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let arg: u64 = seg
        .next()
        .and_then(|a| a.split('?').next()?.parse().ok())
        .unwrap_or(0);
    let w = |r: &mut BufReader<Box<dyn Io>>, bytes: &[u8]| r.get_mut().write_all(bytes).ok();
    let ids = format!("X-Backend: {name}\r\nX-Conn: {id}\r\n");
    if kind == "continue" && header("expect").is_some() {
        w(r, b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    // The body, read whole here (tests stream big ones; only its length
    // and checksum are kept); `/slowecho` reads it slowly.
    let slow = kind == "slowecho";
    let (body_len, body_sum) = read_body(r, chunked, length, slow)?;
    let head_only = method == "HEAD";
    match kind.as_str() {
        "cl" | "chunked" | "close" | "die" => {
            let n = arg;
            let framing = match kind.as_str() {
                "cl" | "die" => format!("Content-Length: {n}\r\n"),
                "chunked" => "Transfer-Encoding: chunked\r\n".to_owned(),
                _ => "Connection: close\r\n".to_owned(),
            };
            w(
                r,
                format!("HTTP/1.1 200 OK\r\n{ids}{framing}\r\n").as_bytes(),
            )?;
            if head_only {
                return (kind != "close").then_some(());
            }
            let send = if kind == "die" { n / 2 } else { n };
            let mut buf = vec![0u8; 64 * 1024];
            let mut at = 0u64;
            let mut chunk = 7u64;
            while at < send {
                let len = (send - at).min(if kind == "chunked" {
                    chunk
                } else {
                    buf.len() as u64
                });
                for (i, b) in buf[..len as usize].iter_mut().enumerate() {
                    *b = pattern(at + i as u64);
                }
                if kind == "chunked" {
                    w(r, format!("{len:x}\r\n").as_bytes())?;
                    w(r, &buf[..len as usize])?;
                    w(r, b"\r\n")?;
                    chunk = (chunk * 3 + 1) % 60_000 + 1;
                } else {
                    w(r, &buf[..len as usize])?;
                }
                at += len;
            }
            if kind == "chunked" {
                w(r, b"0\r\n\r\n")?;
            }
            if kind == "die" || kind == "close" {
                r.get_mut().flush().ok();
                return None;
            }
        }
        "delay" => {
            thread::sleep(Duration::from_millis(arg));
            w(
                r,
                format!("HTTP/1.1 200 OK\r\n{ids}Content-Length: 2\r\n\r\nok").as_bytes(),
            )?;
        }
        "status" => {
            w(
                r,
                format!("HTTP/1.1 {arg} X\r\n{ids}Content-Length: 0\r\n\r\n").as_bytes(),
            )?;
        }
        "cuthead" => {
            w(r, b"HTTP/1.1 200 OK\r\nContent-Le")?;
            return None;
        }
        "badhead" => {
            w(
                r,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            )?;
            return None;
        }
        "hints" => {
            w(
                r,
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            )?;
            w(
                r,
                format!("HTTP/1.1 200 OK\r\n{ids}Content-Length: 2\r\n\r\nok").as_bytes(),
            )?;
        }
        "" => {
            let body = BODY;
            let resp = format!(
                "HTTP/1.1 200 OK\r\n{ids}Content-Length: {}\r\n\r\n",
                body.len()
            );
            w(r, resp.as_bytes())?;
            if !head_only {
                w(r, body)?;
            }
        }
        _ => {
            let body = if head_only { Vec::new() } else { head.clone() };
            let resp = format!(
                "HTTP/1.1 200 OK\r\n{ids}X-Body-Len: {body_len}\r\nX-Body-Sum: {body_sum:x}\r\n\
                 Content-Length: {}\r\nX-Upstream-Only: yes\r\nKeep-Alive: timeout=5\r\n\r\n",
                head.len()
            );
            w(r, resp.as_bytes())?;
            w(r, &body)?;
        }
    }
    // `/closeidle`: answers as if keeping the connection, then closes it
    // (a pooled connection the server closed while it was idle).
    (!close_asked && kind != "closeidle").then_some(())
}

/// Reads a request body; returns its length and checksum.
fn read_body(
    r: &mut BufReader<Box<dyn Io>>,
    chunked: bool,
    length: u64,
    slow: bool,
) -> Option<(u64, u64)> {
    let mut sum = FNV_START;
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut take = |r: &mut BufReader<Box<dyn Io>>, mut n: u64| -> Option<()> {
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = r.read(&mut buf[..want]).ok()?;
            if got == 0 {
                return None;
            }
            sum = checksum(&buf[..got], sum);
            total += got as u64;
            n -= got as u64;
            if slow && total % (1 << 20) < got as u64 {
                // About 100 MiB/s at most: slower than the client sends.
                thread::sleep(Duration::from_millis(10));
            }
        }
        Some(())
    };
    if !chunked {
        take(r, length)?;
        return Some((total, sum));
    }
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let size = u64::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).ok()? == 0 || l.trim().is_empty() {
                    break;
                }
            }
            return Some((total, sum));
        }
        take(r, size)?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).ok()?;
    }
}

/// A response as a client reads it, whatever its framing.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing said (not cut by a close).
    pub complete: bool,
    pub chunked: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one final response (interim ones are returned in `interim`).
pub fn read_reply<R: BufRead>(
    r: &mut R,
    head: bool,
    interim: &mut Vec<u16>,
) -> std::io::Result<Reply> {
    loop {
        let (status, headers) = super::read_head(r)?;
        if (100..200).contains(&status) && status != 101 {
            interim.push(status);
            continue;
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
            complete: true,
            chunked: false,
        };
        if head || status == 204 || status == 304 || status == 101 {
            return Ok(reply);
        }
        if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            reply.chunked = true;
            reply.complete = false;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Ok(reply);
                }
                let Ok(size) = usize::from_str_radix(l.trim(), 16) else {
                    return Ok(reply);
                };
                if size == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end)?;
                    reply.complete = end == "\r\n";
                    return Ok(reply);
                }
                let start = reply.body.len();
                reply.body.resize(start + size, 0);
                if r.read_exact(&mut reply.body[start..]).is_err() {
                    reply.body.truncate(start);
                    return Ok(reply);
                }
                let mut crlf = [0u8; 2];
                if r.read_exact(&mut crlf).is_err() {
                    return Ok(reply);
                }
            }
        }
        match reply
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(n) => {
                let mut body = Vec::with_capacity(n);
                let got = r.take(n as u64).read_to_end(&mut body)?;
                reply.complete = got == n;
                reply.body = body;
            }
            None => {
                r.read_to_end(&mut reply.body)?;
            }
        }
        return Ok(reply);
    }
}

/// Whether `body` is `pattern` bytes from 0.
pub fn is_pattern(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .all(|(i, &b)| b == pattern(i as u64))
}

/// A config with `upstreams` (TOML, [[upstream]] tables), one site on
/// the env's port serving `www/` with `routes` ([[site.route]] tables),
/// and `global` lines.
pub fn proxy_config(env: &super::Env, global: &str, upstreams: &str, routes: &str) -> String {
    format!(
        "{}{global}\n{upstreams}\n[[site]]\nlisten = [\"127.0.0.1:{}\"]\nroot = \"{}\"\n{routes}\n",
        env.globals(),
        env.port,
        env.path("www").display()
    )
}

/// An upstream named `name` with `servers` (each a TOML value) and more
/// `lines`.
pub fn upstream(name: &str, servers: &[String], lines: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\nservers = [{}]\n{lines}\n",
        servers.join(", ")
    )
}

/// A route from `path` to `proxy`, its prefix stripped.
pub fn route(path: &str, proxy: &str) -> String {
    format!("[[site.route]]\npath = \"{path}\"\nproxy = \"{proxy}\"\nstrip_prefix = true\n")
}

/// A quoted server address for `upstream`.
pub fn quoted(b: &Backend) -> String {
    format!("\"{}\"", b.address())
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `/healthz`'s answer: a status and an empty body, then a close (the
/// checker asks for one).
fn w_status(r: &mut BufReader<Box<dyn Io>>, status: u16, name: &str) -> Option<()> {
    let head = format!(
        "HTTP/1.1 {status} Health\r\nX-Backend: {name}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    r.get_mut().write_all(head.as_bytes()).ok()?;
    r.get_mut().flush().ok()
}
