//! A binary upgrade, the master's side (docs/architecture.md, "Binary
//! upgrade"):
//!
//! 1. the old image runs `NEW -t` as a preflight child, watched like a
//!    worker (its exit is reaped on SIGCHLD, a timer bounds it): the loop
//!    never waits for it. Only a binary that answers the handshake (it can
//!    read this state format) and finds the config valid is executed;
//! 2. the old image serialises its state into a sealed memfd, clears
//!    close-on-exec on exactly the fds the state names, and calls
//!    `execve` on the binary's path, its signals still blocked;
//! 3. the new image adopts everything (`adopt`) and runs a reload: an
//!    upgrade is a reload whose new generation comes from the new code.
//!    When it is ready the old workers drain exactly as in a reload;
//! 4. if the new image fails before that (config invalid, workers fail),
//!    it serialises its own state, the failed generation draining in it,
//!    and re-executes the old binary from the fd kept on it; the old image
//!    adopts everything again and answers the waiter.
//!
//! An upgrade is refused (exit 2, "busy") while a reload, a log reopen or
//! another upgrade runs, rather than queued: the operator or the package
//! script sees at once that it did not happen, and retries.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_shared::config::Source;
use baton_shared::deadline;
use nix::unistd::Pid;

use super::Master;
use super::lifecycle::Lifecycle;
use super::process_table::Exit;
use super::timers::Owner;
use super::transaction::Phase;
use crate::control::{self, status};
use crate::listeners::handoff::addr_out;
use crate::notify;
use crate::reload::{Outcome, Waiter};
use crate::upgrade::exec;
use crate::upgrade::state::{self, Role, State};

/// How long the new binary's `-t` may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// An upgrade under way.
pub(super) enum Pending {
    /// The old image: the new binary's `-t` runs.
    Preflight {
        pid: Pid,
        output: std::fs::File,
        waiter: Option<control::Conn>,
        exe: PathBuf,
        deadline: Instant,
    },
    /// The new image: its generation is starting. Until it is ready, a
    /// failure goes back to the old binary, open at `old_exe`.
    Adopted {
        old_exe: OwnedFd,
        /// The state the old image wrote: what a crash hands back to it.
        _state: OwnedFd,
        waiter: Option<control::Conn>,
        started: Instant,
    },
}

impl Pending {
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Preflight { deadline, .. } => Some(*deadline),
            Pending::Adopted { .. } => None,
        }
    }
}

fn answer(waiter: Option<control::Conn>, code: i32, text: &str) {
    if let Some(mut w) = waiter {
        w.reply(code, text);
    }
}

impl Master {
    /// `baton -s upgrade` or SIGUSR2.
    pub(super) fn begin_upgrade(&mut self, waiter: Option<control::Conn>) {
        let busy = if self.upgrade.is_some() {
            Some("an upgrade is already running")
        } else {
            self.busy()
        };
        if let Some(why) = busy {
            let text = format!("upgrade refused (busy): {why}; try again when it is over");
            log::warn!("{text}");
            return answer(waiter, status::APPLY_FAILED, &text);
        }
        let exe = exec::exe();
        log::info!("upgrade: checking the new binary {} (-t)", exe.display());
        notify::reloading();
        let config = match &self.source {
            Source::File(p) => Some(p.as_path()),
            Source::Embedded => None,
        };
        match exec::spawn_preflight(&exe, config, self.overrides.pid_file.as_deref()) {
            Ok((pid, output)) => {
                self.upgrade = Some(Pending::Preflight {
                    pid,
                    output,
                    waiter,
                    exe,
                    deadline: deadline::from_now(preflight_timeout()),
                })
            }
            Err(e) => self.upgrade_refused(
                waiter,
                status::APPLY_FAILED,
                &format!("cannot run the new binary {}: {e}", exe.display()),
            ),
        }
    }

