//! Retired listeners: the sockets of addresses a reload moved or removed,
//! kept open and accepted from until no connection can still arrive on
//! them (docs/architecture.md, "Retired listeners"; the socket side is in
//! `listeners`).
//!
//! Who accepts from a retired socket during its linger: the new generation
//! when one of its addresses covers it (it was given the socket at fork,
//! `Generation::took_over`), else the draining generation, whose config
//! still has the sites (told with `HoldListeners` before `Drain`). When the
//! linger ends, whoever holds it is told `CloseListeners` and the master
//! closes its copy; a socket whose users all ended before is closed then.

use std::time::{Duration, Instant};

use baton_shared::channel::ToWorker;
use baton_shared::config::ListenAddr;

use super::Master;
use crate::generation::Child;

/// Past the defer period, the time for the client's answer to the last
/// SYN-ACK retransmission to arrive.
const LINGER_MARGIN: Duration = Duration::from_secs(1);

impl Master {
    /// Retires every socket but `keep` as generation `self.current` takes
    /// over from `previous`.
    ///
    /// How long a retired socket may still get connections: one that
    /// completed its handshake but waits for its first bytes (TCP_DEFER_ACCEPT)
    /// is retransmitted a SYN-ACK at the latest `defer_accept` after the
    /// listener's defer is turned off (the kernel's timer backs off 1, 2,
    /// 4... s, and the last interval within the defer period is at most the
    /// period itself); the client's ACK then queues it. So the linger is the
    /// previous generation's `defer_accept` (which set the socket's) and a
    /// margin.
    pub(super) fn retire_listeners(&mut self, keep: &[ListenAddr], previous: u64) {
        let defer = self
            .procs
            .generations
            .get(&previous)
            .map_or(Duration::ZERO, |g| g.config.defer_accept);
        self.res
            .listeners
            .retire_all_but(keep, defer.saturating_add(LINGER_MARGIN));
    }

    /// The positions, in `child`'s listeners, of the retired sockets it must
    /// keep accepting on while it drains: those still lingering that the
    /// serving generation did not take over.
    pub(super) fn held_by(&self, child: &Child) -> Vec<u32> {
        let taken: Vec<&ListenAddr> = self
            .procs
            .generations
            .get(&self.procs.current)
            .map(|g| g.took_over.iter().map(|(addr, _)| addr).collect())
            .unwrap_or_default();
        child
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, addr)| self.res.listeners.lingering(addr) && !taken.contains(addr))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect()
    }

    /// Ends the lingers that are over by `now`: every worker holding such a
    /// socket accepts what is queued and closes it; generations forget the
    /// sockets they took over, and the master closes its copy (the socket
    /// itself ends with the last worker's, after that worker's last accept).
    pub(super) fn end_lingers(&mut self, now: Instant) {
        let over = self.res.listeners.lingered(now);
        if over.is_empty() {
            return;
        }
        self.let_go(&over, None);
        for g in self.procs.generations.values_mut() {
            g.took_over.retain(|(addr, _)| !over.contains(addr));
        }
        for addr in &over {
            log::info!("closed listener {addr}, no longer configured");
        }
        self.res.listeners.close(&over);
    }

    /// A reload brought retired sockets back: the draining workers still
    /// holding them (but not `number`'s, whose own they are now) accept
    /// what is queued and let go, as at the end of a linger.
    pub(super) fn release_revived(&mut self, revived: &[ListenAddr], number: u64) {
        if !revived.is_empty() {
            self.let_go(revived, Some(number));
        }
    }

    /// Tells every worker (but those of `except`) that holds one of
    /// `addrs` to accept what is queued on it and close it.
    fn let_go(&mut self, addrs: &[ListenAddr], except: Option<u64>) {
        for child in self.procs.children.values_mut() {
            if Some(child.generation) == except {
                continue;
            }
            let positions: Vec<u32> = child
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, addr)| addrs.contains(addr))
                .filter_map(|(i, _)| u32::try_from(i).ok())
                .collect();
            if positions.is_empty() {
                continue;
            }
            if let Some(ch) = child.channel.as_mut()
                && let Err(e) = ch.send(&ToWorker::CloseListeners(positions))
            {
                log::debug!("cannot tell worker {} to close listeners: {e}", child.pid);
            }
        }
    }

    /// Closes the retired sockets no generation holds any more.
    pub(super) fn close_unused_listeners(&mut self) {
        let in_use: Vec<ListenAddr> = self
            .procs
            .generations
            .values()
            .flat_map(|g| g.holds().cloned())
            .collect();
        self.res.listeners.close_unused(&in_use);
    }
}
