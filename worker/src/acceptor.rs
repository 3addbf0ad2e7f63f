//! The worker's side of a shared listen socket.

use std::io;
use std::net::IpAddr;

use baton_shared::config::ListenAddr;
use std::os::fd::{AsRawFd, RawFd};

use mio::{Poll, Token};

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
    /// Its socket options are the master's to set (a generation that fails
    /// to start must leave them as they were): a worker never changes them.
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
            Ok(Acceptor::Tcp(mio::net::TcpListener::from_std(l)))
        }
    }

    /// Registers for incoming connections, edge-triggered as mio does, and
    /// with EPOLLEXCLUSIVE, which mio cannot express: every worker of every
    /// generation waits on the same listen socket, and without it each
    /// connection wakes all of them, all but one to find accept4 saying
    /// EAGAIN (1.2 accept4 calls per connection with 2 workers, measured;
    /// more with more). With it the kernel wakes one waiting worker. The
    /// token goes in the event's data as mio reads it back (`u64`).
    pub fn register(&self, poll: &Poll, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
            u64: token.0 as u64,
        };
        // SAFETY: both fds are open (the poll and the listener outlive the
        // call) and `event` is a valid epoll_event the kernel only reads.
        let rc = unsafe {
            libc::epoll_ctl(
                poll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                self.raw_fd(),
                &mut event,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Stops waiting on the socket (draining). Done here rather than by
    /// mio, which did not register it. Closing our fd would not be enough:
    /// the master and the other workers share the open file, which keeps
    /// the registration alive.
    pub fn deregister(&self, poll: &Poll) -> io::Result<()> {
        // SAFETY: as in `register`; the event argument may be null for DEL.
        let rc = unsafe {
            libc::epoll_ctl(
                poll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Moves this worker to the back of the socket's wake-up order. With
    /// EPOLLEXCLUSIVE the kernel wakes the first waiting epoll in the
    /// socket's wait queue, which is the one registered first: an idle
    /// worker at its head is woken for every connection, so connections
    /// that arrive one by one (a browser's, a pool's) all went to the same
    /// worker (50 of 50 on one of two workers, measured). Registering again
    /// puts this worker's entry at the tail, so the next connection wakes
    /// another idle worker first: round robin among the idle ones, with the
    /// queue still shared (nothing queued is lost on reload). If the socket
    /// has connections queued, the new registration reports them at once.
    pub fn requeue(&self, poll: &Poll, token: Token) -> io::Result<()> {
        match self.deregister(poll) {
            Ok(()) => {}
            // Not registered (a failed requeue before): register below.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        self.register(poll, token)
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Acceptor::Tcp(l) => l.as_raw_fd(),
            Acceptor::Unix(l) => l.as_raw_fd(),
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

/// Options set once on a TCP listen socket, which every accepted socket
/// inherits (Linux copies them at accept: no setsockopt per connection).
/// Setting them again from every worker and generation is harmless; a
/// failure only costs speed, so it is logged, not fatal.
fn is_unix_socket(fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    Ok(addr.family() == Some(AddressFamily::Unix))
}
