//! The master's life: starting, running, stopping, and every way out.
//!
//! One rule for a stop, whoever asks (a signal, `baton -s stop|quit`, the
//! admin API's `POST /stop`): the first request starts a graceful stop (or
//! a fast one, if that is what was asked), and every further request while
//! stopping escalates one step: graceful → fast → every worker killed now.

use std::time::Duration;

use baton_shared::channel::ToWorker;
use baton_shared::deadline;

use super::Master;
use super::timers::Owner;
use super::transaction::Event;
use crate::generation::Phase;
use crate::notify;

/// How long a fast stop gives workers to exit by themselves before they
/// are killed.
pub(super) const FAST_STOP_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// The first generation is starting; nothing is promised yet.
    Starting,
    Running,
    /// `fast`: workers were told to stop now; `killed`: they were killed.
    Stopping {
        fast: bool,
        killed: bool,
    },
}

impl Lifecycle {
    pub(super) fn stopping(self) -> bool {
        matches!(self, Lifecycle::Stopping { .. })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Running => "running",
            Lifecycle::Stopping { .. } => "stopping",
        }
    }
}

impl Master {
    /// A stop request, from anyone (see the module docs for the rule).
    pub(super) fn stop(&mut self, fast: bool) {
        match self.lifecycle {
            Lifecycle::Starting | Lifecycle::Running => self.begin_stop(fast),
            Lifecycle::Stopping { fast: false, .. } => {
                log::warn!("another stop request during a graceful stop: stopping fast");
                self.begin_stop(true);
            }
            Lifecycle::Stopping { killed: false, .. } => {
                self.kill_all("another stop request during a fast stop")
            }
            Lifecycle::Stopping { killed: true, .. } => {}
        }
    }

    fn begin_stop(&mut self, fast: bool) {
        let first = !self.lifecycle.stopping();
        self.lifecycle = Lifecycle::Stopping {
            fast,
            killed: false,
        };
        if first {
            notify::stopping();
            // The reload under way ends now, one way or the other; so does
            // an upgrade.
            self.feed(Event::StopRequested);
            self.upgrade_stopped();
            self.stop_helper();
        }
        let grace = self
            .procs
            .generations
            .get(&self.procs.current)
            .map_or(Duration::from_secs(10), |g| g.config.grace);
        let wait = if fast { FAST_STOP_WAIT } else { grace };
        self.timers.set(Owner::Stop, Some(deadline::from_now(wait)));
        log::info!(
            "{} stop: {} workers",
            if fast { "fast" } else { "graceful" },
            self.procs.children.len()
        );
        let numbers: Vec<u64> = self.procs.generations.keys().copied().collect();
        for number in numbers {
            if let Some(g) = self.procs.generations.get_mut(&number) {
                g.phase = Phase::Draining;
            }
            // The stop's own deadline bounds every generation now.
            self.timers.forget_generation(number);
        }
        let order = if fast {
            ToWorker::Stop
        } else {
            ToWorker::Drain
        };
        for child in self.procs.children.values_mut() {
            child.draining = true;
        }
        self.procs.send_to(None, &order);
    }

    /// The stop's deadline: whatever is left is killed.
    pub(super) fn stop_deadline(&mut self) {
        if self.lifecycle.stopping() && !self.procs.children.is_empty() {
            self.kill_all("stop deadline reached");
        }
    }

    fn kill_all(&mut self, why: &str) {
        log::warn!("{why}: killing {} workers now", self.procs.children.len());
        if let Lifecycle::Stopping { fast, .. } = self.lifecycle {
            self.lifecycle = Lifecycle::Stopping { fast, killed: true };
        }
        self.procs.kill(None);
        // Reaping follows by SIGCHLD; no further deadline is needed.
        self.timers.set(Owner::Stop, None);
    }

    /// Every worker has gone after a stop.
    pub(super) fn exit_stopped(mut self) -> i32 {
        self.res.release();
        log::info!("stopped");
        // Dropping `self` closes the stop waiters' connections: their
        // `baton -s stop` returns now.
        0
    }

    /// The first generation did not start: nothing may stay listening, so
    /// the workers are killed and waited for before the resources go.
    pub(super) fn exit_after_failed_start(mut self, reason: &str) -> i32 {
        log::error!("{reason}");
        for pid in self.procs.children.keys() {
            crate::supervisor::process_table::kill_worker(*pid);
            let _ = nix::sys::wait::waitpid(*pid, None);
        }
        self.res.release();
        if let Some(r) = self.readiness.take() {
            r.failed(reason);
        }
        1
    }
}
