//! The reverse proxy: a second kind of response source beside static
//! files, driven by the same client `Connection` (one HTTP engine: parsing,
//! limits, keep-alive and the access log stay there).
//!
//! A proxied request is an `Exchange`: the upstream socket, the request
//! going up (head, then the body as the client sends it) and the response
//! coming down, each through a bounded buffer. A side whose buffer is full
//! is not read (back-pressure: the client's body waits in its socket while
//! the upstream is slow, the upstream's response waits in its socket while
//! the client is slow), so a connection's memory stays bounded whatever
//! the sizes (see docs/proxy.md for the ceiling).
//!
//! Per worker: keep-alive pools (`pool`), balancing and passive health
//! (`balance`). Nothing here resolves a name: the config did.

pub mod balance;
pub mod exchange;
pub mod head;
pub mod socket;
pub mod tokens;
pub mod transform;
pub mod websocket;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use baton_shared::channel::{HealthMark, UpstreamCounters};
use baton_shared::config::{Config, Route, Site, Upstream, UpstreamAddr};
use rustls::pki_types::ServerName;

use balance::ServerState;
use socket::{TlsTarget, UpConn};
use tokens::{Owner, Tokens};

/// Bytes buffered per direction of an exchange.
pub const BUFFER: usize = 64 * 1024;

/// A pooled connection idle this long is probed before reuse even for a
/// request that could be retried (see `ProxyState::take_pooled`).
const PROBE_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest upstream response head accepted (a 502 above).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The route for `target` in `site`: the longest matching prefix.
pub fn route_for<'s>(site: &'s Site, target: &str) -> Option<&'s Route> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    site.routes
        .iter()
        .filter(|r| {
            path.starts_with(&r.path)
                // "/api" routes "/api" and "/api/x", not "/apix".
                || (r.path.ends_with('/') && path == &r.path[..r.path.len() - 1])
        })
        .filter(|r| {
            r.path.ends_with('/')
                || path.len() == r.path.len()
                || matches!(path.as_bytes().get(r.path.len()), Some(b'/'))
        })
        .max_by_key(|r| r.path.len())
}

