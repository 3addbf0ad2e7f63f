//! The admin API's transport: HTTP/1.1 served by the master itself, one
//! request per connection (every reply says `Connection: close`), JSON in
//! and out. What each endpoint does is in `supervisor.rs`; this file
//! listens, reads a request, lets it in or not, and writes a reply.
//!
//! Who may call is decided in `auth` (the peer's credentials on the unix
//! socket, a bearer token over TCP) once the request head is here, before
//! its body is waited for. Over TCP it also refuses requests whose `Host`
//! is not a loopback name (DNS rebinding: a web page's hostname resolving
//! to 127.0.0.1) or that carry a foreign `Origin` (a web page posting
//! cross-site), so a browser on this machine cannot be used as the caller.

pub mod auth;
pub mod guard;

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use baton_shared::config::{Admin, ListenAddr};
use mio::event::Source;
use mio::{Interest, Registry, Token};
use nix::unistd::{getegid, geteuid};
use socket2::{Domain, Socket, Type};

/// Bodies above this are refused (a config file is a few KiB).
const MAX_BODY: usize = 1024 * 1024;
const MAX_HEAD: usize = 16 * 1024;

pub enum Listener {
    Tcp(mio::net::TcpListener, u16),
    Unix(mio::net::UnixListener, PathBuf),
}

impl Listener {
    pub fn bind(admin: &Admin) -> io::Result<Listener> {
        match &admin.listen {
            ListenAddr::Tcp(addr) => {
                let socket = Socket::new(Domain::for_address(*addr), Type::STREAM.cloexec(), None)?;
                socket.set_reuse_address(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&(*addr).into())?;
                socket.listen(64)?;
                let std: std::net::TcpListener = socket.into();
                let port = std.local_addr()?.port();
                Ok(Listener::Tcp(mio::net::TcpListener::from_std(std), port))
            }
            ListenAddr::Unix(path) => {
                if std::fs::symlink_metadata(path).is_ok() {
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another server answers on this admin socket",
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = mio::net::UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(admin.mode))?;
                if let Some((uid, gid)) = admin.owner {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
                }
                Ok(Listener::Unix(listener, path.clone()))
            }
            ListenAddr::Stdin => Err(io::Error::other("the admin API cannot listen on stdin")),
        }
    }

