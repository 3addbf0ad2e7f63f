//! A client socket, whatever its kind (and an upstream one: the proxy's
//! connections to HTTPS upstreams are the same TLS stream with a client
//! session, see `Stream::tls_client` and `handshake`).
//!
//! `Stream` is an enum so the connection code is written once for TCP,
//! unix sockets and TLS over either. A TLS stream is a rustls
//! connection over a plain stream, driven without blocking: `read`
//! feeds it what the socket has and returns plaintext, `send` hands it
//! plaintext (up to its buffer limit, which is the back-pressure) and pushes
//! what it can to the socket; what the socket does not take waits in rustls
//! until `flush` on the next writable event. Its `sendfile` reads the file
//! in chunks instead (no sendfile under TLS).
//!
//! Whatever the kind, a write's `WouldBlock` means the socket refused
//! bytes, never that a buffer of ours (rustls's) is full: the connection
//! then waits for a writable edge, and edge-triggered epoll raises one only
//! after the socket ran out of room.
//!
//! A client that speaks plain HTTP to a TLS port is told so in the clear:
//! the first byte a TLS client sends starts a handshake record (0x16),
//! a plain HTTP one starts a method name. Seen before rustls gets it, the
//! stream reports `PlainHttp` and from then on reads and writes unencrypted,
//! for the connection to send its 400 and close.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use mio::event::Source;
use mio::{Interest, Registry, Token};

#[derive(Debug)]
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    Tls(Box<TlsStream>),
}

/// Where a handshake is (`Stream::handshake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Done,
    /// Waiting for the socket to become readable...
    Read,
    /// ... or writable.
    Write,
}

/// TLS over a plain stream.
#[derive(Debug)]
pub struct TlsStream {
    inner: Stream,
    /// A server session (a client's connection) or a client one (to an
    /// HTTPS upstream).
    conn: rustls::Connection,
    /// The first byte from the client has been looked at (`sniff`).
    sniffed: bool,
    /// ... and it was not TLS but plain HTTP: the rest goes in the clear.
    plain_http: bool,
}

/// The error a TLS stream's read returns when its client speaks plain HTTP.
#[derive(Debug)]
struct PlainHttp;

impl std::fmt::Display for PlainHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plain HTTP sent to a TLS port")
    }
}

impl std::error::Error for PlainHttp {}

/// Whether `first`, the first byte of a connection, starts plain HTTP: a
/// method is a token, in practice letters, and no TLS record type (20 to
/// 24, or an SSLv2 length with its top bit set) is a letter.
fn starts_plain_http(first: u8) -> bool {
    first.is_ascii_alphabetic()
}

/// Plaintext read from a file per TLS write when sending a file.
const TLS_FILE_CHUNK: usize = 16 * 1024;

impl Stream {
    /// Wraps an accepted plain stream in a TLS session.
    pub fn tls(inner: Stream, conn: rustls::ServerConnection) -> Stream {
        Stream::Tls(Box::new(TlsStream {
            inner,
            conn: conn.into(),
            sniffed: false,
            plain_http: false,
        }))
    }

    /// Wraps a connected (or connecting) plain stream to an upstream in a
    /// TLS client session; `handshake` drives it until it is complete.
    pub fn tls_client(inner: Stream, conn: rustls::ClientConnection) -> Stream {
        Stream::Tls(Box::new(TlsStream {
            inner,
            conn: conn.into(),
            // Only a client's first byte is sniffed for plain HTTP.
            sniffed: true,
            plain_http: false,
        }))
    }

    /// The plain socket (under TLS, the one TLS runs over).
    pub fn plain(&self) -> &Stream {
        match self {
            Stream::Tls(t) => t.inner.plain(),
            s => s,
        }
    }

