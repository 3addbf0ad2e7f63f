//! One health check on the wire: a non-blocking connect, `GET path
//! HTTP/1.1`, and the status line of the answer. Driven by the master's
//! loop (readiness events and the health timer); it never blocks. For an
//! HTTPS upstream the check speaks TLS, verified with the upstream's own
//! client configuration: a server whose certificate the workers would
//! refuse fails its check too (with rustls's reason).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use baton_shared::config::{HealthCheck, Upstream, UpstreamAddr, UpstreamServer};
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;

/// What a check of an HTTPS upstream's server needs.
#[derive(Clone)]
pub struct ProbeTls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl ProbeTls {
    /// For `server` of `up`; `None` for plain HTTP (or, which validation
    /// prevents, no name to verify: then the check fails, never plain).
    pub fn new(up: &Upstream, server: &UpstreamServer) -> Option<ProbeTls> {
        let tls = up.tls.as_ref()?;
        let ip = match &server.addr {
            UpstreamAddr::Tcp(a) => Some(a.ip()),
            UpstreamAddr::Unix(_) => None,
        };
        let name = baton_shared::upstream_tls::server_name(
            tls.server_name.as_deref(),
            server.host.as_deref(),
            ip,
        )
        // An unverifiable name: the handshake fails, as it should.
        .unwrap_or_else(|| ServerName::try_from("invalid.invalid").expect("a valid DNS name"));
        Some(ProbeTls {
            config: Arc::clone(&tls.client.0),
            name,
        })
    }
}

/// A check's TLS session over its socket, read and written without
/// blocking: plaintext in and out, records pushed and pulled as the
/// socket allows.
struct TlsSock {
    plain: Sock,
    conn: rustls::ClientConnection,
}

impl TlsSock {
    /// Pushes pending records (`WouldBlock` while the socket is full or
    /// still connecting).
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.plain.io())? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

impl Read for TlsSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(&mut self.plain.io())? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS handshake: {e}"),
                ));
            }
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsSock {
    /// Takes the plaintext (rustls holds it until the handshake is done)
    /// and pushes what the socket takes.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        match self.flush() {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        TlsSock::flush(self)
    }
}

/// The status line must come within this many bytes.
const MAX_STATUS_LINE: usize = 1024;

enum Sock {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    Tls(Box<TlsSock>),
}

impl Sock {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
            Sock::Tls(t) => &mut **t,
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
            Sock::Tls(t) => t.plain.take_error(),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
            Sock::Tls(t) => t.plain.source(),
        }
    }

    /// TLS records still to push (the handshake's, the request's).
    fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Sock::Tls(t) => t.flush(),
            _ => Ok(()),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A check in flight.
pub struct Probe {
    sock: Sock,
    pub token: Token,
    request: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    pub started: Instant,
    pub deadline: Instant,
}

/// Where a check is.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for the socket.
    Pending,
    /// The status the server answered, or why there is none.
    Done(Result<u16, String>),
}

impl Probe {
    /// Connects (without waiting) and registers the socket under `token`.
    pub fn start(
        addr: &UpstreamAddr,
        check: &HealthCheck,
        tls: Option<&ProbeTls>,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> io::Result<Probe> {
        let (mut sock, host) = match addr {
            UpstreamAddr::Tcp(a) => (Sock::Tcp(mio::net::TcpStream::connect(*a)?), a.to_string()),
            UpstreamAddr::Unix(p) => (
                Sock::Unix(mio::net::UnixStream::connect(p)?),
                "localhost".to_owned(),
            ),
        };
        if let Some(t) = tls {
            let conn = rustls::ClientConnection::new(Arc::clone(&t.config), t.name.clone())
                .map_err(|e| io::Error::other(format!("TLS session: {e}")))?;
            sock = Sock::Tls(Box::new(TlsSock { plain: sock, conn }));
        }
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry.register(sock.source(), token, interest)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: baton-health-check\r\n\
             Connection: close\r\n\r\n",
            check.path
        );
        Ok(Probe {
            sock,
            token,
            request: request.into_bytes(),
            sent: 0,
            got: Vec::new(),
            started: now,
            deadline: baton_shared::deadline::after(now, check.timeout),
        })
    }

    /// Writes what is left of the request and reads what has come, each
    /// until the socket would block (edge-triggered).
    pub fn advance(&mut self) -> Progress {
        if let Ok(Some(e)) | Err(e) = self.sock.take_error() {
            return Progress::Done(Err(format!("connection failed: {e}")));
        }
        while self.sent < self.request.len() {
            match self.sock.io().write(&self.request[self.sent..]) {
                Ok(0) => return Progress::Done(Err("connection closed".into())),
                Ok(n) => self.sent += n,
                // Still connecting, or the send buffer is full.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Progress::Done(Err(format!("cannot send the check: {e}"))),
            }
        }
        match self.sock.flush_tls() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
            Err(e) => return Progress::Done(Err(format!("cannot send the check: {e}"))),
        }
        let mut buf = [0u8; 512];
        loop {
            match self.sock.io().read(&mut buf) {
                Ok(0) => {
                    return Progress::Done(
                        status_line(&self.got).unwrap_or_else(|| {
                            Err("connection closed before a status line".into())
                        }),
                    );
                }
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    if let Some(result) = status_line(&self.got) {
                        return Progress::Done(result);
                    }
                    if self.got.len() > MAX_STATUS_LINE {
                        return Progress::Done(Err(format!(
                            "no status line in the first {MAX_STATUS_LINE} bytes"
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Progress::Done(Err(format!("cannot read the answer: {e}"))),
            }
        }
    }

    /// Takes the socket out of the loop (it is closed when dropped).
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(self.sock.source());
    }
}

/// `Some` once the first line is complete: its status, or why it is not
/// an HTTP status line.
fn status_line(got: &[u8]) -> Option<Result<u16, String>> {
    let end = got.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&got[..end]);
    let line = line.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let parsed = (version.starts_with("HTTP/1.") && code.len() == 3)
        .then(|| code.parse::<u16>().ok())
        .flatten()
        .filter(|c| (100..=599).contains(c));
    Some(parsed.ok_or_else(|| {
        let shown: String = line.chars().take(80).collect();
        format!("not an HTTP status line: {shown:?}")
    }))
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b"HTTP/1.1 200 OK\r\n"), Some(Ok(200)));
        assert_eq!(status_line(b"HTTP/1.0 503\n"), Some(Ok(503)));
        assert_eq!(status_line(b"HTTP/1.1 20"), None);
        assert!(matches!(status_line(b"SSH-2.0-x\r\n"), Some(Err(_))));
        assert!(matches!(status_line(b"HTTP/1.1 999 x\r\n"), Some(Err(_))));
        assert!(matches!(status_line(b"HTTP/1.1 2000\r\n"), Some(Err(_))));
    }
}
