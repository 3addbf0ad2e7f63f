//! Requests on an HTTP/1.1 connection: heads parsed, bodies discarded,
//! each answered in order, and whether the connection stays open after.

use std::time::SystemTime;

use super::access::{LogStart, PendingLog};
use super::{Budget, Connection, Ctx, Held, Phase};
use crate::handler;
use crate::http::body::{BodyReader, Step};
use crate::http::request::{self, BodyFraming, Method, Parsed, Version};
use crate::http::response::{Persistence, Response, Status, write_head};
use crate::http2;
use crate::limits::DRAIN_PIPELINED_MAX;
use crate::outgoing::{Body, Outgoing};
use log::debug;

impl Connection {
    /// Plain HTTP on a TLS port: a 400 in the clear that says what is
    /// wrong (nginx answers the same), then a close that discards the
    /// request, unread, while it lingers.
    pub(super) fn refuse_plain_http(&mut self, ctx: &Ctx) {
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
    pub(super) fn process(&mut self, ctx: &mut Ctx, budget: &mut Budget) -> bool {
        let mut progress = false;
        if self.served == 0 && self.out.is_none() && self.exchange.is_none() {
            // HTTP/2 from the first byte: agreed with ALPN, or (h2c
            // listeners) announced by the preface.
            if self.stream.negotiated_h2() {
                self.http2 = true;
                return true;
            }
            if ctx.routes.h2c(self.listener) && !self.inbuf.is_empty() {
                match http2::preface(&self.inbuf) {
                    http2::Preface::Http2 => {
                        self.http2 = true;
                        return true;
                    }
                    http2::Preface::Undecided => return false,
                    http2::Preface::Http1 => {}
                }
            }
        }
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
                    protocol: req.version.protocol(),
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
    pub(super) fn finish(&mut self, held: Held, ctx: &Ctx) {
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
    pub(super) fn closing_for_drain(&mut self, ctx: &Ctx, next_is_here: bool) -> bool {
        if ctx.drain_started.is_none() {
            return false;
        }
        if next_is_here && self.drain_pipelined < DRAIN_PIPELINED_MAX {
            self.drain_pipelined += 1;
            return false;
        }
        true
    }

    pub(super) fn queue(
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
            (false, Version::Http11 | Version::Http2) => Persistence::Default,
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
}
