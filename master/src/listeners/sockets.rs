//! The system calls behind the listen sockets: binding, and the socket
//! options the master sets on them (workers never change a shared socket:
//! a failed reload must leave every option as it was).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

/// Socket options of a TCP listener, which the connections accepted from
/// it inherit. Set by the master: when it binds a socket for a generation,
/// and on a reload's commit for the sockets that stay.
pub fn tune_tcp(socket: &Socket, defer_accept: Duration) {
    // Heads go out with MSG_MORE and bodies with sendfile, so Nagle would
    // only delay the last partial segment.
    if let Err(e) = socket.set_tcp_nodelay(true) {
        log::debug!("TCP_NODELAY on a listener: {e}");
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
    if let Err(e) = set_int(
        socket,
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        128 * 1024,
    ) {
        log::debug!("TCP_NOTSENT_LOWAT on a listener: {e}");
    }
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
    if let Err(e) = set_int(socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs) {
        log::debug!("TCP_DEFER_ACCEPT on a listener: {e}");
    }
}

/// SO_BINDTOIFINDEX: restricts (or, with 0, unrestricts) which interface's
/// traffic a socket takes. socket2 only offers the by-name variant, which
/// needs an existing interface.
pub fn bind_to_ifindex(socket: &Socket, index: libc::c_int) -> io::Result<()> {
    set_int(socket, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, index)
}

/// An integer socket option.
pub fn set_int(
    socket: &Socket,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a valid fd, a pointer to a live c_int and its
    // exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn bind_tcp(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // [::]:80 and 0.0.0.0:80 are separate config entries, separate sockets.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

pub fn bind_unix(path: &Path, backlog: i32, mode: u32) -> io::Result<(Socket, (u64, u64))> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        // A live server answers on it: never take over its path.
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                log::info!("removing stale socket file {}", path.display());
                std::fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    socket.listen(backlog)?;
    Ok((socket, (meta.dev(), meta.ino())))
}