    /// Drives a TLS session's handshake as far as the socket allows, each
    /// direction until it would block (edge-triggered). `Done` once it is
    /// complete (a plain stream has none); what it still has to send then
    /// goes out with the next write or flush. A failed handshake (an
    /// unknown CA, a name the certificate does not cover, an expired
    /// certificate) is an `InvalidData` error carrying rustls's reason,
    /// after its alert was sent.
    pub fn handshake(&mut self) -> io::Result<Handshake> {
        let Stream::Tls(t) = self else {
            return Ok(Handshake::Done);
        };
        while t.conn.is_handshaking() {
            match t.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Handshake::Write),
                Err(e) => return Err(e),
            }
            match t.read_tls() {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during the TLS handshake",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Handshake::Read),
                Err(e) => return Err(e),
            }
            if let Err(e) = t.conn.process_new_packets() {
                // Let the alert go out: the peer learns why.
                let _ = t.flush();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS handshake: {e}"),
                ));
            }
        }
        match t.flush() {
            Ok(()) => Ok(Handshake::Done),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Handshake::Done),
            Err(e) => Err(e),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(t) => t.inner.fd(),
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(t) if t.plain_http => t.inner.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }

    /// A TLS session whose client and we agreed on `h2` (ALPN): the
    /// connection speaks HTTP/2 from its first byte of application data.
    pub fn negotiated_h2(&self) -> bool {
        matches!(self, Stream::Tls(t) if !t.plain_http && t.conn.alpn_protocol() == Some(b"h2"))
    }

    /// The socket's fd, for registrations made without the stream at
    /// hand (an HTTP/2 connection's stream lives inside its engine).
    pub fn raw_fd(&self) -> RawFd {
        self.fd()
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// A TLS port whose client spoke plain HTTP (its read said `PlainHttp`):
    /// from now on the stream reads and writes in the clear.
    pub fn plain_http_on_tls(&self) -> bool {
        matches!(self, Stream::Tls(t) if t.plain_http)
    }

    /// Whether a read that returns less than asked proves the source empty
    /// for now, so that the next bytes raise a new edge and the read that
    /// would only say `WouldBlock` can be skipped. Only a plain TCP socket
    /// can say so: `recv` takes everything queued up to the buffer's size.
    /// A TLS read returns one record's plaintext (or what one `read_tls`
    /// took) while more records wait, decrypted or in the socket; a unix
    /// socket may stop at a message boundary (credentials); streams to
    /// come (HTTP/2, proxied) buffer the same way. Every other stream is
    /// read until `WouldBlock`.
    pub fn short_read_means_empty(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    /// TLS output that rustls holds and the socket has not taken yet.
    pub fn has_pending(&self) -> bool {
        match self {
            Stream::Tls(t) => !t.plain_http && t.conn.wants_write(),
            _ => false,
        }
    }

    /// Pushes pending TLS output to the socket (`WouldBlock` if it is full).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(t) if !t.plain_http => t.flush(),
            _ => Ok(()),
        }
    }

    /// Writes from `buf`. `more` says a body follows at once (`MSG_MORE`,
    /// the per-call TCP_CORK), so the kernel holds the head back and sends
    /// it in the same segment as the start of the body instead of in a small
    /// packet of its own. The sendfile that follows uncorks, as it is sent
    /// without the flag. Only on TCP: a unix socket has no segments to fill.
    pub fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        if let Stream::Tls(t) = self {
            if t.plain_http {
                return t.inner.send(buf, more);
            }
            // A body follows at once: let it share the socket write.
            return t.write(buf, !more);
        }
        let cork = more && matches!(self, Stream::Tcp(_));
        let flags = libc::MSG_NOSIGNAL | if cork { libc::MSG_MORE } else { 0 };
        // SAFETY: `buf` is a valid slice for `buf.len()` bytes and the fd is
        // owned by `self` for the duration of the call.
        let n = unsafe { libc::send(self.fd(), buf.as_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes from several buffers in one system call (sendmsg(2)), as if
    /// they were one: TLS records queued in rustls go out together, in as
    /// few segments as the socket makes of them, instead of a `send` each.
    /// Plain sockets only; a TLS stream's own output goes through `send`.
    fn send_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // The kernel takes at most IOV_MAX (1024) entries; rustls passes
        // at most 64.
        let bufs = &bufs[..bufs.len().min(1024)];
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `struct iovec` on Unix (std
        // guarantees it); the kernel only reads through the pointers.
        msg.msg_iov = bufs.as_ptr().cast_mut().cast();
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: `msg` points at `bufs.len()` valid iovecs, each valid for
        // its length for the duration of the call; the fd is owned by
        // `self`.
        let n = unsafe { libc::sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sends up to `count` bytes of `file` from `offset` with sendfile(2),
    /// straight from the page cache. `Ok(0)` means the file ended early.
    pub fn sendfile(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize> {
        if let Stream::Tls(t) = self {
            if t.plain_http {
                return t.inner.sendfile(file, offset, count);
            }
            return t.send_file(file, offset, count);
        }
        let mut off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both fds are open for the duration of the call (owned by
        // `self` and `file`), and `off` is a valid, writable off_t.
        let n = unsafe { libc::sendfile(self.fd(), file.as_raw_fd(), &mut off, count) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sends our FIN (after a TLS close_notify); reading stays possible.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Tls(t) if t.plain_http => t.inner.shutdown_write(),
            Stream::Tls(t) => {
                t.conn.send_close_notify();
                // Best effort: the response is already out (see
                // `Outgoing::write_to`), the alert is a few bytes.
                let _ = t.flush();
                t.inner.shutdown_write()
            }
        }
    }
}

/// The plain stream under a TLS session, as rustls reads and writes it.
struct Plain<'a>(&'a mut Stream);

impl Read for Plain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// The plain stream on a TLS session's first read: looks at the first
/// byte before rustls does (see `starts_plain_http`).
struct Sniff<'a> {
    plain: Plain<'a>,
    /// The first byte arrived.
    seen: bool,
    /// ... and it starts plain HTTP (the read then fails, so rustls
    /// neither keeps nor answers it).
    http: bool,
}

impl Read for Sniff<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.plain.read(buf)?;
        if let Some(&first) = buf[..n].first() {
            self.seen = true;
            if starts_plain_http(first) {
                self.http = true;
                return Err(io::Error::new(io::ErrorKind::InvalidData, PlainHttp));
            }
        }
        Ok(n)
    }
}

impl Write for Plain<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf, false)
    }

    /// rustls hands every record it holds at once (`write_tls`): one
    /// system call for all of them. Measured on 100 KiB HTTP/2 responses:
    /// a `send` per 16 KiB record cost about 8 system calls per response,
    /// where h2o makes 1.4.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsStream {
    /// Plaintext from the client; `WouldBlock` once the socket has nothing
    /// more. Handshake messages are processed (and answered) on the way.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end of stream
                // like any other for HTTP/1.1 with lengths.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.read_tls()? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Let the alert go out, then give up on this connection.
                let _ = self.flush();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands what the socket has to rustls (up to what rustls takes at a
    /// time); on the first bytes, checks that they are TLS at all.
    fn read_tls(&mut self) -> io::Result<usize> {
        if self.sniffed {
            return self.conn.read_tls(&mut Plain(&mut self.inner));
        }
        let mut sniff = Sniff {
            plain: Plain(&mut self.inner),
            seen: false,
            http: false,
        };
        let result = self.conn.read_tls(&mut sniff);
        self.sniffed = sniff.seen;
        if sniff.http {
            self.plain_http = true;
        }
        result
    }

    /// Takes what plaintext rustls's buffer has room for. With `flush_now`
    /// false the records wait in rustls for the next write (head and body
    /// in one syscall), unless nothing more fits.
    ///
    /// `WouldBlock` only when the socket itself refused bytes: the
    /// connection then waits for a writable edge, and epoll raises one only
    /// for a socket that ran out of room (`SOCK_NOSPACE`, set by a refused
    /// send). A full rustls buffer is not that: when it takes nothing, what
    /// it holds is pushed first, and if the socket takes all of it (it has
    /// drained since the last write: the edge that says so has been
    /// consumed) the plaintext is written into the room made.
    fn write(&mut self, buf: &[u8], flush_now: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.conn.writer().write(buf)?;
        if n == 0 {
            // The socket's `WouldBlock` goes to the caller as it is.
            self.flush()?;
            n = self.conn.writer().write(buf)?;
            if n == 0 {
                // Nothing queued and still nothing taken: this session
                // sends no more (closed, or its keys are spent).
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        if flush_now || n < buf.len() {
            match self.flush() {
                Ok(()) => {}
                // Taken by rustls: this write succeeded. The next one finds
                // rustls full and the socket still refusing, and says so.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut Plain(&mut self.inner))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// A file body under TLS: read a chunk at `offset`, encrypt what fits.
    /// `Ok(0)` means the file ended early.
    fn send_file(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize> {
        // Nothing fits while the socket holds back what is queued.
        match self.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let mut chunk = vec![0u8; count.min(TLS_FILE_CHUNK)];
        let n = file.read_at(&mut chunk, offset)?;
        if n == 0 {
            return Ok(0);
        }
        self.write(&chunk[..n], true)
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
            Stream::Tls(t) => t.inner.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
            Stream::Tls(t) => t.inner.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
            Stream::Tls(t) => t.inner.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_told_from_tls_by_its_first_byte() {
        for method in ["GET", "HEAD", "POST", "OPTIONS", "PRI", "get"] {
            assert!(starts_plain_http(method.as_bytes()[0]), "{method}");
        }
        // A TLS record's content types (handshake first), and SSLv2's
        // length with its top bit set.
        for first in [0x14, 0x15, 0x16, 0x17, 0x18, 0x80, 0xff] {
            assert!(!starts_plain_http(first), "{first:#x}");
        }
    }
}
