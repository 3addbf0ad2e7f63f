//! An HTTP/2 connection's one deadline, computed from its state (the
//! preface, a drain to begin, its streams' progress, a shutdown the client
//! does not finish, idleness), and what happens when it passes.

use std::time::Instant;

use baton_shared::config::Config;
use log::debug;

use super::{Http2Connection, Phase, log_stream};
use crate::connection::Ctx;
use crate::connection::tunnel_grace;
use crate::http2::engine::Code;
use crate::http2::stream::{Active, Step};
use crate::limits::{LINGERING_CLOSE, after};

impl Http2Connection {
    /// When this connection's current timeout expires.
    pub fn deadline(&self, config: &Config, drain_started: Option<Instant>) -> Instant {
        match self.phase {
            Phase::Closed => self.last_progress,
            Phase::Lingering { until } => until,
            Phase::Flushing => after(self.last_progress, config.http.send_timeout),
            Phase::Open if !self.engine.is_open() => after(self.accepted, config.header_timeout),
            // Told to drain: the shutdown starts on the next drive.
            Phase::Open if drain_started.is_some() && self.shutdown.is_none() => {
                drain_started.unwrap_or(self.last_progress)
            }
            Phase::Open if !self.no_streams() => {
                let timeout = config.http.send_timeout;
                let client = self
                    .streams
                    .iter()
                    .map(|s| after(s.last_progress, timeout))
                    .chain(self.proxied.iter().filter_map(|p| {
                        Some(after(p.last_progress, p.stall_timeout(&config.http)?))
                    }))
                    .min();
                let upstream = self.proxied.iter().filter_map(|p| p.deadline(config)).min();
                // A draining worker ends its WebSockets before its grace
                // period does (`connection::proxy::tunnel_grace`).
                let tunnels = drain_started
                    .filter(|_| self.proxied.iter().any(|p| p.is_open_tunnel()))
                    .map(|d| after(d, tunnel_grace(config)));
                [client, upstream, tunnels]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or_else(|| {
                        // Only idle WebSockets: their upstreams' read
                        // timeouts end them; look again by then at the latest.
                        after(
                            self.last_progress,
                            config.keepalive_timeout.max(config.http.send_timeout),
                        )
                    })
            }
            // Shutting down with nothing left to send: the client has
            // `drain_linger` (at least a second, a slow round trip) to
            // answer the GOAWAY's PING, and to open the streams it had
            // sent before it saw the GOAWAY; then it is closed, as an
            // idle HTTP/1.1 connection of a draining worker is.
            Phase::Open if self.shutdown.is_some() => {
                let since = self
                    .shutdown
                    .unwrap_or(self.idle_since)
                    .max(self.idle_since);
                after(
                    since.max(self.last_progress),
                    config.drain_linger.max(LINGERING_CLOSE),
                )
            }
            Phase::Open => {
                let wait = if self.served == 0 {
                    config.header_timeout
                } else {
                    config.keepalive_timeout
                };
                after(self.idle_since, wait)
            }
        }
    }

    /// The deadline passed.
    pub fn on_deadline(&mut self, ctx: &mut Ctx) {
        match self.phase {
            Phase::Closed => {}
            Phase::Lingering { .. } | Phase::Flushing => self.phase = Phase::Closed,
            Phase::Open if !self.engine.is_open() => {
                debug!("HTTP/2 preface not received in time: closed");
                self.phase = Phase::Closed;
            }
            Phase::Open if ctx.drain_started.is_some() && self.shutdown.is_none() => {
                self.begin_shutdown(ctx.now);
            }
            Phase::Open if !self.no_streams() => {
                let token = self.upstream_token();
                let now = ctx.now;
                let mut i = 0;
                let tunnels_over = ctx
                    .drain_started
                    .is_some_and(|d| after(d, tunnel_grace(ctx.config)) <= now);
                while i < self.proxied.len() {
                    let p = &mut self.proxied[i];
                    if tunnels_over && p.is_open_tunnel() {
                        p.end_tunnel();
                    }
                    let stalled = p
                        .stall_timeout(&ctx.config.http)
                        .is_some_and(|t| after(p.last_progress, t) <= now);
                    let step = if stalled {
                        debug!(
                            "HTTP/2 proxied stream made no progress in time (body or send timeout)"
                        );
                        p.abandon(ctx.proxy);
                        p.out.reset(Code::CANCEL);
                        Step::Failed
                    } else if p.deadline(ctx.config).is_some_and(|d| d <= now) {
                        p.on_timeout(token, ctx)
                    } else {
                        Step::Waiting
                    };
                    if step == Step::Waiting {
                        i += 1;
                    } else {
                        let p = self.proxied.swap_remove(i);
                        log_stream(ctx, self.peer, &p.log, p.sent, step == Step::Done);
                    }
                }
                // Streams whose window stayed shut (or whose client stopped
                // reading) for a send timeout are reset; the others go on.
                let timeout = ctx.config.http.send_timeout;
                let now = ctx.now;
                let (stalled, live): (Vec<Active>, Vec<Active>) = self
                    .streams
                    .drain(..)
                    .partition(|s| after(s.last_progress, timeout) <= now);
                self.streams = live;
                for mut s in stalled {
                    debug!("HTTP/2 stream made no progress within the send timeout: reset");
                    s.out.reset(Code::CANCEL);
                    log_stream(ctx, self.peer, &s.log, s.sent, false);
                }
                if self.no_streams() {
                    self.idle_since = now;
                }
            }
            Phase::Open if self.shutdown.is_some() => {
                debug!("HTTP/2 client did not close after GOAWAY: closed");
                self.phase = Phase::Closed;
            }
            // Idle for too long: GOAWAY, and close once the client has it.
            Phase::Open => self.begin_shutdown(ctx.now),
        }
    }
}
