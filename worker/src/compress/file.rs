//! A file body compressed as it is sent: for files the file cache does
//! not hold (larger than `file_cache_max_file_size`, or the cache full or
//! off). Memory per connection is one 16 KiB read buffer, the coder's
//! state and one framed chunk of output, whatever the file's size; the
//! file is read only as fast as the socket takes the output (the chunk
//! must be sent before the next read), which is the back-pressure.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use baton_shared::config::compress::Coding;

use super::encoder::{BodyEncoder, Encoder, MAX_INPUT};
use crate::outgoing::Sent;
use crate::stream::Stream;

#[derive(Debug)]
pub struct EncodedFile {
    file: File,
    offset: u64,
    /// Bytes of the file still to be read, from `offset`.
    remaining: u64,
    /// The file's length when it was opened: the encoder's size hint.
    len: u64,
    coding: Coding,
    level: i32,
    /// Made on the first write: a HEAD, a 304 or a client gone before the
    /// body never pay for a coder's state.
    body: Option<BodyEncoder>,
    input: Vec<u8>,
    /// Body bytes sent (compressed, with the chunked framing), for the
    /// access log.
    sent: u64,
}

impl EncodedFile {
    /// The whole of `file` (`len` bytes), sent compressed with chunked
    /// framing.
    pub fn new(file: File, len: u64, coding: Coding, level: i32) -> EncodedFile {
        EncodedFile {
            file,
            offset: 0,
            remaining: len,
            len,
            coding,
            level,
            body: None,
            input: Vec::new(),
            sent: 0,
        }
    }

    /// Body bytes sent so far (compressed, chunked framing included).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Makes the next output ready (`pending`), reading and compressing
    /// more of the file once everything before was taken: `false` once
    /// the whole body has been handed out. `chunked`: HTTP/1.1's framing
    /// (HTTP/2's DATA frames need none); fixed by the first call.
    pub fn prepare(&mut self, chunked: bool) -> io::Result<bool> {
        if self.body.is_none() {
            let encoder = Encoder::new(self.coding, self.level, Some(self.len))?;
            self.body = Some(BodyEncoder::new(encoder, chunked));
            self.input = vec![0; MAX_INPUT];
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(false);
        };
        loop {
            if body.is_done() {
                return Ok(false);
            }
            if !body.wants_input() {
                return Ok(true);
            }
            if self.remaining == 0 {
                body.finish()?;
                continue;
            }
            let want = usize::try_from(self.remaining)
                .unwrap_or(MAX_INPUT)
                .min(MAX_INPUT);
            let n = loop {
                match self.file.read_at(&mut self.input[..want], self.offset) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if n == 0 {
                // Shrank under us: end the connection without the last
                // chunk, so the client sees a truncated body rather than
                // a complete, wrong one.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file truncated while sending",
                ));
            }
            self.offset += n as u64;
            self.remaining -= n as u64;
            body.push(&self.input[..n])?;
        }
    }

    /// Output made ready by `prepare` and not yet taken.
    pub fn pending(&self) -> &[u8] {
        self.body.as_ref().map_or(&[], |b| b.pending())
    }

    /// `n` bytes of `pending` were taken.
    pub fn consume(&mut self, n: usize) {
        if let Some(body) = self.body.as_mut() {
            body.consume(n);
            self.sent += n as u64;
        }
    }

    /// What is pending is the body's end.
    pub fn finished(&self) -> bool {
        self.body.as_ref().is_some_and(BodyEncoder::is_finished)
    }

    /// Sends as much as the socket and `budget` allow.
    pub fn write_to(&mut self, stream: &mut Stream, budget: &mut usize) -> io::Result<Sent> {
        loop {
            if !self.prepare(true)? {
                return Ok(Sent::All);
            }
            if *budget == 0 {
                return Ok(Sent::Budget);
            }
            // More follows until the last chunk is out.
            let more = !self.finished();
            match stream.send(self.pending(), more) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.consume(n);
                    *budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Sent::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
