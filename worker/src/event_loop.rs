//! The worker's mio loop: one thread, one `Poll`, everything non-blocking.
//!
//! Each turn: wait for events (or the next tick), dispatch them (channel,
//! signals, listeners, connections), give connections that ran out of
//! budget and listeners with more queued another go, and on the tick check
//! deadlines and send `Stats`.

mod accept;
mod channel;

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use baton_shared::channel::{Channel, ToMaster};
use baton_shared::config::Config;
use log::{debug, info};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::Setup;
use crate::acceptor::Acceptor;
use crate::access_log::AccessLog;
use crate::client::Client;
use crate::connection::{Ctx, Drive};
use crate::drain::{Cause, Drain};
use crate::http::response::DateCache;
use crate::limits::{READ_CHUNK, STATS_EVERY, TICK, accept_budget, after};
use crate::proxy::ProxyState;
use crate::routing::Routes;
use crate::signals::{Order, Signals};
use crate::static_files::FileCache;
use crate::stream::Stream;
use crate::test_hooks::Hooks;
use crate::tls::Tls;

/// Which source a token belongs to.
///
/// Connections get two tokens each (`side` 0 is the client socket), so that
/// a proxied connection's upstream socket can later be registered under the
/// same connection without a new scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Channel,
    Signals,
    FileCache,
    Listener(usize),
    /// An upstream connection (`proxy::tokens`): its events go to the
    /// connection whose exchange uses it, or to the pool.
    Upstream(usize),
    Connection {
        key: usize,
        side: usize,
    },
}

const CHANNEL: Token = Token(0);
const SIGNALS: Token = Token(1);
const FILE_CACHE: Token = Token(2);
const LISTENER_BASE: usize = 3;
const CONNECTION_BASE: usize = 1 << 20;

fn listener_token(i: usize) -> Token {
    Token(LISTENER_BASE + i)
}

fn connection_token(key: usize) -> Token {
    Token(CONNECTION_BASE + key * 2)
}

fn target(token: Token) -> Target {
    match token.0 {
        0 => Target::Channel,
        1 => Target::Signals,
        2 => Target::FileCache,
        t if t < CONNECTION_BASE => Target::Listener(t - LISTENER_BASE),
        t if t >= crate::proxy::tokens::UPSTREAM_BASE => {
            Target::Upstream(t - crate::proxy::tokens::UPSTREAM_BASE)
        }
        t => Target::Connection {
            key: (t - CONNECTION_BASE) / 2,
            side: (t - CONNECTION_BASE) % 2,
        },
    }
}

pub(crate) struct ListenerSlot {
    pub(crate) acceptor: Acceptor,
    /// More connections may be queued (edge-triggered: until WouldBlock).
    ready: bool,
    /// Accepting failed for lack of resources (fds, memory): retry after.
    paused_until: Option<Instant>,
    /// In the poll (false after a failed `requeue`: retried on the next
    /// pass, ready stays set meanwhile).
    registered: bool,
}

pub struct Worker {
    pub(crate) config: Arc<Config>,
    pub(crate) poll: Poll,
    /// `None` once closed (draining).
    pub(crate) listeners: Vec<Option<ListenerSlot>>,
    routes: Routes,
    tls: Tls,
    /// `None` once the master is gone.
    pub(crate) channel: Option<Channel>,
    signals: Signals,
    pub(crate) conns: Slab<Client>,
    /// Connections to drive again without waiting for an event.
    runnable: VecDeque<usize>,
    pub(crate) drain: Option<Drain>,
    /// Listeners to keep while draining (`HoldListeners`), by position.
    pub(crate) held: Vec<u32>,
    pub(crate) stop: bool,
    requests: u64,
    pub(crate) access_log: AccessLog,
    date: DateCache,
    /// See `Ctx::scratch`.
    scratch: Box<[u8]>,
    files: FileCache,
    /// Upstream pools, balancing and passive health.
    pub(crate) proxy: ProxyState,
    /// HTTP/2 counters.
    pub(crate) http2: baton_shared::channel::Http2Counters,
    /// Connections accepted in a batch, before they are served (kept to
    /// reuse its allocation).
    accepted: Vec<(Stream, Option<IpAddr>)>,
    /// Connections a pass takes from a listener (see `accept_budget`).
    accept_budget: usize,
    pub(crate) hooks: Hooks,
    pub(crate) now: Instant,
    next_tick: Instant,
    next_stats: Instant,
    last_accept_warning: Option<Instant>,
}

