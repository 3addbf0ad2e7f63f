//! A connection whose current request is proxied: the same client-side
//! engine (parsing, limits, keep-alive, the access log) with an
//! `Exchange` as the response source instead of a file.
//!
//! Each turn moves the client's body into the exchange while it has room
//! (else the body stays in `inbuf`, which stops reading the client once
//! full: back-pressure), lets the exchange work its upstream socket, and
//! sends what it produced for the client (the exchange reads its upstream
//! only while that output is below its bound: back-pressure the other
//! way).

use std::io;

use std::time::Instant;

use baton_shared::config::{Config, Route, Site};
use log::debug;
use mio::Token;

use super::access::PendingLog;
use super::{Budget, Connection, Ctx, Held, Phase};
use crate::http::body::Step;
use crate::http::request::Method;
use crate::http::request::{Request, Version};
use crate::http::response::{Response, Status};
use crate::limits::after;
use crate::proxy::exchange::{Env, Exchange, Stop};
use crate::proxy::{self, head, transform};

/// The protocol version a `Via` names for a message received as `v`.
fn via_version(v: Version) -> &'static str {
    match v {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
        Version::Http2 => "2",
    }
}

/// How `Via` names this server: its `server_token`, or "baton" when the
/// token is off (`Via` needs a name; `via = true` asks for one).
fn via_pseudonym(config: &Config) -> &str {
    config.http.server_token.as_deref().unwrap_or("baton")
}

/// The client side of a proxied request, as the exchange needs it.
pub(crate) struct Client {
    pub peer: Option<std::net::IpAddr>,
    pub tls: bool,
    /// The client connection closes after this response.
    pub close: bool,
}

/// The exchange for a routed request whose HTTP/1.1 head is `raw` (as the
/// client sent it, or as HTTP/2's was translated, `http2::proxy`), with
/// the site's and the route's headers, compression and Via; or the status
/// to answer instead. One path for both protocols.
pub(crate) fn new_exchange(
    client: &Client,
    raw: &[u8],
    req: &Request,
    site: &Site,
    route: &Route,
    ctx: &Ctx,
) -> Result<Exchange, Status> {
    let config = ctx.config;
    let up = config
        .proxy
        .upstreams
        .get(route.upstream)
        .ok_or(Status::InternalServerError)?;
    let trusted = client
        .peer
        .is_some_and(|ip| config.proxy.trusted_proxies.iter().any(|c| c.contains(ip)));
    let target = proxy::upstream_target(route, &req.target);
    let hash_header = match &up.balance {
        baton_shared::config::Balance::Header(h) => Some(h.as_str()),
        _ => None,
    };
    let forwarding = head::Forwarding {
        peer: client.peer,
        trusted,
        tls: client.tls,
        target: &target,
        body: req.body,
        keep_alive: up.keepalive > 0,
        allow_upgrade: route.websocket,
    };
    // A proxy that forwarded CONNECT would open tunnels to anywhere
    // the upstream can reach.
    if raw.starts_with(b"CONNECT ") {
        return Err(Status::MethodNotAllowed);
    }
    let mut info = head::request(raw, &forwarding, hash_header).ok_or(Status::BadRequest)?;
    if route.via {
        let value = transform::via_value(via_version(req.version), via_pseudonym(config));
        transform::add_via_to_request(&mut info.head, &value);
    }
    if matches!(up.balance, baton_shared::config::Balance::IpHash) {
        info.hash_value = client.peer.map(|ip| ip.to_string().into_bytes());
    }
    let mut ex = Exchange::new(
        route.upstream,
        info,
        req.body,
        client.close,
        req.version == Version::Http10,
        ctx.now,
    );
    // The site's `headers`, then the route's (which win).
    let mut headers = site.files.headers.clone();
    for (name, value) in &route.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }
    ex.route_headers = headers;
    // The route's `compress`, else the site's.
    let setting = match &route.compress {
        Some(c) => c.as_ref(),
        None => site.files.compress.as_ref(),
    };
    ex.compress = transform::CompressRequest::new(
        setting,
        matches!(req.method, Method::Get | Method::Head),
        &req.conditions,
    );
    ex.translate_validators();
    if route.via {
        ex.via = Some(via_pseudonym(config).to_owned());
    }
    Ok(ex)
}

impl Connection {
    /// The exchange for a routed request whose head is `inbuf[..head_len]`
    /// (still there), or the status to answer instead.
    pub(super) fn start_proxy(
        &mut self,
        req: &Request,
        site: &Site,
        route: &Route,
        ctx: &Ctx,
    ) -> Result<Exchange, Status> {
        let raw = self.inbuf.get(..req.head_len).ok_or(Status::BadRequest)?;
        let client_close = !req.keep_alive
            || self.served >= ctx.config.http.keepalive_requests
            || ctx.drain_started.is_some();
        let client = Client {
            peer: self.peer,
            tls: self.stream.is_tls(),
            close: client_close,
        };
        new_exchange(&client, raw, req, site, route, ctx)
    }

