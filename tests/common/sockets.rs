//! Which TCP sockets listen, asked of the kernel with sock_diag (what `ss`
//! uses) instead of reading /proc/net/tcp.
//!
//! /proc/net/tcp lists every socket of the network namespace: on a machine
//! where load tests leave tens of thousands in TIME_WAIT, one read formats
//! megabytes and takes tens of milliseconds of kernel time, and a test that
//! polls it while its server runs starves that server (and every other test
//! doing the same) for seconds. A sock_diag request for the LISTEN state
//! only makes the kernel walk its listening sockets and nothing else.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` in the kernel's TCP states (a bit in `idiag_states`).
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_sockid`: ports, two 16-byte addresses, interface,
/// cookie.
const SOCKID: usize = 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, the sockid, then
/// expires, rqueue, wqueue, uid and inode.
const DIAG_MSG: usize = 4 + SOCKID + 20;

/// The inodes of the IPv4 TCP sockets listening on `ip:port`.
pub fn tcp4_listeners(ip: Ipv4Addr, port: u16) -> io::Result<Vec<u64>> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    // nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states,
    // and a zeroed sockid (no filter: the answer is filtered here).
    let len = NLMSG_HDR + 8 + SOCKID;
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req.resize(len, 0);
    // SAFETY: `req` is valid for its length, `kernel` is a valid
    // sockaddr_nl of the size passed, and the fd is open.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }

    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid and writable for its length; the fd is open.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + NLMSG_HDR <= data.len() {
            let word = |at: usize| u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
            let msg_len = word(off) as usize;
            let kind = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
            if msg_len < NLMSG_HDR || off + msg_len > data.len() {
                return Err(io::Error::other("sock_diag: truncated message"));
            }
            match kind as i32 {
                libc::NLMSG_DONE => return Ok(found),
                libc::NLMSG_ERROR => {
                    let code = word(off + NLMSG_HDR) as i32;
                    return Err(io::Error::from_raw_os_error(-code));
                }
                _ if msg_len >= NLMSG_HDR + DIAG_MSG => {
                    let m = off + NLMSG_HDR;
                    let sport = u16::from_be_bytes([data[m + 4], data[m + 5]]);
                    let src = Ipv4Addr::new(data[m + 8], data[m + 9], data[m + 10], data[m + 11]);
                    if sport == port && src == ip {
                        found.push(u64::from(word(m + DIAG_MSG - 4)));
                    }
                }
                _ => {}
            }
            // Messages are 4-byte aligned.
            off += (msg_len + 3) & !3;
        }
    }
}
