//! A connection to an upstream server: TCP or unix, non-blocking from the
//! first syscall (the connect itself returns at once and completes on the
//! first writable event).

use std::io::{self, Read, Write};
use std::time::Instant;

use baton_shared::config::UpstreamAddr;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An upstream connection and what the pool needs to know about it.
pub struct UpConn {
    pub socket: Socket,
    /// The server it goes to (index in its upstream's `servers`).
    pub server: usize,
    /// The connect has completed (first writable event, no error).
    pub connected: bool,
    /// Requests sent on it so far.
    pub requests: u64,
    /// It came from the pool: it may have been closed by the server
    /// meanwhile, which is a retry, not a failure.
    pub reused: bool,
    /// When it went idle (in the pool).
    pub idle_since: Instant,
    pub readable: bool,
    pub writable: bool,
    pub registered: bool,
}

impl UpConn {
    /// Starts a non-blocking connect.
    pub fn connect(addr: &UpstreamAddr, server: usize, now: Instant) -> io::Result<UpConn> {
        let socket = match addr {
            UpstreamAddr::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                // Request heads and small bodies go at once.
                let _ = s.set_nodelay(true);
                Socket::Tcp(s)
            }
            UpstreamAddr::Unix(p) => Socket::Unix(UnixStream::connect(p)?),
        };
        Ok(UpConn {
            socket,
            server,
            connected: false,
            requests: 0,
            reused: false,
            idle_since: now,
            readable: false,
            writable: false,
            registered: false,
        })
    }

    /// After a writable event: whether the connect succeeded (`Ok(true)`),
    /// is still in progress (`Ok(false)`), or failed.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        let (err, peer) = match &self.socket {
            Socket::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            Socket::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = err {
            return Err(e);
        }
        match peer {
            Ok(()) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A pooled connection is still usable: nothing to read (the server
    /// sent no FIN, no stray bytes) and no error.
    pub fn still_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self.read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            // EOF, a stray byte (a response to nothing) or an error.
            _ => false,
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.socket {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.socket {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    /// Tells the server nothing more is coming (a tunnel's client ended).
    pub fn shutdown_write(&self) {
        let _ = match &self.socket {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Watched (again) for the connection `token` belongs to.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.watch(registry, token, Interest::READABLE | Interest::WRITABLE)
    }

    /// Watched, idle in the pool, for input only: the server closing it
    /// (or sending what no request asked for) wakes the pool, which
    /// closes it then rather than when it would be reused.
    pub fn watch_idle(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.watch(registry, token, Interest::READABLE)
    }

    fn watch(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        let source: &mut dyn Source = match &mut self.socket {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
        };
        if self.registered {
            registry.reregister(source, token, interest)
        } else {
            self.registered = true;
            registry.register(source, token, interest)
        }
    }
}
