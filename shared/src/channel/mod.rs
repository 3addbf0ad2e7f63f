//! The private channel between the master and one worker.
//!
//! A unix stream socketpair carries frames: a 4-byte little-endian length,
//! then that many bytes, the first being the message tag. One type per
//! direction (`ToWorker`, `ToMaster`) so neither side can send the other's
//! messages. The length is checked against `MAX_FRAME` before anything is
//! allocated, and any malformed frame is an error that ends that peer: the
//! caller drops the channel (a worker then drains and exits, the master
//! kills the worker), never waits on a stream it cannot parse.
//!
//! New variants can be added at the end without touching the framing; an
//! unknown tag is a protocol error, as master and worker always come from
//! the same binary.
//!
//! File descriptors (reopened log files) travel as SCM_RIGHTS ancillary
//! data, in batches of at most `FDS_PER_BATCH`, each batch on a *carrier*
//! frame of its own (tag 0, no body) sent just before the message that
//! needs them: the kernel carries at most 253 fds per sendmsg (SCM_MAX_FD),
//! and a reader collects the fds of one sendmsg per recvmsg, so batching
//! makes any number of fds travel and the receiver's buffer always holds
//! a whole batch. The receiver queues every fd that arrives and skips
//! carriers; a message that carries fds says how many (`ReopenLogs {
//! files }`), and its handler takes exactly that many from the queue with
//! `take_fds`, checking they all came.
//!
//! Should the kernel still truncate the fds of a recvmsg (MSG_CTRUNC: only
//! a peer that ignores the batching could cause it), the fds that did
//! arrive are closed and the next `take_fds` fails: an error of the message
//! those fds were for, which its handler reports, not of the channel. A
//! side that takes no fds (the master, from a worker) refuses any that
//! arrive as a protocol error, so a worker cannot fill the master's fd
//! table.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

mod scm;

use scm::send as send_fds;

/// Frames are small; anything larger is garbage or an attack.
pub const MAX_FRAME: usize = 64 * 1024;

/// Fds sent with one carrier frame. Well under the kernel's SCM_MAX_FD
/// (253), which the receiver's buffer holds.
pub const FDS_PER_BATCH: usize = 64;

use scm::SCM_MAX_FD;

/// A carrier frame: length 1, tag 0. It only carries the fds of one batch
/// and is skipped by `receive`.
const CARRIER: [u8; 5] = [1, 0, 0, 0, 0];

/// Master → worker frames may carry certificates (`Certificates`: every
/// chain, key and staple of the config), so they may be larger. Still
/// checked before allocating; a worker trusts its master anyway.
pub const MAX_FRAME_TO_WORKER: usize = 16 * 1024 * 1024;

pub mod certs;
mod messages;

pub use messages::*;

#[derive(Debug)]
pub enum ChannelError {
    Io(io::Error),
    /// The frame's declared length is 0 or above `MAX_FRAME`.
    BadLength(usize),
    UnknownTag(u8),
    /// A message announced fds that did not arrive with it.
    MissingFds {
        expected: usize,
        got: usize,
    },
    /// The kernel truncated the fds sent for a message (MSG_CTRUNC); those
    /// that came were closed.
    TruncatedFds,
    /// Fds arrived on a channel whose messages carry none.
    UnexpectedFds(usize),
    /// The body does not have the size its tag requires.
    BadBody {
        tag: u8,
        len: usize,
    },
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Io(e) => write!(f, "channel i/o error: {e}"),
            ChannelError::BadLength(n) => write!(f, "channel frame of bad length {n}"),
            ChannelError::UnknownTag(t) => write!(f, "channel frame with unknown tag {t}"),
            ChannelError::MissingFds { expected, got } => {
                write!(f, "channel message announced {expected} fds but {got} came")
            }
            ChannelError::TruncatedFds => {
                write!(f, "the fds sent with a channel message were truncated")
            }
            ChannelError::UnexpectedFds(n) => {
                write!(f, "{n} fds arrived on a channel that takes none")
            }
            ChannelError::BadBody { tag, len } => {
                write!(f, "channel frame tag {tag} with a body of bad length {len}")
            }
        }
    }
}

impl std::error::Error for ChannelError {}

impl From<io::Error> for ChannelError {
    fn from(e: io::Error) -> Self {
        ChannelError::Io(e)
    }
}

