//! The certificate helper, the master's side: started when the serving
//! config has an ACME site (and only then), told every committed config,
//! restarted with backoff when it dies, stopped with the server.
//!
//! Its channel is registered in the master's loop like a worker's and is
//! never waited on. What it says is acted on here:
//!
//! - challenge answers (`Http`, `Alpn` and their `Done`s) go to every live
//!   worker, of every generation, as one whole `AcmeChallenges` set, and
//!   to each worker forked later;
//! - `Issued`: the serving generation's certificates are loaded again
//!   (`tls::load`, the path `-t`, start and reload use) and, if they
//!   changed, pushed to its workers, which swap them between two
//!   handshakes: same pids, no new generation;
//! - `Status`: kept per certificate for `GET /status`, `baton -s status`
//!   and `/metrics`.
//!
//! A binary upgrade does not hand the helper over: its channel is
//! close-on-exec, so it reads EOF and exits when the master re-executes,
//! and the new image starts a helper of its own from its config (an order
//! under way is abandoned and taken up again by the new helper; its lock
//! file is removed on the way out or goes stale).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_shared::channel::ToWorker;
use baton_shared::channel::certs::{
    Challenges, FromHelper, HelperSettings, NameStatus, OrderSpec, StapleSpec, ToHelper,
};
use baton_shared::config::Config;
use baton_shared::deadline;
use mio::Token;
use mio::unix::SourceFd;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Master;
use super::process_table::Exit;
use crate::spawn_helper;

/// A helper that lived this long before dying starts the backoff afresh.
const STABLE: Duration = Duration::from_secs(60);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

struct Running {
    /// Who it runs as and where its state is: a change needs a new helper.
    who: (Option<u32>, std::path::PathBuf),
    pid: Pid,
    channel: baton_shared::channel::Channel,
    token: Token,
    started: Instant,
}

#[derive(Default)]
pub(super) struct Helper {
    running: Option<Running>,
    /// A pid that was told to stop and is not reaped yet.
    stopping: Vec<Pid>,
    /// When a dead helper is forked again.
    pub(super) restart_at: Option<Instant>,
    crashes: u32,
    pub(super) restarts: u64,
    settings: Option<HelperSettings>,
    pub(super) challenges: Challenges,
    /// Workers that have not confirmed `challenges.version` yet.
    pub(super) unconfirmed: std::collections::HashSet<Pid>,
    /// `Published` owed to the helper once they all have.
    pub(super) owed: u32,
    pub(super) statuses: BTreeMap<String, NameStatus>,
    /// Failed attempts of helpers that have exited, per certificate.
    failures_before: BTreeMap<String, u64>,
}

impl Helper {
    pub(super) fn owns(&self, token: Token) -> bool {
        self.running.as_ref().is_some_and(|r| r.token == token)
    }

    pub(super) fn pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.pid.as_raw())
    }

    /// Failed attempts since the master started, per certificate.
    pub(super) fn failures_total(&self, id: &str) -> u64 {
        let now = self.statuses.get(id).map_or(0, |s| s.failures_total);
        self.failures_before
            .get(id)
            .copied()
            .unwrap_or(0)
            .saturating_add(now)
    }
}

/// Who a helper for `config` runs as, and its directory.
fn who(config: &Config) -> (Option<u32>, std::path::PathBuf) {
    (
        spawn_helper::identity(config).map(|i| i.uid),
        config.acme.dir.clone(),
    )
}

/// What the helper needs from `config`; `None` when no site uses ACME and
/// no certificate has an `ocsp` staple to keep fresh (then no helper runs).
fn settings(config: &Config) -> Option<HelperSettings> {
    let orders: Vec<OrderSpec> = config
        .acme_orders()
        .into_iter()
        .map(|o| OrderSpec {
            id: o.id,
            names: o.names,
            directory: o.directory,
            email: o.email.unwrap_or_default(),
            challenge: o.challenge,
        })
        .collect();
    let staples: Vec<StapleSpec> = baton_certs::ocsp::jobs(config)
        .into_iter()
        .map(|j| StapleSpec {
            chain: j.chain.display().to_string(),
            staple: j.staple.display().to_string(),
        })
        .collect();
    if orders.is_empty() && staples.is_empty() {
        return None;
    }
    let ca_pem = match &config.acme.ca {
        Some(path) => std::fs::read(path).unwrap_or_else(|e| {
            log::error!("cannot read acme_ca {}: {e}", path.display());
            Vec::new()
        }),
        None => Vec::new(),
    };
    Some(HelperSettings {
        dir: config.acme.dir.display().to_string(),
        ca_pem,
        renew_check_ms: u64::try_from(config.acme.renew_check.as_millis()).unwrap_or(u64::MAX),
        lock_stale_ms: u64::try_from(config.acme.lock_stale.as_millis()).unwrap_or(u64::MAX),
        orders,
        staples,
    })
}