    /// The next connection, with who is at its other end. `Ok(None)`: one
    /// was accepted but its peer's credentials could not be read, so it was
    /// closed (accept again).
    pub fn accept(&self) -> io::Result<Option<Conn>> {
        match self {
            Listener::Tcp(l, port) => {
                let stream = Stream::Tcp(l.accept()?.0);
                Ok(Some(Conn::new(stream, auth::Peer::Tcp, Some(*port))))
            }
            Listener::Unix(l, _) => {
                let stream = l.accept()?.0;
                match auth::Peer::of_unix(&stream) {
                    Ok(peer) => Ok(Some(Conn::new(Stream::Unix(stream), peer, None))),
                    Err(e) => {
                        log::warn!("admin API: cannot read a peer's credentials ({e}); closed");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Removes the socket file (at exit, or when a reload moves the API).
    pub fn remove_file(&self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l, _) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// One admin request, from a caller who was let in.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub caller: auth::Caller,
}

/// Why a request is refused before it is looked at.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

pub struct Conn {
    pub stream: Stream,
    buf: Vec<u8>,
    /// Who connected (the kernel's word on a unix socket).
    peer: auth::Peer,
    /// The local port for TCP (for the Host check); None on a unix socket.
    tcp_port: Option<u16>,
}

impl Conn {
    fn new(stream: Stream, peer: auth::Peer, tcp_port: Option<u16>) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            peer,
            tcp_port,
        }
    }

    /// Reads what arrived: `Ok(Some(Ok(request)))` once a whole request is
    /// there from a caller `admin` lets in, `Ok(Some(Err(refused)))` for
    /// one to refuse, `Ok(None)` if more is needed, `Err` if the peer left.
    pub fn read_request(&mut self, admin: &Admin) -> io::Result<Option<Result<Request, Refused>>> {
        crate::io_util::read_available(&mut self.stream, &mut self.buf, MAX_HEAD + MAX_BODY)?;
        Ok(self.parse(admin))
    }

    fn parse(&self, admin: &Admin) -> Option<Result<Request, Refused>> {
        let refuse = |status: u16, message: &str| {
            Some(Err(Refused {
                status,
                message: message.to_string(),
            }))
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                return refuse(431, "request head too large");
            }
            Ok(httparse::Status::Partial) => return None,
            Err(_) => return refuse(400, "malformed request"),
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        if header("transfer-encoding").is_some() {
            return refuse(411, "send the body with Content-Length");
        }
        let length: usize = match header("content-length").map(|v| v.trim().parse()) {
            None => 0,
            Some(Ok(n)) if n <= MAX_BODY => n,
            Some(Ok(_)) => return refuse(413, "body too large (1 MiB at most)"),
            Some(Err(_)) => return refuse(400, "invalid Content-Length"),
        };
        if let Some(port) = self.tcp_port
            && let Err(why) = check_host_and_origin(header("host"), header("origin"), port)
        {
            return refuse(403, &why);
        }
        // Before the body: a caller who may not call sends nothing more.
        let master = (geteuid().as_raw(), getegid().as_raw());
        let authorization = header("authorization");
        let caller = match auth::authorize(&self.peer, authorization.as_deref(), admin, master) {
            Ok(c) => c,
            Err(denied) => return refuse(denied.status, &denied.message),
        };
        let end = head_len.saturating_add(length);
        if self.buf.len() < end {
            return None;
        }
        Some(Ok(Request {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
            body: self.buf[head_len..end].to_vec(),
            caller,
        }))
    }

    pub fn respond_json(&mut self, status: u16, body: &serde_json::Value) {
        let mut text = body.to_string();
        text.push('\n');
        self.respond(status, "application/json", text.as_bytes());
    }

    /// Writes the reply and leaves the connection to be dropped. The client
    /// is waiting for it, so a short blocking write is fine; one that does
    /// not read for a second loses its reply rather than stall the master.
    /// A 401 says which scheme to authenticate with (RFC 9110 11.6.1).
    pub fn respond(&mut self, status: u16, content_type: &str, body: &[u8]) {
        let challenge = if status == 401 {
            "WWW-Authenticate: Bearer realm=\"baton admin\"\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             {challenge}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            reason(status),
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        crate::io_util::write_briefly(&mut self.stream, &out);
    }
}

/// Over TCP only loopback names may be the `Host` (a rebound DNS name is
/// refused), and an `Origin`, if any, must be the API's own.
fn check_host_and_origin(
    host: Option<String>,
    origin: Option<String>,
    port: u16,
) -> Result<(), String> {
    let allowed = ["localhost", "127.0.0.1", "[::1]"];
    let is_ours = |authority: &str| {
        let authority = authority.trim().to_ascii_lowercase();
        allowed
            .iter()
            .any(|name| authority == *name || authority == format!("{name}:{port}"))
    };
    match host {
        Some(h) if is_ours(&h) => {}
        Some(h) => return Err(format!("Host {h:?} is not a loopback name")),
        None => return Err("a Host header is required".into()),
    }
    if let Some(o) = origin {
        let authority = o.strip_prefix("http://").unwrap_or("");
        if !is_ours(authority) {
            return Err(format!("cross-origin request from {o:?} refused"));
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::check_host_and_origin as check;

    #[test]
    fn host_and_origin_rules() {
        let s = |v: &str| Some(v.to_string());
        assert!(check(s("localhost:2019"), None, 2019).is_ok());
        assert!(check(s("127.0.0.1"), s("http://127.0.0.1:2019"), 2019).is_ok());
        assert!(check(s("[::1]:2019"), None, 2019).is_ok());
        assert!(
            check(s("evil.example:2019"), None, 2019).is_err(),
            "DNS rebinding"
        );
        assert!(
            check(s("localhost:2020"), None, 2019).is_err(),
            "another port"
        );
        assert!(check(None, None, 2019).is_err());
        assert!(check(s("localhost:2019"), s("http://evil.example"), 2019).is_err());
        assert!(check(s("localhost:2019"), s("null"), 2019).is_err());
        assert!(check(s("localhost:2019"), s("https://localhost:2019"), 2019).is_err());
    }
}