    /// What keeps an exec from happening now: the state describes a master
    /// at rest (no reload half-way, no reopen waiting for answers).
    fn busy(&self) -> Option<&'static str> {
        if self.lifecycle != Lifecycle::Running {
            Some("the server is not running (starting or stopping)")
        } else if self.tx.phase() != Phase::Idle {
            Some("a reload is running")
        } else if self.reopen.is_some() {
            Some("a log reopen is running")
        } else {
            None
        }
    }

    /// A stop began: an upgrade under way ends here, its waiter told.
    pub(super) fn upgrade_stopped(&mut self) {
        let why = "upgrade abandoned: the server is stopping";
        match self.upgrade.take() {
            Some(Pending::Preflight { pid, waiter, .. }) => {
                super::process_table::kill_worker(pid);
                answer(waiter, status::APPLY_FAILED, why);
            }
            Some(Pending::Adopted { waiter, .. }) => {
                crate::upgrade::guard::disarm();
                answer(waiter, status::APPLY_FAILED, why);
            }
            None => {}
        }
    }

    /// The upgrade did not happen; the running image serves on.
    fn upgrade_refused(&mut self, waiter: Option<control::Conn>, code: i32, why: &str) {
        let text = format!("upgrade failed: {why}; the running binary serves on");
        log::error!("{text}");
        answer(waiter, code, &text);
        notify::ready(self.procs.current);
    }

    /// A child was reaped: if it is the preflight, decide. True if it was.
    pub(super) fn preflight_exited(&mut self, exit: &Exit) -> bool {
        if !matches!(&self.upgrade, Some(Pending::Preflight { pid, .. }) if *pid == exit.pid) {
            return false;
        }
        let Some(Pending::Preflight {
            mut output,
            waiter,
            exe,
            ..
        }) = self.upgrade.take()
        else {
            return false;
        };
        let text = exec::read_output(&mut output);
        let handshake = exec::handshake();
        let shook = text.lines().any(|l| l.trim() == handshake);
        let shown: Vec<&str> = text
            .lines()
            .filter(|l| l.trim() != handshake && !l.trim().is_empty())
            .collect();
        let shown = shown.join("\n");
        let exe_shown = exe.display();
        if exit.clean && shook {
            // Whatever began while the preflight ran (a reload, a stop)
            // goes first; the upgrade is refused, to be asked again.
            match self.busy() {
                Some(why) => {
                    let why = format!("busy: {why} (it began during the preflight)");
                    self.upgrade_refused(waiter, status::APPLY_FAILED, &why);
                }
                None => self.exec_new(exe, waiter),
            }
        } else if shook {
            let why = format!("the new binary {exe_shown} finds the config invalid:\n{shown}");
            self.upgrade_refused(waiter, status::CONFIG_INVALID, &why);
        } else {
            let why = format!(
                "the new binary {exe_shown} failed its preflight (`-t` {}, without the \
                 handshake {handshake:?}): not executed{}{shown}",
                exit.how,
                if shown.is_empty() { "" } else { "; it said:\n" },
            );
            self.upgrade_refused(waiter, status::APPLY_FAILED, &why);
        }
        true
    }

    /// The preflight's deadline: it is killed and the upgrade abandoned
    /// (its exit is reaped later as an unknown child).
    pub(super) fn preflight_timed_out(&mut self) {
        let Some(Pending::Preflight {
            pid, waiter, exe, ..
        }) = self.upgrade.take()
        else {
            return;
        };
        super::process_table::kill_worker(pid);
        let why = format!(
            "the new binary {}'s -t did not finish within {} ms",
            exe.display(),
            preflight_timeout().as_millis()
        );
        self.upgrade_refused(waiter, status::APPLY_FAILED, &why);
    }

    /// The preflight passed: hand over to the new image. Returns only if
    /// the exec failed (then the upgrade failed and this image serves on).
    fn exec_new(&mut self, exe: PathBuf, waiter: Option<control::Conn>) {
        let old_exe = match exec::open_self_exe() {
            Ok(fd) => fd,
            Err(e) => {
                let why = format!("cannot keep an fd on the running binary: {e}");
                return self.upgrade_refused(waiter, status::APPLY_FAILED, &why);
            }
        };
        log::info!(
            "upgrade: executing {} (pid {})",
            exe.display(),
            std::process::id()
        );
        let fd = waiter.as_ref().map(|w| w.stream.as_raw_fd());
        let error = self.hand_over(Role::Upgrade, fd, Some(&old_exe), |v| {
            exec::exec_path(&exe, v)
        });
        let why = format!("cannot execute {}: {error}", exe.display());
        self.upgrade_refused(waiter, status::APPLY_FAILED, &why);
    }

    /// Serialises the state, keeps exactly its fds across exec, and calls
    /// `exec`. Returns only on failure, with every fd as it was.
    fn hand_over(
        &mut self,
        role: Role,
        waiter: Option<RawFd>,
        old_exe: Option<&OwnedFd>,
        exec: impl FnOnce(&exec::Vectors) -> std::io::Error,
    ) -> String {
        for child in self.procs.children.values_mut() {
            if let Some(ch) = child.channel.as_mut()
                && ch.has_pending_output()
            {
                let _ = ch.flush();
            }
        }
        let state = match self.export(role, waiter, old_exe.map(|f| f.as_raw_fd())) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let memfd = match state::to_memfd(&state) {
            Ok(fd) => fd,
            Err(e) => return format!("cannot write the state: {e}"),
        };
        let mut keep = state.fds();
        keep.push(memfd.as_raw_fd());
        for fd in &keep {
            if let Err(e) = exec::set_cloexec(*fd, false) {
                restore_cloexec(&keep);
                return format!("cannot keep fd {fd} across exec: {e}");
            }
        }
        let vectors =
            match exec::Vectors::new(memfd.as_raw_fd(), old_exe.map(|f| f.as_raw_fd()), None) {
                Ok(v) => v,
                Err(e) => {
                    restore_cloexec(&keep);
                    return e.to_string();
                }
            };
        let error = exec(&vectors);
        restore_cloexec(&keep);
        error.to_string()
    }

    /// What the next image must know, by fd number for what it inherits.
    fn export(
        &self,
        role: Role,
        waiter: Option<RawFd>,
        old_exe: Option<RawFd>,
    ) -> Result<State, String> {
        let now = Instant::now();
        let left =
            |at: Option<Instant>| at.map(|t| t.saturating_duration_since(now).as_millis() as u64);
        let mut children = Vec::with_capacity(self.procs.children.len());
        for c in self.procs.children.values() {
            let (channel, inbuf, outbuf) = match &c.channel {
                Some(ch) => {
                    let Some((inbuf, outbuf)) = ch.buffered() else {
                        return Err(format!(
                            "worker {}'s channel has file descriptors in flight; try again",
                            c.pid
                        ));
                    };
                    (
                        Some(ch.stream().as_raw_fd()),
                        inbuf.to_vec(),
                        outbuf.to_vec(),
                    )
                }
                None => (None, Vec::new(), Vec::new()),
            };
            children.push(state::Child {
                pid: c.pid.as_raw(),
                generation: c.generation,
                slot: c.slot,
                listeners: c.listeners.iter().map(addr_out).collect(),
                channel,
                inbuf,
                outbuf,
                ready: c.ready,
                draining: c.draining,
                connections: c.connections,
                requests: c.requests,
                responses: c.responses,
                bytes: c.bytes,
                file_cache: c.file_cache,
                http2: c.http2.clone(),
            });
        }
        let generations = self
            .procs
            .generations
            .values()
            .map(|g| state::Generation {
                number: g.number,
                phase: g.phase.name().to_string(),
                addrs: g.addrs.iter().map(addr_out).collect(),
                took_over: g
                    .took_over
                    .iter()
                    .map(|(a, by)| (addr_out(a), addr_out(by)))
                    .collect(),
                access_logs: g.access_logs.iter().map(|f| f.as_raw_fd()).collect(),
                drain_left_ms: left(self.timers.get(Owner::Drain(g.number))),
            })
            .collect();
        let admin = self.res.admin.as_ref().map(|(l, _)| match l {
            crate::admin::Listener::Tcp(l, port) => state::Admin::Tcp {
                fd: l.as_raw_fd(),
                port: *port,
            },
            crate::admin::Listener::Unix(l, path) => state::Admin::Unix {
                fd: l.as_raw_fd(),
                path: path.clone(),
            },
        });
        Ok(State {
            role,
            exe: exec::exe(),
            source: match &self.source {
                Source::File(p) => Some(p.clone()),
                Source::Embedded => None,
            },
            pid_file_override: self.overrides.pid_file.clone(),
            grace_override_ms: self.overrides.grace.map(|g| g.as_millis() as u64),
            pid_file: self.res.pid_file.clone(),
            lock: self
                .res
                .lock_fd()
                .ok_or_else(|| "the instance lock is not held".to_string())?,
            control: self
                .res
                .control
                .as_ref()
                .map(|(l, p)| (l.as_raw_fd(), p.clone())),
            admin,
            listeners: self.res.listeners.export(now),
            generations,
            children,
            current: self.procs.current,
            last_number: self.procs.last_number(),
            ticket_keys: self.tls.ticket_keys.clone(),
            running_text: self.running_text.clone(),
            reloads_ok: self.history.ok,
            reloads_failed: self.history.failed,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            restarts: self.procs.restarts,
            waiter,
            old_exe,
            health: self.health.export(),
            gone: self.procs.gone.export(),
        })
    }

    /// The new image's reload ended. True if it was the upgrade's (then it
    /// is dealt with here: answered, or rolled back to the old binary).
    pub(super) fn upgrade_reload_finished(&mut self, outcome: &Outcome) -> bool {
        if !matches!(self.upgrade, Some(Pending::Adopted { .. })) {
            return false;
        }
        match outcome {
            Outcome::Ok { generation, .. } => {
                crate::upgrade::guard::disarm();
                let Some(Pending::Adopted {
                    waiter, started, ..
                }) = self.upgrade.take()
                else {
                    return false;
                };
                let text = format!(
                    "upgraded: {} (pid {}) serving generation {generation} after {} ms",
                    exec::exe().display(),
                    std::process::id(),
                    started.elapsed().as_millis()
                );
                log::info!("{text}");
                answer(waiter, status::OK, &text);
            }
            Outcome::Invalid(e) => {
                self.roll_back_upgrade(status::CONFIG_INVALID, &format!("config invalid: {e}"))
            }
            other => self.roll_back_upgrade(status::APPLY_FAILED, &other.describe()),
        }
        true
    }

    /// The new image failed before its generation was ready: back to the
    /// old binary, which adopts everything (the failed generation, already
    /// told to drain, included) and answers the waiter. If even that exec
    /// fails, this image serves on with what it has.
    pub(super) fn roll_back_upgrade(&mut self, code: i32, reason: &str) {
        let Some(Pending::Adopted {
            old_exe, waiter, ..
        }) = self.upgrade.take()
        else {
            return;
        };
        crate::upgrade::guard::disarm();
        log::error!("upgrade failed: {reason}; executing the previous binary again");
        let fd = waiter.as_ref().map(|w| w.stream.as_raw_fd());
        let role = Role::Rollback {
            status: code,
            reason: reason.to_string(),
        };
        let error = self.hand_over(role, fd, None, |v| exec::exec_fd(&old_exe, v));
        let text = format!(
            "upgrade failed: {reason}; and the previous binary could not be executed again \
             ({error}): the new binary serves on with generation {}",
            self.procs.current
        );
        log::error!("{text}");
        answer(waiter, code, &text);
        notify::ready(self.procs.current);
    }

    /// An image that adopted a rollback: the waiter learns the outcome.
    pub(super) fn rolled_back(&mut self, waiter: Option<Waiter>, code: i32, reason: &str) {
        let text = format!(
            "upgrade failed: {reason}; the previous binary {} (pid {}) serves again, generation {}",
            exec::exe().display(),
            std::process::id(),
            self.procs.current
        );
        log::error!("{text}");
        if let Some(Waiter::Control(mut c)) = waiter {
            c.reply(code, &text);
        }
        notify::ready(self.procs.current);
    }
}

fn preflight_timeout() -> Duration {
    crate::upgrade::hooks()
        .preflight_timeout
        .unwrap_or(PREFLIGHT_TIMEOUT)
}

fn restore_cloexec(fds: &[RawFd]) {
    for fd in fds {
        let _ = exec::set_cloexec(*fd, true);
    }
}
