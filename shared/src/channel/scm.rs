//! File descriptors over a unix stream socket (SCM_RIGHTS), both ways.
//!
//! Receiving is done by hand rather than with nix, whose `cmsgs()` refuses a
//! truncated message (MSG_CTRUNC) without handing over the fds that did
//! arrive, which would then stay open for good.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// The kernel's limit of fds in one SCM_RIGHTS message (SCM_MAX_FD).
pub(super) const SCM_MAX_FD: usize = 253;

/// Room for SCM_MAX_FD fds in a control message.
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const ROOM: usize = unsafe { libc::CMSG_SPACE((SCM_MAX_FD * 4) as u32) } as usize;

/// What one recvmsg brought.
pub(super) struct Received {
    pub bytes: usize,
    /// Close-on-exec (MSG_CMSG_CLOEXEC), ours to own.
    pub fds: Vec<OwnedFd>,
    /// The kernel dropped fds that did not fit (MSG_CTRUNC).
    pub truncated: bool,
}

/// recvmsg(2) into `buf`, non-blocking, with room for `room` fds (at most
/// SCM_MAX_FD).
pub(super) fn recv(stream: &UnixStream, buf: &mut [u8], room: usize) -> io::Result<Received> {
    // Aligned for cmsghdr: it holds a size_t and two ints, so u64 will do.
    let mut space = [0u64; ROOM.div_ceil(8)];
    let space_len = std::mem::size_of_val(&space);
    // SAFETY: as for ROOM.
    let wanted = unsafe { libc::CMSG_SPACE((room.min(SCM_MAX_FD) * 4) as u32) } as usize;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = wanted.min(space_len) as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and at `space`, which
    // outlive the call and have the lengths given.
    let n = unsafe {
        libc::recvmsg(
            stream.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let bytes = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let start = space.as_ptr() as usize;
    let mut fds = Vec::new();
    // SAFETY: `msg` is the header recvmsg filled in; CMSG_FIRSTHDR and
    // CMSG_NXTHDR only return headers inside its control buffer (`space`),
    // or null.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_*HDR lies in `space`, aligned
        // for cmsghdr, and the kernel wrote it.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: the data of a header in `space` starts in `space`.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            // Its length as the kernel says, but never past `space`.
            let len = (header.cmsg_len as usize)
                .saturating_sub(data as usize - cmsg as usize)
                .min(space_len.saturating_sub(data as usize - start));
            for i in 0..len / std::mem::size_of::<RawFd>() {
                // SAFETY: `i` indexes an int within this header's data, in
                // `space` (bounded just above).
                let fd = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                // SAFETY: the kernel installed this fd in our table for this
                // message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR, from a header of this message.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(Received {
        bytes,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// sendmsg(2) of `bytes` with `fds` attached to the first byte,
/// non-blocking and without SIGPIPE. Returns the bytes sent; if any were,
/// the fds went with them.
pub(super) fn send(stream: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}
