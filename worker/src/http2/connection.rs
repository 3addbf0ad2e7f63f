//! One HTTP/2 connection in the worker's loop: the engine driven with a
//! waker of our own, its streams answered, its timeouts, its drain.
//!
//! The waker only sets a flag (`Flag`): nothing here runs on another
//! thread and no runtime exists. The engine wakes a task when it has more
//! to do without new input (a stream got window room, a frame was queued);
//! `drive` then polls again, within the turn's budget, and otherwise
//! returns to the loop, which drives the connection again on its socket's
//! next readiness edge (or next turn, when the budget ran out: `Again`).

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::{Instant, SystemTime};

use baton_shared::config::Config;
use log::debug;

use super::engine::{Code, End, Engine, Incoming, protocol_of};
use super::h1_request::{is_head, request_for, websocket_key};
use super::io::{Io, IoState};
use super::proxy::Proxied;
use super::request::to_request;
use super::response::{FixedFields, split};
use super::stream::{Active, Step, StreamLog};
use crate::access_log::Entry;
use crate::connection::{Ctx, Drive};
use crate::handler;
use crate::http::request::Method;
use crate::http::response::{Response, Status};
use crate::limits::{LINGERING_CLOSE, TURN_BYTES, after};
use crate::stream::Stream;

mod timers;
use baton_shared::channel::Http2Counters;

/// The waker: "poll this connection again".
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Polls of the engine per turn at most, however often it wakes itself.
const POLLS_PER_TURN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The engine is done; its last bytes (a GOAWAY) wait for the socket.
    Flushing,
    /// The engine is done; our FIN is sent, input discarded until EOF.
    Lingering {
        until: Instant,
    },
    Closed,
}

/// What the HTTP/1.1 side hands over when a connection turns out to
/// speak HTTP/2 (ALPN `h2`, or the h2c preface).
pub struct Handover {
    pub stream: Stream,
    /// The client socket's token; proxied streams' upstream sockets are
    /// registered under the next one (`side` 1), all of them.
    pub token: mio::Token,
    /// Bytes already read: the preface and what followed it.
    pub read: Vec<u8>,
    pub peer: Option<IpAddr>,
    pub listener: usize,
    pub readable: bool,
    pub writable: bool,
    pub accepted: Instant,
}

pub struct Http2Connection {
    io: Rc<RefCell<IoState>>,
    engine: Engine,
    flag: Arc<Flag>,
    waker: Waker,
    streams: Vec<Active>,
    /// Streams whose route is proxied (`proxy`).
    proxied: Vec<Proxied>,
    token: mio::Token,
    listener: usize,
    peer: Option<IpAddr>,
    phase: Phase,
    accepted: Instant,
    /// When the last stream ended (or the connection opened).
    idle_since: Instant,
    /// Last time bytes moved.
    last_progress: Instant,
    /// Streams answered.
    served: u64,
    /// When the two-GOAWAY shutdown began (drain, or idle).
    shutdown: Option<Instant>,
    /// The control-frame flood was answered (GOAWAY ENHANCE_YOUR_CALM).
    flood_answered: bool,
    /// The socket's fd, for registrations.
    fd: std::os::fd::RawFd,
    /// Server and Date, as the engine takes them.
    fixed: FixedFields,
}

