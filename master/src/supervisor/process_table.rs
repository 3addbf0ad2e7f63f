//! The master's processes: every forked worker by pid, the generations they
//! make up, forking, reading their channels, reaping, and the crash
//! backoff of a serving generation's slots. It knows nothing of reloads or
//! stops: those decide, this keeps the books and talks to the processes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::channel::{FileCacheStats, ToMaster, ToWorker};
use baton_shared::config::{Config, ListenAddr};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::generation::{Child, Generation, Phase};
use crate::listeners::ListenerSet;
use crate::spawn;

/// Counters of workers that have exited, so totals never go down. A
/// worker's counters are its word: they are added with saturation.
#[derive(Debug, Default, Clone)]
pub struct GoneTotals {
    pub requests: u64,
    pub responses: [u64; 5],
    pub bytes: u64,
    pub file_cache: (u64, u64),
    pub http2: baton_shared::channel::Http2Counters,
}

impl GoneTotals {
    fn add(&mut self, child: &Child) {
        self.requests = self.requests.saturating_add(child.requests);
        for (total, n) in self.responses.iter_mut().zip(child.responses) {
            *total = total.saturating_add(n);
        }
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.file_cache.0 = self.file_cache.0.saturating_add(child.file_cache.hits);
        self.file_cache.1 = self.file_cache.1.saturating_add(child.file_cache.misses);
        self.http2.add(&child.http2);
    }

    /// As an upgrade carries them to the next image.
    pub fn export(&self) -> crate::upgrade::state::Gone {
        crate::upgrade::state::Gone {
            requests: self.requests,
            responses: self.responses,
            bytes: self.bytes,
            file_cache_hits: self.file_cache.0,
            file_cache_misses: self.file_cache.1,
            http2: self.http2.clone(),
        }
    }

    pub fn restore(g: &crate::upgrade::state::Gone) -> GoneTotals {
        GoneTotals {
            requests: g.requests,
            responses: g.responses,
            bytes: g.bytes,
            file_cache: (g.file_cache_hits, g.file_cache_misses),
            http2: g.http2.clone(),
        }
    }
}

/// How a reaped process ended.
pub struct Exit {
    pub pid: Pid,
    pub how: String,
    pub clean: bool,
}

/// What forking a worker needs from the rest of the master.
pub struct SpawnContext<'a> {
    pub registry: &'a Registry,
    pub listeners: &'a ListenerSet,
    pub ticket_keys: &'a [[u8; 32]],
    /// The active health state the worker starts from.
    pub health: &'a crate::health::Checker,
    pub token: Token,
}

#[derive(Default)]
pub struct ProcessTable {
    pub children: HashMap<Pid, Child>,
    tokens: HashMap<Token, Pid>,
    pub generations: BTreeMap<u64, Generation>,
    /// The serving generation (0 before the first commits).
    pub current: u64,
    last_number: u64,
    pub gone: GoneTotals,
    /// Serving workers replaced after dying.
    pub restarts: u64,
    /// Draining generations stopped early by `max_draining_generations`.
    pub draining_stopped: u64,
}

impl ProcessTable {
    pub fn pid_of(&self, token: Token) -> Option<Pid> {
        self.tokens.get(&token).copied()
    }

    pub fn phase(&self, number: u64) -> Option<Phase> {
        self.generations.get(&number).map(|g| g.phase)
    }

    /// Adds a generation (starting, no worker yet); returns its number.
    pub fn create(
        &mut self,
        config: Arc<Config>,
        access_logs: Vec<OwnedFd>,
        took_over: Vec<(ListenAddr, ListenAddr)>,
    ) -> u64 {
        self.last_number += 1;
        let number = self.last_number;
        let mut generation = Generation::new(number, config);
        generation.access_logs = access_logs;
        generation.took_over = took_over;
        self.generations.insert(number, generation);
        number
    }

    /// The last generation number given (a binary upgrade carries it on).
    pub fn last_number(&self) -> u64 {
        self.last_number
    }

    /// A binary upgrade: numbering goes on from the previous image's.
    pub fn continue_numbering(&mut self, last: u64) {
        self.last_number = self.last_number.max(last);
    }

