//! The reload transaction's effects, carried out: preparing a generation
//! (config, listeners, error log, fork), committing it, rolling it back,
//! and telling everyone how the reload ended. The transaction decides; this
//! file only does, and reports back what it did as the next event.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use baton_shared::config::Config;
use baton_shared::deadline;
use nix::unistd::Pid;

use super::config_io::{self, load_config_text};
use super::process_table::SpawnContext;
use super::timers::Owner;
use super::transaction::{Effect, Event};
use super::{Master, lifecycle::Lifecycle};
use crate::listeners::Prepared;
use crate::reload::{Outcome, Waiter};
use crate::{admin, notify};

/// What a reload prepared, held until it commits or rolls back.
pub(super) struct Staged {
    generation: u64,
    plan: Prepared,
    /// The new error log, opened but not yet in place of the old one.
    error_log: Option<OwnedFd>,
    config: Arc<Config>,
}

impl Master {
    pub(super) fn carry_out(&mut self, effect: Effect<Waiter>) {
        match effect {
            Effect::NotifyReloading => notify::reloading(),
            Effect::Prepare { text, restricted } => {
                let event = self.prepare(text, restricted);
                self.feed(event);
            }
            Effect::Commit {
                generation,
                first,
                text,
                persist,
            } => {
                let event = self.commit(generation, first, text, persist);
                self.feed(event);
            }
            Effect::RollBack { generation, reason } => self.roll_back(generation, &reason),
            Effect::Finished { waiters, outcome } => self.finished(waiters, outcome),
            Effect::Refuse { waiters, why } => {
                for w in waiters {
                    w.refuse(why);
                }
            }
            Effect::StartupFailed { reason } => self.startup_failure = Some(reason),
            Effect::Warn(line) => log::warn!("{line}"),
        }
    }

    /// Loads the config, binds its new addresses, opens its logs and forks
    /// its generation. Nothing that serves is touched: a failure here
    /// leaves the server exactly as it was.
    fn prepare(&mut self, text: Option<String>, restricted: bool) -> Event<Waiter> {
        let failed = |e: String| Event::PrepareFailed(Outcome::Failed(e));
        match &text {
            Some(_) => log::info!(
                "reloading: a config sent to the admin API for {}",
                self.source
            ),
            None => log::info!("reloading: reading {}", self.source),
        }
        let (mut config, text) =
            match load_config_text(&self.source, &self.overrides, text.as_deref()) {
                Ok(c) => c,
                Err(e) => return Event::PrepareFailed(Outcome::Invalid(e)),
            };
        if restricted && let Err(outcome) = admin::guard::on_start(self.admin_running(), &config) {
            return Event::PrepareFailed(outcome);
        }
        if config.pid_file != self.res.pid_file {
            log::warn!(
                "pid_file changed to {} in the config; a reload keeps {} (restart to change it)",
                config.pid_file.display(),
                self.res.pid_file.display()
            );
            config.pid_file = self.res.pid_file.clone();
        }
        // The new generation inherits it; a reload may have changed
        // max_connections or worker_rlimit_nofile.
        crate::rlimit::apply(&config);
        let error_log = match &config.error_log {
            None => None,
            Some(path) => match crate::logfiles::open(path, &config) {
                Ok(fd) => Some(fd),
                Err(e) => return failed(format!("cannot open error log {}: {e}", path.display())),
            },
        };
        let plan = match self.res.listeners.prepare(&config) {
            Ok(plan) => plan,
            Err(b) => {
                let at = config.error_at(
                    b.listen.pos,
                    format!("cannot bind {}: {}", b.listen.addr, b.error),
                );
                return failed(at.to_string());
            }
        };
        for addr in &plan.added {
            log::info!("listening on {addr}");
        }
        let access_logs = match crate::logfiles::open_access_logs(&config) {
            Ok(fds) => fds,
            Err(e) => {
                self.res.listeners.undo(&plan);
                return failed(e);
            }
        };
        let config = Arc::new(config);
        let took_over = self.res.listeners.covered(&config);
        let number = self
            .procs
            .create(Arc::clone(&config), access_logs, took_over);
        if let Err(e) = self.spawn_generation(number) {
            self.procs.kill(Some(number));
            self.procs.generations.remove(&number);
            self.res.listeners.undo(&plan);
            return failed(format!("cannot fork a worker of generation {number}: {e}"));
        }
        let ready_deadline = deadline::from_now(config.worker_ready_timeout);
        let workers = config.workers;
        self.staged = Some(Staged {
            generation: number,
            plan,
            error_log,
            config,
        });
        Event::Prepared {
            generation: number,
            workers,
            ready_deadline,
            text,
        }
    }

