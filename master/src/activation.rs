//! Listen sockets handed to Baton instead of bound by it: systemd socket
//! activation (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, fds from 3 on,
//! see sd_listen_fds(3)) and an inetd-style superserver's listening socket
//! on fd 0 (`listen = ["stdin"]`).
//!
//! Passed sockets are matched to the config by what they are bound to
//! (getsockname), never by order or name, so a unit file and a config can
//! list them differently. Matches are adopted (kept across reloads like any
//! listener); the others are logged and closed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The first fd systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;

/// A socket passed to us, with systemd's name for it if any.
#[derive(Debug)]
pub struct Passed {
    pub fd: OwnedFd,
    pub name: Option<String>,
}

/// Takes the sockets systemd passed, if they are meant for this process,
/// and removes the variables so nothing started later mistakes them for its
/// own. Call while the master is still single-threaded.
pub fn take_systemd() -> Vec<Passed> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the master has no other thread yet, so nothing can read
        // the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
    if !pid_matches || count <= 0 {
        return Vec::new();
    }
    let mut names = names.split(':');
    (0..count)
        .map(|i| {
            let fd = SD_LISTEN_FDS_START + i;
            // The fds were inherited without CLOEXEC; a binary upgrade
            // execs, and chooses what passes (its state names each fd).
            // SAFETY: fcntl on an inherited fd number; no memory involved.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            Passed {
                // SAFETY: systemd passed fds 3..3+LISTEN_FDS to us and
                // nothing else in this process has claimed them.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                name: names.next().filter(|n| !n.is_empty()).map(String::from),
            }
        })
        .collect()
}

/// Takes fd 0 as a listening socket (inetd `wait` mode): moves it to a new
/// fd and puts /dev/null on 0, so the process's stdin is no longer a socket.
pub fn take_stdin() -> std::io::Result<OwnedFd> {
    if !is_listening(0) {
        return Err(std::io::Error::other(
            "stdin is not a listening socket (start baton from inetd in wait mode, or with a socket on fd 0)",
        ));
    }
    // SAFETY: F_DUPFD_CLOEXEC on fd 0, which is open; the result is a new
    // fd that we own.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by fcntl and belongs to no one else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 between two open fds; replaces fd 0 atomically.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

/// SO_ACCEPTCONN: the socket is in the listening state.
pub fn is_listening(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    rc == 0 && value != 0
}
