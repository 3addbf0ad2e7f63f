//! The reload transaction: one explicit state machine for "start a new
//! generation, make it the serving one, and hand over from the old one".
//!
//! It is pure: `Transaction::on` takes an event and the time, updates the
//! state, and returns the effects the master's loop must carry out. It
//! never touches a socket, a pid or a file, so every transition is unit
//! tested below without forking, including the orderings that are races in
//! a running system (a worker dying after `Ready`, a stop arriving during
//! the handover, a deadline and a message in the same loop turn).
//!
//! ```text
//!                 ReloadRequested                Prepared
//!   ┌──────┐ ───────────────────▶ ┌───────────┐ ─────────▶ ┌──────────┐
//!   │ Idle │                      │ Preparing │            │ Starting │
//!   └──────┘ ◀─────────────────── └───────────┘            └──────────┘
//!      ▲         PrepareFailed                 every worker │  │ a worker failed or
//!      │                                        Ready      │  │ died, deadline, stop
//!      │                                                   ▼  └──────────▶ RollBack,
//!      │  old workers stopped accepting  ┌──────────┐  ┌────────────┐      Finished(failed)
//!      └──────────────────────────────── │ Handover │◀─│ Committing │         │
//!         (or deadline, or stop):        └──────────┘  └────────────┘         ▼
//!         Finished(ok)                     Committed (old generations          Idle
//!                                          told to drain)
//! ```
//!
//! After `Finished` the next queued request, if any, starts at once. The
//! first generation (at start) enters at `Starting { first: true }`; its
//! failure is a failed start, not a failed reload.

use std::collections::VecDeque;
use std::time::Instant;

use nix::unistd::Pid;

use crate::reload::Outcome;

mod events;

pub use events::{Effect, Event, HANDOVER_TIMEOUT, Request};

/// The request being carried out.
#[derive(Debug)]
struct Active<W> {
    /// The first generation, at start: not a reload, nobody waits.
    first: bool,
    waiters: Vec<W>,
    /// A `POST /config` text (written to the file once it runs).
    posted: Option<String>,
    started: Instant,
}

#[derive(Debug)]
enum State<W> {
    Idle,
    Preparing(Active<W>),
    Starting {
        active: Active<W>,
        generation: u64,
        first: bool,
        workers: usize,
        ready: Vec<Pid>,
        deadline: Instant,
        text: String,
    },
    Committing {
        active: Active<W>,
        generation: u64,
    },
    Handover {
        active: Active<W>,
        generation: u64,
        waiting: Vec<Pid>,
        deadline: Instant,
        warning: Option<String>,
    },
}

/// The name of a state, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Preparing,
    Starting,
    Committing,
    Handover,
}

#[derive(Debug)]
pub struct Transaction<W> {
    state: State<W>,
    /// Requests that came while one ran, run after it. Requests to re-read
    /// the file merge (a burst of signals gives one more reload, not
    /// fifty); a `POST /config` keeps its own place.
    queue: VecDeque<Request<W>>,
    stopping: bool,
}

impl<W> Transaction<W> {
    /// No reload under way (a server that adopted a running generation).
    pub fn idle() -> Transaction<W> {
        Transaction {
            state: State::Idle,
            queue: VecDeque::new(),
            stopping: false,
        }
    }

    /// The first generation is forked at start: nothing is promised yet.
    pub fn first(
        generation: u64,
        workers: usize,
        deadline: Instant,
        text: String,
        now: Instant,
    ) -> Transaction<W> {
        let active = Active {
            first: true,
            waiters: Vec::new(),
            posted: None,
            started: now,
        };
        Transaction {
            state: State::Starting {
                active,
                generation,
                first: true,
                workers,
                ready: Vec::new(),
                deadline,
                text,
            },
            queue: VecDeque::new(),
            stopping: false,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Preparing(_) => Phase::Preparing,
            State::Starting { .. } => Phase::Starting,
            State::Committing { .. } => Phase::Committing,
            State::Handover { .. } => Phase::Handover,
        }
    }

    /// The generation being started or handed over to, if any.
    pub fn generation(&self) -> Option<u64> {
        match self.state {
            State::Starting { generation, .. }
            | State::Committing { generation, .. }
            | State::Handover { generation, .. } => Some(generation),
            State::Idle | State::Preparing(_) => None,
        }
    }

