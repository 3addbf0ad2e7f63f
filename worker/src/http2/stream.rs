//! One stream's response on its way out: the head, then the body in
//! chunks no larger than the room the flow-control windows (the stream's
//! and the connection's) give, read from the file only when there is room
//! for them. A stream thus holds at most one chunk, and the engine at most
//! `http2_max_send_buffer` of it; a file is never read whole.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::engine::{Code, Inbound, Outbound};
use super::response::Source;

/// The most read from a file (or taken from a compressor) per DATA send.
const CHUNK: usize = 64 * 1024;

/// What the access log records of a stream.
pub struct StreamLog {
    pub time: SystemTime,
    pub start: Instant,
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    pub site: Option<usize>,
    pub status: u16,
    /// A proxied stream's upstream: its address, status and how long its
    /// response head took.
    pub upstream: Option<String>,
    pub upstream_status: Option<u16>,
    pub upstream_time: Option<std::time::Duration>,
}

pub struct Active {
    pub out: Outbound,
    /// The request's body, still arriving: read and discarded before the
    /// response goes (as HTTP/1.1 does), within `max_body`.
    inbound: Option<Inbound>,
    discarded: u64,
    max_body: u64,
    /// The response head, sent once the request is complete.
    head: Option<http::Response<()>>,
    source: Source,
    /// When the stream last moved a byte (its timeout counts from here).
    pub last_progress: Instant,
    pub log: StreamLog,
    /// Body bytes handed to the engine.
    pub sent: u64,
}

/// Where a stream is after a turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for room in the windows.
    Waiting,
    /// All of it handed to the engine.
    Done,
    /// The stream is gone (reset by the client) or the body failed.
    Failed,
}

impl Active {
    /// A response to send once `inbound` (the request body, if it has
    /// not ended) is read, at most `max_body` bytes of it.
    pub fn new(
        out: Outbound,
        head: http::Response<()>,
        inbound: Option<Inbound>,
        max_body: u64,
        source: Source,
        log: StreamLog,
        now: Instant,
    ) -> Active {
        Active {
            out,
            inbound,
            discarded: 0,
            max_body,
            head: Some(head),
            source,
            last_progress: now,
            log,
            sent: 0,
        }
    }

    /// Sends what the windows have room for.
    pub fn advance(&mut self, cx: &mut Context<'_>, now: Instant) -> Step {
        while let Some(inbound) = self.inbound.as_mut() {
            match inbound.poll_chunk(cx) {
                Poll::Pending => return Step::Waiting,
                Poll::Ready(None) => self.inbound = None,
                Poll::Ready(Some(Ok(chunk))) => {
                    self.discarded += chunk.len() as u64;
                    inbound.release(chunk.len());
                    self.last_progress = now;
                    if self.discarded > self.max_body {
                        // Past max_body_size with no Content-Length to
                        // refuse it by (that gets a 413 up front).
                        self.out.reset(Code::CANCEL);
                        return Step::Failed;
                    }
                }
                Poll::Ready(Some(Err(_))) => return Step::Failed,
            }
        }
        if let Some(head) = self.head.take() {
            let end = matches!(self.source, Source::Empty);
            if self.out.send_head(head, end).is_err() {
                return Step::Failed;
            }
            if end {
                return Step::Done;
            }
        }
        loop {
            let want = match &mut self.source {
                Source::Empty => return Step::Done,
                Source::Bytes(b) => b.len(),
                Source::File { remaining, .. } => {
                    usize::try_from(*remaining).unwrap_or(CHUNK).min(CHUNK)
                }
                Source::Encoded(e) => match e.prepare(false) {
                    Ok(true) => e.pending().len().min(CHUNK),
                    // Done: the end of the stream, in an empty DATA frame.
                    Ok(false) => {
                        return match self.out.send(Bytes::new(), true) {
                            Ok(()) => {
                                self.source = Source::Empty;
                                Step::Done
                            }
                            Err(_) => Step::Failed,
                        };
                    }
                    Err(e) => {
                        log::warn!("compressing a response: {e}");
                        self.out.reset(Code::INTERNAL_ERROR);
                        return Step::Failed;
                    }
                },
            };
            let room = match self.out.poll_room(want, cx) {
                Poll::Pending => return Step::Waiting,
                Poll::Ready(Err(_)) => return Step::Failed,
                Poll::Ready(Ok(n)) => n.min(want),
            };
            let (chunk, last) = match self.take(room) {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("reading a response body: {e}");
                    self.out.reset(Code::INTERNAL_ERROR);
                    return Step::Failed;
                }
            };
            let n = chunk.len() as u64;
            if self.out.send(chunk, last).is_err() {
                return Step::Failed;
            }
            self.sent += n;
            self.last_progress = now;
            if last {
                self.source = Source::Empty;
                return Step::Done;
            }
        }
    }

    /// The next `room` bytes of the body, and whether they are its last.
    fn take(&mut self, room: usize) -> io::Result<(Bytes, bool)> {
        match &mut self.source {
            Source::Empty => Ok((Bytes::new(), true)),
            Source::Bytes(b) => {
                let chunk = b.split_to(room.min(b.len()));
                Ok((chunk, b.is_empty()))
            }
            Source::File {
                file,
                offset,
                remaining,
            } => {
                let want = usize::try_from(*remaining).unwrap_or(room).min(room);
                let chunk = read_chunk(file, *offset, want)?;
                *offset += want as u64;
                *remaining -= want as u64;
                Ok((chunk, *remaining == 0))
            }
            Source::Encoded(e) => {
                let pending = e.pending();
                let n = room.min(pending.len());
                let chunk = Bytes::copy_from_slice(&pending[..n]);
                e.consume(n);
                // The end goes in its own empty frame (see `advance`).
                Ok((chunk, false))
            }
        }
    }
}

/// `want` bytes of `file` from `offset`, in a buffer of their own that is
/// never zeroed first: the bytes go to the engine, which holds them until
/// they are framed and sent, so one buffer cannot be reused; writing zeros
/// over 64 KiB only to overwrite them was a pass over memory per chunk.
fn read_chunk(file: &File, offset: u64, want: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(want);
    while buf.len() < want {
        let at = offset
            .checked_add(buf.len() as u64)
            .and_then(|at| libc::off_t::try_from(at).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let filled = buf.len();
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(want - filled);
        // SAFETY: `spare` is `len` or more writable bytes owned by `buf`,
        // and pread(2) writes at most `len` bytes into them; the fd is
        // open for the call (borrowed from `file`).
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), len, at) };
        match n {
            // Shrank under us: the promised length cannot be delivered,
            // the stream must end without it.
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file truncated while sending",
                ));
            }
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: pread initialised the first `n` (<= `len`) bytes of
            // the spare capacity.
            n => unsafe { buf.set_len(filled + n as usize) },
        }
    }
    Ok(buf.freeze())
}