impl Worker {
    /// Sets up signals, the poll and every registration. Nothing is accepted
    /// and `Ready` is not sent until `run`.
    pub fn new(setup: Setup) -> io::Result<Worker> {
        let hooks = Hooks::from_env(setup.generation, setup.slot);
        let signals = Signals::install(hooks.hold_ready)?;
        let poll = Poll::new()?;
        let addrs: Vec<_> = setup.listeners.iter().map(|l| l.addr.clone()).collect();
        let routes = Routes::new(&setup.config, &addrs);
        let access_log = AccessLog::new(&setup.config, setup.access_logs);
        let tls = Tls::new(&setup.config, &addrs, &setup.tls, &setup.ticket_keys)
            .map_err(io::Error::other)?;
        // (The token below the connections' is the pool's.)
        if addrs.len() >= CONNECTION_BASE - LISTENER_BASE - 1 {
            return Err(io::Error::other("too many listeners"));
        }
        let mut listeners = Vec::with_capacity(addrs.len());
        for (i, listener) in setup.listeners.into_iter().enumerate() {
            let acceptor = Acceptor::new(listener)?;
            acceptor.register(&poll, listener_token(i))?;
            listeners.push(Some(ListenerSlot {
                acceptor,
                // Connections may have queued before we registered.
                ready: true,
                paused_until: None,
                registered: true,
            }));
        }
        let channel = Channel::new(setup.channel)?;
        poll.registry().register(
            &mut SourceFd(&channel.stream().as_raw_fd()),
            CHANNEL,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        poll.registry().register(
            &mut SourceFd(&signals.raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let files = FileCache::new(
            setup.config.http.file_cache_size,
            setup.config.http.file_cache_max_file_size,
        );
        if let Some(fd) = files.fd() {
            poll.registry().register(
                &mut SourceFd(&fd.as_raw_fd()),
                FILE_CACHE,
                Interest::READABLE,
            )?;
        }
        let mut proxy = ProxyState::new(&setup.config);
        proxy.apply_health(&setup.health);
        let accept_budget = accept_budget(setup.config.workers);
        let now = Instant::now();
        let mut date = DateCache::default();
        date.update(SystemTime::now());
        Ok(Worker {
            config: setup.config,
            poll,
            listeners,
            routes,
            tls,
            channel: Some(channel),
            signals,
            conns: Slab::new(),
            runnable: VecDeque::new(),
            drain: None,
            held: Vec::new(),
            stop: false,
            requests: 0,
            access_log,
            date,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            files,
            proxy,
            http2: Default::default(),
            accepted: Vec::new(),
            accept_budget,
            hooks,
            now,
            next_tick: after(now, TICK),
            next_stats: after(now, STATS_EVERY),
            last_accept_warning: None,
        })
    }

    /// Serves until drained or stopped; returns the exit status.
    pub fn run(mut self) -> i32 {
        if !self.hooks.hold_ready {
            self.send_to_master(&ToMaster::Ready);
        }
        let mut events = Events::with_capacity(1024);
        loop {
            if let Some(code) = self.exit_status() {
                self.access_log.flush();
                self.send_stats();
                return code;
            }
            let timeout = if self.has_work_now() {
                std::time::Duration::ZERO
            } else {
                self.next_tick.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("poll failed: {e}");
                return 1;
            }
            self.now = Instant::now();
            self.date.update(SystemTime::now());
            // Changes on disk first: a request that arrived after a change
            // must not be answered from the cache's copy.
            if events.iter().any(|e| e.token() == FILE_CACHE) {
                self.files.on_events();
            }
            for event in events.iter() {
                self.dispatch(event);
                if self.stop {
                    self.access_log.flush();
                    self.send_stats();
                    return 0;
                }
            }
            self.run_pending();
            if self.now >= self.next_tick {
                self.tick();
            }
        }
    }

    fn dispatch(&mut self, event: &Event) {
        let mut to = target(event.token());
        // Which upstream connection an event is for, when it is for one.
        let mut upstream = None;
        if let Target::Upstream(id) = to {
            upstream = Some(id);
            match self.proxy.event_owner(id) {
                Some(token) => to = target(token),
                // The pool's (handled), or a connection already closed.
                None => return,
            }
        }
        match to {
            Target::Channel => self.on_channel(event),
            Target::FileCache => {} // read first in the turn
            // An exchange's token is a connection's, never another
            // upstream's.
            Target::Upstream(_) => {}
            Target::Signals => match self.signals.read() {
                Some(Order::Stop) => {
                    info!("SIGINT: stopping now");
                    self.stop = true;
                }
                Some(Order::Drain) => self.begin_drain(Cause::Signal),
                Some(Order::Release) => {
                    self.send_to_master(&ToMaster::Ready);
                    // What the test waits for before it kills this worker.
                    info!("worker {}: test hook: Ready sent", std::process::id());
                }
                None => {}
            },
            Target::Listener(i) => {
                if let Some(Some(slot)) = self.listeners.get_mut(i) {
                    slot.ready = true;
                }
                self.accept_from(i, self.accept_budget);
            }
            Target::Connection { key, side } => {
                if let Some(conn) = self.conns.get_mut(key) {
                    let readable =
                        event.is_readable() || event.is_read_closed() || event.is_error();
                    let writable =
                        event.is_writable() || event.is_write_closed() || event.is_error();
                    if side == 0 {
                        conn.on_ready(
                            readable,
                            writable,
                            event.is_read_closed() || event.is_error(),
                        );
                    } else {
                        conn.on_upstream_ready(
                            upstream,
                            readable,
                            writable,
                            event.is_read_closed() || event.is_error(),
                        );
                    }
                    self.drive(key);
                }
            }
        }
    }

    fn has_work_now(&self) -> bool {
        !self.runnable.is_empty()
            || self
                .listeners
                .iter()
                .flatten()
                .any(|l| l.ready && l.paused_until.is_none())
    }

    /// Connections out of budget and listeners with more queued.
    fn run_pending(&mut self) {
        // These connections read on without a new poll, so bytes that
        // arrived after a change on disk may be read here: look at the
        // file cache's queue first (one read, only when there are any).
        if !self.runnable.is_empty() {
            self.files.on_events();
        }
        for _ in 0..self.runnable.len() {
            if let Some(key) = self.runnable.pop_front() {
                self.drive(key);
            }
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i]
                .as_ref()
                .is_some_and(|l| l.ready && l.paused_until.is_none())
            {
                self.accept_from(i, self.accept_budget);
            }
        }
    }

    fn ctx(&mut self) -> (Ctx<'_>, &mut Slab<Client>) {
        (
            Ctx {
                config: &self.config,
                routes: &self.routes,
                now: self.now,
                date: &self.date,
                drain_started: self.drain.as_ref().map(|d| d.started),
                requests: &mut self.requests,
                access_log: &mut self.access_log,
                scratch: &mut self.scratch,
                files: &mut self.files,
                registry: self.poll.registry(),
                proxy: &mut self.proxy,
                http2: &mut self.http2,
            },
            &mut self.conns,
        )
    }

    fn drive(&mut self, key: usize) {
        let (mut ctx, conns) = self.ctx();
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        let drive = conn.drive(&mut ctx);
        if drive != Drive::Closed && conn.take_write_interest() {
            // Edge-triggered, and the kernel checks readiness on MOD: a
            // socket that drained in between still raises its event.
            let token = connection_token(key);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if let Err(e) = self.poll.registry().reregister(
                &mut SourceFd(&conn.raw_fd()),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                debug!("watching a connection for writable: {e}");
                self.remove(key);
                return;
            }
        }
        match drive {
            Drive::Wait => {}
            Drive::Again => self.runnable.push_back(key),
            Drive::Closed => self.remove(key),
        }
    }

    /// Drops a finished connection. No epoll_ctl(DEL): closing the only
    /// fd of a socket takes it out of the epoll set, one syscall fewer per
    /// connection.
    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            conn.abandon(&mut self.proxy);
        }
    }