    /// When `Tick` next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Starting { deadline, .. } | State::Handover { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Takes one event; returns what the loop must do.
    pub fn on(&mut self, event: Event<W>, now: Instant) -> Vec<Effect<W>> {
        let mut effects = Vec::new();
        match event {
            Event::ReloadRequested(request) => self.requested(request, now, &mut effects),
            Event::Prepared {
                generation,
                workers,
                ready_deadline,
                text,
            } => self.prepared(generation, workers, ready_deadline, text),
            Event::PrepareFailed(outcome) => match self.take() {
                State::Preparing(active) => {
                    effects.push(Effect::Finished {
                        waiters: active.waiters,
                        outcome,
                    });
                    self.next(now, &mut effects);
                }
                other => self.state = other,
            },
            Event::WorkerReady { pid, generation } => self.ready(pid, generation, &mut effects),
            Event::WorkerFailed {
                pid,
                generation,
                reason,
            } => {
                if self.is_starting(generation) {
                    let reason = format!("worker {pid} cannot serve: {reason}");
                    self.fail(reason, now, &mut effects);
                }
            }
            Event::WorkerExited {
                pid,
                generation,
                how,
            } => self.exited(pid, generation, how, now, &mut effects),
            Event::StoppedAccepting { pid } => self.stopped_accepting(pid, now, &mut effects),
            Event::Committed { draining, warning } => {
                self.committed(draining, warning, now, &mut effects)
            }
            Event::Tick => self.tick(now, &mut effects),
            Event::StopRequested => self.stop(now, &mut effects),
        }
        effects
    }

    fn take(&mut self) -> State<W> {
        std::mem::replace(&mut self.state, State::Idle)
    }

    fn is_starting(&self, number: u64) -> bool {
        matches!(self.state, State::Starting { generation, .. } if generation == number)
    }

    fn requested(&mut self, request: Request<W>, now: Instant, effects: &mut Vec<Effect<W>>) {
        if self.stopping {
            effects.push(Effect::Refuse {
                waiters: request.waiters,
                why: "reload refused: the server is stopping",
            });
            return;
        }
        if !matches!(self.state, State::Idle) {
            self.enqueue(request);
            return;
        }
        self.begin(request, now, effects);
    }

    fn enqueue(&mut self, request: Request<W>) {
        if request.text.is_none()
            && let Some(last) = self.queue.back_mut()
            && last.text.is_none()
        {
            last.waiters.extend(request.waiters);
            return;
        }
        self.queue.push_back(request);
    }

    fn begin(&mut self, request: Request<W>, now: Instant, effects: &mut Vec<Effect<W>>) {
        effects.push(Effect::NotifyReloading);
        effects.push(Effect::Prepare {
            text: request.text.clone(),
            restricted: request.restricted,
        });
        self.state = State::Preparing(Active {
            first: false,
            waiters: request.waiters,
            posted: request.text,
            started: now,
        });
    }

    /// The transaction is idle again: run the next queued request.
    fn next(&mut self, now: Instant, effects: &mut Vec<Effect<W>>) {
        if self.stopping || !matches!(self.state, State::Idle) {
            return;
        }
        if let Some(request) = self.queue.pop_front() {
            self.begin(request, now, effects);
        }
    }

    fn prepared(&mut self, generation: u64, workers: usize, deadline: Instant, text: String) {
        match self.take() {
            State::Preparing(active) => {
                self.state = State::Starting {
                    active,
                    generation,
                    first: false,
                    workers,
                    ready: Vec::new(),
                    deadline,
                    text,
                };
            }
            other => self.state = other,
        }
    }

    fn ready(&mut self, pid: Pid, number: u64, effects: &mut Vec<Effect<W>>) {
        let State::Starting {
            generation,
            workers,
            ready,
            ..
        } = &mut self.state
        else {
            return;
        };
        if *generation != number || ready.contains(&pid) {
            return;
        }
        ready.push(pid);
        if ready.len() < *workers {
            return;
        }
        let State::Starting {
            active,
            generation,
            first,
            text,
            ..
        } = self.take()
        else {
            return;
        };
        effects.push(Effect::Commit {
            generation,
            first,
            text,
            persist: active.posted.is_some(),
        });
        self.state = State::Committing { active, generation };
    }

