//! What a connection has to send: a head, then a body.
//!
//! The head and any small body (generated, or a file from the worker's file
//! cache) share one buffer, so most responses leave in a single `send`. A
//! file body goes with sendfile(2) from the file's fd, resumed where it
//! stopped on the next writable event; such a file is never read into
//! memory. A TLS stream cannot sendfile: `Stream::sendfile` reads
//! the file in chunks into rustls instead, whose buffer limit is the
//! back-pressure; the response counts as sent only once rustls has handed
//! everything to the socket.

use bytes::Bytes;
use std::fs::File;
use std::io;

use crate::compress::file::EncodedFile;
use crate::stream::Stream;

#[derive(Debug)]
pub enum Body {
    /// No body: 304s, `100 Continue`.
    Empty,
    /// Small, generated bodies (status texts).
    Bytes(Vec<u8>),
    /// A cached file's bytes (or a range of them).
    Shared {
        bytes: Bytes,
        start: usize,
        len: usize,
    },
    File(FileBody),
    /// A file compressed as it is sent, with chunked framing
    /// (`compress::file`).
    Encoded(Box<EncodedFile>),
}

impl Body {
    /// The Content-Length.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Shared { len, .. } => *len as u64,
            Body::File(f) => f.remaining,
            // Not known before it is sent: framed with chunked instead.
            Body::Encoded(_) => 0,
        }
    }

    /// Sent with `Transfer-Encoding: chunked`, not a Content-Length.
    pub fn chunked(&self) -> bool {
        matches!(self, Body::Encoded(_))
    }
}

#[derive(Debug)]
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub remaining: u64,
}

/// How far a write got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Everything is out.
    All,
    /// The socket is full: wait for writable.
    Blocked,
    /// This turn's byte budget is used up: come back later.
    Budget,
}

/// Under TLS, file bodies up to this size are sent with the head.
const TLS_INLINE_FILE: u64 = 16 * 1024;

#[derive(Debug)]
pub struct Outgoing {
    buf: Vec<u8>,
    pos: usize,
    file: Option<FileBody>,
    encoded: Option<Box<EncodedFile>>,
    /// Bytes of `encoded` sent: its length is only known at the end.
    streamed: u64,
    /// The connection closes right after (see `set_last`).
    last: bool,
}

impl Outgoing {
    /// `head` is the encoded response head; the body follows it unless
    /// `with_body` is false (HEAD).
    pub fn new(mut head: Vec<u8>, body: Body, with_body: bool) -> Outgoing {
        let mut file = None;
        let mut encoded = None;
        if with_body {
            match body {
                Body::Empty => {}
                Body::Bytes(b) => head.extend_from_slice(&b),
                Body::Shared { bytes, start, len } => {
                    // In range by construction (a range of the entry).
                    let part = bytes.get(start..start.saturating_add(len));
                    head.extend_from_slice(part.unwrap_or_default());
                }
                Body::File(f) if f.remaining > 0 => file = Some(f),
                Body::File(_) => {}
                Body::Encoded(e) => encoded = Some(e),
            }
        }
        Outgoing {
            buf: head,
            pos: 0,
            file,
            encoded,
            streamed: 0,
            last: false,
        }
    }

    /// Bytes to send before this (interim responses already produced).
    pub fn with_prefix(mut self, mut prefix: Vec<u8>) -> Outgoing {
        prefix.extend_from_slice(&self.buf[self.pos..]);
        self.buf = prefix;
        self.pos = 0;
        self
    }

    /// The connection is closed (or shut down) as soon as this is sent:
    /// its last bytes then go with MSG_MORE too, and the close or
    /// shutdown that follows at once sends them with the FIN in one
    /// segment (the kernel sets FIN on the unsent tail), as nginx's
    /// TCP_CORK does. One packet fewer for the client to process on every
    /// short connection.
    pub fn set_last(&mut self) {
        self.last = true;
    }

    /// The body bytes of a compressed-while-sent body that went out, for
    /// the access log (whose Content-Length based count is 0 for it).
    pub fn streamed(&self) -> u64 {
        self.streamed
    }

    /// Writes as much as the socket and `budget` allow; `budget` is
    /// decreased by the bytes written.
    pub fn write_to(&mut self, stream: &mut Stream, budget: &mut usize) -> io::Result<Sent> {
        if self.pos == 0 && stream.is_tls() {
            self.inline_small_file()?;
        }
        while self.pos < self.buf.len() {
            if *budget == 0 {
                return Ok(Sent::Budget);
            }
            let more = self.file.is_some() || self.encoded.is_some() || self.last;
            match stream.send(&self.buf[self.pos..], more) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    *budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Sent::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.buf.is_empty() {
            self.buf = Vec::new();
            self.pos = 0;
        }
        while let Some(f) = self.file.as_mut() {
            if *budget == 0 {
                return Ok(Sent::Budget);
            }
            let count = usize::try_from(f.remaining)
                .unwrap_or(usize::MAX)
                .min(*budget);
            match stream.sendfile(&f.file, f.offset, count) {
                // The file shrank under us: the promised length cannot be
                // delivered, so the connection must end.
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file truncated while sending",
                    ));
                }
                Ok(n) => {
                    f.offset += n as u64;
                    f.remaining = f.remaining.saturating_sub(n as u64);
                    *budget = budget.saturating_sub(n);
                    if f.remaining == 0 {
                        self.file = None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Sent::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = self.encoded.as_mut() {
            let result = e.write_to(stream, budget);
            self.streamed = e.sent();
            match result? {
                Sent::All => self.encoded = None,
                other => return Ok(other),
            }
        }
        // Under TLS the last bytes may still sit in rustls: the response is
        // only out once the socket has taken them.
        match stream.flush_pending() {
            Ok(()) => Ok(Sent::All),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::Blocked),
            Err(e) => Err(e),
        }
    }

    /// Under TLS a file is read into memory anyway: a small one joins the
    /// head, so the response is one TLS record and one socket write.
    fn inline_small_file(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(f) = self.file.as_ref() else {
            return Ok(());
        };
        if f.remaining > TLS_INLINE_FILE {
            return Ok(());
        }
        let start = self.buf.len();
        let len = f.remaining as usize;
        self.buf.resize(start + len, 0);
        let mut done = 0;
        while done < len {
            match f
                .file
                .read_at(&mut self.buf[start + done..], f.offset + done as u64)
            {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file truncated while sending",
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.file = None;
        Ok(())
    }
}
