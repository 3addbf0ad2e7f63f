//! Admin API helpers: configs with an admin API, requests to it, and
//! requests from callers who are not root (`connect_as`).

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::{Env, Response, read_response};

/// `config` with an admin API on `admin.sock` in the env's dir.
pub fn with_admin(env: &Env, config: &str) -> String {
    format!(
        "{config}\n[admin]\nlisten = \"unix:{}\"\n",
        env.path("admin.sock").display()
    )
}

/// Sends one request to the admin API on `sock` and reads the reply.
pub fn admin_call(sock: &std::path::Path, method: &str, path: &str, body: &str) -> Response {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("admin socket");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("admin request");
    read_response(&mut BufReader::new(s), false).expect("admin reply")
}

/// The body of `GET path` on the admin API, as text.
pub fn admin_get(sock: &std::path::Path, path: &str) -> String {
    String::from_utf8_lossy(&admin_call(sock, "GET", path, "").body).into_owned()
}

/// The token the TCP admin tests configure (32 characters, the minimum).
pub const ADMIN_TOKEN: &str = "test-token-0123456789abcdef-0123";

/// `config` with an admin API on loopback TCP `port`, its token in
/// `admin.token` (mode 0600) in the env's dir.
pub fn with_tcp_admin(env: &Env, config: &str, port: u16) -> String {
    let token = env.write_file("admin.token", format!("{ADMIN_TOKEN}\n").as_bytes());
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!(
        "{config}\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        token.display()
    )
}

/// Where an admin request goes.
#[derive(Debug, Clone, Copy)]
pub enum AdminAt<'a> {
    Unix(&'a std::path::Path),
    Tcp(u16),
}

/// A connection to `at` made by a process running as `uid:gid` with no
/// supplementary groups: a forked child drops privileges, connects, and
/// hands the socket back over a socketpair (SCM_RIGHTS). The kernel
/// records the child's credentials at connect, so the server sees a
/// caller who is not root, while the test keeps the socket and can write
/// on it when it likes. Dropping privileges needs root: callers skip when
/// `!is_root()`. Err: what the child's connect (or privilege drop) failed
/// with.
pub fn connect_as(uid: u32, gid: u32, at: AdminAt<'_>) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    // Everything the child uses is made before fork: the test process has
    // threads, so the child may only make async-signal-safe calls (no
    // allocation, no locks) until it exits.
    // SAFETY: zeroed sockaddr_storage is a valid (empty) address.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let (family, addr_len) = match at {
        AdminAt::Unix(path) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_un.
            let un = unsafe { &mut *(&mut addr as *mut _ as *mut libc::sockaddr_un) };
            un.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let bytes = path.as_os_str().as_bytes();
            assert!(bytes.len() < un.sun_path.len(), "socket path too long");
            for (d, s) in un.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            (libc::AF_UNIX, std::mem::size_of::<libc::sockaddr_un>())
        }
        AdminAt::Tcp(port) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut addr as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            (libc::AF_INET, std::mem::size_of::<libc::sockaddr_in>())
        }
    };
    let mut pair = [0; 2];
    // SAFETY: `pair` has room for the two fds socketpair writes.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here alone.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let mut cmsg_buf = [0u64; 8];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen =
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as _;
    let theirs_raw = {
        use std::os::fd::AsRawFd;
        theirs.as_raw_fd()
    };

    // SAFETY: fork has no preconditions; the child below only makes
    // async-signal-safe calls on memory prepared above, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child: raw syscalls only, then _exit.
        unsafe {
            let errno = || *libc::__errno_location();
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(100);
            }
            let s = libc::socket(family, libc::SOCK_STREAM, 0);
            if s < 0 {
                libc::_exit(errno());
            }
            if libc::connect(
                s,
                &addr as *const _ as *const libc::sockaddr,
                addr_len as u32,
            ) != 0
            {
                libc::_exit(errno());
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), s);
            if libc::sendmsg(theirs_raw, &msg, 0) != 1 {
                libc::_exit(errno());
            }
            libc::_exit(0);
        }
    }
    drop(theirs);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        101
    };
    match code {
        0 => {}
        100 => return Err(std::io::Error::other(format!("cannot become uid {uid}"))),
        101 => return Err(std::io::Error::other("the connecting child was killed")),
        errno => return Err(std::io::Error::from_raw_os_error(errno)),
    }
    // SAFETY: an all-zero msghdr is valid; pointers set as for the child.
    let mut rmsg: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut rbuf = [0u64; 8];
    let mut rbyte = [0u8; 1];
    let mut riov = libc::iovec {
        iov_base: rbyte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    rmsg.msg_iov = &mut riov;
    rmsg.msg_iovlen = 1;
    rmsg.msg_control = rbuf.as_mut_ptr().cast();
    rmsg.msg_controllen = std::mem::size_of_val(&rbuf) as _;
    let n = {
        use std::os::fd::AsRawFd;
        // SAFETY: rmsg points at live buffers of the sizes it states.
        unsafe { libc::recvmsg(ours.as_raw_fd(), &mut rmsg, libc::MSG_CMSG_CLOEXEC) }
    };
    if n != 1 {
        return Err(std::io::Error::other("no socket came back from the child"));
    }
    // SAFETY: the kernel filled rmsg's control buffer; one SCM_RIGHTS fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&rmsg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no socket came back from the child"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Sends one admin request on a socket `connect_as` made and reads the
/// reply. `headers` are extra `Name: value` lines.
pub fn admin_on(
    fd: std::os::fd::OwnedFd,
    at: AdminAt<'_>,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> std::io::Result<Response> {
    let host = match at {
        AdminAt::Unix(_) => "localhost".to_string(),
        AdminAt::Tcp(port) => format!("127.0.0.1:{port}"),
    };
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    fn exchange<S: std::io::Read + Write>(mut s: S, req: &str) -> std::io::Result<Response> {
        s.write_all(req.as_bytes())?;
        read_response(&mut BufReader::new(s), false)
    }
    let timeout = Some(Duration::from_secs(30));
    match at {
        AdminAt::Unix(_) => {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_read_timeout(timeout)?;
            exchange(s, &req)
        }
        AdminAt::Tcp(_) => {
            let s = TcpStream::from(fd);
            s.set_read_timeout(timeout)?;
            exchange(s, &req)
        }
    }
}

/// One admin request from a caller running as `uid:gid` (see `connect_as`).
pub fn admin_as(
    uid: u32,
    gid: u32,
    at: AdminAt<'_>,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> std::io::Result<Response> {
    let fd = connect_as(uid, gid, at)?;
    admin_on(fd, at, method, path, headers, body)
}

/// `admin_as` as nobody (65534:65534).
pub fn admin_as_nobody(
    at: AdminAt<'_>,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> std::io::Result<Response> {
    admin_as(65534, 65534, at, method, path, headers, body)
}
