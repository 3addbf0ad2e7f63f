//! One client connection: a non-blocking state machine driven by readiness.
//!
//! mio is edge-triggered, so the connection remembers whether its socket is
//! readable and writable and clears that only on `WouldBlock`; `drive` then
//! makes all the progress it can: send what is queued, read what has
//! arrived, answer complete requests in order. Each turn has a budget
//! (bytes, requests) so a fast client cannot starve the others; a
//! connection out of budget asks to be driven again (`Drive::Again`).
//!
//! Timers are not armed and disarmed: `deadline` computes the one that
//! applies from the state and a few timestamps, and the loop checks it on
//! its coarse tick.
//!
//! Closing is always a lingering close: `shutdown(Write)` so the client
//! sees a clean end of stream, then input is read and discarded until the
//! client closes too (or `LINGERING_CLOSE` passes). Closing a socket with
//! unread input would make the kernel send a reset, and the client could
//! lose the response it was reading.
//!
//! The shape is meant to grow: a proxied connection will own a second socket
//! (the event loop's tokens already leave room for it) and a body that
//! streams from it instead of from a file.

mod access;
mod closing;
mod proxy;
pub(crate) use proxy::{Client as ProxyClient, new_exchange, tunnel_grace};
mod requests;
mod timers;

use std::io;
use std::net::IpAddr;
use std::time::Instant;

use baton_shared::config::Config;
use log::debug;

use access::{LogStart, PendingLog};

use crate::access_log::AccessLog;
use crate::http::body::BodyReader;
use crate::http::request::Version;
use crate::http::response::{DateCache, Response, Status};
use crate::limits::{READ_CHUNK, TURN_BYTES, TURN_REQUESTS};
use crate::outgoing::{Outgoing, Sent};
use crate::proxy::ProxyState;
use crate::proxy::exchange::Exchange;
use crate::routing::Routes;
use crate::static_files::FileCache;
use crate::stream::Stream;

/// What the loop lends a connection while driving it.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub routes: &'a Routes,
    pub now: Instant,
    /// The Date header for this second (and the second, which a
    /// Last-Modified may not be later than).
    pub date: &'a DateCache,
    /// When the worker began draining, if it has.
    pub drain_started: Option<Instant>,
    /// Requests answered by this worker, for `Stats`.
    pub requests: &'a mut u64,
    pub access_log: &'a mut AccessLog,
    /// The worker's one read buffer (`READ_CHUNK` bytes): reads land here
    /// and only what arrived is copied to the connection, so no buffer is
    /// zeroed per read and idle connections hold none.
    pub scratch: &'a mut [u8],
    /// Small files held in memory (`static_files::cache`).
    pub files: &'a mut FileCache,
    /// Where upstream sockets are registered.
    pub registry: &'a mio::Registry,
    /// Upstream pools, balancing and health (`proxy`).
    pub proxy: &'a mut ProxyState,
    /// HTTP/2 counters, for `Stats`.
    pub http2: &'a mut baton_shared::channel::Http2Counters,
}

/// What the loop should do with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// Wait for the next event or deadline.
    Wait,
    /// Out of budget with work left: drive again on the next turn.
    Again,
    /// Finished: deregister and drop it.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Our side is shut down; discarding input until EOF or `until`.
    Lingering {
        until: Instant,
    },
    Closed,
}

struct Budget {
    bytes: usize,
    requests: usize,
}

impl Budget {
    fn turn() -> Budget {
        Budget {
            bytes: TURN_BYTES,
            requests: TURN_REQUESTS,
        }
    }

    fn exhausted(&self) -> bool {
        self.bytes == 0 || self.requests == 0
    }
}

/// A response waiting for its request's body to be read (and discarded):
/// answering before would leave the body's bytes where the next request
/// is expected, and a malformed body must still be able to turn into a 400.
struct Held {
    response: Response,
    head_only: bool,
    version: Version,
    /// The client asked to keep the connection.
    keep_alive: bool,
    /// The client said this request is its last, and all of it will have
    /// been read when the response goes (see `Connection::input_done`).
    last: bool,
}

impl Held {
    /// An error answer in place of the request's: the connection closes
    /// after it, and input may be left unread (a lingering close).
    fn error(status: Status) -> Held {
        Held {
            response: Response::status(status),
            head_only: false,
            version: Version::Http11,
            keep_alive: false,
            last: false,
        }
    }
}

