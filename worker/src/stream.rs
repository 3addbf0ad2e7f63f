//! A client socket, whatever its kind.
//!
//! `Stream` is an enum so the connection code is written once for TCP and
//! unix sockets, and so later kinds fit beside them: a TLS stream will be one
//! more variant whose `sendfile` is not available (the caller then falls back
//! to buffered writes, see `outgoing.rs`).

use std::fs::File;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use mio::event::Source;
use mio::{Interest, Registry, Token};

#[derive(Debug)]
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// Writes from `buf`. `more` says a body follows at once (`MSG_MORE`,
    /// the per-call TCP_CORK), so the kernel holds the head back and sends
    /// it in the same segment as the start of the body instead of in a small
    /// packet of its own. The sendfile that follows uncorks, as it is sent
    /// without the flag. Only on TCP: a unix socket has no segments to fill.
    pub fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
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

    /// Sends our FIN; reading stays possible (lingering close).
    /// The client's address as the access log shows it.
    pub fn peer_label(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|_| "-".into()),
            Stream::Unix(_) => "unix:".into(),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
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
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}
