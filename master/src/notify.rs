//! systemd's notify protocol (sd_notify), a no-op without NOTIFY_SOCKET.
//!
//! READY=1 (with MAINPID) once the first generation serves and again after
//! each reload; RELOADING=1 with MONOTONIC_USEC when a reload starts
//! (systemd 253 and `Type=notify-reload` require the timestamp); STOPPING=1
//! on stop; a STATUS= line naming the serving generation.
//!
//! Written here rather than with the sd-notify crate because that crate
//! sends on a blocking socket: a unix datagram queue holds only
//! net.unix.max_dgram_qlen (10) messages, so a reader that falls behind (a
//! stuck service manager, a test) would freeze the master's whole loop.
//! Here the send is non-blocking, and a message the reader has no room for
//! is dropped with a log line: the master never waits on its notifier.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

fn socket_addr() -> Option<io::Result<SocketAddr>> {
    let path = std::env::var_os("NOTIFY_SOCKET")?;
    let bytes = path.as_encoded_bytes();
    Some(match bytes.strip_prefix(b"@") {
        // '@' names a socket in the abstract namespace.
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    })
}

fn send(message: &str) {
    let Some(addr) = socket_addr() else {
        return;
    };
    let result = addr.and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        socket.send_to_addr(message.as_bytes(), &addr)
    });
    match result {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            log::warn!("the service manager is not reading notifications; dropped {message:?}")
        }
        Err(e) => log::debug!("sd_notify failed: {e}"),
    }
}

fn monotonic_usec() -> i128 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => i128::from(ts.tv_sec()) * 1_000_000 + i128::from(ts.tv_nsec()) / 1000,
        Err(_) => 0,
    }
}

pub fn ready(generation: u64) {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS=generation {generation} serving\n",
        std::process::id()
    ));
}

pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading\n",
        monotonic_usec()
    ));
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping\n");
}