    fn exited(
        &mut self,
        pid: Pid,
        number: u64,
        how: String,
        now: Instant,
        effects: &mut Vec<Effect<W>>,
    ) {
        if self.is_starting(number) {
            // Before the commit, a worker that was ready and then died
            // fails the reload too: a generation never commits with a
            // dead slot.
            self.fail(
                format!("worker {pid} {how} before the generation served"),
                now,
                effects,
            );
            return;
        }
        self.stopped_accepting(pid, now, effects);
    }

    fn stopped_accepting(&mut self, pid: Pid, now: Instant, effects: &mut Vec<Effect<W>>) {
        if let State::Handover { waiting, .. } = &mut self.state {
            waiting.retain(|p| *p != pid);
            if waiting.is_empty() {
                self.finish(now, effects);
            }
        }
    }

    fn committed(
        &mut self,
        draining: Vec<Pid>,
        warning: Option<String>,
        now: Instant,
        effects: &mut Vec<Effect<W>>,
    ) {
        if !matches!(self.state, State::Committing { .. }) {
            return;
        }
        let State::Committing { active, generation } = self.take() else {
            return;
        };
        self.state = State::Handover {
            active,
            generation,
            waiting: draining,
            deadline: baton_shared::deadline::after(now, HANDOVER_TIMEOUT),
            warning,
        };
        if let State::Handover { waiting, .. } = &self.state
            && waiting.is_empty()
        {
            self.finish(now, effects);
        }
    }

    /// The handover is over: the reload succeeded.
    fn finish(&mut self, now: Instant, effects: &mut Vec<Effect<W>>) {
        let State::Handover {
            active,
            generation,
            warning,
            ..
        } = self.take()
        else {
            return;
        };
        if !active.first {
            let outcome = Outcome::Ok {
                generation,
                took: now.saturating_duration_since(active.started),
                warning,
            };
            effects.push(Effect::Finished {
                waiters: active.waiters,
                outcome,
            });
        }
        self.next(now, effects);
    }

    /// The starting generation failed.
    fn fail(&mut self, reason: String, now: Instant, effects: &mut Vec<Effect<W>>) {
        let State::Starting {
            active,
            generation,
            first,
            ..
        } = self.take()
        else {
            return;
        };
        let reason = format!("generation {generation} failed to start: {reason}");
        if first {
            effects.push(Effect::StartupFailed { reason });
            return;
        }
        effects.push(Effect::RollBack {
            generation,
            reason: reason.clone(),
        });
        effects.push(Effect::Finished {
            waiters: active.waiters,
            outcome: Outcome::Failed(reason),
        });
        self.next(now, effects);
    }

    fn tick(&mut self, now: Instant, effects: &mut Vec<Effect<W>>) {
        match &self.state {
            State::Starting {
                deadline,
                workers,
                ready,
                ..
            } if *deadline <= now => {
                let missing = workers.saturating_sub(ready.len());
                self.fail(
                    format!("{missing} worker(s) not ready in time (worker_ready_timeout)"),
                    now,
                    effects,
                );
            }
            State::Handover {
                deadline, waiting, ..
            } if *deadline <= now => {
                effects.push(Effect::Warn(format!(
                    "reload: old workers {waiting:?} did not confirm they stopped accepting"
                )));
                self.finish(now, effects);
            }
            _ => {}
        }
    }

    fn stop(&mut self, now: Instant, effects: &mut Vec<Effect<W>>) {
        self.stopping = true;
        let why = "reload abandoned: the server is stopping";
        match self.take() {
            // The new generation serves: the reload did succeed, and its
            // listeners are the ones the stop drains.
            State::Committing { active, generation } => {
                self.state = State::Handover {
                    active,
                    generation,
                    waiting: Vec::new(),
                    deadline: now,
                    warning: None,
                };
                self.finish(now, effects);
            }
            state @ State::Handover { .. } => {
                self.state = state;
                self.finish(now, effects);
            }
            State::Starting {
                active,
                generation,
                first,
                ..
            } => {
                if !first {
                    effects.push(Effect::RollBack {
                        generation,
                        reason: why.to_string(),
                    });
                }
                refuse(effects, active.waiters, why);
            }
            State::Preparing(active) => refuse(effects, active.waiters, why),
            State::Idle => {}
        }
        for request in self.queue.drain(..) {
            refuse(effects, request.waiters, why);
        }
    }
}

fn refuse<W>(effects: &mut Vec<Effect<W>>, waiters: Vec<W>, why: &'static str) {
    if !waiters.is_empty() {
        effects.push(Effect::Refuse { waiters, why });
    }
}

#[cfg(test)]
mod tests;
