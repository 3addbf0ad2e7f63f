//! The socket as the `h2` engine sees it: tokio's `AsyncRead` and
//! `AsyncWrite` over a non-blocking `Stream` (plain or TLS), without a
//! runtime. A socket's `WouldBlock` is `Pending`; the engine's waker is
//! not kept, because the event loop drives the connection again on the
//! socket's next readiness edge (see `connection`). So, as everywhere in
//! the worker, reads go on until `WouldBlock` and a write waits for a
//! writable edge only after the socket itself refused bytes.
//!
//! Writes are gathered, not sent one by one: the engine writes each frame
//! (or a few) and flushes after every poll, and a connection is polled
//! several times a turn, so sending at each flush would cost a syscall
//! (and under TLS a record, and a syscall per record) per few hundred
//! bytes. The output is gathered in `out` and goes to the socket (under
//! TLS, as full-size records) once per turn (`flush_now`, called by the
//! connection at the end of `drive`), or as soon as `OUT_MAX` is reached.
//!
//! The state lives behind an `Rc<RefCell>` shared with the connection,
//! which needs the socket (registrations, the lingering close) and the
//! counters while the engine owns the `Io`. It is borrowed only inside
//! these calls, never across a poll of the engine.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::{Bucket, Scanner, Seen};
use crate::stream::Stream;

#[derive(Debug)]
pub struct IoState {
    pub stream: Stream,
    /// Output gathered until `flush_now`.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes the HTTP/1.1 side had read before the switch (the preface,
    /// often more): served first.
    prefix: Vec<u8>,
    prefix_pos: usize,
    /// Readiness as the poll reported it, cleared on `WouldBlock`.
    pub readable: bool,
    pub writable: bool,
    /// The poll must be asked for writable events (once).
    write_interest: bool,
    pub write_interest_pending: bool,
    /// Bytes this turn may still move (both ways), and whether it ran out.
    pub budget: usize,
    pub budget_hit: bool,
    /// Bytes moved since the connection last looked.
    pub progress: bool,
    /// The client sent more control frames than allowed: nothing more is
    /// read from it.
    pub flood: bool,
    /// The client closed its side.
    pub eof: bool,
    pub now: Instant,
    incoming: Scanner,
    outgoing: Scanner,
    bucket: Bucket,
    /// RST_STREAM frames received, not yet counted in the metrics.
    pub resets: u64,
    /// GOAWAY error codes sent, not yet counted in the metrics.
    pub goaways: Vec<u32>,
}

impl IoState {
    pub fn new(
        stream: Stream,
        prefix: Vec<u8>,
        readable: bool,
        writable: bool,
        control_rate: u32,
        now: Instant,
    ) -> IoState {
        IoState {
            stream,
            out: Vec::new(),
            out_pos: 0,
            prefix,
            prefix_pos: 0,
            readable,
            writable,
            write_interest: false,
            write_interest_pending: false,
            budget: 0,
            budget_hit: false,
            progress: false,
            flood: false,
            eof: false,
            now,
            incoming: Scanner::incoming(),
            outgoing: Scanner::outgoing(),
            bucket: Bucket::new(control_rate, now),
            resets: 0,
            goaways: Vec::new(),
        }
    }

    /// The socket refused bytes: from now on the poll must say when it
    /// drains.
    fn blocked_on_write(&mut self) {
        self.writable = false;
        if !self.write_interest {
            self.write_interest = true;
            self.write_interest_pending = true;
        }
    }

    /// Sends what was gathered. `WouldBlock` (the socket is full) is not
    /// an error: the connection then waits for a writable edge.
    pub fn flush_now(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            if !self.writable {
                return Ok(());
            }
            match self.stream.send(&self.out[self.out_pos..], false) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked_on_write();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.writable {
            match self.stream.flush_pending() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocked_on_write(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Output gathered and not yet sent.
    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len() || self.stream.has_pending()
    }

    fn took(&mut self, n: usize) {
        self.budget = self.budget.saturating_sub(n);
        self.progress |= n > 0;
    }

    fn count(&mut self, seen: Seen) {
        self.resets += u64::from(seen.resets);
        if seen.control > 0 && !self.bucket.take(seen.control, self.now) {
            self.flood = true;
        }
    }
}

/// Plain output gathered per turn at most before it goes to the socket.
const OUT_MAX: usize = 64 * 1024;

/// The most one read takes from the socket (or from rustls: a TLS record's
/// plaintext is at most 16 KiB).
const READ_SCRATCH: usize = 16 * 1024;

thread_local! {
    /// The reads' buffer, one per worker (a worker is one thread, and a
    /// read never calls another).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SCRATCH]);
}

/// The engine's handle on the shared state.
pub struct Io(pub Rc<RefCell<IoState>>);

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        let s = &mut *s;
        if s.flood || buf.remaining() == 0 {
            return Poll::Pending;
        }
        if s.prefix_pos < s.prefix.len() {
            let n = (s.prefix.len() - s.prefix_pos).min(buf.remaining());
            let start = s.prefix_pos;
            buf.put_slice(&s.prefix[start..start + n]);
            let seen = s.incoming.feed(&s.prefix[start..start + n], |_| {});
            s.count(seen);
            s.prefix_pos += n;
            if s.prefix_pos == s.prefix.len() {
                s.prefix = Vec::new();
                s.prefix_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if s.budget == 0 {
            s.budget_hit = true;
            return Poll::Pending;
        }
        // A closed source reads 0 again: say so once more (the engine
        // may ask after it has seen the end).
        if s.eof {
            return Poll::Ready(Ok(()));
        }
        if !s.readable {
            return Poll::Pending;
        }
        // Read into a buffer that stays initialised, then copy what came:
        // the engine hands over fresh, uninitialised room each time, and
        // zeroing all of it (8 KiB or more) before every read cost more
        // than copying the few hundred bytes a read of requests brings.
        let want = buf.remaining().min(READ_SCRATCH);
        loop {
            let read = SCRATCH.with_borrow_mut(|scratch| {
                let n = s.stream.read(&mut scratch[..want])?;
                buf.put_slice(&scratch[..n]);
                Ok::<_, io::Error>((n, s.incoming.feed(&scratch[..n], |_| {})))
            });
            match read {
                Ok((0, _)) => {
                    s.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok((n, seen)) => {
                    s.took(n);
                    s.count(seen);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        let s = &mut *s;
        if !s.writable {
            return Poll::Pending;
        }
        if s.budget == 0 {
            s.budget_hit = true;
            return Poll::Pending;
        }
        // Gathered (see the module's comment); a full buffer goes to the
        // socket first.
        if s.out.len() - s.out_pos >= OUT_MAX {
            if let Err(e) = s.flush_now() {
                return Poll::Ready(Err(e));
            }
            if s.out.len() - s.out_pos >= OUT_MAX {
                return Poll::Pending;
            }
        }
        if s.out_pos > 0 && s.out_pos == s.out.len() {
            s.out.clear();
            s.out_pos = 0;
        }
        let n = buf.len().min(OUT_MAX);
        s.out.extend_from_slice(&buf[..n]);
        s.took(n);
        let goaways = &mut s.goaways;
        s.outgoing.feed(&buf[..n], |code| goaways.push(code));
        Poll::Ready(Ok(n))
    }

    /// Deferred to the end of the turn (`flush_now`).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The engine is done: what is gathered goes out now. The connection
    /// closes the socket itself (lingering).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        if let Err(e) = s.flush_now() {
            return Poll::Ready(Err(e));
        }
        if s.has_output() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}
