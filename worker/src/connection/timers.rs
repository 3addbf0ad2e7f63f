//! A connection's one deadline, computed from its state (no timer is
//! armed or disarmed), and what happens when it passes.

use std::time::Instant;

use baton_shared::config::Config;
use log::debug;

use super::{Budget, Connection, Ctx, Held, Phase};
use crate::http::request::Version;
use crate::http::response::{Response, Status};
use crate::limits::after;

impl Connection {
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
}