    /// The token of this connection's upstream socket.
    fn upstream_token(&self) -> Token {
        Token(self.token.0 + 1)
    }

    /// Readiness of the upstream socket (`read_closed`: its FIN came).
    pub fn on_upstream_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if let Some(ex) = self.exchange.as_mut() {
            ex.on_ready(readable, writable, read_closed);
        }
    }

    /// One turn of the proxied request. `Err` when the connection is dead.
    pub(super) fn proxy_turn(&mut self, ctx: &mut Ctx, budget: &mut Budget) -> Result<bool, ()> {
        let mut progress = self.feed_body(ctx);
        let token = self.upstream_token();
        let Some(ex) = self.exchange.as_mut() else {
            return Ok(progress);
        };
        // Draining: a response whose head is not out yet says it is the
        // last on this connection (the client reconnects to the next
        // generation, as for static files).
        if ctx.drain_started.is_some() && !ex.response_started() {
            ex.client_close = true;
        }
        let mut env = Env {
            config: ctx.config,
            state: ctx.proxy,
            registry: ctx.registry,
            token,
            scratch: ctx.scratch,
            now: ctx.now,
            date: ctx.date.get(),
        };
        match ex.pump(&mut env) {
            Ok(p) => progress |= p,
            Err(stop) => {
                self.proxy_stopped(stop, ctx);
                return Ok(true);
            }
        }
        // More body may fit now that some went up.
        progress |= self.feed_body(ctx);
        match self.send_proxied(ctx, budget) {
            Ok(p) => progress |= p,
            Err(()) => return Err(()),
        }
        if self.exchange.as_ref().is_some_and(|ex| ex.finished()) {
            self.proxy_done(ctx);
            progress = true;
        }
        Ok(progress)
    }

    /// Moves request body bytes from `inbuf` into the exchange, as much as
    /// it has room for.
    fn feed_body(&mut self, ctx: &mut Ctx) -> bool {
        if let Some(ex) = self.exchange.as_mut()
            && ex.is_tunnel()
        {
            // A tunnel: the client's bytes go up as they are.
            let n = self.inbuf.len().min(ex.body_room());
            ex.push_raw(&self.inbuf[..n]);
            self.inbuf.drain(..n);
            if self.peer_eof && self.inbuf.is_empty() {
                ex.client_eof();
            }
            return n > 0;
        }
        let (Some(ex), Some(body)) = (self.exchange.as_mut(), self.body.as_mut()) else {
            return false;
        };
        if !ex.wants_body() {
            return false;
        }
        let http = &ctx.config.http;
        let mut at = 0;
        let mut progress = false;
        let mut step = Step::More;
        while at < self.inbuf.len() && step == Step::More {
            if let Some(left) = body.data_left().filter(|&l| l > 0) {
                let room = ex.body_room();
                if room == 0 {
                    break;
                }
                let avail = self.inbuf.len() - at;
                let n = usize::try_from(left)
                    .map_or(avail, |l| l.min(avail))
                    .min(room);
                let (used, s) = body.consume(&self.inbuf[at..at + n], http.max_body_size, 0);
                ex.push_body(&self.inbuf[at..at + used]);
                at += used;
                step = s;
            } else {
                let (used, s) = body.consume_framing(
                    &self.inbuf[at..],
                    http.max_body_size,
                    http.max_header_size,
                );
                at += used;
                step = s;
                if used == 0 && s == Step::More {
                    break;
                }
            }
            progress = true;
        }
        self.inbuf.drain(..at);
        match step {
            Step::More => {}
            Step::Done => {
                ex.end_body();
                self.body = None;
            }
            Step::Invalid(status) => {
                // The client's framing is lost: nothing after it can be
                // read, and the upstream must not get a body cut anywhere.
                self.body = None;
                self.inbuf.clear();
                if let Some(mut ex) = self.exchange.take() {
                    ex.abandon(ctx.proxy);
                    if ex.response_started() {
                        self.log_done_proxied(ctx, &ex, false);
                        self.phase = Phase::Closed;
                        return true;
                    }
                }
                self.log_start.take();
                self.finish(Held::error(status), ctx);
            }
        }
        progress
    }

    /// Sends what the exchange produced for the client.
    fn send_proxied(&mut self, ctx: &mut Ctx, budget: &mut Budget) -> Result<bool, ()> {
        let mut progress = false;
        let mut failed = None;
        let mut blocked = false;
        if let Some(ex) = self.exchange.as_mut() {
            while self.writable && !blocked && ex.has_client_output() {
                if budget.bytes == 0 {
                    return Ok(progress);
                }
                let pending = &ex.to_client[ex.client_pos..];
                match self.stream.send(pending, false) {
                    Ok(0) => {
                        failed = Some("send: wrote nothing".to_owned());
                        break;
                    }
                    Ok(n) => {
                        ex.client_pos += n;
                        budget.bytes = budget.bytes.saturating_sub(n);
                        self.last_progress = ctx.now;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(format!("send: {e}"));
                        break;
                    }
                }
            }
        }
        if failed.is_none() && !blocked && self.writable {
            match self.stream.flush_pending() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(e) => failed = Some(format!("send: {e}")),
            }
        }
        if let Some(why) = failed {
            return self.client_gone(ctx, &why);
        }
        if blocked {
            self.blocked_on_write();
        }
        Ok(progress)
    }

    fn client_gone(&mut self, ctx: &mut Ctx, why: &str) -> Result<bool, ()> {
        debug!("proxied connection: {why}");
        if let Some(mut ex) = self.exchange.take() {
            ex.abandon(ctx.proxy);
            self.log_done_proxied(ctx, &ex, false);
        }
        self.phase = Phase::Closed;
        Err(())
    }

    /// The response is complete and sent.
    fn proxy_done(&mut self, ctx: &mut Ctx) {
        let Some(mut ex) = self.exchange.take() else {
            return;
        };
        let mut env = Env {
            config: ctx.config,
            state: ctx.proxy,
            registry: ctx.registry,
            token: Token(self.token.0 + 1),
            scratch: ctx.scratch,
            now: ctx.now,
            date: ctx.date.get(),
        };
        ex.release(&mut env);
        self.log_done_proxied(ctx, &ex, true);
        // A body not all read (the upstream answered early): closing
        // discards it (lingering), whatever the client may still send. A
        // client that said this request was its last, all of it read, is
        // closed at once, as after a static response (`start_closing`).
        if ex.closes_client() || self.body.is_some() {
            self.input_done = ex.client_last && self.body.is_none();
            self.start_closing(ctx.now);
        } else {
            self.idle_since = ctx.now;
            self.head_started = ctx.now;
        }
    }

    /// The exchange could not give a response (or stopped in the middle).
    fn proxy_stopped(&mut self, stop: Stop, ctx: &mut Ctx) {
        let Some(mut ex) = self.exchange.take() else {
            return;
        };
        ex.abandon(ctx.proxy);
        match stop {
            Stop::Abort => {
                // The client sees the response cut short: the connection
                // ends (a FIN, after what was already sent).
                let rest = ex
                    .to_client
                    .split_off(ex.client_pos.min(ex.to_client.len()));
                self.log_done_proxied(ctx, &ex, false);
                if !rest.is_empty() {
                    // Bytes produced before the failure still go out; the
                    // close follows them.
                    let mut out =
                        crate::outgoing::Outgoing::new(rest, crate::outgoing::Body::Empty, false);
                    out.set_last();
                    self.out = Some(out);
                    self.close_after = true;
                    self.body = None;
                    self.inbuf.clear();
                } else {
                    self.start_closing(ctx.now);
                }
            }
            Stop::Answer(code, retry_after) => {
                let status = match code {
                    503 => Status::ServiceUnavailable,
                    504 => Status::GatewayTimeout,
                    _ => Status::BadGateway,
                };
                let mut response = Response::status(status);
                if let Some(d) = retry_after {
                    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                    response = response.with_header("Retry-After", secs.max(1).to_string());
                }
                // Interim responses already passed on (a 100 Continue) go
                // first.
                let interim = ex
                    .to_client
                    .split_off(ex.client_pos.min(ex.to_client.len()));
                let complete_body = self.body.is_none();
                if !complete_body {
                    // The rest of the body is not read: close after the
                    // answer (lingering, so the client gets it).
                    self.body = None;
                    self.inbuf.clear();
                }
                let held = Held {
                    response,
                    head_only: false,
                    version: if ex.client_http10 {
                        Version::Http10
                    } else {
                        Version::Http11
                    },
                    keep_alive: complete_body && !ex.client_close,
                    last: false,
                };
                self.finish(held, ctx);
                if !interim.is_empty()
                    && let Some(out) = self.out.take()
                {
                    self.out = Some(out.with_prefix(interim));
                }
                if let Some(p) = self.pending_log.as_mut() {
                    p.upstream = ex.server_addr(ctx.config);
                    p.upstream_time = None;
                }
            }
        }
    }

    /// Logs a proxied response (`complete`: all of it was sent).
    fn log_done_proxied(&mut self, ctx: &mut Ctx, ex: &Exchange, complete: bool) {
        if let Some(start) = self.log_start.take() {
            self.pending_log = Some(PendingLog {
                start,
                status: ex.status.unwrap_or(502),
                bytes: ex.body_bytes,
                upstream: ex.server_addr(ctx.config),
                upstream_status: ex.status,
                upstream_time: ex.upstream_time,
            });
        }
        self.log_done(ctx, complete);
    }

    /// Starts the exchange of a routed request, for `process`; else the
    /// status to answer with.
    pub(super) fn route_request(
        &mut self,
        req: &Request,
        site: &Site,
        route: &Route,
        ctx: &mut Ctx,
    ) -> Result<(), Status> {
        let mut ex = self
            .start_proxy(req, site, route, ctx)
            .inspect_err(|status| {
                debug!("cannot proxy the request: {}", status.code());
            })?;
        // The client said this is its last request: once it is all read,
        // the connection closes as soon as the response is out.
        ex.client_last = !req.keep_alive;
        self.exchange = Some(Box::new(ex));
        Ok(())
    }

    /// When a connection with an exchange times out: the upstream's own
    /// timeouts, the client's for what waits to be sent to it or for a
    /// body that stopped, and a draining tunnel's end.
    pub(super) fn exchange_deadline(
        &self,
        config: &Config,
        drain_started: Option<Instant>,
    ) -> Instant {
        let mut d = self.exchange.as_ref().and_then(|e| e.deadline(config));
        let mut client = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        if self
            .exchange
            .as_ref()
            .is_some_and(|e| e.has_client_output())
        {
            client(after(self.last_progress, config.http.send_timeout));
        }
        if self.body.is_some() {
            client(after(self.last_progress, config.http.body_timeout));
        }
        if let Some(started) = drain_started
            && self.is_tunnel()
        {
            client(after(started, tunnel_grace(config)));
        }
        // Waiting on nothing with a deadline (an idle tunnel side): the
        // longest any timeout may be.
        d.unwrap_or_else(|| {
            after(
                self.last_progress,
                config.keepalive_timeout.max(config.http.send_timeout),
            )
        })
    }

    /// The deadline of a connection with an exchange passed: whose?
    pub(super) fn exchange_expired(&mut self, ctx: &mut Ctx) {
        let now = ctx.now;
        let client_late = self
            .exchange
            .as_ref()
            .is_some_and(|e| e.has_client_output())
            && after(self.last_progress, ctx.config.http.send_timeout) <= now
            || self.body.is_some()
                && after(self.last_progress, ctx.config.http.body_timeout) <= now;
        let tunnel_over = self.is_tunnel()
            && ctx
                .drain_started
                .is_some_and(|d| after(d, tunnel_grace(ctx.config)) <= now);
        if tunnel_over {
            self.end_tunnel();
        } else if client_late {
            debug!("proxied connection: the client made no progress in time");
            if let Some(mut ex) = self.exchange.take() {
                ex.abandon(ctx.proxy);
            }
            self.log_start = None;
            self.phase = Phase::Closed;
        } else {
            self.proxy_timeout(ctx);
        }
    }

    /// Whether this connection is a tunnel (after a 101).
    pub(super) fn is_tunnel(&self) -> bool {
        self.exchange.as_ref().is_some_and(|e| e.is_tunnel())
    }

    /// A drain's grace is over for this tunnel: end it (at a frame
    /// boundary, with a close frame 1001 for a WebSocket).
    fn end_tunnel(&mut self) {
        if let Some(ex) = self.exchange.as_mut() {
            ex.end_tunnel();
        }
    }

    /// The upstream timed out.
    fn proxy_timeout(&mut self, ctx: &mut Ctx) {
        let token = self.upstream_token();
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        let mut env = Env {
            config: ctx.config,
            state: ctx.proxy,
            registry: ctx.registry,
            token,
            scratch: ctx.scratch,
            now: ctx.now,
            date: ctx.date.get(),
        };
        if let Err(stop) = ex.on_timeout(&mut env) {
            self.proxy_stopped(stop, ctx);
        }
    }

    /// The connection is being dropped.
    pub fn abandon_exchange(&mut self, state: &mut crate::proxy::ProxyState) {
        if let Some(mut ex) = self.exchange.take() {
            ex.abandon(state);
        }
    }
}

/// When a draining worker ends its tunnels: a little before the grace
/// period is over, so that the close frames go out, and the lingering
/// close that follows ends, before the master kills what is left.
pub(crate) fn tunnel_grace(config: &baton_shared::config::Config) -> std::time::Duration {
    let margin = (config.grace / 2)
        .min(crate::limits::LINGERING_CLOSE + std::time::Duration::from_millis(500));
    config.grace.saturating_sub(margin)
}