impl Master {
    /// A config was committed (the first, a reload's, an upgrade's): the
    /// helper is started, told, or stopped to match it.
    pub(super) fn helper_follow(&mut self, config: &Arc<Config>) {
        let wanted = settings(config);
        for p in &config.tls_loaded.0.acme_pending {
            log::warn!(
                "ACME certificate for {} pending ({}): {}",
                p.names.join(", "),
                if p.placeholder {
                    "a self-signed placeholder is served meanwhile"
                } else {
                    "its handshakes fail until it arrives"
                },
                p.why
            );
        }
        self.helper.settings = wanted;
        match (&self.helper.settings, self.helper.running.is_some()) {
            (None, true) => {
                log::info!("no site uses ACME any more: stopping the certificate helper");
                self.stop_helper();
            }
            (None, false) => self.helper.restart_at = None,
            (Some(_), true)
                if self.helper.running.as_ref().map(|r| &r.who) != Some(&who(config)) =>
            {
                log::info!("acme_user or acme_dir changed: replacing the certificate helper");
                self.stop_helper();
                self.start_helper(config);
            }
            (Some(s), true) => {
                let msg = ToHelper::Settings(s.clone());
                self.send_helper(&msg);
            }
            (Some(_), false) => {
                if self.helper.restart_at.is_none() {
                    self.start_helper(config);
                }
            }
        }
    }

