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

use crate::tls::CertBundle;

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

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Stop accepting, finish in-flight requests, exit at zero connections.
    Drain,
    /// Exit now (fast stop).
    Stop,
    /// Log files were reopened (rotation): `files` fds come with this
    /// message, the error log first if `error_log` is set.
    ReopenLogs { error_log: bool, files: u32 },
    /// The complete new set of certificates (a file changed, or a reload
    /// picked them up): the worker verifies them and swaps its store.
    Certificates(Vec<CertBundle>),
    /// The session ticket keys, newest first (rotated by the master).
    TicketKeys(Vec<[u8; 32]>),
    /// Sent just before `Drain`: keep accepting on these listeners (by
    /// their position in the worker's list) while draining, until
    /// `CloseListeners` names them. They are retired sockets on which
    /// connections may still arrive that only this generation can serve.
    HoldListeners(Vec<u32>),
    /// Stop accepting on these listeners: accept what is queued on them,
    /// then close them (nothing more can arrive on them).
    CloseListeners(Vec<u32>),
    /// The active health of upstream servers (checked by the master), by
    /// their position in this worker's config: the whole state of every
    /// checked server, sent whenever one changes. A server not listed is
    /// up as far as active checks go.
    UpstreamHealth(Vec<HealthMark>),
}

/// One upstream server's active health, in `UpstreamHealth` and in a new
/// worker's setup: indices into `config.proxy.upstreams` and its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthMark {
    pub upstream: u32,
    pub server: u32,
    pub up: bool,
}

/// A worker's file cache, in `Stats`: lookups answered from it, lookups
/// that went to the disk (totals since the worker started), and the bytes
/// it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
}

/// One upstream server as a worker sees it, in `Stats` (for `/metrics`):
/// totals since the worker started, and its state now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCounters {
    pub upstream: String,
    pub server: String,
    /// Requests sent to it (each attempt).
    pub requests: u64,
    /// Failures (connect, reset, timeout, a malformed response).
    pub failures: u64,
    /// Idle connections in this worker's pool.
    pub idle: u64,
    /// Marked down by passive health now.
    pub down: bool,
}

/// At most this many servers are reported (the frame to the master is
/// 64 KiB); names are cut to `MAX_NAME` bytes.
pub const MAX_UPSTREAM_COUNTERS: usize = 256;
const MAX_NAME: usize = 96;

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    /// The worker has dropped privileges and is accepting.
    Ready,
    /// Periodic counters, for status and metrics (totals since the worker
    /// started): open connections, requests, responses by status class
    /// (1xx..5xx), body bytes sent.
    Stats {
        connections: u64,
        requests: u64,
        responses: [u64; 5],
        bytes: u64,
        file_cache: FileCacheStats,
        /// Per upstream server (the first `MAX_UPSTREAM_COUNTERS`).
        upstreams: Vec<UpstreamCounters>,
    },
    /// The worker cannot serve (say, a site root its user cannot reach) and
    /// is exiting; the reason is for the log and for whoever asked for the
    /// reload. Sent instead of `Ready`.
    Failed(String),
    /// The log files of a `ReopenLogs` are in use; the old ones are closed.
    ReopenDone,
    /// Draining: the listeners are closed, this worker accepts nothing more.
    Draining,
    /// The log files of a `ReopenLogs` could not be taken (fds missing or
    /// truncated, a file that cannot be used): the worker keeps its old
    /// ones; the reason is for whoever asked for the reopen.
    ReopenFailed(String),
}

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

/// A message that can cross the channel.
pub trait Message: Sized {
    /// The largest frame this message type may come in.
    const MAX_LEN: usize = MAX_FRAME;
    /// Whether messages of this type may carry fds; any fd that arrives
    /// on a channel receiving a type that carries none is an error.
    const TAKES_FDS: bool = false;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(frame: &[u8]) -> Result<Self, ChannelError>;
}

