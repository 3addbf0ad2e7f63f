//! A stream whose route is proxied: HTTP/2 in front, HTTP/1.1 to the
//! upstream, through the same `Exchange` as an HTTP/1.1 client's request
//! (`connection::proxy::new_exchange`: balancing, retries, pools, health,
//! forwarding headers, the route's headers and compression, Via). Only
//! the framing is translated, both ways:
//!
//! - up: the request head as `h1_request` writes it (request line and
//!   Host from the pseudo-headers, no connection-specific fields, cookies
//!   joined), the body with its Content-Length or chunked;
//! - down: the HTTP/1.1 response the exchange frames is read back
//!   (`h1_response`) into a head without connection-specific fields and
//!   DATA frames.
//!
//! Both bodies are streamed with flow control: the client's DATA goes up
//! only as the exchange has room (its window is released as it does), and
//! the response is read from the upstream only as the client's windows
//! take it (the exchange stops reading while its output is full).
//!
//! A WebSocket over HTTP/2 (an extended CONNECT, RFC 8441) goes up as the
//! HTTP/1.1 handshake with a key of ours; the upstream's 101, if it
//! answers that key, becomes the client's 200, and the exchange's tunnel
//! carries the stream's DATA both ways (`h1_response` reads the tunnel's
//! bytes as a body that ends with the exchange).

use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use mio::Token;

use super::engine::{Code, Inbound, Outbound};
use super::h1_request::websocket_accept;
use super::h1_response::{Decoder, Piece};
use super::response::connection_specific;
use super::stream::{Step, StreamLog};
use crate::connection::Ctx;
use crate::http::response::{Response, Status};
use crate::proxy::exchange::{Env, Exchange, Stop};

pub struct Proxied {
    ex: Box<Exchange>,
    /// The request body still arriving, and a chunk of it the exchange
    /// had no room for yet.
    inbound: Option<Inbound>,
    held: Option<Bytes>,
    pub out: Outbound,
    decoder: Decoder,
    pub log: StreamLog,
    pub last_progress: Instant,
    pub sent: u64,
    head_sent: bool,
}

/// Most response bytes handed to the engine per send.
const CHUNK: usize = 64 * 1024;

impl Proxied {
    pub fn new(
        ex: Exchange,
        inbound: Option<Inbound>,
        out: Outbound,
        head_request: bool,
        websocket_key: Option<&str>,
        log: StreamLog,
        now: Instant,
    ) -> Proxied {
        Proxied {
            ex: Box::new(ex),
            inbound,
            held: None,
            out,
            decoder: Decoder::new(head_request, websocket_key.map(websocket_accept)),
            log,
            last_progress: now,
            sent: 0,
            head_sent: false,
        }
    }

    /// How long this stream may make no progress: `body_timeout` while
    /// it waits on the client's request body (nothing held back for the
    /// exchange), else `send_timeout`, as an HTTP/1.1 request would be.
    /// A WebSocket may be idle: only output the client does not take is
    /// timed (an idle tunnel ends by the upstream's `read_timeout`, as
    /// over HTTP/1.1).
    pub fn stall_timeout(
        &self,
        http: &baton_shared::config::HttpLimits,
    ) -> Option<std::time::Duration> {
        if self.ex.is_tunnel() {
            self.ex.has_client_output().then_some(http.send_timeout)
        } else if self.inbound.is_some() && self.held.is_none() {
            Some(http.body_timeout)
        } else {
            Some(http.send_timeout)
        }
    }

    /// A WebSocket over HTTP/2, open and not being ended.
    pub fn is_open_tunnel(&self) -> bool {
        self.ex.is_tunnel() && !self.ex.tunnel_ending()
    }

    /// A draining worker's grace is almost over: the WebSocket ends at its
    /// next frame boundary with a close frame 1001, as over HTTP/1.1.
    pub fn end_tunnel(&mut self) {
        self.ex.end_tunnel();
    }