/// Appends one framed message to `out`.
pub fn frame<M: Message>(msg: &M, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    msg.encode(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// One end of a channel on a non-blocking socket: reads accumulate until
/// whole frames are there; writes queue until the socket takes them.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Fds waiting to be sent, each batch with the offset in `outbuf` of
    /// the carrier frame it rides on (its first byte). Our own duplicates,
    /// so they stay open however long they wait; closed once sent.
    out_fds: VecDeque<(usize, Vec<OwnedFd>)>,
    eof: bool,
    /// Fds received and not yet taken by a message's handler.
    fds: VecDeque<OwnedFd>,
    /// Fds were lost to a truncation since the last `take_fds`.
    fds_lost: bool,
    /// Most fds one recvmsg takes (SCM_MAX_FD; smaller in tests).
    fd_room: usize,
}

impl Channel {
    /// Wraps a socket, switching it to non-blocking mode.
    pub fn new(stream: UnixStream) -> io::Result<Channel> {
        stream.set_nonblocking(true)?;
        Ok(Channel {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_fds: VecDeque::new(),
            eof: false,
            fds: VecDeque::new(),
            fds_lost: false,
            fd_room: SCM_MAX_FD,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The bytes buffered each way (received, not yet a whole message;
    /// queued, not yet sent), for handing the channel to the next image of
    /// the process in a binary upgrade. `None` while fds are queued or
    /// held: those cannot be described by bytes.
    pub fn buffered(&self) -> Option<(&[u8], &[u8])> {
        if !self.out_fds.is_empty() || !self.fds.is_empty() {
            return None;
        }
        Some((&self.inbuf, &self.outbuf))
    }

    /// A channel handed over by a previous image: `buffered`'s bytes back
    /// in place, so the framing continues where it was.
    pub fn resume(stream: UnixStream, inbuf: Vec<u8>, outbuf: Vec<u8>) -> io::Result<Channel> {
        let mut channel = Channel::new(stream)?;
        channel.inbuf = inbuf;
        channel.outbuf = outbuf;
        Ok(channel)
    }

    /// Queues a message and tries to send everything queued.
    pub fn send<M: Message>(&mut self, msg: &M) -> Result<(), ChannelError> {
        frame(msg, &mut self.outbuf);
        self.flush()
    }

    /// Queues a message with fds: the fds (duplicated, so the caller may
    /// close its own) go first, `FDS_PER_BATCH` per carrier frame, then the
    /// message; everything is sent in order as the socket takes it.
    pub fn send_with_fds<M: Message>(
        &mut self,
        msg: &M,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        let mut batches = Vec::new();
        for batch in fds.chunks(FDS_PER_BATCH) {
            let owned = batch
                .iter()
                .map(|fd| fd.try_clone_to_owned())
                .collect::<io::Result<Vec<_>>>()?;
            batches.push(owned);
        }
        for owned in batches {
            self.out_fds.push_back((self.outbuf.len(), owned));
            self.outbuf.extend_from_slice(&CARRIER);
        }
        frame(msg, &mut self.outbuf);
        self.flush()
    }

    /// Sends what the socket takes now; the rest waits for writability.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        while !self.outbuf.is_empty() {
            // Up to the next batch's carrier; a batch at the head rides on
            // the first byte sent.
            let (end, fds) = match self.out_fds.front() {
                Some((0, fds)) => {
                    let next = self.out_fds.get(1).map_or(self.outbuf.len(), |(at, _)| *at);
                    (next, Some(fds))
                }
                Some((at, _)) => (*at, None),
                None => (self.outbuf.len(), None),
            };
            let with_fds = fds.is_some();
            let result = match fds {
                Some(fds) => send_fds(&self.stream, &self.outbuf[..end], fds),
                None => (&self.stream).write(&self.outbuf[..end]),
            };
            match result {
                Ok(0) => return Err(ChannelError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    if with_fds {
                        // They went with the first byte; our copies close.
                        self.out_fds.pop_front();
                    }
                    self.outbuf.drain(..n);
                    for (at, _) in &mut self.out_fds {
                        *at = at.saturating_sub(n);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Takes the next `n` received fds, which a message just announced.
    /// After a truncation the fds queued so far cannot be matched to their
    /// messages: they are closed, and this message fails.
    pub fn take_fds(&mut self, n: usize) -> Result<Vec<OwnedFd>, ChannelError> {
        if self.fds_lost {
            self.fds_lost = false;
            self.fds.clear();
            return Err(ChannelError::TruncatedFds);
        }
        if self.fds.len() < n {
            return Err(ChannelError::MissingFds {
                expected: n,
                got: self.fds.len(),
            });
        }
        Ok(self.fds.drain(..n).collect())
    }

    pub fn has_pending_output(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// Reads what is available and returns every whole message received.
    /// `Ok` with `eof() == true` means the peer closed after those messages.
    pub fn receive<M: Message>(&mut self) -> Result<Vec<M>, ChannelError> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.read_with_fds(&mut chunk) {
                Ok((0, _)) => {
                    self.eof = true;
                    break;
                }
                Ok((n, arrived)) => {
                    if arrived > 0 && !M::TAKES_FDS {
                        self.fds.clear();
                        return Err(ChannelError::UnexpectedFds(arrived));
                    }
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    // Stop buffering once a whole max-size frame could be
                    // there: a peer cannot make us hold more than that.
                    if self.inbuf.len() > M::MAX_LEN + 4 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        while self.inbuf.len() - at >= 4 {
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(&self.inbuf[at..at + 4]);
            let len = u32::from_le_bytes(len_bytes) as usize;
            if len == 0 || len > M::MAX_LEN {
                return Err(ChannelError::BadLength(len));
            }
            if self.inbuf.len() - at - 4 < len {
                break;
            }
            let body = &self.inbuf[at + 4..at + 4 + len];
            if body != &CARRIER[4..] {
                out.push(M::decode(body)?);
            }
            at += 4 + len;
        }
        self.inbuf.drain(..at);
        Ok(out)
    }

    /// The peer closed its end.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Reads into `buf`, queueing the fds that come with the bytes.
    /// Returns the bytes read and the number of fds that came. On a
    /// truncation those fds are closed at once and `fds_lost` is set.
    fn read_with_fds(&mut self, buf: &mut [u8]) -> io::Result<(usize, usize)> {
        let got = scm::recv(&self.stream, buf, self.fd_room)?;
        let count = got.fds.len();
        if got.truncated {
            // Some fds of this batch were dropped by the kernel: the ones
            // that came are of no use without them (dropped: closed).
            self.fds_lost = true;
            return Ok((got.bytes, count.max(1)));
        }
        self.fds.extend(got.fds);
        Ok((got.bytes, count))
    }
}

#[cfg(test)]
mod tests;
