//! A client socket, whatever its kind.
//!
//! `Stream` is an enum so the connection code is written once for TCP,
//! unix sockets and TLS over either. A TLS stream is a rustls
//! `ServerConnection` over a plain stream, driven without blocking: `read`
//! feeds it what the socket has and returns plaintext, `send` hands it
//! plaintext (up to its buffer limit, which is the back-pressure) and pushes
//! what it can to the socket; what the socket does not take waits in rustls
//! until `flush` on the next writable event. Its `sendfile` reads the file
//! in chunks instead (no sendfile under TLS).

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

/// TLS over a plain stream.
#[derive(Debug)]
pub struct TlsStream {
    inner: Stream,
    conn: rustls::ServerConnection,
}

/// Plaintext read from a file per TLS write when sending a file.
const TLS_FILE_CHUNK: usize = 16 * 1024;

impl Stream {
    /// Wraps an accepted plain stream in a TLS session.
    pub fn tls(inner: Stream, conn: rustls::ServerConnection) -> Stream {
        Stream::Tls(Box::new(TlsStream { inner, conn }))
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
            Stream::Tls(t) => t.read(buf),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// TLS output that rustls holds and the socket has not taken yet.
    pub fn has_pending(&self) -> bool {
        match self {
            Stream::Tls(t) => t.conn.wants_write(),
            _ => false,
        }
    }

    /// Pushes pending TLS output to the socket (`WouldBlock` if it is full).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.flush(),
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

    /// Sends up to `count` bytes of `file` from `offset` with sendfile(2),
    /// straight from the page cache. `Ok(0)` means the file ended early.
    pub fn sendfile(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize> {
        if let Stream::Tls(t) = self {
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

impl Write for Plain<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf, false)
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
            if self.conn.read_tls(&mut Plain(&mut self.inner))? == 0 {
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

    /// Takes what plaintext rustls's buffer has room for; `WouldBlock` if
    /// none (the socket is not taking what is already there). With
    /// `flush_now` false the records wait in rustls for the next write
    /// (head and body in one syscall), unless nothing more fits.
    fn write(&mut self, buf: &[u8], flush_now: bool) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        if flush_now || n < buf.len() {
            match self.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
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
