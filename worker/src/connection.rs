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

mod proxy;

use std::io;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use baton_shared::config::Config;
use log::debug;

use crate::access_log::{AccessLog, Entry};
use crate::handler;
use crate::http::body::{BodyReader, Step};
use crate::http::request::{self, BodyFraming, Method, Parsed, Version};
use crate::http::response::{DateCache, Persistence, Response, Status, write_head};
use crate::limits::{
    DRAIN_PIPELINED_MAX, LINGERING_CLOSE, READ_CHUNK, TURN_BYTES, TURN_REQUESTS, after,
};
use crate::outgoing::{Body, Outgoing, Sent};
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
}

/// A request being answered, as the access log will record it.
struct LogStart {
    time: SystemTime,
    start: Instant,
    method: String,
    target: String,
    protocol: &'static str,
    host: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
    site: Option<usize>,
}

/// A response on its way out: logged once sent (or abandoned).
struct PendingLog {
    start: LogStart,
    status: u16,
    bytes: u64,
    /// A proxied response: the server, its status, and how long its
    /// response head took.
    upstream: Option<String>,
    upstream_status: Option<u16>,
    upstream_time: Option<std::time::Duration>,
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

    /// When this connection's current timeout expires.
    pub fn deadline(&self, config: &Config, drain_started: Option<Instant>) -> Instant {
        match self.phase {
            Phase::Closed => self.last_progress,
            Phase::Lingering { until } => until,
            Phase::Open if self.out.is_some() => {
                after(self.last_progress, config.http.send_timeout)
            }
            Phase::Open if self.exchange.is_some() => self.exchange_deadline(config, drain_started),
            Phase::Open if self.body.is_some() => {
                after(self.last_progress, config.http.body_timeout)
            }
            Phase::Open if !self.inbuf.is_empty() => {
                after(self.head_started, config.header_timeout)
            }
            Phase::Open => {
                // A new connection has header_timeout to send its first
                // request; a kept-alive one keepalive_timeout for the next.
                let wait = if self.served == 0 {
                    config.header_timeout
                } else {
                    config.keepalive_timeout
                };
                let deadline = after(self.idle_since, wait);
                match drain_started {
                    // Draining: one more request within the linger.
                    Some(d) => deadline.min(after(self.idle_since.max(d), config.drain_linger)),
                    None => deadline,
                }
            }
        }
    }