pub struct Connection {
    stream: Stream,
    /// Its client socket's token (the upstream socket has the next one).
    token: mio::Token,
    /// The current request's proxy exchange, if it is proxied.
    exchange: Option<Box<Exchange>>,
    /// Index of the listener it was accepted on (routing).
    listener: usize,
    phase: Phase,
    readable: bool,
    writable: bool,
    /// Registered for writable events (see `blocked_on_write`).
    write_interest: bool,
    /// ... and the registration still has to be changed.
    write_interest_pending: bool,
    /// The client has finished sending (read returned 0).
    peer_eof: bool,
    /// The poll said the client's side is closed (or the socket failed):
    /// read until EOF, whatever the size of the reads.
    read_closed: bool,
    /// Received bytes not yet consumed: request heads, pipelined requests.
    inbuf: Vec<u8>,
    /// The response being sent.
    out: Option<Outgoing>,
    /// Close once `out` is sent.
    close_after: bool,
    /// The client said its request was its last and all of it was read:
    /// nothing more is coming, so that close needs no lingering. Every
    /// other close (on an error above all: a refused head or body, a
    /// timeout, plain HTTP on a TLS port) may leave input unread, and
    /// lingers (see `start_closing`).
    input_done: bool,
    /// The body of the current request, being read and thrown away.
    body: Option<BodyReader>,
    /// The current request's response, sent once its body is read.
    held: Option<Held>,
    /// Requests answered on this connection.
    served: u64,
    /// Responses sent without `Connection: close` while draining.
    drain_pipelined: u32,
    /// When it last became idle (accepted, or a response finished).
    idle_since: Instant,
    /// When the head now being received started to arrive.
    head_started: Instant,
    /// Last time bytes moved in either direction.
    last_progress: Instant,
    /// The client's address, for the access log (`None`: a unix socket).
    peer: Option<IpAddr>,
    /// The request whose response is being prepared (body being read).
    log_start: Option<LogStart>,
    /// The response being sent, to log once it is.
    pending_log: Option<PendingLog>,
    /// The client speaks HTTP/2: hand the socket over (`into_handover`).
    http2: bool,
    /// When it was accepted.
    accepted: Instant,
}

impl Connection {
    pub fn new(stream: Stream, peer: Option<IpAddr>, listener: usize, now: Instant) -> Connection {
        Connection {
            peer,
            log_start: None,
            pending_log: None,
            stream,
            token: mio::Token(0),
            exchange: None,
            listener,
            phase: Phase::Open,
            readable: false,
            // Fresh: it can take a response.
            writable: true,
            write_interest: false,
            write_interest_pending: false,
            peer_eof: false,
            read_closed: false,
            inbuf: Vec::new(),
            out: None,
            close_after: false,
            input_done: false,
            body: None,
            held: None,
            served: 0,
            drain_pipelined: 0,
            idle_since: now,
            head_started: now,
            last_progress: now,
            http2: false,
            accepted: now,
        }
    }