    pub fn on_upstream_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        self.ex.on_ready(readable, writable, read_closed);
    }

    /// The poll id of its upstream connection, if it has one.
    pub fn upstream_id(&self) -> Option<usize> {
        self.ex.upstream_id()
    }

    /// When the upstream side times out, if it is waiting on it.
    pub fn deadline(&self, config: &baton_shared::config::Config) -> Option<Instant> {
        self.ex.deadline(config)
    }

    /// The stream or its connection is dropped: the upstream connection
    /// is closed, never pooled.
    pub fn abandon(&mut self, state: &mut crate::proxy::ProxyState) {
        self.ex.abandon(state);
    }

    /// The upstream took too long.
    pub fn on_timeout(&mut self, token: Token, ctx: &mut Ctx) -> Step {
        let mut env = env(token, ctx);
        match self.ex.on_timeout(&mut env) {
            Ok(_) => Step::Waiting,
            Err(stop) => self.stopped(stop, ctx),
        }
    }

    /// Moves the request body up, the upstream along, and the response
    /// down, as far as the windows and buffers allow.
    pub fn advance(&mut self, cx: &mut Context<'_>, token: Token, ctx: &mut Ctx) -> Step {
        if self.out.poll_reset(cx) {
            self.ex.abandon(ctx.proxy);
            return Step::Failed;
        }
        for _ in 0..8 {
            let mut moved = self.feed_body(cx, ctx.now);
            let pumped = {
                let mut env = env(token, ctx);
                self.ex.pump(&mut env)
            };
            match pumped {
                Ok(p) => moved |= p,
                Err(stop) => return self.stopped(stop, ctx),
            }
            match self.send_down(cx, ctx) {
                Ok(true) => moved = true,
                Ok(false) => {}
                Err(step) => return step,
            }
            if self.decoder.done() || (self.decoder.close_delimited() && self.ex.finished()) {
                if self.decoder.close_delimited() || !self.out_ended() {
                    // The end of the stream in an empty DATA frame.
                    if self.out.send(Bytes::new(), true).is_err() {
                        return Step::Failed;
                    }
                }
                let mut env = env(token, ctx);
                self.ex.release(&mut env);
                self.log.upstream = self.ex.server_addr(ctx.config);
                self.log.upstream_status = self.ex.status;
                self.log.upstream_time = self.ex.upstream_time;
                return Step::Done;
            }
            if !moved {
                break;
            }
            self.last_progress = ctx.now;
        }
        Step::Waiting
    }

    fn out_ended(&self) -> bool {
        matches!(self.out, Outbound::Done)
    }

    /// Request body from the client into the exchange, while it has room.
    fn feed_body(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut moved = false;
        loop {
            if let Some(chunk) = self.held.as_mut() {
                let n = chunk.len().min(self.ex.body_room());
                if n > 0 {
                    if self.ex.is_tunnel() {
                        self.ex.push_raw(&chunk[..n]);
                    } else {
                        self.ex.push_body(&chunk[..n]);
                    }
                    let _ = chunk.split_to(n);
                    if let Some(inbound) = self.inbound.as_mut() {
                        inbound.release(n);
                    }
                    moved = true;
                    self.last_progress = now;
                }
                if !chunk.is_empty() {
                    return moved;
                }
                self.held = None;
            }
            let Some(inbound) = self.inbound.as_mut() else {
                return moved;
            };
            // A WebSocket's bytes go up once its tunnel is open (the
            // client waits for the 200 before it sends any).
            if !self.ex.wants_body() && !self.ex.is_tunnel() {
                return moved;
            }
            match inbound.poll_chunk(cx) {
                Poll::Pending => return moved,
                Poll::Ready(Some(Ok(chunk))) => self.held = Some(chunk),
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    // (A reset stream is seen by `poll_reset`.)
                    self.inbound = None;
                    if self.ex.is_tunnel() {
                        self.ex.client_eof();
                    } else {
                        self.ex.end_body();
                    }
                    return true;
                }
            }
        }
    }

    /// The exchange's response, as HTTP/2. `Ok(moved)`, or how the stream
    /// ended.
    fn send_down(&mut self, cx: &mut Context<'_>, ctx: &mut Ctx) -> Result<bool, Step> {
        let mut moved = false;
        loop {
            let pos = self.ex.client_pos.min(self.ex.to_client.len());
            let input = &self.ex.to_client[pos..];
            let (n, piece) = match self.decoder.next(input) {
                Ok(r) => r,
                Err(()) => {
                    self.out.reset(Code::INTERNAL_ERROR);
                    self.ex.abandon(ctx.proxy);
                    return Err(Step::Failed);
                }
            };
            match piece {
                Piece::Interim(code, fields) => {
                    // The client may have gone; the final head says so.
                    if let Err(e) = self.out.send_interim(response_head(code, &fields)) {
                        log::debug!("interim {code} not passed on: {e}");
                    }
                    self.ex.client_pos += n;
                    moved = true;
                }
                Piece::Head(code, fields) => {
                    let head = response_head(code, &fields);
                    self.log.status = code;
                    let end = self.decoder.done();
                    if self.out.send_head(head, end).is_err() {
                        self.ex.abandon(ctx.proxy);
                        return Err(Step::Failed);
                    }
                    self.head_sent = true;
                    self.ex.client_pos += n;
                    moved = true;
                }
                Piece::Data(k) => {
                    let room = match self.out.poll_room(k.min(CHUNK), cx) {
                        Poll::Pending => return Ok(moved),
                        Poll::Ready(Err(_)) => {
                            self.ex.abandon(ctx.proxy);
                            return Err(Step::Failed);
                        }
                        Poll::Ready(Ok(r)) => r.min(k).min(CHUNK),
                    };
                    let data = Bytes::copy_from_slice(&input[..room]);
                    self.decoder.took(room);
                    if self.out.send(data, false).is_err() {
                        self.ex.abandon(ctx.proxy);
                        return Err(Step::Failed);
                    }
                    self.sent += room as u64;
                    self.ex.client_pos += room;
                    moved = true;
                }
                Piece::More if n > 0 => {
                    self.ex.client_pos += n;
                    moved = true;
                }
                Piece::More | Piece::End => {
                    self.ex.client_pos += n;
                    return Ok(moved);
                }
            }
        }
    }

    /// The exchange gave up: an answer of our own if nothing was sent,
    /// else the stream is reset (the client must not take a cut response
    /// for a whole one).
    fn stopped(&mut self, stop: Stop, ctx: &mut Ctx) -> Step {
        self.ex.abandon(ctx.proxy);
        self.log.upstream = self.ex.server_addr(ctx.config);
        match stop {
            Stop::Answer(code, _) if !self.head_sent => {
                let status = match code {
                    503 => Status::ServiceUnavailable,
                    504 => Status::GatewayTimeout,
                    _ => Status::BadGateway,
                };
                let response = Response::status(status);
                self.log.status = status.code();
                // Rare: the connection's cached fields are not worth
                // threading through.
                let mut fixed =
                    super::response::FixedFields::new(ctx.config.http.server_token.as_deref());
                let (head, source) = super::response::split(response, &mut fixed, ctx.date, false);
                let body = match source {
                    super::response::Source::Bytes(b) => b,
                    _ => Bytes::new(),
                };
                if self.out.send_head(head, false).is_err()
                    || self.out.send(body.clone(), true).is_err()
                {
                    return Step::Failed;
                }
                self.sent = body.len() as u64;
                Step::Done
            }
            _ => {
                self.out.reset(Code::INTERNAL_ERROR);
                Step::Failed
            }
        }
    }
}

fn env<'a>(token: Token, ctx: &'a mut Ctx) -> Env<'a> {
    Env {
        config: ctx.config,
        state: ctx.proxy,
        registry: ctx.registry,
        token,
        scratch: ctx.scratch,
        now: ctx.now,
        date: ctx.date.get(),
    }
}

/// An HTTP/2 response head from an HTTP/1.1 one's status and fields,
/// without the connection-specific ones (RFC 9113 8.2.2).
fn response_head(code: u16, fields: &[(String, Vec<u8>)]) -> http::Response<()> {
    let mut head = http::Response::new(());
    *head.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    for (name, value) in fields {
        if connection_specific(name) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            head.headers_mut().append(n, v);
        }
    }
    head
}