    /// The deadline passed: time out whatever is in progress.
    pub fn on_deadline(&mut self, ctx: &mut Ctx) {
        match self.phase {
            Phase::Closed => {}
            Phase::Lingering { .. } => self.phase = Phase::Closed,
            Phase::Open if self.out.is_some() => {
                debug!("connection made no progress within the send timeout: closed");
                self.log_done(ctx, false);
                self.phase = Phase::Closed;
            }
            Phase::Open if self.exchange.is_some() => self.exchange_expired(ctx),
            Phase::Open if self.body.is_some() => {
                // A body that stopped coming: say so, as for a head, and
                // close (lingering: the rest may still be on its way).
                self.body = None;
                self.inbuf.clear();
                self.held = None;
                self.finish(Held::error(Status::RequestTimeout), ctx);
            }
            Phase::Open if !self.inbuf.is_empty() => {
                // A head that did not complete in time (slowloris).
                self.inbuf.clear();
                let response = Response::status(Status::RequestTimeout);
                self.queue(response, false, Version::Http11, true, ctx);
            }
            Phase::Open => {
                // Idle for too long. A request already in the receive buffer
                // whose event is not processed yet is served, not dropped:
                // look once more before closing.
                self.readable = true;
                if self.fill(ctx, &mut Budget::turn()).is_err() {
                    return;
                }
                if self.idle() {
                    self.start_closing(ctx.now);
                }
            }
        }
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

    /// Plain HTTP on a TLS port: a 400 in the clear that says what is
    /// wrong (nginx answers the same), then a close that discards the
    /// request, unread, while it lingers.
    fn refuse_plain_http(&mut self, ctx: &Ctx) {
        debug!("plain HTTP on a TLS port: answered with a 400");
        self.inbuf.clear();
        let mut response = Response::status(Status::BadRequest);
        response.body = Body::Bytes(
            b"400 Bad Request\nThe plain HTTP request was sent to an HTTPS port: use https:// here.\n"
                .to_vec(),
        );
        self.queue(response, false, Version::Http11, true, ctx);
    }

    /// Discards body bytes, sends a response whose body is read, and
    /// answers the next complete request, if the previous response is out.
    fn process(&mut self, ctx: &mut Ctx, budget: &mut Budget) -> bool {
        let mut progress = false;
        if self.exchange.is_none()
            && let Some(body) = self.body.as_mut()
            && !self.inbuf.is_empty()
        {
            let http = &ctx.config.http;
            let (used, step) = body.consume(&self.inbuf, http.max_body_size, http.max_header_size);
            self.inbuf.drain(..used);
            progress = used > 0 || step != Step::More;
            match step {
                Step::More => {}
                Step::Done => self.body = None,
                Step::Invalid(status) => {
                    // The framing is lost: nothing after this can be read.
                    self.body = None;
                    self.inbuf.clear();
                    self.held = Some(Held::error(status));
                }
            }
        }
        if self.body.is_none()
            && self.out.is_none()
            && let Some(held) = self.held.take()
        {
            self.finish(held, ctx);
            progress = true;
        }
        if self.phase != Phase::Open
            || self.out.is_some()
            || self.body.is_some()
            || self.held.is_some()
            || self.exchange.is_some()
            || self.inbuf.is_empty()
            || budget.requests == 0
        {
            return progress;
        }
        let logging = ctx.access_log.enabled();
        match request::parse_head(&self.inbuf, &ctx.config.http, logging) {
            Parsed::Partial => progress,
            Parsed::Reject(status) => {
                self.inbuf.clear();
                self.queue(Response::status(status), false, Version::Http11, true, ctx);
                true
            }
            Parsed::Request(req) => {
                budget.requests -= 1;
                self.served += 1;
                *ctx.requests += 1;
                let site = ctx
                    .routes
                    .pick(ctx.config, self.listener, req.host.as_deref());
                // ACME HTTP-01 before any routing (plain HTTP only).
                let acme = (!self.stream.is_tls())
                    .then(|| crate::acme::http_answer(&req.target))
                    .flatten();
                let routed = site.filter(|_| acme.is_none()).and_then(|s| {
                    let route = crate::proxy::route_for(s, &req.target)?;
                    Some(self.route_request(&req, s, route, ctx))
                });
                self.inbuf.drain(..req.head_len);
                let proxied = matches!(routed, Some(Ok(())));
                let response = match routed {
                    // Never sent: the exchange answers.
                    Some(Ok(())) => Response::status(Status::BadGateway),
                    Some(Err(status)) => Response::status(status),
                    None => {
                        acme.unwrap_or_else(|| handler::respond(&req, site, ctx.files, ctx.date))
                    }
                };
                let held = Held {
                    response,
                    head_only: req.method == Method::Head,
                    version: req.version,
                    keep_alive: req.keep_alive,
                    // Its body, if any, is read before the response goes.
                    last: !req.keep_alive,
                };
                self.log_start = Some(LogStart {
                    // Only a log line shows it.
                    time: if logging {
                        SystemTime::now()
                    } else {
                        SystemTime::UNIX_EPOCH
                    },
                    start: self.head_started,
                    method: req.log.method,
                    target: req.target,
                    protocol: match req.version {
                        Version::Http10 => "HTTP/1.0",
                        Version::Http11 => "HTTP/1.1",
                    },
                    host: req.host,
                    referer: req.log.referer,
                    user_agent: req.log.user_agent,
                    site: site
                        .and_then(|s| ctx.config.sites.iter().position(|x| std::ptr::eq(x, s))),
                });
                self.body = match req.body {
                    BodyFraming::None => None,
                    BodyFraming::Length(n) => Some(BodyReader::length(n)),
                    BodyFraming::Chunked => Some(BodyReader::chunked()),
                };
                if proxied {
                    // The exchange streams the body and answers (an
                    // `Expect: 100-continue` goes to the upstream, whose
                    // 100 is passed on).
                    return true;
                }
                if self.body.is_none() {
                    self.finish(held, ctx);
                    return true;
                }
                self.held = Some(held);
                if req.expects_continue {
                    // The client waits for this before sending its body.
                    let interim = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                    self.out = Some(Outgoing::new(interim, Body::Empty, false));
                    self.close_after = false;
                    self.last_progress = ctx.now;
                }
                true
            }
        }
    }

    /// Queues the response of a request whose body is consumed, deciding
    /// whether the connection stays open after it.
    fn finish(&mut self, held: Held, ctx: &Ctx) {
        // Whether the next request is already here: if so it is served
        // too, even when closing for a drain.
        let next_is_here = !self.inbuf.is_empty();
        let close = !held.keep_alive
            || (self.peer_eof && !next_is_here)
            || self.served >= ctx.config.http.keepalive_requests
            || self.closing_for_drain(ctx, next_is_here);
        if let Some(start) = self.log_start.take() {
            self.pending_log = Some(PendingLog {
                start,
                status: held.response.status.code(),
                bytes: if held.head_only {
                    0
                } else {
                    held.response.body.len()
                },
                upstream: None,
                upstream_status: None,
                upstream_time: None,
            });
        }
        self.queue(held.response, held.head_only, held.version, close, ctx);
        self.input_done = held.last;
    }

    /// While draining, every response says `Connection: close`, except
    /// that a pipelined request already received is served first.
    fn closing_for_drain(&mut self, ctx: &Ctx, next_is_here: bool) -> bool {
        if ctx.drain_started.is_none() {
            return false;
        }
        if next_is_here && self.drain_pipelined < DRAIN_PIPELINED_MAX {
            self.drain_pipelined += 1;
            return false;
        }
        true
    }

    fn queue(
        &mut self,
        response: Response,
        head_only: bool,
        version: Version,
        close: bool,
        ctx: &Ctx,
    ) {
        let persistence = match (close, version) {
            (true, _) => Persistence::Close,
            (false, Version::Http10) => Persistence::KeepAlive,
            (false, Version::Http11) => Persistence::Default,
        };
        // Room for an in-memory body too (`Outgoing::new` appends it), so
        // the head is never reallocated and copied.
        let inline_body = match &response.body {
            Body::Bytes(b) if !head_only => b.len(),
            Body::Shared { len, .. } if !head_only => *len,
            _ => 0,
        };
        let mut head = Vec::with_capacity(512 + inline_body);
        let server = ctx.config.http.server_token.as_deref();
        write_head(&mut head, &response, ctx.date.get(), server, persistence);
        let mut out = Outgoing::new(head, response.body, !head_only);
        if close {
            out.set_last();
        }
        self.out = Some(out);
        self.close_after = close;
        // Only `finish` knows a request was the client's last.
        self.input_done = false;
        self.last_progress = ctx.now;
    }

    /// Logs the response just sent (`complete`) or abandoned: an abandoned
    /// one logs no body bytes, as nothing says how much the client got.
    fn log_done(&mut self, ctx: &mut Ctx, complete: bool) {
        let Some(p) = self.pending_log.take() else {
            return;
        };
        let s = &p.start;
        // Only a log line shows it (the metrics count statuses and bytes).
        let remote = match self.peer {
            Some(ip) if ctx.access_log.enabled() => ip.to_string(),
            Some(_) => String::new(),
            None => "unix:".to_owned(),
        };
        ctx.access_log.record(
            s.site,
            &Entry {
                remote: &remote,
                time: s.time,
                method: &s.method,
                target: &s.target,
                protocol: s.protocol,
                host: s.host.as_deref(),
                status: p.status,
                bytes: if complete { p.bytes } else { 0 },
                referer: s.referer.as_deref(),
                user_agent: s.user_agent.as_deref(),
                request_time: ctx.now.saturating_duration_since(s.start),
                upstream: p.upstream.as_deref(),
                upstream_status: p.upstream_status,
                upstream_time: p.upstream_time,
            },
        );
    }

    /// Closes after the last response: at once when the client has said
    /// it sends nothing more, all of that was read and nothing unread is
    /// known to be queued, as nginx does (`lingering_close on`); else (on
    /// every error close, every timeout, every close of our own) sends our
    /// FIN and discards input until the client's (lingering close),
    /// because closing a socket with unread input makes the kernel send an
    /// RST that can destroy the response before the client reads it. TLS
    /// always takes the second way, whose FIN follows a close_notify.
    fn start_closing(&mut self, now: Instant) {
        // (An exchange still here is dropped: its upstream connection is
        // closed; the caller has logged and released what it could.)
        let nothing_coming =
            self.input_done && self.inbuf.is_empty() && !self.readable && !self.stream.is_tls();
        self.out = None;
        self.inbuf = Vec::new();
        self.body = None;
        self.held = None;
        if self.peer_eof || nothing_coming {
            self.phase = Phase::Closed;
            return;
        }
        match self.stream.shutdown_write() {
            Ok(()) => {
                self.phase = Phase::Lingering {
                    until: after(now, LINGERING_CLOSE),
                }
            }
            Err(e) => {
                log_io("shutdown", &e);
                self.phase = Phase::Closed;
            }
        }
    }

    fn linger(&mut self, scratch: &mut [u8], budget: &mut Budget) -> Drive {
        while self.readable {
            if budget.bytes == 0 {
                return Drive::Again;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.phase = Phase::Closed;
                    return Drive::Closed;
                }
                Ok(n) => budget.bytes = budget.bytes.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.phase = Phase::Closed;
                    return Drive::Closed;
                }
            }
        }
        Drive::Wait
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
