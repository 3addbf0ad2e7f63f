//! Which server an exchange talks to: picking one and connecting (or
//! taking a pooled connection), and, when the connection fails, moving on
//! to the next server or a fresh connection where that is safe (see the
//! parent module: nothing of a non-idempotent request sent twice).

use baton_shared::config::Upstream;
use log::warn;

use super::{Env, Exchange, Failure, Stop};
use crate::proxy::balance::{self, Pick};

impl Exchange {
    /// Picks a server and connects (or takes a pooled connection).
    pub(super) fn open(&mut self, env: &mut Env<'_>) -> Result<(), Stop> {
        let config = env.config;
        let Some(up) = config.proxy.upstreams.get(self.upstream) else {
            return Err(Stop::Answer(502, None));
        };
        if env.state.upstreams.get(self.upstream).is_none() {
            return Err(Stop::Answer(502, None));
        }
        loop {
            let state = &mut env.state.upstreams[self.upstream];
            let fresh = std::mem::take(&mut self.fresh_same_server);
            let server = match self.server.filter(|_| fresh) {
                // The retry after a stale pooled connection: same server.
                Some(s) => s,
                None => match balance::pick(
                    up,
                    &mut state.servers,
                    &self.tried,
                    self.hash_key.as_deref(),
                    env.now,
                ) {
                    Pick::Server(s) => s,
                    Pick::AllDown(retry) if self.tried.is_empty() => {
                        warn!("upstream {:?}: every server is down: 503", up.name);
                        return Err(Stop::Answer(503, Some(retry)));
                    }
                    Pick::AllDown(_) | Pick::Exhausted => {
                        let status = if self.last_failure == Some(Failure::Timeout) {
                            504
                        } else {
                            502
                        };
                        return Err(Stop::Answer(status, None));
                    }
                },
            };
            if !self.tried.contains(&server) {
                self.tried.push(server);
            }
            self.server = Some(server);
            let pooled = if fresh {
                None
            } else {
                // Only a request that may go twice risks the rare close
                // no poll has reported yet (see `take_pooled`).
                let must_probe = !self.idempotent;
                env.state
                    .take_pooled(config, self.upstream, server, must_probe, env.now)
            };
            let state = &mut env.state.upstreams[self.upstream];
            let conn = match pooled {
                Some(c) => Ok(c),
                None => state.connect(up, server, env.now),
            };
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    // Refused at once (a unix socket nobody listens on).
                    log_failure(up, server, &format!("connect: {e}"));
                    balance::failed(up, &mut state.servers[server], server, env.now);
                    self.last_failure = Some(Failure::Refused);
                    continue;
                }
            };
            if let Err(e) = conn.attach(env.registry, env.token) {
                log_failure(up, server, &format!("cannot watch the connection: {e}"));
                continue;
            }
            conn.requests += 1;
            state.servers[server].requests = state.servers[server].requests.saturating_add(1);
            state.servers[server].active = state.servers[server].active.saturating_add(1);
            self.connect_started = env.now;
            self.last_io = env.now;
            self.out_pos = 0;
            self.conn = Some(conn);
            return Ok(());
        }
    }

    /// Handles a failure of the current connection: the next server (or a
    /// fresh connection) if allowed, else how the exchange stops.
    pub(super) fn fail(&mut self, kind: Failure, why: &str, env: &mut Env<'_>) -> Result<(), Stop> {
        let Some(conn) = self.conn.take() else {
            return Err(Stop::Answer(502, None));
        };
        let config = env.config;
        let up = &config.proxy.upstreams[self.upstream];
        let server = conn.server;
        let state = &mut env.state.upstreams[self.upstream].servers[server];
        state.active = state.active.saturating_sub(1);
        if self.got_response {
            log_failure(up, server, why);
            balance::failed(up, state, server, env.now);
            return Err(if self.status.is_some() {
                Stop::Abort
            } else {
                Stop::Answer(502, None)
            });
        }
        let can_replay = self.replayable && (self.idempotent || !self.sent_any);
        if conn.reused && !self.stale_retried && kind != Failure::Timeout && self.replayable {
            // The keep-alive race: not the server's fault.
            self.stale_retried = true;
            if self.idempotent || !self.sent_any {
                self.fresh_same_server = true;
                self.out_pos = 0;
                return Ok(());
            }
            return Err(Stop::Answer(502, None));
        }
        log_failure(up, server, why);
        balance::failed(up, state, server, env.now);
        self.last_failure = Some(kind);
        self.stale_retried = false;
        if !can_replay {
            let status = if kind == Failure::Timeout { 504 } else { 502 };
            return Err(Stop::Answer(status, None));
        }
        self.out_pos = 0;
        Ok(())
    }
}

pub(super) fn log_failure(up: &Upstream, server: usize, why: &str) {
    match up.servers.get(server) {
        Some(s) => warn!("upstream {:?} server {}: {why}", up.name, s.addr),
        None => warn!("upstream {:?}: {why}", up.name),
    }
}