const TAG_DRAIN: u8 = 1;
const TAG_STOP: u8 = 2;
const TAG_REOPEN_LOGS: u8 = 3;
const TAG_CERTIFICATES: u8 = 4;
const TAG_TICKET_KEYS: u8 = 5;
const TAG_HOLD_LISTENERS: u8 = 6;
const TAG_CLOSE_LISTENERS: u8 = 7;
const TAG_UPSTREAM_HEALTH: u8 = 8;
const TAG_READY: u8 = 1;
const TAG_STATS: u8 = 2;
const TAG_FAILED: u8 = 3;
const TAG_REOPEN_DONE: u8 = 4;
const TAG_DRAINING: u8 = 5;
const TAG_REOPEN_FAILED: u8 = 6;

impl Message for ToWorker {
    const MAX_LEN: usize = MAX_FRAME_TO_WORKER;
    const TAKES_FDS: bool = true;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToWorker::Drain => out.push(TAG_DRAIN),
            ToWorker::Stop => out.push(TAG_STOP),
            ToWorker::ReopenLogs { error_log, files } => {
                out.push(TAG_REOPEN_LOGS);
                out.push(u8::from(*error_log));
                out.extend_from_slice(&files.to_le_bytes());
            }
            ToWorker::Certificates(bundles) => {
                out.push(TAG_CERTIFICATES);
                out.extend_from_slice(&(bundles.len() as u32).to_le_bytes());
                for b in bundles {
                    out.extend_from_slice(&b.site.to_le_bytes());
                    for bytes in [&b.cert_pem, &b.key_pem, &b.ocsp] {
                        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
            ToWorker::TicketKeys(keys) => {
                out.push(TAG_TICKET_KEYS);
                for k in keys {
                    out.extend_from_slice(k);
                }
            }
            ToWorker::HoldListeners(list) | ToWorker::CloseListeners(list) => {
                out.push(match self {
                    ToWorker::HoldListeners(_) => TAG_HOLD_LISTENERS,
                    _ => TAG_CLOSE_LISTENERS,
                });
                for i in list {
                    out.extend_from_slice(&i.to_le_bytes());
                }
            }
            ToWorker::UpstreamHealth(marks) => {
                out.push(TAG_UPSTREAM_HEALTH);
                for m in marks {
                    out.extend_from_slice(&m.upstream.to_le_bytes());
                    out.extend_from_slice(&m.server.to_le_bytes());
                    out.push(u8::from(m.up));
                }
            }
        }
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        match tag {
            TAG_DRAIN => expect_body(tag, body, 0).map(|()| ToWorker::Drain),
            TAG_STOP => expect_body(tag, body, 0).map(|()| ToWorker::Stop),
            TAG_REOPEN_LOGS => {
                expect_body(tag, body, 5)?;
                let mut n = [0u8; 4];
                n.copy_from_slice(&body[1..5]);
                Ok(ToWorker::ReopenLogs {
                    error_log: body[0] != 0,
                    files: u32::from_le_bytes(n),
                })
            }
            TAG_CERTIFICATES => {
                decode_certificates(body)
                    .map(ToWorker::Certificates)
                    .ok_or(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    })
            }
            TAG_TICKET_KEYS => {
                if body.len() % 32 != 0 {
                    return Err(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    });
                }
                let keys = body
                    .chunks_exact(32)
                    .map(|c| {
                        let mut k = [0u8; 32];
                        k.copy_from_slice(c);
                        k
                    })
                    .collect();
                Ok(ToWorker::TicketKeys(keys))
            }
            TAG_HOLD_LISTENERS | TAG_CLOSE_LISTENERS => {
                if body.len() % 4 != 0 {
                    return Err(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    });
                }
                let list = body
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(if tag == TAG_HOLD_LISTENERS {
                    ToWorker::HoldListeners(list)
                } else {
                    ToWorker::CloseListeners(list)
                })
            }
            TAG_UPSTREAM_HEALTH => {
                if body.len() % 9 != 0 || body.chunks_exact(9).any(|c| c[8] > 1) {
                    return Err(ChannelError::BadBody {
                        tag,
                        len: body.len(),
                    });
                }
                let marks = body
                    .chunks_exact(9)
                    .map(|c| HealthMark {
                        upstream: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                        server: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                        up: c[8] == 1,
                    })
                    .collect();
                Ok(ToWorker::UpstreamHealth(marks))
            }
            t => Err(ChannelError::UnknownTag(t)),
        }
    }
}