    /// The coarse timer: deadlines, accept retries, stats.
    fn tick(&mut self) {
        self.next_tick = after(self.now, TICK);
        let drain_started = self.drain.as_ref().map(|d| d.started);
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline(&self.config, drain_started) <= self.now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let (mut ctx, conns) = self.ctx();
            if let Some(conn) = conns.get_mut(key) {
                conn.on_deadline(&mut ctx);
                self.drive(key);
            }
        }
        self.proxy.expire(&self.config, self.now);
        for slot in self.listeners.iter_mut().flatten() {
            if slot.paused_until.is_some_and(|t| t <= self.now) {
                slot.paused_until = None;
            }
        }
        if self.now >= self.next_stats {
            self.next_stats = after(self.now, STATS_EVERY);
            // Lines reach the file at least once a second.
            self.access_log.flush();
            self.send_stats();
        }
    }

    /// Our counters, to the master: every `STATS_EVERY`, and once more as
    /// the worker exits, so that what it served in its last second is
    /// counted in the master's totals (which keep an exited worker's last
    /// report).
    fn send_stats(&mut self) {
        let stats = ToMaster::Stats {
            connections: self.conns.len() as u64,
            requests: self.requests,
            responses: self.access_log.responses,
            bytes: self.access_log.bytes,
            file_cache: self.files.stats(),
            upstreams: self.proxy.counters(&self.config, self.now),
            http2: Box::new(self.http2.clone()),
        };
        self.send_to_master(&stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(target(CHANNEL), Target::Channel);
        assert_eq!(target(SIGNALS), Target::Signals);
        assert_eq!(target(FILE_CACHE), Target::FileCache);
        assert_eq!(target(listener_token(0)), Target::Listener(0));
        assert_eq!(target(listener_token(7)), Target::Listener(7));
        let upstream = crate::proxy::tokens::UPSTREAM_BASE;
        assert_eq!(target(Token(upstream)), Target::Upstream(0));
        assert_eq!(target(Token(upstream + 9)), Target::Upstream(9));
        for key in [0, 1, 12345] {
            assert_eq!(
                target(connection_token(key)),
                Target::Connection { key, side: 0 }
            );
            assert_eq!(
                target(Token(connection_token(key).0 + 1)),
                Target::Connection { key, side: 1 }
            );
        }
    }
}
