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

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

/// Frames are small; anything larger is garbage or an attack.
pub const MAX_FRAME: usize = 64 * 1024;

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Stop accepting, finish in-flight requests, exit at zero connections.
    Drain,
    /// Exit now (fast stop).
    Stop,
}

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    /// The worker has dropped privileges and is accepting.
    Ready,
    /// Periodic counters, for status.
    Stats { connections: u64, requests: u64 },
    /// The worker cannot serve (say, a site root its user cannot reach) and
    /// is exiting; the reason is for the log and for whoever asked for the
    /// reload. Sent instead of `Ready`.
    Failed(String),
}

#[derive(Debug)]
pub enum ChannelError {
    Io(io::Error),
    /// The frame's declared length is 0 or above `MAX_FRAME`.
    BadLength(usize),
    UnknownTag(u8),
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
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(frame: &[u8]) -> Result<Self, ChannelError>;
}

const TAG_DRAIN: u8 = 1;
const TAG_STOP: u8 = 2;
const TAG_READY: u8 = 1;
const TAG_STATS: u8 = 2;
const TAG_FAILED: u8 = 3;

impl Message for ToWorker {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            ToWorker::Drain => TAG_DRAIN,
            ToWorker::Stop => TAG_STOP,
        });
    }

    fn decode(frame: &[u8]) -> Result<Self, ChannelError> {
        let (&tag, body) = frame.split_first().ok_or(ChannelError::BadLength(0))?;
        let msg = match tag {
            TAG_DRAIN => ToWorker::Drain,
            TAG_STOP => ToWorker::Stop,
            t => return Err(ChannelError::UnknownTag(t)),
        };
        expect_body(tag, body, 0)?;
        Ok(msg)
    }
}

impl Message for ToMaster {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToMaster::Ready => out.push(TAG_READY),
            ToMaster::Stats {
                connections,
                requests,
            } => {
                out.push(TAG_STATS);
                out.extend_from_slice(&connections.to_le_bytes());
                out.extend_from_slice(&requests.to_le_bytes());
            }
            ToMaster::Failed(reason) => {
                out.push(TAG_FAILED);
                // Keep the frame well under MAX_FRAME, cutting on a char
                // boundary.
                let mut end = reason.len().min(4096);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&reason.as_bytes()[..end]);
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
                expect_body(tag, body, 16)?;
                let (c, r) = body.split_at(8);
                Ok(ToMaster::Stats {
                    connections: u64::from_le_bytes(c.try_into().unwrap_or_default()),
                    requests: u64::from_le_bytes(r.try_into().unwrap_or_default()),
                })
            }
            TAG_FAILED => Ok(ToMaster::Failed(String::from_utf8_lossy(body).into_owned())),
            t => Err(ChannelError::UnknownTag(t)),
        }
    }
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
    eof: bool,
}

impl Channel {
    /// Wraps a socket, switching it to non-blocking mode.
    pub fn new(stream: UnixStream) -> io::Result<Channel> {
        stream.set_nonblocking(true)?;
        Ok(Channel {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            eof: false,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Queues a message and tries to send everything queued.
    pub fn send<M: Message>(&mut self, msg: &M) -> Result<(), ChannelError> {
        frame(msg, &mut self.outbuf);
        self.flush()
    }

    /// Sends what the socket takes now; the rest waits for writability.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => return Err(ChannelError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn has_pending_output(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// Reads what is available and returns every whole message received.
    /// `Ok` with `eof() == true` means the peer closed after those messages.
    pub fn receive<M: Message>(&mut self) -> Result<Vec<M>, ChannelError> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    // Stop buffering once a whole max-size frame could be
                    // there: a peer cannot make us hold more than that.
                    if self.inbuf.len() > MAX_FRAME + 4 {
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
            if len == 0 || len > MAX_FRAME {
                return Err(ChannelError::BadLength(len));
            }
            if self.inbuf.len() - at - 4 < len {
                break;
            }
            out.push(M::decode(&self.inbuf[at + 4..at + 4 + len])?);
            at += 4 + len;
        }
        self.inbuf.drain(..at);
        Ok(out)
    }

    /// The peer closed its end.
    pub fn eof(&self) -> bool {
        self.eof
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn partial_frames_wait_for_the_rest() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Channel::new(b).unwrap();
        let mut bytes = Vec::new();
        frame(
            &ToMaster::Stats {
                connections: 1,
                requests: 2,
            },
            &mut bytes,
        );
        (&a).write_all(&bytes[..5]).unwrap();
        assert!(r.receive::<ToMaster>().unwrap().is_empty());
        (&a).write_all(&bytes[5..]).unwrap();
        assert_eq!(r.receive::<ToMaster>().unwrap().len(), 1);
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
    fn eof_is_reported_after_the_last_message() {
        let (mut a, mut b) = pair();
        a.send(&ToWorker::Drain).unwrap();
        drop(a);
        assert_eq!(b.receive::<ToWorker>().unwrap(), vec![ToWorker::Drain]);
        assert!(b.eof());
    }
}