    /// Its socket's fd, for the poll.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.raw_fd()
    }

    /// It found HTTP/2 (ALPN `h2`, or the h2c preface): see `client`.
    pub fn wants_http2(&self) -> bool {
        self.http2
    }

    /// The socket, and what was read from it, for the HTTP/2 side.
    pub fn into_handover(self) -> crate::http2::Handover {
        crate::http2::Handover {
            token: self.token,
            stream: self.stream,
            read: self.inbuf,
            peer: self.peer,
            listener: self.listener,
            readable: self.readable,
            writable: self.writable,
            accepted: self.accepted,
        }
    }

    /// The token its client socket is registered with.
    pub fn set_token(&mut self, token: mio::Token) {
        self.token = token;
    }

    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Records readiness reported by the poll.
    /// The socket is full. Until now the poll only watched it for input (a
    /// fresh socket is writable, and most responses fit its buffer: asking
    /// for EPOLLOUT up front would cost every connection an event that says
    /// nothing); from now on it must say when the socket drains.
    fn blocked_on_write(&mut self) {
        self.writable = false;
        if !self.write_interest {
            self.write_interest = true;
            self.write_interest_pending = true;
        }
    }

    /// Whether the poll must now be asked for writable events too (once).
    pub fn take_write_interest(&mut self) -> bool {
        std::mem::take(&mut self.write_interest_pending)
    }

    pub fn on_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.readable |= readable;
        self.read_closed |= read_closed;
        self.writable |= writable;
    }

    /// Waiting for a request with nothing of it received.
    fn idle(&self) -> bool {
        self.phase == Phase::Open
            && self.out.is_none()
            && self.body.is_none()
            && self.held.is_none()
            && self.exchange.is_none()
            && self.inbuf.is_empty()
    }

    /// Makes all the progress possible now.
    pub fn drive(&mut self, ctx: &mut Ctx) -> Drive {
        let mut budget = Budget::turn();
        loop {
            match self.phase {
                Phase::Closed => return Drive::Closed,
                Phase::Lingering { .. } => return self.linger(ctx.scratch, &mut budget),
                Phase::Open => {}
            }
            if self.http2 {
                return Drive::Wait;
            }
            if budget.exhausted() {
                return Drive::Again;
            }
            let mut progress = false;
            // TLS output the socket could not take earlier (handshake
            // messages, alerts) goes before anything else.
            if self.writable && self.out.is_none() && self.stream.has_pending() {
                match self.stream.flush_pending() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocked_on_write(),
                    Err(e) => {
                        log_io("send", &e);
                        self.phase = Phase::Closed;
                        return Drive::Closed;
                    }
                }
            }
            if self.out.is_some() && self.writable {
                match self.send(ctx, &mut budget) {
                    Ok(p) => progress |= p,
                    Err(()) => return Drive::Closed,
                }
                if self.phase != Phase::Open {
                    continue;
                }
            }
            if self.readable && !self.peer_eof && self.inbuf.len() < self.in_limit(ctx) {
                match self.fill(ctx, &mut budget) {
                    Ok(p) => progress |= p,
                    Err(()) => return Drive::Closed,
                }
            }
            if self.exchange.is_some() && self.out.is_none() {
                match self.proxy_turn(ctx, &mut budget) {
                    Ok(p) => progress |= p,
                    Err(()) => return Drive::Closed,
                }
                if self.phase != Phase::Open {
                    continue;
                }
            }
            progress |= self.process(ctx, &mut budget);
            if !progress {
                break;
            }
        }
        // Nothing more can happen before the next event. If the client has
        // finished sending and everything it sent is answered (or can never
        // be: a partial head or body), there is nothing left to do.
        // (A proxied request whose client half-closed after sending it is
        // still answered.)
        if self.peer_eof && self.out.is_none() && self.exchange.is_none() {
            self.phase = Phase::Closed;
            return Drive::Closed;
        }
        Drive::Wait
    }

    /// Sends what is queued. `Err` when the connection is dead.
    fn send(&mut self, ctx: &mut Ctx, budget: &mut Budget) -> Result<bool, ()> {
        let Some(out) = self.out.as_mut() else {
            return Ok(false);
        };
        let before = budget.bytes;
        let result = out.write_to(&mut self.stream, &mut budget.bytes);
        let progress = budget.bytes != before;
        if progress {
            self.last_progress = ctx.now;
        }
        let streamed = out.streamed();
        match result {
            Ok(Sent::All) => {
                if let Some(p) = self.pending_log.as_mut()
                    && streamed > 0
                {
                    p.bytes = streamed;
                }
                self.out = None;
                self.log_done(ctx, true);
                if self.close_after {
                    self.start_closing(ctx.now);
                } else {
                    self.idle_since = ctx.now;
                    self.head_started = ctx.now;
                }
                Ok(true)
            }
            Ok(Sent::Blocked) => {
                self.blocked_on_write();
                Ok(progress)
            }
            Ok(Sent::Budget) => Ok(progress),
            Err(e) => {
                log_io("send", &e);
                self.log_done(ctx, false);
                self.phase = Phase::Closed;
                Err(())
            }
        }
    }

    /// How much unprocessed input is buffered at most: a head's worth (a
    /// complete head is processed before more is read).
    fn in_limit(&self, ctx: &Ctx) -> usize {
        ctx.config.http.max_header_size.max(READ_CHUNK)
    }

    /// Reads what has arrived, up to the buffer limit. `Err` when the
    /// connection is dead.
    fn fill(&mut self, ctx: &mut Ctx, budget: &mut Budget) -> Result<bool, ()> {
        let mut progress = false;
        let limit = self.in_limit(ctx);
        while self.readable && !self.peer_eof && self.inbuf.len() < limit && budget.bytes > 0 {
            match self.stream.read(ctx.scratch) {
                Ok(0) => {
                    self.peer_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    if self.inbuf.is_empty() && self.body.is_none() {
                        self.head_started = ctx.now;
                    }
                    self.inbuf.extend_from_slice(&ctx.scratch[..n]);
                    budget.bytes = budget.bytes.saturating_sub(n);
                    self.last_progress = ctx.now;
                    progress = true;
                    // On a stream where a short read proves the source
                    // empty (a TCP socket, see `short_read_means_empty`),
                    // whatever arrives next raises a new edge: the read
                    // that would only say WouldBlock is skipped (nginx does
                    // the same), one syscall fewer per request. Not once
                    // the client's FIN is known to be queued: its edge may
                    // have come with these bytes, and the EOF must be read.
                    // Any other stream is read until WouldBlock: no edge
                    // comes for what it already holds.
                    if n < ctx.scratch.len()
                        && !self.read_closed
                        && self.stream.short_read_means_empty()
                    {
                        self.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.stream.plain_http_on_tls() => {
                    self.refuse_plain_http(ctx);
                    return Ok(true);
                }
                Err(e) => {
                    log_io("read", &e);
                    self.phase = Phase::Closed;
                    return Err(());
                }
            }
        }
        Ok(progress)
    }
}

/// Client sockets fail in ordinary ways all the time (a browser closing a
/// tab resets its connections): only the unusual is worth a debug line.
fn log_io(what: &str, e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => {}
        _ => debug!("connection {what}: {e}"),
    }
}