    fn start_helper(&mut self, config: &Config) {
        self.helper.restart_at = None;
        let Some(settings) = self.helper.settings.clone() else {
            return;
        };
        // acme_dir is the ACME side's; a helper that only staples has none.
        if !settings.orders.is_empty()
            && let Err(e) = spawn_helper::prepare_dir(config)
        {
            log::error!("cannot start the certificate helper: {e}");
            self.plan_helper_restart();
            return;
        }
        let spawned = match spawn_helper::spawn(config) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot fork the certificate helper: {e}");
                self.plan_helper_restart();
                return;
            }
        };
        let token = self.token();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&spawned.channel.stream().as_raw_fd()),
            token,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        ) {
            log::error!("cannot watch the certificate helper's channel: {e}");
            let _ = kill(spawned.pid, Signal::SIGKILL);
            self.helper.stopping.push(spawned.pid);
            self.plan_helper_restart();
            return;
        }
        log::info!(
            "forked the certificate helper {} ({} ACME certificate(s))",
            spawned.pid,
            settings.orders.len()
        );
        self.helper.running = Some(Running {
            who: who(config),
            pid: spawned.pid,
            channel: spawned.channel,
            token,
            started: Instant::now(),
        });
        self.send_helper(&ToHelper::Settings(settings));
    }

    pub(super) fn send_helper(&mut self, msg: &ToHelper) {
        if let Some(r) = self.helper.running.as_mut()
            && let Err(e) = r.channel.send(msg)
        {
            log::warn!("cannot write to the certificate helper {}: {e}", r.pid);
        }
    }

    /// The stop: the helper is told to go (SIGTERM) and not restarted.
    pub(super) fn stop_helper(&mut self) {
        self.helper.restart_at = None;
        if let Some(r) = self.helper.running.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&r.channel.stream().as_raw_fd()));
            let _ = kill(r.pid, Signal::SIGTERM);
            self.helper.stopping.push(r.pid);
        }
        self.helper.owed = 0;
        self.set_challenges(Challenges::default());
    }

    /// The `Owner::Helper` timer: a dead helper's backoff is over.
    pub(super) fn restart_helper(&mut self) {
        self.helper.restart_at = None;
        if self.lifecycle.stopping() || self.helper.running.is_some() {
            return;
        }
        let Some(config) = self
            .procs
            .generations
            .get(&self.procs.current)
            .map(|g| Arc::clone(&g.config))
        else {
            return;
        };
        self.helper.restarts = self.helper.restarts.saturating_add(1);
        self.start_helper(&config);
    }

    fn plan_helper_restart(&mut self) {
        let shift = self.helper.crashes.min(10);
        let delay = BACKOFF_FIRST.saturating_mul(1 << shift).min(BACKOFF_MAX);
        self.helper.crashes = self.helper.crashes.saturating_add(1);
        self.helper.restart_at = Some(deadline::from_now(delay));
        log::warn!("certificate helper restarts in {} ms", delay.as_millis());
    }

    /// A reaped child: true if it was (or had been) the helper.
    pub(super) fn helper_exited(&mut self, exit: &Exit) -> bool {
        if let Some(i) = self.helper.stopping.iter().position(|p| *p == exit.pid) {
            self.helper.stopping.swap_remove(i);
            log::info!("certificate helper {} {}", exit.pid, exit.how);
            return true;
        }
        if self.helper.running.as_ref().map(|r| r.pid) != Some(exit.pid) {
            return false;
        }
        // What it said last counts (an `Issued` just before dying).
        self.on_helper_channel();
        let Some(r) = self.helper.running.take() else {
            return true;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&r.channel.stream().as_raw_fd()));
        for (id, s) in std::mem::take(&mut self.helper.statuses) {
            let before = self.helper.failures_before.entry(id).or_default();
            *before = before.saturating_add(s.failures_total);
        }
        // Its challenge answers died with its orders.
        self.helper.owed = 0;
        self.set_challenges(Challenges::default());
        if r.started.elapsed() >= STABLE {
            self.helper.crashes = 0;
        }
        log::error!("certificate helper {} {}", exit.pid, exit.how);
        if !self.lifecycle.stopping() && self.helper.settings.is_some() {
            self.plan_helper_restart();
        }
        true
    }

    /// The helper's channel is readable (or writable again).
    pub(super) fn on_helper_channel(&mut self) {
        let Some(r) = self.helper.running.as_mut() else {
            return;
        };
        if r.channel.has_pending_output()
            && let Err(e) = r.channel.flush()
        {
            log::debug!("cannot write to the certificate helper: {e}");
        }
        let pid = r.pid;
        let messages = match r.channel.receive::<FromHelper>() {
            Ok(m) => m,
            Err(e) => {
                log::error!("certificate helper {pid}: {e}; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                Vec::new()
            }
        };
        for m in messages {
            self.on_helper_message(m);
        }
    }

    fn on_helper_message(&mut self, m: FromHelper) {
        let mut c = self.helper.challenges.clone();
        if matches!(m, FromHelper::Http { .. } | FromHelper::Alpn { .. }) {
            self.helper.owed = self.helper.owed.saturating_add(1);
        }
        match m {
            FromHelper::Ready => {
                log::info!("certificate helper ready");
                return;
            }
            FromHelper::Http { token, key_auth } => {
                c.http.retain(|(t, _)| *t != token);
                c.http.push((token, key_auth));
            }
            FromHelper::HttpDone { token } => c.http.retain(|(t, _)| *t != token),
            FromHelper::Alpn {
                name,
                cert_pem,
                key_pem,
            } => {
                c.alpn.retain(|(n, _, _)| *n != name);
                c.alpn.push((name, cert_pem, key_pem));
            }
            FromHelper::AlpnDone { name } => c.alpn.retain(|(n, _, _)| *n != name),
            FromHelper::Issued { id } => {
                self.acme_issued(&id);
                return;
            }
            FromHelper::Status(s) => {
                self.helper.statuses.insert(s.id.clone(), s);
                return;
            }
        }
        self.set_challenges(c);
    }

    /// The ACME certificates of the serving config, for status and metrics.
    pub(super) fn acme_view(&self) -> crate::report::acme::Acme {
        let mut view = crate::report::acme::Acme {
            helper: self.helper.pid(),
            helper_restarts: self.helper.restarts,
            certs: Vec::new(),
        };
        let Some(g) = self.procs.generations.get(&self.procs.current) else {
            return view;
        };
        for order in g.config.acme_orders() {
            let pending = g.tls.acme_pending.iter().find(|p| p.id == order.id);
            let status = self.helper.statuses.get(&order.id);
            let expires = g
                .tls
                .certs
                .iter()
                .find(|c| c.site == order.site && pending.is_none())
                .and_then(|c| baton_shared::tls::pem_validity(&c.cert_pem))
                .map_or(0, |(_, not_after)| not_after);
            let revoked = status.is_some_and(|s| !s.reason.is_empty());
            let state = match (status.is_some_and(|s| s.ordering), pending) {
                (true, _) => "ordering",
                (false, None) if revoked => "revoked",
                (false, Some(_)) => "pending",
                (false, None) => "valid",
            };
            view.certs.push(crate::report::acme::View {
                id: order.id.clone(),
                names: order.names.clone(),
                state,
                pending: pending.map(|p| p.why.clone()),
                placeholder: pending.is_some_and(|p| p.placeholder),
                expires,
                last_attempt: status.map_or(0, |s| s.last_attempt),
                last_error: status
                    .map(|s| s.last_error.clone())
                    .filter(|e| !e.is_empty()),
                next_attempt: status.map_or(0, |s| s.next_attempt),
                failures: status.map_or(0, |s| s.failures),
                failures_total: self.helper.failures_total(&order.id),
                reason: status.map(|s| s.reason.clone()).filter(|r| !r.is_empty()),
            });
        }
        view
    }

    /// A new certificate for `id` is on disk: the serving generation's
    /// certificates are loaded again and pushed to its workers if changed.
    fn acme_issued(&mut self, id: &str) {
        let current = self.procs.current;
        let Some(g) = self.procs.generations.get_mut(&current) else {
            return;
        };
        let material = match baton_shared::tls::load(&g.config) {
            Ok(m) => m,
            Err(e) => {
                log::error!(
                    "ACME certificate {id} issued, but the certificates do not load \
                     (the old ones stay): {e}"
                );
                return;
            }
        };
        if material.acme_pending.iter().any(|p| p.id == id) {
            log::warn!("ACME certificate {id} reported issued but is not usable yet");
        }
        let same = material.bundles() == g.tls.bundles();
        // Kept either way: the pending list may have changed when the
        // certificate watch already pushed the new files.
        g.tls = Arc::new(material);
        if same {
            return;
        }
        let message = ToWorker::Certificates(g.tls.bundles());
        let interval = g.config.tls.watch_interval;
        self.tls.watch = crate::certwatch::Watch::new(&g.tls, interval);
        let sent = self.procs.send_to(Some(current), &message);
        log::info!(
            "ACME certificate {id} loaded and sent to {sent} workers of generation {current}"
        );
    }
}
