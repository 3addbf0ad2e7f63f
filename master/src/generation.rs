//! Generations and the children that make them up: the master's whole
//! picture of its processes, small enough to serialise for a future binary
//! upgrade (pid, generation, slot, state).

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::channel::{Channel, FileCacheStats};
use baton_shared::config::{Config, ListenAddr};
use mio::Token;
use nix::unistd::Pid;

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Forked; waiting for every worker's `Ready` (the reload
    /// transaction's deadline).
    Starting,
    /// The current generation.
    Serving,
    /// Told to drain; killed after its grace period if anything is left.
    Draining,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
        }
    }
}

/// Crash bookkeeping for one worker slot of the serving generation.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// Consecutive short-lived deaths; 0 when the slot is healthy.
    pub crashes: u32,
    /// When the last death was recorded.
    pub last_crash: Option<Instant>,
}

/// A worker that lives at least this long before dying is not counted as a
/// crash loop: its slot's backoff starts again from the bottom.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// From this many crashes in a row, the slot is reported as crash-looping...
pub const CRASH_LOOP: u32 = 5;
/// ...for this long after the last of them.
const CRASH_LOOP_REPORTED_FOR: Duration = Duration::from_secs(60);

impl Slot {
    /// Records a death of the worker in this slot that had lived `lived`,
    /// and returns the delay before its replacement: 100 ms, doubling up to
    /// 30 s while the deaths keep coming quickly.
    pub fn record_crash(&mut self, lived: Duration, now: Instant) -> Duration {
        self.crashes = if lived >= STABLE_AFTER {
            1
        } else {
            self.crashes.saturating_add(1)
        };
        let shift = (self.crashes - 1).min(16);
        let delay = BACKOFF_FIRST.saturating_mul(1 << shift).min(BACKOFF_MAX);
        self.last_crash = Some(now);
        delay
    }

    /// Crash-looping: `CRASH_LOOP` quick deaths in a row, the last one
    /// recently (a replacement that has been up for a while is healthy
    /// again, even though its counter only resets at its next death).
    pub fn crash_looping(&self, now: Instant) -> bool {
        self.crashes >= CRASH_LOOP
            && self
                .last_crash
                .is_some_and(|t| now.duration_since(t) < CRASH_LOOP_REPORTED_FOR)
    }
}

#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    pub config: Arc<Config>,
    /// The listen addresses its workers were given.
    pub addrs: Vec<ListenAddr>,
    /// Retired sockets it serves too, for the connections still on their
    /// way to them, until their linger ends: (the socket's address, the
    /// address of this generation's config that covers it, whose sites
    /// answer them). Given to its workers after `addrs`.
    pub took_over: Vec<(ListenAddr, ListenAddr)>,
    pub phase: Phase,
    pub slots: Vec<Slot>,
    /// Its access log files (`Config::access_logs` order), given to every
    /// worker it forks, including replacements; replaced on reopen.
    pub access_logs: Vec<std::os::fd::OwnedFd>,
    /// Its certificates: those its config loaded, replaced when the
    /// watcher sees a file change (no new generation for that). Workers
    /// forked later (replacements) get the current ones.
    pub tls: Arc<baton_shared::tls::Material>,
}

impl Generation {
    /// Every socket its workers hold: its own addresses and those it took
    /// over.
    pub fn holds(&self) -> impl Iterator<Item = &ListenAddr> {
        self.addrs
            .iter()
            .chain(self.took_over.iter().map(|(addr, _)| addr))
    }

    pub fn new(number: u64, config: Arc<Config>) -> Generation {
        let addrs = config.listens().iter().map(|l| l.addr.clone()).collect();
        let slots = vec![Slot::default(); config.workers];
        Generation {
            number,
            addrs,
            took_over: Vec::new(),
            phase: Phase::Starting,
            tls: Arc::clone(&config.tls_loaded.0),
            config,
            slots,
            access_logs: Vec::new(),
        }
    }
}

/// One forked worker.
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    pub generation: u64,
    pub slot: usize,
    /// The addresses of the sockets it was given, in the order it was
    /// given them (the master names them by position in its messages).
    pub listeners: Vec<ListenAddr>,
    pub token: Token,
    /// None once the channel closed or failed.
    pub channel: Option<Channel>,
    pub ready: bool,
    pub draining: bool,
    pub started: Instant,
    pub connections: u64,
    pub requests: u64,
    /// Responses by status class (1xx..5xx) and body bytes, as last reported.
    pub responses: [u64; 5],
    pub bytes: u64,
    pub file_cache: FileCacheStats,
    /// Its upstream servers' counters, as last reported.
    pub upstreams: Vec<baton_shared::channel::UpstreamCounters>,
    /// Its HTTP/2 counters, as last reported.
    pub http2: baton_shared::channel::Http2Counters,
}

impl Child {
    /// Its state for status, given its generation's phase: a worker of a
    /// generation that has not committed yet is `ready` once it said so,
    /// not `serving`.
    pub fn state(&self, phase: Option<Phase>) -> &'static str {
        match (self.draining, self.ready, phase) {
            (true, _, _) | (false, _, Some(Phase::Draining)) => "draining",
            (false, true, Some(Phase::Starting)) => "ready",
            (false, true, _) => "serving",
            (false, false, _) => "starting",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_run() {
        let now = Instant::now();
        let mut slot = Slot::default();
        let quick = Duration::from_millis(5);
        let delays: Vec<_> = (0..12).map(|_| slot.record_crash(quick, now)).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[4], Duration::from_millis(1600));
        assert_eq!(delays[11], BACKOFF_MAX);
        assert_eq!(slot.crashes, 12);
        assert!(slot.crash_looping(now));
        assert!(!slot.crash_looping(now + Duration::from_secs(61)));
        assert_eq!(
            slot.record_crash(Duration::from_secs(60), now),
            BACKOFF_FIRST
        );
        assert_eq!(slot.crashes, 1);
    }
}
