//! What the workers say (their channel) and how they end (reaping), turned
//! into the transaction's events, the reopen's answers and the respawns of
//! a serving generation.

use std::time::Instant;

use baton_shared::channel::ToMaster;
use baton_shared::deadline;
use nix::unistd::Pid;

use super::Master;
use super::process_table::{self, Exit};
use super::timers::Owner;
use super::transaction::Event;
use crate::generation::{CRASH_LOOP, Phase};

impl Master {
    /// Worker `pid`'s channel is readable (or writable again).
    pub(super) fn on_channel(&mut self, pid: Pid) {
        let messages = self.procs.read_channel(self.poll.registry(), pid);
        if messages.iter().any(|m| matches!(m, ToMaster::Ready)) {
            // A worker that has already died is not ready, even if its
            // `Ready` is still in the channel: reap first, so a death that
            // came with the last `Ready` fails the reload instead of
            // committing a generation with a dead slot.
            self.reap_now();
        }
        let alive = self.procs.children.contains_key(&pid);
        self.on_messages(pid, messages, alive);
    }

    fn on_messages(&mut self, pid: Pid, messages: Vec<ToMaster>, alive: bool) {
        let generation = self.procs.children.get(&pid).map(|c| c.generation);
        for m in messages {
            match m {
                ToMaster::Ready if alive => self.on_ready(pid, generation),
                ToMaster::Ready => {}
                ToMaster::Failed(reason) => {
                    let number = generation.unwrap_or_default();
                    log::error!("worker {pid} (generation {number}) cannot serve: {reason}");
                    self.feed(Event::WorkerFailed {
                        pid,
                        generation: number,
                        reason,
                    });
                }
                ToMaster::ReopenDone => self.reopen_answered(pid, Ok(())),
                ToMaster::ReopenFailed(why) => self.reopen_answered(pid, Err(why)),
                ToMaster::Draining => self.feed(Event::StoppedAccepting { pid }),
                ToMaster::AcmeApplied(version) => self.helper_applied(pid, version),
                // Applied by the process table.
                ToMaster::Stats { .. } => {}
            }
        }
    }

    fn on_ready(&mut self, pid: Pid, generation: Option<u64>) {
        let Some(number) = generation else {
            return;
        };
        if !self.procs.mark_ready(pid) {
            return;
        }
        if self.procs.phase(number) == Some(Phase::Serving) {
            log::info!("worker {pid} (generation {number}) ready");
        }
        self.feed(Event::WorkerReady {
            pid,
            generation: number,
        });
    }

    /// Reaps every child that ended and deals with each.
    pub(super) fn reap_now(&mut self) {
        for exit in process_table::reap() {
            self.on_child_exit(exit);
        }
    }

    fn on_child_exit(&mut self, exit: Exit) {
        if self.preflight_exited(&exit) || self.helper_exited(&exit) {
            return;
        }
        let Exit { pid, how, clean } = exit;
        // What it said before dying comes first (a `Failed` with its reason
        // may still sit in the channel when the exit is reaped); a `Ready`
        // from a dead worker counts for nothing.
        let messages = self.procs.read_channel(self.poll.registry(), pid);
        self.on_messages(pid, messages, false);
        let Some(child) = self.procs.remove(self.poll.registry(), pid) else {
            log::info!("process {pid} {how}");
            return;
        };
        self.helper_worker_gone(pid);
        self.reopen_answered(pid, Ok(()));
        let number = child.generation;
        let phase = self.procs.phase(number);
        self.feed(Event::WorkerExited {
            pid,
            generation: number,
            how: how.clone(),
        });
        match phase {
            Some(Phase::Draining) => {
                let line = format!("worker {pid} (generation {number}) {how} after draining");
                if clean {
                    log::info!("{line}");
                } else {
                    log::warn!("{line}");
                }
            }
            Some(Phase::Starting) => {
                log::error!("worker {pid} (generation {number}) {how} before it was ready");
            }
            Some(Phase::Serving) if !self.lifecycle.stopping() => {
                let now = Instant::now();
                if let Some((delay, crashes)) = self.procs.record_crash(&child, now) {
                    self.timers.set(
                        Owner::Respawn(number, child.slot),
                        Some(deadline::after(now, delay)),
                    );
                    let slot = child.slot;
                    let ms = delay.as_millis();
                    if crashes >= CRASH_LOOP {
                        log::error!(
                            "worker {pid} (generation {number}, slot {slot}) {how}; crash loop: \
                             {crashes} deaths in a row, next restart in {ms} ms"
                        );
                    } else {
                        log::warn!(
                            "worker {pid} (generation {number}, slot {slot}) {how}; restarting it in {ms} ms"
                        );
                    }
                }
            }
            _ => log::info!("worker {pid} (generation {number}) {how}"),
        }
        self.forget_generation_if_done(number);
    }

    /// Drops a draining generation (or, when stopping, any) with no worker
    /// left, and closes the listeners nobody holds any more.
    pub(super) fn forget_generation_if_done(&mut self, number: u64) {
        let draining = self.procs.phase(number) == Some(Phase::Draining);
        if !(draining || self.lifecycle.stopping()) || !self.procs.is_empty(number) {
            return;
        }
        if self.procs.generations.remove(&number).is_some() {
            log::info!("generation {number} has ended");
            self.timers.forget_generation(number);
            self.close_unused_listeners();
        }
    }
}