impl Message for ToMaster {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToMaster::Ready => out.push(TAG_READY),
            ToMaster::Stats {
                connections,
                requests,
                responses,
                bytes,
                file_cache,
                upstreams,
            } => {
                out.push(TAG_STATS);
                for n in [*connections, *requests]
                    .iter()
                    .chain(responses.iter())
                    .chain([*bytes, file_cache.hits, file_cache.misses, file_cache.bytes].iter())
                {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                encode_upstreams(out, upstreams);
            }
            ToMaster::Failed(reason) => {
                out.push(TAG_FAILED);
                push_text(out, reason);
            }
            ToMaster::ReopenDone => out.push(TAG_REOPEN_DONE),
            ToMaster::Draining => out.push(TAG_DRAINING),
            ToMaster::ReopenFailed(reason) => {
                out.push(TAG_REOPEN_FAILED);
                push_text(out, reason);
            }
        }
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        match tag {
            TAG_READY => {
                expect_body(tag, body, 0)?;
                Ok(ToMaster::Ready)
            }
            TAG_STATS => {
                let bad = ChannelError::BadBody {
                    tag,
                    len: body.len(),
                };
                let Some((fixed, rest)) = body.split_at_checked(11 * 8) else {
                    return Err(bad);
                };
                let upstreams = decode_upstreams(rest).ok_or(bad)?;
                let body = fixed;
                let mut n = body.chunks_exact(8).map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_le_bytes(b)
                });
                let mut next = || n.next().unwrap_or(0);
                Ok(ToMaster::Stats {
                    connections: next(),
                    requests: next(),
                    responses: [next(), next(), next(), next(), next()],
                    bytes: next(),
                    file_cache: FileCacheStats {
                        hits: next(),
                        misses: next(),
                        bytes: next(),
                    },
                    upstreams,
                })
            }
            TAG_FAILED => Ok(ToMaster::Failed(String::from_utf8_lossy(body).into_owned())),
            TAG_REOPEN_DONE => expect_body(tag, body, 0).map(|()| ToMaster::ReopenDone),
            TAG_DRAINING => expect_body(tag, body, 0).map(|()| ToMaster::Draining),
            TAG_REOPEN_FAILED => Ok(ToMaster::ReopenFailed(
                String::from_utf8_lossy(body).into_owned(),
            )),
            t => Err(ChannelError::UnknownTag(t)),
        }
    }
}