    /// Forks every worker of a new generation.
    pub(super) fn spawn_generation(&mut self, number: u64) -> std::io::Result<()> {
        let slots = self
            .procs
            .generations
            .get(&number)
            .map_or(0, |g| g.slots.len());
        log::info!("starting generation {number} with {slots} workers");
        for slot in 0..slots {
            self.spawn_worker(number, slot)?;
        }
        Ok(())
    }

    pub(super) fn spawn_worker(&mut self, number: u64, slot: usize) -> std::io::Result<Pid> {
        let token = self.token();
        let ctx = SpawnContext {
            registry: self.poll.registry(),
            listeners: &self.res.listeners,
            ticket_keys: &self.tls.ticket_keys,
            health: &self.health,
            token,
        };
        let pid = self.procs.spawn(&ctx, number, slot)?;
        self.helper_worker_forked(pid);
        Ok(pid)
    }

    /// Every worker of `number` is ready: it becomes the serving
    /// generation, and the older serving one drains.
    fn commit(&mut self, number: u64, first: bool, text: String, persist: bool) -> Event<Waiter> {
        let Some(g) = self.procs.generations.get_mut(&number) else {
            return Event::Committed {
                draining: Vec::new(),
                warning: None,
            };
        };
        g.phase = crate::generation::Phase::Serving;
        let config = Arc::clone(&g.config);
        let keep = g.addrs.clone();
        self.tls.watch = crate::certwatch::Watch::new(&g.tls, config.tls.watch_interval);
        if let Some(staged) = self.staged.take().filter(|s| s.generation == number) {
            let revived = self
                .res
                .listeners
                .commit(&staged.plan, staged.config.defer_accept);
            self.release_revived(&revived, number);
            if let Some(fd) = staged.error_log {
                // SAFETY: dup2 between two open fds; replaces fd 2 in one
                // step, so no log line is lost or split.
                if unsafe { libc::dup2(fd.as_raw_fd(), 2) } < 0 {
                    log::error!(
                        "cannot switch the error log: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
        baton_shared::logging::set_level(&config.log_level);
        let previous = std::mem::replace(&mut self.procs.current, number);
        // Steer new connections away from removed or moved addresses before
        // the old generation sweeps their queues.
        self.retire_listeners(&keep, previous);
        let draining = if previous != 0 {
            self.drain_generation(previous)
        } else {
            Vec::new()
        };
        self.cap_draining(config.max_draining_generations);
        self.running_text = text;
        self.update_admin(&config);
        self.helper_follow(&config);
        self.arm_idle_exit(&config);
        if first {
            self.started_serving(number);
        }
        let warning = if persist {
            config_io::persist(&self.source, &self.running_text)
        } else {
            None
        };
        Event::Committed { draining, warning }
    }

    /// The first generation serves: the server has started.
    fn started_serving(&mut self, number: u64) {
        self.lifecycle = Lifecycle::Running;
        let pid = std::process::id();
        if let Err(e) = crate::pidfile::write(&self.res.pid_file, pid) {
            // Everything else is up; a missing pidfile must not be silent,
            // but it is not worth dropping the service for.
            log::error!("cannot write pidfile {}: {e}", self.res.pid_file.display());
        }
        if let Some(r) = self.readiness.take() {
            r.ready();
        }
        log::info!("ready: generation {number} serving, master pid {pid}");
        notify::ready(number);
    }

    /// Tells generation `number` to drain within its grace period; returns
    /// the workers that will confirm they stopped accepting.
    pub(super) fn drain_generation(&mut self, number: u64) -> Vec<Pid> {
        let Some(g) = self.procs.generations.get(&number) else {
            return Vec::new();
        };
        let grace = g.config.grace;
        log::info!(
            "generation {number} draining (grace {} s)",
            grace.as_secs_f64()
        );
        self.timers
            .set(Owner::Drain(number), Some(deadline::from_now(grace)));
        for slot in 0..g.slots.len() {
            self.timers.set(Owner::Respawn(number, slot), None);
        }
        let held: Vec<(Pid, Vec<u32>)> = self
            .procs
            .children
            .values()
            .filter(|c| c.generation == number)
            .map(|c| (c.pid, self.held_by(c)))
            .collect();
        let told = self.procs.drain(number, |c| {
            held.iter()
                .find(|(p, _)| *p == c.pid)
                .map(|(_, h)| h.clone())
                .unwrap_or_default()
        });
        self.forget_generation_if_done(number);
        told
    }

    /// Past `max` draining generations, the oldest are stopped now: a burst
    /// of reloads must not leave a crowd of old workers (each holding its
    /// memory and file descriptors) for a whole grace period.
    fn cap_draining(&mut self, max: usize) {
        let draining = self.procs.draining();
        let excess = draining.len().saturating_sub(max);
        for number in draining.into_iter().take(excess) {
            log::warn!(
                "more than {max} generations draining (max_draining_generations): \
                 stopping generation {number} now"
            );
            self.procs
                .send_to(Some(number), &baton_shared::channel::ToWorker::Stop);
            // What does not exit by itself is killed shortly.
            self.timers.set(
                Owner::Drain(number),
                Some(deadline::from_now(lifecycle_fast_wait())),
            );
            self.procs.draining_stopped = self.procs.draining_stopped.saturating_add(1);
        }
    }

    /// The generation failed before it served: its listener plan is undone
    /// and it drains what it may already have accepted (a worker that was
    /// ready accepted from the shared sockets), killed only after `grace`.
    fn roll_back(&mut self, number: u64, reason: &str) {
        log::error!("{reason}; rolling it back");
        if let Some(staged) = self.staged.take().filter(|s| s.generation == number) {
            self.res.listeners.undo(&staged.plan);
        }
        self.drain_generation(number);
    }

    /// The reload ended: count it, log it, tell whoever waits.
    fn finished(&mut self, waiters: Vec<Waiter>, outcome: Outcome) {
        // An upgrade's reload in the new image: answered (or rolled back
        // to the old binary) by `upgrade`, counted like any reload.
        let upgrading = matches!(self.upgrade, Some(super::upgrade::Pending::Adopted { .. }));
        if upgrading && !matches!(outcome, Outcome::Ok { .. }) {
            self.upgrade_reload_finished(&outcome);
        }
        let current = self.procs.current;
        match &outcome {
            Outcome::Ok { .. } => {
                self.history.ok = self.history.ok.saturating_add(1);
                log::info!("reload {}", outcome.describe());
            }
            _ => {
                self.history.failed = self.history.failed.saturating_add(1);
                log::error!(
                    "reload {}; generation {current} keeps serving",
                    outcome.describe()
                );
            }
        }
        for w in waiters {
            w.tell(&outcome);
        }
        if upgrading {
            self.upgrade_reload_finished(&outcome);
        }
        self.history.last = Some((SystemTime::now(), outcome));
        notify::ready(current);
    }

    /// The draining generation's grace period is over (or a capped one's
    /// short wait): what is left of it is killed.
    pub(super) fn grace_over(&mut self, number: u64) {
        self.reap_now();
        let left = self.procs.pids_of(number);
        if !left.is_empty() {
            let grace = self
                .procs
                .generations
                .get(&number)
                .map_or(0.0, |g| g.config.grace.as_secs_f64());
            log::warn!(
                "generation {number}: {} workers still draining after the grace period ({grace} s); killing them",
                left.len()
            );
        }
        self.procs.kill(Some(number));
    }

    /// A serving worker's replacement is due.
    pub(super) fn respawn(&mut self, number: u64, slot: usize) {
        if self.lifecycle.stopping()
            || self.procs.phase(number) != Some(crate::generation::Phase::Serving)
        {
            return;
        }
        if let Err(e) = self.spawn_worker(number, slot) {
            log::error!("cannot fork a replacement worker for generation {number}: {e}");
            let now = Instant::now();
            let delay = self
                .procs
                .generations
                .get_mut(&number)
                .and_then(|g| g.slots.get_mut(slot))
                .map(|s| s.record_crash(std::time::Duration::ZERO, now));
            if let Some(delay) = delay {
                self.timers.set(
                    Owner::Respawn(number, slot),
                    Some(deadline::after(now, delay)),
                );
            }
        }
    }
}

/// How long a generation told to stop now may take before it is killed.
fn lifecycle_fast_wait() -> std::time::Duration {
    super::lifecycle::FAST_STOP_WAIT
}
