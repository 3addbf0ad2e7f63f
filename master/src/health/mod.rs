//! Active health checks, owned by the master: one check per upstream
//! server (not one per worker), on non-blocking sockets in the master's
//! own loop, with the timeouts from its timer table. The state (up or
//! down per server) is pushed to every worker over its channel when it
//! changes, and handed to each newly forked worker in its setup, so a new
//! generation starts from it rather than from "all healthy".
//!
//! A server is known by its upstream's name and its address, so a reload
//! keeps the state of every server whose upstream and address are
//! unchanged. A server new to the config starts up (as before checks
//! existed, and as nginx-plus does without `mandatory`) and is checked at
//! once. The servers checked are those of every live generation's config
//! (a draining generation still proxies), each with the newest
//! generation's `health` settings.

mod probe;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use baton_shared::channel::HealthMark;
use baton_shared::config::{Config, HealthCheck, UpstreamAddr};
use mio::{Registry, Token};

use crate::upgrade::state::{Addr, HealthEntry};
use probe::{Probe, Progress};

/// A server: its upstream's name and its address.
type Key = (String, UpstreamAddr);

struct Server {
    check: HealthCheck,
    /// An HTTPS upstream's server is checked over TLS, verified as the
    /// workers verify it.
    tls: Option<probe::ProbeTls>,
    up: bool,
    /// At least one check has finished since it appeared.
    checked: bool,
    /// Consecutive passes (while down) or failures (while up).
    streak: u32,
    /// When the next check starts (while none is in flight).
    next: Instant,
    probe: Option<Probe>,
    /// Why the last check failed.
    last_error: Option<String>,
}

/// One server's state, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub upstream: String,
    pub server: String,
    pub up: bool,
    pub checked: bool,
    pub last_error: Option<String>,
}

#[derive(Default)]
pub struct Checker {
    servers: BTreeMap<Key, Server>,
    tokens: HashMap<Token, Key>,
    /// The generations whose configs `servers` was built from.
    built_from: Vec<u64>,
}

impl Checker {
    /// Whether `generations` (numbers, any order) differ from those the
    /// servers were last reconciled with.
    pub fn stale(&self, generations: &[u64]) -> bool {
        self.built_from != generations
    }