    /// Takes in a worker the previous image of this process forked (it is
    /// still our child: same pid), its channel registered under `token`.
    pub fn adopt(&mut self, registry: &Registry, token: Token, child: Child) -> io::Result<()> {
        if let Some(ch) = &child.channel {
            registry.register(
                &mut SourceFd(&ch.stream().as_raw_fd()),
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.tokens.insert(token, child.pid);
        }
        self.children.insert(child.pid, child);
        Ok(())
    }

    /// Forks the worker of `generation`'s `slot`.
    pub fn spawn(
        &mut self,
        ctx: &SpawnContext<'_>,
        generation: u64,
        slot: usize,
    ) -> io::Result<Pid> {
        let Some(g) = self.generations.get(&generation) else {
            return Err(io::Error::other(format!("no generation {generation}")));
        };
        let own = g.addrs.iter().map(|a| (a, a, false));
        let taken = g.took_over.iter().map(|(a, by)| (a, by, true));
        let mut fds = Vec::with_capacity(g.addrs.len() + g.took_over.len());
        let mut listeners = Vec::with_capacity(fds.capacity());
        for (addr, serves_as, taken_over) in own.chain(taken) {
            let Some(b) = ctx.listeners.get(addr) else {
                return Err(io::Error::other(format!("listener {addr} is not bound")));
            };
            fds.push(spawn::ListenerFd {
                fd: b.fd(),
                serves_as: serves_as.clone(),
                taken_over,
            });
            listeners.push(addr.clone());
        }
        let logs: Vec<i32> = g.access_logs.iter().map(|f| f.as_raw_fd()).collect();
        let tls = spawn::TlsHandoff {
            material: Arc::clone(&g.tls),
            ticket_keys: ctx.ticket_keys.to_vec(),
        };
        let place = spawn::Place { generation, slot };
        let health = ctx.health.marks_for(&g.config);
        let spawned = spawn::spawn(&g.config, place, &fds, &logs, &tls, &health)?;
        let pid = spawned.pid;
        if let Err(e) = ctx.registry.register(
            &mut SourceFd(&spawned.channel.stream().as_raw_fd()),
            ctx.token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            kill_worker(pid);
            return Err(e);
        }
        log::info!("forked worker {pid} (generation {generation}, slot {slot})");
        self.tokens.insert(ctx.token, pid);
        self.children.insert(
            pid,
            Child {
                pid,
                generation,
                slot,
                listeners,
                token: ctx.token,
                channel: Some(spawned.channel),
                ready: false,
                draining: false,
                started: Instant::now(),
                connections: 0,
                requests: 0,
                responses: [0; 5],
                bytes: 0,
                file_cache: FileCacheStats::default(),
                upstreams: Vec::new(),
                http2: Default::default(),
            },
        );
        Ok(pid)
    }

    /// Sends what is queued for `pid` and returns what it sent. Stats are
    /// applied here; the rest is for the caller. A channel at EOF or broken
    /// is closed (a worker that breaks the protocol is killed).
    pub fn read_channel(&mut self, registry: &Registry, pid: Pid) -> Vec<ToMaster> {
        let Some(channel) = self.children.get_mut(&pid).and_then(|c| c.channel.as_mut()) else {
            return Vec::new();
        };
        // A large message (certificates) may still be queued.
        if channel.has_pending_output()
            && let Err(e) = channel.flush()
        {
            log::debug!("cannot send to worker {pid}: {e}");
        }
        let result = channel.receive::<ToMaster>();
        let closed = channel.eof() || result.is_err();
        let messages = result.unwrap_or_else(|e| {
            log::error!("worker {pid}: {e}; killing it");
            kill_worker(pid);
            Vec::new()
        });
        if closed {
            self.close_channel(registry, pid);
        }
        let mut rest = Vec::with_capacity(messages.len());
        for m in messages {
            match m {
                ToMaster::Stats {
                    connections,
                    requests,
                    responses,
                    bytes,
                    file_cache,
                    upstreams,
                    http2,
                } => {
                    if let Some(c) = self.children.get_mut(&pid) {
                        c.connections = connections;
                        c.requests = requests;
                        c.responses = responses;
                        c.bytes = bytes;
                        c.file_cache = file_cache;
                        c.upstreams = upstreams;
                        c.http2 = *http2;
                    }
                }
                other => rest.push(other),
            }
        }
        rest
    }

    pub fn close_channel(&mut self, registry: &Registry, pid: Pid) {
        if let Some(child) = self.children.get_mut(&pid)
            && let Some(ch) = child.channel.take()
        {
            let _ = registry.deregister(&mut SourceFd(&ch.stream().as_raw_fd()));
            self.tokens.remove(&child.token);
        }
    }

    /// Marks `pid` ready; true if it was not before.
    pub fn mark_ready(&mut self, pid: Pid) -> bool {
        match self.children.get_mut(&pid) {
            Some(c) if !c.ready => {
                c.ready = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets a reaped worker, keeping its counters in the totals.
    pub fn remove(&mut self, registry: &Registry, pid: Pid) -> Option<Child> {
        self.close_channel(registry, pid);
        let child = self.children.remove(&pid)?;
        self.gone.add(&child);
        Some(child)
    }

    /// The workers of `number`.
    pub fn pids_of(&self, number: u64) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .children
            .values()
            .filter(|c| c.generation == number)
            .map(|c| c.pid)
            .collect();
        pids.sort_by_key(|p| p.as_raw());
        pids
    }

    /// Tells generation `number` to drain: it accepts nothing new, finishes
    /// what it has and exits. `held(child)` names the retired sockets each
    /// worker must keep accepting on meanwhile. Returns the workers that
    /// were told (those whose channel is open: they will confirm).
    pub fn drain(&mut self, number: u64, held: impl Fn(&Child) -> Vec<u32>) -> Vec<Pid> {
        if let Some(g) = self.generations.get_mut(&number) {
            g.phase = Phase::Draining;
        }
        let mut told = Vec::new();
        for child in self
            .children
            .values_mut()
            .filter(|c| c.generation == number)
        {
            let positions = held(child);
            child.draining = true;
            if !positions.is_empty() {
                send(child, &ToWorker::HoldListeners(positions));
            }
            if send(child, &ToWorker::Drain) {
                told.push(child.pid);
            }
        }
        told
    }

    /// Sends `msg` to every worker of `number` (every worker: `None`);
    /// returns how many it reached.
    pub fn send_to(&mut self, number: Option<u64>, msg: &ToWorker) -> usize {
        self.children
            .values_mut()
            .filter(|c| number.is_none_or(|n| c.generation == n))
            .map(|c| send(c, msg))
            .filter(|sent| *sent)
            .count()
    }

    /// Sends `msg` to one worker; false if it is gone.
    pub fn send_to_pid(&mut self, pid: Pid, msg: &ToWorker) -> bool {
        self.children.get_mut(&pid).is_some_and(|c| send(c, msg))
    }

    /// Sends each worker the message `msg_for` makes from its generation's
    /// config (none if it says `None`); returns how many were sent.
    pub fn send_each(&mut self, msg_for: impl Fn(&Config) -> Option<ToWorker>) -> usize {
        let mut sent = 0;
        for c in self.children.values_mut() {
            let Some(g) = self.generations.get(&c.generation) else {
                continue;
            };
            if let Some(msg) = msg_for(&g.config)
                && send(c, &msg)
            {
                sent += 1;
            }
        }
        sent
    }

    /// SIGKILLs every worker of `number` (every worker: `None`).
    pub fn kill(&self, number: Option<u64>) {
        for c in self.children.values() {
            if number.is_none_or(|n| c.generation == n) {
                kill_worker(c.pid);
            }
        }
    }

    /// Draining generations, oldest first.
    pub fn draining(&self) -> Vec<u64> {
        self.generations
            .values()
            .filter(|g| g.phase == Phase::Draining)
            .map(|g| g.number)
            .collect()
    }

    /// Whether generation `number` has no worker left.
    pub fn is_empty(&self, number: u64) -> bool {
        !self.children.values().any(|c| c.generation == number)
    }

    /// A worker of the serving generation died: counts it and returns the
    /// backoff before its slot is forked again, with the crashes in a row.
    pub fn record_crash(&mut self, child: &Child, now: Instant) -> Option<(Duration, u32)> {
        let g = self.generations.get_mut(&child.generation)?;
        let slot = g.slots.get_mut(child.slot)?;
        let lived = now.saturating_duration_since(child.started);
        let delay = slot.record_crash(lived, now);
        self.restarts = self.restarts.saturating_add(1);
        Some((delay, slot.crashes))
    }
}

/// Reaps every child that has ended, without waiting.
pub fn reap() -> Vec<Exit> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push(Exit {
                pid,
                how: format!("exited with status {code}"),
                clean: code == 0,
            }),
            Ok(WaitStatus::Signaled(pid, sig, core)) => out.push(Exit {
                pid,
                how: format!(
                    "was killed by {sig}{}",
                    if core { " (core dumped)" } else { "" }
                ),
                clean: false,
            }),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    out
}

/// Sends one message; false if the worker's channel is gone or failed.
fn send(child: &mut Child, msg: &ToWorker) -> bool {
    let Some(ch) = child.channel.as_mut() else {
        return false;
    };
    match ch.send(msg) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("cannot send {msg:?} to worker {}: {e}", child.pid);
            false
        }
    }
}

/// SIGKILLs a worker. A failure is logged: it means the worker lives on
/// (e.g. the service lacks CAP_KILL to signal a worker of another uid).
pub fn kill_worker(pid: Pid) {
    match kill(pid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => log::error!("cannot kill worker {pid}: {e}"),
    }
}