/// `Stats`' upstream counters: a count, then per server two short
/// strings (a length byte, the bytes) and four u64s. Bounded to fit the
/// frame: at most `MAX_UPSTREAM_COUNTERS` entries of at most 234 bytes.
fn encode_upstreams(out: &mut Vec<u8>, list: &[UpstreamCounters]) {
    let n = list.len().min(MAX_UPSTREAM_COUNTERS);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for u in &list[..n] {
        for text in [&u.upstream, &u.server] {
            let mut end = text.len().min(MAX_NAME);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            out.push(end as u8);
            out.extend_from_slice(&text.as_bytes()[..end]);
        }
        for v in [u.requests, u.failures, u.idle, u64::from(u.down)] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// `None` if malformed; every length is checked before use.
fn decode_upstreams(mut b: &[u8]) -> Option<Vec<UpstreamCounters>> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    let (count, rest) = b.split_first_chunk::<2>()?;
    b = rest;
    let count = usize::from(u16::from_le_bytes(*count));
    if count > MAX_UPSTREAM_COUNTERS {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut text = || -> Option<String> {
            let (&len, rest) = b.split_first()?;
            let (t, rest) = rest.split_at_checked(usize::from(len))?;
            b = rest;
            Some(String::from_utf8_lossy(t).into_owned())
        };
        let upstream = text()?;
        let server = text()?;
        let mut num = || -> Option<u64> {
            let (v, rest) = b.split_first_chunk::<8>()?;
            b = rest;
            Some(u64::from_le_bytes(*v))
        };
        out.push(UpstreamCounters {
            upstream,
            server,
            requests: num()?,
            failures: num()?,
            idle: num()?,
            down: num()? != 0,
        });
    }
    b.is_empty().then_some(out)
}

/// A reason, kept well under MAX_FRAME, cut on a char boundary.
fn push_text(out: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(4096);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// The body of a `Certificates` frame; `None` if it is malformed. Every
/// length is checked against what is left before it is used.
fn decode_certificates(body: &[u8]) -> Option<Vec<CertBundle>> {
    fn u32_at(b: &mut &[u8]) -> Option<u32> {
        let (head, rest) = b.split_first_chunk::<4>()?;
        *b = rest;
        Some(u32::from_le_bytes(*head))
    }
    fn bytes_at(b: &mut &[u8]) -> Option<Vec<u8>> {
        let len = u32_at(b)? as usize;
        if b.len() < len {
            return None;
        }
        let (head, rest) = b.split_at(len);
        *b = rest;
        Some(head.to_vec())
    }
    let mut b = body;
    let count = u32_at(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let site = u32_at(&mut b)?;
        out.push(CertBundle {
            site,
            cert_pem: bytes_at(&mut b)?,
            key_pem: bytes_at(&mut b)?,
            ocsp: bytes_at(&mut b)?,
        });
    }
    b.is_empty().then_some(out)
}

fn expect_body(tag: u8, body: &[u8], len: usize) -> Result<(), ChannelError> {
    if body.len() == len {
        Ok(())
    } else {
        Err(ChannelError::BadBody {
            tag,
            len: body.len(),
        })
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
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, RawFd};

    fn pair() -> (Channel, Channel) {
        let (a, b) = UnixStream::pair().unwrap();
        (Channel::new(a).unwrap(), Channel::new(b).unwrap())
    }

    #[test]
    fn messages_round_trip_in_order() {
        let (mut m, mut w) = pair();
        m.send(&ToWorker::Drain).unwrap();
        m.send(&ToWorker::Stop).unwrap();
        assert_eq!(
            w.receive::<ToWorker>().unwrap(),
            vec![ToWorker::Drain, ToWorker::Stop]
        );
        let stats = ToMaster::Stats {
            connections: 7,
            requests: u64::MAX,
            responses: [1, 2, 3, 4, 5],
            bytes: 99,
            file_cache: FileCacheStats {
                hits: 10,
                misses: 11,
                bytes: u64::MAX - 1,
            },
            upstreams: vec![
                UpstreamCounters {
                    upstream: "app".into(),
                    server: "127.0.0.1:9000".into(),
                    requests: 5,
                    failures: 1,
                    idle: 2,
                    down: true,
                },
                UpstreamCounters {
                    upstream: "\u{e9}".repeat(40),
                    server: "unix:/run/app.sock".into(),
                    ..Default::default()
                },
            ],
        };
        let failed = ToMaster::Failed("root \u{e9}t\u{e9} unreachable".into());
        w.send(&ToMaster::Ready).unwrap();
        w.send(&stats).unwrap();
        w.send(&failed).unwrap();
        assert_eq!(
            m.receive::<ToMaster>().unwrap(),
            vec![ToMaster::Ready, stats, failed]
        );
    }

    #[test]
    fn certificates_and_ticket_keys_round_trip_and_bad_bodies_fail() {
        let (mut m, mut w) = pair();
        let bundles = vec![
            CertBundle {
                site: 3,
                cert_pem: vec![b'c'; 100_000],
                key_pem: b"key".to_vec(),
                ocsp: Vec::new(),
            },
            CertBundle {
                site: 0,
                cert_pem: b"x".to_vec(),
                key_pem: Vec::new(),
                ocsp: vec![1, 2, 3],
            },
        ];
        let certs = ToWorker::Certificates(bundles);
        let keys = ToWorker::TicketKeys(vec![[7; 32], [9; 32]]);
        let hold = ToWorker::HoldListeners(vec![0, 3, u32::MAX]);
        let health = ToWorker::UpstreamHealth(vec![
            HealthMark {
                upstream: 0,
                server: 2,
                up: false,
            },
            HealthMark {
                upstream: u32::MAX,
                server: 0,
                up: true,
            },
        ]);
        let mut frame = Vec::new();
        health.encode(&mut frame);
        assert_eq!(ToWorker::decode(&frame).unwrap(), health);
        assert!(ToWorker::decode(&frame[..frame.len() - 1]).is_err());
        let last = frame.len() - 1;
        frame[last] = 2;
        assert!(ToWorker::decode(&frame).is_err(), "a flag is 0 or 1");
        let close = ToWorker::CloseListeners(vec![]);
        m.send(&certs).unwrap();
        m.send(&keys).unwrap();
        m.send(&hold).unwrap();
        m.send(&close).unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            m.flush().unwrap();
            got.extend(w.receive::<ToWorker>().unwrap());
        }
        assert_eq!(got, vec![certs, keys, hold, close]);
        assert!(ToWorker::decode(&[TAG_CLOSE_LISTENERS, 1, 2]).is_err());
        // Lengths that run past the body are refused, not trusted.
        let mut frame = vec![TAG_CERTIFICATES];
        frame.extend_from_slice(&1u32.to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ToWorker::decode(&frame),
            Err(ChannelError::BadBody { .. })
        ));
        assert!(ToWorker::decode(&[TAG_TICKET_KEYS, 1, 2]).is_err());
        // The master still refuses frames from a worker above 64 KiB.
        const { assert!(ToWorker::MAX_LEN > MAX_FRAME && ToMaster::MAX_LEN == MAX_FRAME) };
    }

    #[test]
    fn partial_frames_wait_for_the_rest() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Channel::new(b).unwrap();
        let mut bytes = Vec::new();
        frame(
            &ToMaster::Stats {
                connections: 1,
                requests: 2,
                responses: [0; 5],
                bytes: 0,
                file_cache: FileCacheStats::default(),
                upstreams: Vec::new(),
            },
            &mut bytes,
        );
        (&a).write_all(&bytes[..5]).unwrap();
        assert!(r.receive::<ToMaster>().unwrap().is_empty());
        (&a).write_all(&bytes[5..]).unwrap();
        assert_eq!(r.receive::<ToMaster>().unwrap().len(), 1);
    }

    #[test]
    fn upstream_counters_are_bounded_and_checked() {
        let many: Vec<UpstreamCounters> = (0..1000)
            .map(|i| UpstreamCounters {
                upstream: "u".repeat(500),
                server: format!("127.0.0.1:{i}"),
                ..Default::default()
            })
            .collect();
        let mut out = vec![TAG_STATS];
        out.extend_from_slice(&[0u8; 88]);
        encode_upstreams(&mut out, &many);
        assert!(out.len() < MAX_FRAME);
        let ToMaster::Stats { upstreams, .. } = ToMaster::decode(&out).unwrap() else {
            panic!("not stats");
        };
        assert_eq!(upstreams.len(), MAX_UPSTREAM_COUNTERS);
        assert_eq!(upstreams[0].upstream.len(), MAX_NAME);
        // Cut anywhere, or with bytes left over: refused.
        for cut in [90, 92, out.len() - 1] {
            assert!(ToMaster::decode(&out[..cut]).is_err(), "{cut}");
        }
        let mut long = out.clone();
        long.push(0);
        assert!(ToMaster::decode(&long).is_err());
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Channel::new(b).unwrap();
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            r.receive::<ToMaster>(),
            Err(ChannelError::BadLength(_))
        ));
    }

    #[test]
    fn unknown_tag_and_bad_body_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Channel::new(b).unwrap();
        (&a).write_all(&[1, 0, 0, 0, 99]).unwrap();
        assert!(matches!(
            r.receive::<ToWorker>(),
            Err(ChannelError::UnknownTag(99))
        ));
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Channel::new(b).unwrap();
        (&a).write_all(&[2, 0, 0, 0, TAG_STATS, 1]).unwrap();
        assert!(matches!(
            r.receive::<ToMaster>(),
            Err(ChannelError::BadBody { .. })
        ));
    }

    #[test]
    fn fds_travel_with_their_message() {
        use std::io::{Read, Seek};
        use std::os::fd::AsFd;
        let (mut m, mut w) = pair();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"log line\n").unwrap();
        let msg = ToWorker::ReopenLogs {
            error_log: true,
            files: 1,
        };
        m.send_with_fds(&msg, &[file.as_fd()]).unwrap();
        assert_eq!(w.receive::<ToWorker>().unwrap(), vec![msg]);
        let mut got = w.take_fds(1).unwrap();
        let mut received = std::fs::File::from(got.remove(0));
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "log line\n", "the same open file");
        assert!(matches!(
            w.take_fds(1),
            Err(ChannelError::MissingFds {
                expected: 1,
                got: 0
            })
        ));
    }

    /// How many fds of this process refer to the same open file as `fd`.
    fn fds_on(fd: &impl AsRawFd) -> usize {
        let target = |p: std::path::PathBuf| std::fs::read_link(p).ok();
        let mine = target(format!("/proc/self/fd/{}", fd.as_raw_fd()).into());
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| target(e.path()) == mine)
            .count()
    }

    #[test]
    fn any_number_of_fds_travel_in_batches_and_in_order() {
        use std::os::fd::AsFd;
        let (mut m, mut w) = pair();
        let file = tempfile::tempfile().unwrap();
        // More than the kernel carries in one message (253), and not a
        // multiple of the batch.
        let n = 3 * SCM_MAX_FD + 7;
        let fds: Vec<OwnedFd> = (0..n)
            .map(|_| file.as_fd().try_clone_to_owned().unwrap())
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let msg = ToWorker::ReopenLogs {
            error_log: false,
            files: n as u32,
        };
        m.send_with_fds(&msg, &borrowed).unwrap();
        m.send(&ToWorker::Drain).unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            m.flush().unwrap();
            got.extend(w.receive::<ToWorker>().unwrap());
        }
        assert_eq!(got, vec![msg, ToWorker::Drain], "carriers are not messages");
        let taken = w.take_fds(n).unwrap();
        assert_eq!(taken.len(), n);
        assert!(w.fds.is_empty());
        assert!(
            m.out_fds.is_empty(),
            "the sender's copies are closed once sent"
        );
    }

    #[test]
    fn truncated_fds_fail_their_message_not_the_channel() {
        use std::os::fd::AsFd;
        let (mut m, mut w) = pair();
        w.fd_room = 4;
        let file = tempfile::tempfile().unwrap();
        let fds: Vec<OwnedFd> = (0..10)
            .map(|_| file.as_fd().try_clone_to_owned().unwrap())
            .collect();
        // A sender that ignores the batching: 10 fds on one carrier, for a
        // receiver that holds 4.
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        send_fds(&m.stream, &CARRIER, &fds).unwrap();
        drop(fds);
        let msg = ToWorker::ReopenLogs {
            error_log: false,
            files: raw.len() as u32,
        };
        m.send(&msg).unwrap();
        assert_eq!(w.receive::<ToWorker>().unwrap(), vec![msg]);
        assert!(matches!(w.take_fds(10), Err(ChannelError::TruncatedFds)));
        assert_eq!(fds_on(&file), 1, "the 4 fds that arrived were not closed");
        // The channel goes on, and so do later fds.
        let ok = ToWorker::ReopenLogs {
            error_log: false,
            files: 1,
        };
        m.send_with_fds(&ok, &[file.as_fd()]).unwrap();
        assert_eq!(w.receive::<ToWorker>().unwrap(), vec![ok]);
        assert_eq!(w.take_fds(1).unwrap().len(), 1);
    }

    #[test]
    fn fds_to_a_side_that_takes_none_are_refused() {
        use std::os::fd::AsFd;
        let (mut m, mut w) = pair();
        let file = tempfile::tempfile().unwrap();
        w.send_with_fds(&ToMaster::Ready, &[file.as_fd()]).unwrap();
        assert!(matches!(
            m.receive::<ToMaster>(),
            Err(ChannelError::UnexpectedFds(1))
        ));
        assert!(m.fds.is_empty());
    }

    #[test]
    fn eof_is_reported_after_the_last_message() {
        let (mut a, mut b) = pair();
        a.send(&ToWorker::Drain).unwrap();
        drop(a);
        assert_eq!(b.receive::<ToWorker>().unwrap(), vec![ToWorker::Drain]);
        assert!(b.eof());
    }
}