    /// Makes the checked servers those of `configs` (newest first): keeps
    /// the state of servers still there, adds new ones as up and due now,
    /// drops the rest. Returns whether the marks changed (a down server
    /// left, which no worker config can name any more).
    pub fn reconcile(
        &mut self,
        generations: Vec<u64>,
        configs: &[Arc<Config>],
        registry: &Registry,
        now: Instant,
    ) -> bool {
        self.built_from = generations;
        let mut wanted: BTreeMap<Key, (HealthCheck, Option<probe::ProbeTls>)> = BTreeMap::new();
        for config in configs {
            for up in &config.proxy.upstreams {
                let Some(check) = &up.health else { continue };
                for s in &up.servers {
                    wanted
                        .entry((up.name.clone(), s.addr.clone()))
                        .or_insert_with(|| (check.clone(), probe::ProbeTls::new(up, s)));
                }
            }
        }
        let mut changed = false;
        let gone: Vec<Key> = self
            .servers
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut s) = self.servers.remove(&key) {
                changed |= !s.up;
                if let Some(p) = s.probe.take() {
                    self.tokens.remove(&p.token);
                    p.close(registry);
                }
            }
        }
        for (key, (check, tls)) in wanted {
            match self.servers.get_mut(&key) {
                Some(s) => {
                    if s.check.interval != check.interval && s.probe.is_none() {
                        s.next = s
                            .next
                            .min(baton_shared::deadline::after(now, check.interval));
                    }
                    s.check = check;
                    s.tls = tls;
                }
                None => {
                    self.servers.insert(
                        key,
                        Server {
                            check,
                            tls,
                            up: true,
                            checked: false,
                            streak: 0,
                            next: now,
                            probe: None,
                            last_error: None,
                        },
                    );
                }
            }
        }
        changed
    }

    /// The state for the next image of a binary upgrade.
    pub fn export(&self) -> Vec<HealthEntry> {
        self.servers
            .iter()
            .map(|((upstream, addr), s)| HealthEntry {
                upstream: upstream.clone(),
                server: match addr {
                    UpstreamAddr::Tcp(a) => Addr::Tcp(*a),
                    UpstreamAddr::Unix(p) => Addr::Unix(p.clone()),
                },
                up: s.up,
            })
            .collect()
    }

    /// The state a binary upgrade carried: each server's up or down, all
    /// due for a check now. Their settings come with the first
    /// `reconcile`, which also drops what the config no longer has.
    pub fn restore(entries: &[HealthEntry], now: Instant) -> Checker {
        let mut c = Checker::default();
        for e in entries {
            let addr = match &e.server {
                Addr::Tcp(a) => UpstreamAddr::Tcp(*a),
                Addr::Unix(p) => UpstreamAddr::Unix(p.clone()),
                Addr::Stdin => continue,
            };
            c.servers.insert(
                (e.upstream.clone(), addr),
                Server {
                    check: HealthCheck::with_defaults(Default::default()),
                    tls: None,
                    up: e.up,
                    checked: false,
                    streak: 0,
                    next: now,
                    probe: None,
                    last_error: None,
                },
            );
        }
        c
    }

    /// When the loop must call `tick` at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.servers
            .values()
            .map(|s| s.probe.as_ref().map_or(s.next, |p| p.deadline))
            .min()
    }

    pub fn owns(&self, token: Token) -> bool {
        self.tokens.contains_key(&token)
    }

    /// Ends the checks past their timeout and starts those due. Returns
    /// whether a server changed state.
    pub fn tick(
        &mut self,
        now: Instant,
        registry: &Registry,
        token: &mut dyn FnMut() -> Token,
    ) -> bool {
        let mut changed = false;
        let keys: Vec<Key> = self.servers.keys().cloned().collect();
        for key in keys {
            let Some(s) = self.servers.get_mut(&key) else {
                continue;
            };
            if let Some(p) = &s.probe {
                if p.deadline <= now {
                    let why = format!("no status line within {:?}", s.check.timeout);
                    changed |= self.finish(&key, Err(why), registry, now);
                }
                continue;
            }
            if s.next > now {
                continue;
            }
            let t = token();
            match Probe::start(&key.1, &s.check, s.tls.as_ref(), registry, t, now) {
                Ok(p) => {
                    s.probe = Some(p);
                    self.tokens.insert(t, key.clone());
                    // A unix socket may have answered already; a TCP
                    // connect reports through the loop.
                    changed |= self.on_event(t, registry, now);
                }
                Err(e) => {
                    s.next = now;
                    let why = format!("cannot connect: {e}");
                    changed |= self.finish_at(&key, Err(why), now, now);
                }
            }
        }
        changed
    }

    /// The socket of a check is ready. Returns whether a server changed.
    pub fn on_event(&mut self, token: Token, registry: &Registry, now: Instant) -> bool {
        let Some(key) = self.tokens.get(&token).cloned() else {
            return false;
        };
        let Some(p) = self.servers.get_mut(&key).and_then(|s| s.probe.as_mut()) else {
            return false;
        };
        match p.advance() {
            Progress::Pending => false,
            Progress::Done(result) => self.finish(&key, result, registry, now),
        }
    }

    /// A check of `key` ended: closes its socket and counts the result.
    fn finish(
        &mut self,
        key: &Key,
        result: Result<u16, String>,
        registry: &Registry,
        now: Instant,
    ) -> bool {
        let Some(s) = self.servers.get_mut(key) else {
            return false;
        };
        let Some(p) = s.probe.take() else {
            return false;
        };
        self.tokens.remove(&p.token);
        let started = p.started;
        p.close(registry);
        self.finish_at(key, result, started, now)
    }

    fn finish_at(
        &mut self,
        key: &Key,
        result: Result<u16, String>,
        started: Instant,
        now: Instant,
    ) -> bool {
        let Some(s) = self.servers.get_mut(key) else {
            return false;
        };
        // Every `interval` from the start of the last check, never two at
        // once (a timeout longer than the interval delays the next).
        s.next = baton_shared::deadline::after(started, s.check.interval).max(now);
        // The first result is pushed even without a change: workers adopted
        // across a binary upgrade hold marks this master never sent.
        let first = !std::mem::replace(&mut s.checked, true);
        count(key, s, result) || first
    }

    /// The state of every checked server of `config`, by position in it:
    /// what a worker running `config` is told.
    pub fn marks_for(&self, config: &Config) -> Vec<HealthMark> {
        let mut out = Vec::new();
        for (i, up) in config.proxy.upstreams.iter().enumerate() {
            for (j, server) in up.servers.iter().enumerate() {
                if let Some(s) = self.servers.get(&(up.name.clone(), server.addr.clone())) {
                    out.push(HealthMark {
                        upstream: i as u32,
                        server: j as u32,
                        up: s.up,
                    });
                }
            }
        }
        out
    }

    pub fn view(&self) -> Vec<View> {
        self.servers
            .iter()
            .map(|((upstream, addr), s)| View {
                upstream: upstream.clone(),
                server: addr.to_string(),
                up: s.up,
                checked: s.checked,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

/// Counts one result of `key`'s check; returns whether it went up or down.
fn count(key: &Key, s: &mut Server, result: Result<u16, String>) -> bool {
    let result = match result {
        Ok(status) if s.check.expect.accepts(status) => Ok(()),
        Ok(status) => Err(format!("status {status}, expected {}", s.check.expect)),
        Err(e) => Err(e),
    };
    let (name, addr) = key;
    match result {
        Ok(()) => {
            s.last_error = None;
            if s.up {
                s.streak = 0;
                return false;
            }
            s.streak = s.streak.saturating_add(1);
            if s.streak >= s.check.rise {
                s.up = true;
                s.streak = 0;
                log::info!(
                    "upstream {name:?} server {addr} is up: its health check passes ({})",
                    s.check.path
                );
                return true;
            }
        }
        Err(why) => {
            if !s.up {
                s.streak = 0;
                s.last_error = Some(why);
                return false;
            }
            s.streak = s.streak.saturating_add(1);
            if s.streak >= s.check.fall {
                s.up = false;
                s.streak = 0;
                log::warn!(
                    "upstream {name:?} server {addr} marked down by its health check ({}): \
                     {why}",
                    s.check.path
                );
                s.last_error = Some(why);
                return true;
            }
            s.last_error = Some(why);
        }
    }
    false
}

#[cfg(test)]
mod tests;