/// The target an upstream gets: with the route's prefix removed if asked.
pub fn upstream_target(route: &Route, target: &str) -> String {
    if !route.strip_prefix {
        return target.to_owned();
    }
    let prefix = route.path.trim_end_matches('/');
    let rest = target.strip_prefix(prefix).unwrap_or(target);
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

/// One upstream's state in this worker.
pub struct UpstreamState {
    pub servers: Vec<ServerState>,
    /// Idle connections, most recently used last. An upstream is HTTPS or
    /// not as a whole (an `https://` URL is an upstream of its own), so
    /// TLS and plain connections never share a pool.
    pub pool: Vec<UpConn>,
    /// An HTTPS upstream's client configuration (its session cache is
    /// this worker's, per upstream) and the name each server is verified
    /// against.
    tls: Option<(Arc<rustls::ClientConfig>, Vec<Option<ServerName<'static>>>)>,
    /// The worker's upstream connection tokens (shared by every upstream).
    tokens: Tokens,
}

impl UpstreamState {
    fn new(up: &Upstream, tokens: &Tokens) -> UpstreamState {
        let tls = up.tls.as_ref().map(|t| {
            let names = up
                .servers
                .iter()
                .map(|s| {
                    let ip = match &s.addr {
                        UpstreamAddr::Tcp(a) => Some(a.ip()),
                        UpstreamAddr::Unix(_) => None,
                    };
                    baton_shared::upstream_tls::server_name(
                        t.server_name.as_deref(),
                        s.host.as_deref(),
                        ip,
                    )
                })
                .collect();
            (Arc::clone(&t.client.0), names)
        });
        UpstreamState {
            servers: vec![ServerState::default(); up.servers.len()],
            pool: Vec::new(),
            tls,
            tokens: Rc::clone(tokens),
        }
    }

    /// Starts a new connection to `server` of `up` (TLS for an HTTPS
    /// upstream: never plain instead).
    pub fn connect(&self, up: &Upstream, server: usize, now: Instant) -> std::io::Result<UpConn> {
        let addr = &up
            .servers
            .get(server)
            .ok_or_else(|| std::io::Error::other("no such server"))?
            .addr;
        let tls = match &self.tls {
            None => None,
            Some((config, names)) => match names.get(server).and_then(Option::as_ref) {
                Some(name) => Some(TlsTarget { config, name }),
                // The config's validation gives every server a name.
                None => {
                    return Err(std::io::Error::other(
                        "no name to verify the server's certificate against",
                    ));
                }
            },
        };
        UpConn::connect(addr, server, tls, &self.tokens, now)
    }
}

/// Every upstream's state in this worker.
pub struct ProxyState {
    pub upstreams: Vec<UpstreamState>,
    /// Draining: connections are no longer pooled, and those pooled are
    /// closed.
    pub closing: bool,
    tokens: Tokens,
}

impl ProxyState {
    pub fn new(config: &Config) -> ProxyState {
        let tokens = Tokens::default();
        ProxyState {
            upstreams: config
                .proxy
                .upstreams
                .iter()
                .map(|u| UpstreamState::new(u, &tokens))
                .collect(),
            closing: false,
            tokens,
        }
    }

    /// Where an event of upstream connection `id` goes: the token of the
    /// client connection whose exchange uses it, or `None` (an idle pooled
    /// connection, which this checks and closes if the server closed it;
    /// or one already gone).
    pub fn event_owner(&mut self, id: usize) -> Option<mio::Token> {
        let owner = self.tokens.borrow().owner(id);
        match owner {
            Owner::Exchange(token) => Some(token),
            Owner::Pooled => {
                self.on_pool_event(id);
                None
            }
            Owner::Free => None,
        }
    }

    /// The master's active health state, complete: every server it lists
    /// as down is skipped, every other one is up as far as checks go
    /// (passive marks stay as they are). Marks that name no server of this
    /// worker's config are ignored: the master computes them from it.
    pub fn apply_health(&mut self, marks: &[HealthMark]) {
        for state in &mut self.upstreams {
            for s in &mut state.servers {
                s.checked_down = false;
            }
        }
        for m in marks {
            let server = self
                .upstreams
                .get_mut(m.upstream as usize)
                .and_then(|u| u.servers.get_mut(m.server as usize));
            if let Some(s) = server {
                s.checked_down = !m.up;
            }
        }
    }

    /// An idle connection to `server` of `upstream` that is still open,
    /// most recently used first; closed ones met on the way are dropped.
    ///
    /// A server closing an idle connection wakes the pool (its events come
    /// here), which closes it then. A close that has not been seen yet (it
    /// came after the last poll) is caught by a read that must block,
    /// before the connection is used: always for a request that cannot be
    /// sent twice (`must_probe`: a POST whose bytes went out on a dead
    /// connection is a 502), and for others once the connection was idle
    /// long enough for a server's idle timeout to have closed it. Below
    /// that, a request that meets a closed connection is retried once on a
    /// fresh one anyway, and the probe would cost every request a syscall.
    pub fn take_pooled(
        &mut self,
        config: &Config,
        upstream: usize,
        server: usize,
        must_probe: bool,
        now: Instant,
    ) -> Option<UpConn> {
        let up = config.proxy.upstreams.get(upstream)?;
        let state = self.upstreams.get_mut(upstream)?;
        while let Some(i) = state.pool.iter().rposition(|c| c.server == server) {
            let mut conn = state.pool.remove(i);
            let idle = now.saturating_duration_since(conn.idle_since);
            let probe = must_probe || idle >= PROBE_IDLE_AFTER;
            if idle < up.keepalive_timeout && (!probe || conn.still_open()) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// A connection whose exchange completed cleanly: pooled if there is
    /// room and it may serve more, else closed (by being dropped).
    pub fn put(&mut self, config: &Config, upstream: usize, mut conn: UpConn, now: Instant) {
        let Some(up) = config.proxy.upstreams.get(upstream) else {
            return;
        };
        let Some(state) = self.upstreams.get_mut(upstream) else {
            return;
        };
        if self.closing || up.keepalive == 0 || conn.requests >= up.keepalive_requests {
            return;
        }
        // An event the exchange did not exhaust (its last read neither
        // blocked nor came up short) went to it, not to the pool, and will
        // not come again: look now. A FIN it saw closes the connection.
        if conn.peer_closed || (conn.readable && !conn.still_open()) {
            return;
        }
        conn.detach();
        conn.idle_since = now;
        conn.readable = false;
        conn.writable = true;
        if state.pool.len() >= up.keepalive {
            // The least recently used goes.
            state.pool.remove(0);
        }
        state.pool.push(conn);
    }

    /// An idle pooled connection had an event: if the server closed it
    /// (or sent what nothing asked for), it is closed. (A writable edge,
    /// or a TLS session ticket, leaves it as it was.)
    pub fn on_pool_event(&mut self, id: usize) {
        for state in &mut self.upstreams {
            if let Some(i) = state.pool.iter().position(|c| c.slot.id() == id) {
                if !state.pool[i].still_open() {
                    state.pool.remove(i);
                }
                return;
            }
        }
    }

    /// Per server, for `Stats` (and so `/metrics`).
    pub fn counters(&self, config: &Config, now: Instant) -> Vec<UpstreamCounters> {
        let mut out = Vec::new();
        for (state, up) in self.upstreams.iter().zip(&config.proxy.upstreams) {
            for (i, (s, server)) in state.servers.iter().zip(&up.servers).enumerate() {
                out.push(UpstreamCounters {
                    upstream: up.name.clone(),
                    server: server.addr.to_string(),
                    requests: s.requests,
                    failures: s.failures,
                    idle: state.pool.iter().filter(|c| c.server == i).count() as u64,
                    down: s.down_until.is_some_and(|t| t > now),
                });
            }
        }
        out
    }

    /// Closes idle connections past their upstream's `keepalive_timeout`
    /// (or all of them once draining).
    pub fn expire(&mut self, config: &Config, now: Instant) {
        for (state, up) in self.upstreams.iter_mut().zip(&config.proxy.upstreams) {
            let closing = self.closing;
            state.pool.retain(|c| {
                !closing && now.saturating_duration_since(c.idle_since) < up.keepalive_timeout
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config::site;

    fn route(path: &str, strip: bool) -> Route {
        Route {
            path: path.into(),
            upstream: 0,
            strip_prefix: strip,
            headers: vec![],
            websocket: true,
            compress: None,
            via: false,
            pos: Default::default(),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut s = site("/www", &["127.0.0.1:80"], &[]);
        s.routes = vec![
            route("/api/", false),
            route("/api/v2/", false),
            route("/app", false),
        ];
        let path = |t| route_for(&s, t).map(|r| r.path.as_str());
        assert_eq!(path("/api/x"), Some("/api/"));
        assert_eq!(path("/api"), Some("/api/"));
        assert_eq!(path("/api/v2/x?q"), Some("/api/v2/"));
        assert_eq!(path("/app"), Some("/app"));
        assert_eq!(path("/app/x"), Some("/app"));
        assert_eq!(path("/apple"), None);
        assert_eq!(path("/"), None);
    }

    #[test]
    fn strip_prefix() {
        assert_eq!(upstream_target(&route("/api/", true), "/api/x?y"), "/x?y");
        assert_eq!(upstream_target(&route("/api/", true), "/api"), "/");
        assert_eq!(upstream_target(&route("/api/", false), "/api/x"), "/api/x");
        assert_eq!(upstream_target(&route("/", true), "/x"), "/x");
    }
}
