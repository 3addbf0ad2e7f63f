//! A connection to an upstream server: TCP or unix, and TLS over either
//! for an HTTPS upstream, non-blocking from the first syscall (the connect
//! itself returns at once and completes on the first writable event; a
//! TLS handshake follows, driven by the events that come next). It is the
//! worker's `Stream`, as a client connection is: one code path for reads,
//! writes and TLS on both sides.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use baton_shared::config::UpstreamAddr;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;

use super::tokens::{Owner, Slot, Tokens};
use crate::stream::{Handshake, Stream};

/// What a connection to a server of an HTTPS upstream needs.
pub struct TlsTarget<'a> {
    pub config: &'a Arc<rustls::ClientConfig>,
    pub name: &'a ServerName<'static>,
}

/// An upstream connection and what the pool needs to know about it.
pub struct UpConn {
    pub stream: Stream,
    /// The server it goes to (index in its upstream's `servers`).
    pub server: usize,
    /// The TCP (or unix) connect has completed.
    tcp_connected: bool,
    /// Connected, and the TLS handshake (if any) is complete: the request
    /// may go.
    pub connected: bool,
    /// Requests sent on it so far.
    pub requests: u64,
    /// It came from the pool: it may have been closed by the server
    /// meanwhile, which is a retry, not a failure.
    pub reused: bool,
    /// When it went idle (in the pool).
    pub idle_since: Instant,
    /// An event came that no read has exhausted yet (a read that blocked,
    /// or a short one on TCP, clears it).
    pub readable: bool,
    pub writable: bool,
    /// An event said the server sent its FIN.
    pub peer_closed: bool,
    /// Registered with the poll (once, under `slot`'s token).
    registered: bool,
    /// Its token, and where its events go.
    pub slot: Slot,
}

impl UpConn {
    /// Starts a non-blocking connect (and, with `tls`, a client session
    /// whose handshake starts once the connect completes).
    pub fn connect(
        addr: &UpstreamAddr,
        server: usize,
        tls: Option<TlsTarget<'_>>,
        tokens: &Tokens,
        now: Instant,
    ) -> io::Result<UpConn> {
        let plain = match addr {
            UpstreamAddr::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                // Request heads and small bodies go at once.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            UpstreamAddr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        };
        let stream = match tls {
            Some(t) => {
                let session = rustls::ClientConnection::new(Arc::clone(t.config), t.name.clone())
                    .map_err(|e| io::Error::other(format!("TLS session: {e}")))?;
                Stream::tls_client(plain, session)
            }
            None => plain,
        };
        Ok(UpConn {
            stream,
            server,
            tcp_connected: false,
            connected: false,
            requests: 0,
            reused: false,
            idle_since: now,
            readable: false,
            writable: false,
            peer_closed: false,
            registered: false,
            slot: Slot::new(tokens),
        })
    }

    /// After an event: whether the connection is ready for the request
    /// (`Ok(true)`), still connecting or in its TLS handshake
    /// (`Ok(false)`), or failed (a refused connect, a failed handshake).
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if !self.tcp_connected {
            if !self.writable {
                return Ok(false);
            }
            let (err, peer) = match self.stream.plain() {
                Stream::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
                Stream::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
                Stream::Tls(_) => (None, Ok(())),
            };
            if let Some(e) = err {
                return Err(e);
            }
            match peer {
                Ok(()) => self.tcp_connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    self.writable = false;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        if !self.readable && !self.writable {
            return Ok(false);
        }
        match self.stream.handshake()? {
            Handshake::Done => {
                self.connected = true;
                Ok(true)
            }
            Handshake::Read => {
                self.readable = false;
                Ok(false)
            }
            Handshake::Write => {
                self.writable = false;
                Ok(false)
            }
        }
    }

    /// A pooled connection is still usable: nothing to read (the server
    /// sent no FIN, no stray bytes) and no error. Under TLS, records that
    /// carry no data (session tickets) are taken on the way.
    pub fn still_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self.read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            // EOF, a stray byte (a response to nothing) or an error.
            _ => false,
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.send(buf, false)
    }

    /// TLS output that the socket has not taken yet.
    pub fn has_pending(&self) -> bool {
        self.stream.has_pending()
    }

    /// Pushes pending TLS output (`WouldBlock` if the socket is full).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        self.stream.flush_pending()
    }

    /// Tells the server nothing more is coming (a tunnel's client ended).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown_write();
    }

    /// Its events go to the exchange of the connection whose upstream
    /// token is `owner` from now on; registered (for reading and writing,
    /// once for its life) if it was not yet.
    pub fn attach(&mut self, registry: &Registry, owner: Token) -> io::Result<()> {
        if !self.registered {
            registry.register(
                &mut self.stream,
                self.slot.token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.registered = true;
        }
        self.slot.set(Owner::Exchange(owner));
        Ok(())
    }

    /// Idle in the pool: its events (the server closing it, or sending
    /// what no request asked for) go to the pool, which then closes it.
    pub fn detach(&mut self) {
        self.slot.set(Owner::Pooled);
    }
}
