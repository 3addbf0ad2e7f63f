//! The master's side of active health checks (`crate::health`): the
//! checker follows the live generations' configs, runs from the timer
//! table and the loop's events, and every change goes to every worker.

use std::time::Instant;

use baton_shared::channel::ToWorker;
use mio::Token;

use super::Master;

impl Master {
    /// Re-derives the checked servers when a generation came or went.
    pub(super) fn sync_health(&mut self, now: Instant) {
        let numbers: Vec<u64> = self.procs.generations.keys().copied().collect();
        if !self.health.stale(&numbers) {
            return;
        }
        let configs: Vec<_> = self
            .procs
            .generations
            .values()
            .rev()
            .map(|g| std::sync::Arc::clone(&g.config))
            .collect();
        if self
            .health
            .reconcile(numbers, &configs, self.poll.registry(), now)
        {
            self.push_health();
        }
    }

    /// The health timer: checks past their timeout end, due ones start.
    pub(super) fn health_tick(&mut self, now: Instant) {
        let mut next = self.next_token;
        let changed = self.health.tick(now, self.poll.registry(), &mut || {
            let t = Token(next);
            next += 1;
            t
        });
        self.next_token = next;
        if changed {
            self.push_health();
        }
    }

    pub(super) fn on_health_event(&mut self, token: Token) {
        if self
            .health
            .on_event(token, self.poll.registry(), Instant::now())
        {
            self.push_health();
        }
    }

    /// Every worker gets the state of its own config's checked servers.
    fn push_health(&mut self) {
        let health = &self.health;
        self.procs.send_each(|config| {
            let checked = config.proxy.upstreams.iter().any(|u| u.health.is_some());
            checked.then(|| ToWorker::UpstreamHealth(health.marks_for(config)))
        });
    }
}
