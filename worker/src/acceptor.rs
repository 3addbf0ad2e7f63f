//! The worker's side of a shared listen socket.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use baton_shared::config::ListenAddr;
use std::os::fd::{AsRawFd, RawFd};

use log::debug;
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
    /// `defer_accept` is the config's (see `tune_listener`), not applied to
    /// a retired socket taken over.
    pub fn new(listener: Listener, defer_accept: Duration) -> io::Result<Acceptor> {
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
            // A retired socket's options are the master's now (it turned
            // TCP_DEFER_ACCEPT off so that what is on its way arrives).
            if !listener.taken_over {
                tune_listener(&l, defer_accept);
            }
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
/// Socket options of a TCP listener. Set by every worker of every
/// generation on the shared socket: the options are the socket's, so the
/// newest generation's config wins, and connections accepted from then on
/// inherit them.
fn tune_listener(l: &std::net::TcpListener, defer_accept: Duration) {
    // Heads go out with MSG_MORE and bodies with sendfile, so Nagle would
    // only delay the last partial segment.
    if let Err(e) = nix::sys::socket::setsockopt(l, nix::sys::socket::sockopt::TcpNoDelay, &true) {
        debug!("TCP_NODELAY on a listener: {e}");
    }
    // At most this much unsent data in a socket: sendfile stops there and
    // EPOLLOUT comes back when it has drained. Without it, one sendfile
    // queues up to a megabyte, and the segments that do not fit the
    // window are transmitted later from the ACK's softirq, on whatever CPU
    // the client runs on: the server's work lands on the client's core.
    // Measured on loopback (bench/static.sh's 10 MiB load, wrk -c8): 2.0
    // GB/s without, 3.1 with 32 to 128 KiB, 2.7 with 256 KiB. Only unsent
    // bytes count, not bytes in flight, so a long fat link is not slowed:
    // 128 KiB is a millisecond of a gigabit link to wake up and refill.
    set_tcp_int(l, libc::TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", 128 * 1024);
    // The kernel hands a connection over once its first bytes arrived
    // (or after this many seconds), not when the handshake completes. A
    // short connection then wakes a worker once instead of twice: for the
    // accept, then for the request. Each wake-up is paid by the client's
    // CPU, which sends the packet that causes it; on loopback with a
    // CPU-bound wrk, connection-per-request went from 21.1-21.3k to
    // 24.1-24.3k req/s (nginx, without `deferred`: 22.0-22.2k). nginx's
    // `listen ... deferred` sets the same option, to 1 s. A client that
    // connects and stays silent is handed over when the time is up and
    // then has `header_timeout`. Set every time, 0 included, so that a
    // reload can turn it off.
    let secs = defer_accept
        .as_secs()
        .saturating_add(u64::from(defer_accept.subsec_nanos() > 0));
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    set_tcp_int(l, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", secs);
}

/// Sets an integer IPPROTO_TCP option that nix has no wrapper for; a
/// failure only costs speed, so it is logged at debug level.
fn set_tcp_int(l: &std::net::TcpListener, option: libc::c_int, name: &str, value: libc::c_int) {
    // SAFETY: a valid socket fd, and a pointer to a c_int with its size;
    // the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!("{name} on a listener: {}", io::Error::last_os_error());
    }
}

fn is_unix_socket(fd: &std::os::fd::OwnedFd) -> io::Result<bool> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    Ok(addr.family() == Some(AddressFamily::Unix))
}
