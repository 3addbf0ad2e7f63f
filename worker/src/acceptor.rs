//! The worker's side of a shared listen socket.

use std::io;
use std::net::IpAddr;

use baton_shared::config::ListenAddr;
use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::Listener;
use crate::stream::Stream;

#[derive(Debug)]
pub enum Acceptor {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Acceptor {
    /// Takes over a listen socket the master passed down. It is already
    /// non-blocking; set it anyway, as accepting must never block the loop.
    pub fn new(listener: Listener) -> io::Result<Acceptor> {
        let unix = match listener.addr {
            ListenAddr::Tcp(_) => false,
            ListenAddr::Unix(_) => true,
            // A socket a superserver passed: its family says what it is.
            ListenAddr::Stdin => is_unix_socket(&listener.fd)?,
        };
        if unix {
            let l = std::os::unix::net::UnixListener::from(listener.fd);
            l.set_nonblocking(true)?;
            Ok(Acceptor::Unix(mio::net::UnixListener::from_std(l)))
        } else {
            let l = std::net::TcpListener::from(listener.fd);
            l.set_nonblocking(true)?;
            // Heads go out with MSG_MORE and bodies with sendfile, so Nagle
            // would only delay the last partial segment. Set on the listen
            // socket, TCP_NODELAY is inherited by every accepted socket
            // (Linux copies it at accept), which saves a setsockopt per
            // connection; setting it again from every worker is harmless.
            let _ = nix::sys::socket::setsockopt(&l, nix::sys::socket::sockopt::TcpNoDelay, &true);
            Ok(Acceptor::Tcp(mio::net::TcpListener::from_std(l)))
        }
    }

    /// Accepts one connection (non-blocking, close-on-exec), with the
    /// client's address (`None` on a unix socket) as accept(2) gave it,
    /// which spares a getpeername per connection.
    pub fn accept(&self) -> io::Result<(Stream, Option<IpAddr>)> {
        match self {
            Acceptor::Tcp(l) => {
                let (s, addr) = l.accept()?;
                Ok((Stream::Tcp(s), Some(addr.ip())))
            }
            Acceptor::Unix(l) => Ok((Stream::Unix(l.accept()?.0), None)),
        }
    }
}

fn is_unix_socket(fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    use std::os::fd::AsRawFd;
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    Ok(addr.family() == Some(AddressFamily::Unix))
}

impl Source for Acceptor {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Acceptor::Tcp(l) => l.register(registry, token, interests),
            Acceptor::Unix(l) => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Acceptor::Tcp(l) => l.reregister(registry, token, interests),
            Acceptor::Unix(l) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Acceptor::Tcp(l) => l.deregister(registry),
            Acceptor::Unix(l) => l.deregister(registry),
        }
    }
}