impl Http2Connection {
    pub fn new(h: Handover, config: &Config, stats: &mut Http2Counters) -> Http2Connection {
        stats.connections += 1;
        let fd = h.stream.raw_fd();
        let io = Rc::new(RefCell::new(IoState::new(
            h.stream,
            h.read,
            h.readable,
            h.writable,
            config.http.http2.max_control_frames,
            h.accepted,
        )));
        let engine = Engine::new(Io(Rc::clone(&io)), config);
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        Http2Connection {
            io,
            engine,
            flag,
            waker,
            streams: Vec::new(),
            proxied: Vec::new(),
            token: h.token,
            listener: h.listener,
            peer: h.peer,
            phase: Phase::Open,
            accepted: h.accepted,
            idle_since: h.accepted,
            last_progress: h.accepted,
            served: 0,
            shutdown: None,
            flood_answered: false,
            fd,
            fixed: FixedFields::new(config.http.server_token.as_deref()),
        }
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    pub fn on_ready(&mut self, readable: bool, writable: bool) {
        let mut io = self.io.borrow_mut();
        io.readable |= readable;
        io.writable |= writable;
    }

    /// Readiness of upstream connection `id` (its poll id, `tokens::Slot`):
    /// told to the proxied stream using it, so that another stream's
    /// upstream closing does not keep this one's from its pool. Without an
    /// id, or for a connection no stream uses any more, every stream hears
    /// it (as all did before events carried the id): each then reads until
    /// WouldBlock, never missing an EOF behind a short read, and does not
    /// pool its connection.
    pub fn on_upstream_ready(
        &mut self,
        id: Option<usize>,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) {
        if let Some(p) = id.and_then(|id| {
            self.proxied
                .iter_mut()
                .find(|p| p.upstream_id() == Some(id))
        }) {
            p.on_upstream_ready(readable, writable, read_closed);
            return;
        }
        for p in &mut self.proxied {
            p.on_upstream_ready(readable, writable, read_closed);
        }
    }

    /// The connection is dropped: upstream connections are closed.
    pub fn abandon(&mut self, state: &mut crate::proxy::ProxyState) {
        for p in &mut self.proxied {
            p.abandon(state);
        }
    }

    fn upstream_token(&self) -> mio::Token {
        mio::Token(self.token.0 + 1)
    }

    /// No stream of either kind is open.
    fn no_streams(&self) -> bool {
        self.streams.is_empty() && self.proxied.is_empty()
    }

    pub fn take_write_interest(&mut self) -> bool {
        std::mem::take(&mut self.io.borrow_mut().write_interest_pending)
    }

    /// Makes all the progress possible now.
    pub fn drive(&mut self, ctx: &mut Ctx) -> Drive {
        match self.phase {
            Phase::Closed => return Drive::Closed,
            Phase::Lingering { .. } => return self.linger(ctx),
            Phase::Flushing => return self.start_closing(ctx.now),
            Phase::Open => {}
        }
        {
            let mut io = self.io.borrow_mut();
            io.budget = TURN_BYTES;
            io.budget_hit = false;
            io.now = ctx.now;
        }
        if ctx.drain_started.is_some() && self.shutdown.is_none() {
            self.begin_shutdown(ctx.now);
        }
        let mut ended = None;
        for _ in 0..POLLS_PER_TURN {
            self.flag.0.store(false, Ordering::Relaxed);
            let waker = self.waker.clone();
            let mut cx = Context::from_waker(&waker);
            if self.io.borrow().flood && !self.flood_answered {
                debug!("HTTP/2 control frame flood: GOAWAY ENHANCE_YOUR_CALM");
                self.flood_answered = true;
                self.engine.abrupt_shutdown(Code::ENHANCE_YOUR_CALM);
                for s in self.streams.drain(..) {
                    log_stream(ctx, self.peer, &s.log, s.sent, false);
                }
                for mut p in self.proxied.drain(..) {
                    p.abandon(ctx.proxy);
                    log_stream(ctx, self.peer, &p.log, p.sent, false);
                }
            }
            loop {
                match self.engine.poll_next(&mut cx) {
                    std::task::Poll::Pending => break,
                    std::task::Poll::Ready(Ok(incoming)) => self.start(incoming, ctx),
                    std::task::Poll::Ready(Err(end)) => {
                        ended = Some(end);
                        break;
                    }
                }
            }
            if ended.is_some() {
                break;
            }
            let mut i = 0;
            while i < self.streams.len() {
                match self.streams[i].advance(&mut cx, ctx.now) {
                    Step::Waiting => i += 1,
                    step => {
                        let s = self.streams.swap_remove(i);
                        log_stream(ctx, self.peer, &s.log, s.sent, step == Step::Done);
                        if self.no_streams() {
                            self.idle_since = ctx.now;
                        }
                    }
                }
            }
            let token = self.upstream_token();
            let mut i = 0;
            while i < self.proxied.len() {
                match self.proxied[i].advance(&mut cx, token, ctx) {
                    Step::Waiting => i += 1,
                    step => {
                        let p = self.proxied.swap_remove(i);
                        log_stream(ctx, self.peer, &p.log, p.sent, step == Step::Done);
                        if self.no_streams() {
                            self.idle_since = ctx.now;
                        }
                    }
                }
            }
            let (budget_hit, flood) = {
                let io = self.io.borrow();
                (io.budget_hit, io.flood)
            };
            // A flood found in this poll is answered in the next.
            let unanswered = flood && !self.flood_answered;
            if budget_hit || !(self.flag.0.load(Ordering::Relaxed) || unanswered) {
                break;
            }
        }
        // What the engine wrote this turn goes out in one send.
        let flushed = self.io.borrow_mut().flush_now();
        self.account(ctx);
        if let Err(e) = flushed {
            debug!("HTTP/2 connection: send: {e}");
            ended = Some(End::Error(e.to_string()));
        }
        if let Some(end) = ended {
            if let End::Error(why) = &end {
                debug!("HTTP/2 connection ended: {why}");
            }
            for s in self.streams.drain(..) {
                log_stream(ctx, self.peer, &s.log, s.sent, false);
            }
            for mut p in self.proxied.drain(..) {
                p.abandon(ctx.proxy);
                log_stream(ctx, self.peer, &p.log, p.sent, false);
            }
            return self.start_closing(ctx.now);
        }
        if self.io.borrow().budget_hit {
            Drive::Again
        } else {
            Drive::Wait
        }
    }

    /// Counts what the socket saw into the worker's metrics.
    fn account(&mut self, ctx: &mut Ctx) {
        let mut io = self.io.borrow_mut();
        if std::mem::take(&mut io.progress) {
            self.last_progress = ctx.now;
        }
        ctx.http2.resets_received += std::mem::take(&mut io.resets);
        for code in io.goaways.drain(..) {
            ctx.http2.goaway(code);
        }
    }

    /// A stream the client opened: answered now (static files) and sent
    /// as the windows allow.
    fn start(&mut self, incoming: Incoming, ctx: &mut Ctx) {
        ctx.http2.streams += 1;
        self.served += 1;
        *ctx.requests += 1;
        let Incoming {
            head,
            body,
            respond,
        } = incoming;
        let logging = ctx.access_log.enabled();
        let mut log = StreamLog {
            time: if logging {
                SystemTime::now()
            } else {
                SystemTime::UNIX_EPOCH
            },
            start: ctx.now,
            // Only the access log reads these: not made when it is off.
            method: if logging {
                head.method.as_str().to_owned()
            } else {
                String::new()
            },
            target: if logging {
                head.uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned()
            } else {
                String::new()
            },
            host: None,
            referer: None,
            user_agent: None,
            site: None,
            status: 0,
            upstream: None,
            upstream_status: None,
            upstream_time: None,
        };
        let max_body = ctx.config.http.max_body_size;
        let declared = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut proxied = None;
        // An extended CONNECT (RFC 8441): a WebSocket, proxied as the
        // HTTP/1.1 handshake with a key of ours, to a route that allows
        // WebSockets; any other protocol, or a route without them, 501.
        let protocol = protocol_of(&head);
        // A CONNECT's stream stays open for the tunnel it asks for: one
        // answered here is answered without waiting for its end.
        let connect = head.method == http::Method::CONNECT;
        let websocket_key = protocol
            .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
            .then(websocket_key);
        let (response, head_only) = match to_request(&head, &ctx.config.http, logging) {
            Err(status) => (Response::status(status), false),
            Ok(_) if declared.is_some_and(|n| n > max_body) => {
                (Response::status(Status::PayloadTooLarge), false)
            }
            Ok(mut req) => {
                let head_request = req.method == Method::Head;
                let site = ctx
                    .routes
                    .pick(ctx.config, self.listener, req.host.as_deref());
                log.site =
                    site.and_then(|s| ctx.config.sites.iter().position(|x| std::ptr::eq(x, s)));
                let route = site.and_then(|s| Some((s, crate::proxy::route_for(s, &req.target)?)));
                let response = match route {
                    _ if protocol.is_some()
                        && !(websocket_key.is_some()
                            && route.is_some_and(|(_, r)| r.websocket)) =>
                    {
                        Response::status(Status::NotImplemented)
                    }
                    Some((site, route)) => {
                        let raw = request_for(
                            &mut req,
                            &head,
                            !body.is_empty(),
                            websocket_key.as_deref(),
                        );
                        let client = crate::connection::ProxyClient {
                            peer: self.peer,
                            tls: self.io.borrow().stream.is_tls(),
                            close: false,
                        };
                        match crate::connection::new_exchange(&client, &raw, &req, site, route, ctx)
                        {
                            Ok(ex) => {
                                proxied = Some((ex, is_head(&req)));
                                // Never sent: the exchange answers.
                                Response::status(Status::BadGateway)
                            }
                            Err(status) => Response::status(status),
                        }
                    }
                    None => handler::respond(&req, site, ctx.files, ctx.date),
                };
                log.host = req.host;
                log.referer = req.log.referer;
                log.user_agent = req.log.user_agent;
                (response, head_request)
            }
        };
        if let Some((ex, head_request)) = proxied {
            let inbound = (!body.is_empty()).then_some(body);
            let mut p = Proxied::new(
                ex,
                inbound,
                respond,
                head_request,
                websocket_key.as_deref(),
                log,
                ctx.now,
            );
            let mut cx = Context::from_waker(&self.waker);
            match p.advance(&mut cx, self.upstream_token(), ctx) {
                Step::Waiting => self.proxied.push(p),
                step => {
                    log_stream(ctx, self.peer, &p.log, p.sent, step == Step::Done);
                    if self.no_streams() {
                        self.idle_since = ctx.now;
                    }
                }
            }
            return;
        }
        log.status = response.status.code();
        let (head, source) = split(response, &mut self.fixed, ctx.date, head_only);
        let inbound = (!body.is_empty() && !connect).then_some(body);
        let mut active = Active::new(respond, head, inbound, max_body, source, log, ctx.now);
        // Most streams are answered at once, with no body left to wait
        // for: only the others are kept.
        let mut cx = Context::from_waker(&self.waker);
        match active.advance(&mut cx, ctx.now) {
            Step::Waiting => self.streams.push(active),
            step => {
                log_stream(ctx, self.peer, &active.log, active.sent, step == Step::Done);
                if self.no_streams() {
                    self.idle_since = ctx.now;
                }
            }
        }
    }

    /// GOAWAY twice (see `Engine::graceful_shutdown`), then close once
    /// every accepted stream is finished.
    fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown = Some(now);
        self.engine.graceful_shutdown();
    }

    /// The engine is done: our FIN, then input discarded until the
    /// client's (a lingering close, as for HTTP/1.1).
    fn start_closing(&mut self, now: Instant) -> Drive {
        let mut io = self.io.borrow_mut();
        if io.flush_now().is_err() {
            self.phase = Phase::Closed;
            return Drive::Closed;
        }
        if io.has_output() {
            // The socket is full: the rest goes on its writable edge.
            self.phase = Phase::Flushing;
            return Drive::Wait;
        }
        if io.eof {
            self.phase = Phase::Closed;
            return Drive::Closed;
        }
        match io.stream.shutdown_write() {
            Ok(()) => {
                self.phase = Phase::Lingering {
                    until: after(now, LINGERING_CLOSE),
                };
                Drive::Wait
            }
            Err(_) => {
                self.phase = Phase::Closed;
                Drive::Closed
            }
        }
    }

    fn linger(&mut self, ctx: &mut Ctx) -> Drive {
        let mut io = self.io.borrow_mut();
        let mut budget = TURN_BYTES;
        while io.readable {
            if budget == 0 {
                return Drive::Again;
            }
            match io.stream.read(ctx.scratch) {
                Ok(0) => {
                    self.phase = Phase::Closed;
                    return Drive::Closed;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => io.readable = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.phase = Phase::Closed;
                    return Drive::Closed;
                }
            }
        }
        Drive::Wait
    }
}

/// Logs a stream's response: `complete` when all of it went to the
/// engine; an abandoned one logs no body bytes.
fn log_stream(ctx: &mut Ctx, peer: Option<IpAddr>, l: &StreamLog, sent: u64, complete: bool) {
    let remote = match peer {
        Some(ip) if ctx.access_log.enabled() => ip.to_string(),
        Some(_) => String::new(),
        None => "unix:".to_owned(),
    };
    ctx.access_log.record(
        l.site,
        &Entry {
            remote: &remote,
            time: l.time,
            method: &l.method,
            target: &l.target,
            protocol: "HTTP/2.0",
            host: l.host.as_deref(),
            status: l.status,
            bytes: if complete { sent } else { 0 },
            referer: l.referer.as_deref(),
            user_agent: l.user_agent.as_deref(),
            request_time: ctx.now.saturating_duration_since(l.start),
            upstream: l.upstream.as_deref(),
            upstream_status: l.upstream_status,
            upstream_time: l.upstream_time,
        },
    );
}
