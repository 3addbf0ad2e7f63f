//! What the master shows of itself (`baton -s status`, `GET /status`,
//! `GET /metrics`), and the admin API's view of the running config.

use std::time::Instant;

use baton_shared::config::{Config, Source};
use mio::Interest;

use super::{ADMIN, Master};
use crate::generation::Child;
use crate::{admin, report};

impl Master {
    pub(super) fn snapshot(&self) -> report::Snapshot {
        let now = Instant::now();
        let procs = &self.procs;
        let mut children: Vec<&Child> = procs.children.values().collect();
        children.sort_by_key(|c| (c.generation, c.slot, c.pid.as_raw()));
        let reload = match self.tx.generation() {
            Some(n) => format!("{} (generation {n})", phase_name(self.tx.phase())),
            None => phase_name(self.tx.phase()).to_string(),
        };
        report::Snapshot {
            pid: std::process::id(),
            state: self.lifecycle.name(),
            config: self.source.to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            generation: procs.current,
            generations: procs
                .generations
                .values()
                .map(|g| (g.number, g.phase.name()))
                .collect(),
            workers: children
                .iter()
                .map(|c| report::WorkerView {
                    pid: c.pid.as_raw(),
                    generation: c.generation,
                    slot: c.slot,
                    state: c.state(procs.phase(c.generation)),
                    connections: c.connections,
                    requests: c.requests,
                    responses: c.responses,
                    bytes: c.bytes,
                    file_cache: c.file_cache,
                    upstreams: c.upstreams.clone(),
                    http2: c.http2.clone(),
                })
                .collect(),
            restarts: procs.restarts,
            crash_loop: procs
                .generations
                .get(&procs.current)
                .map(|g| {
                    g.slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.crash_looping(now))
                        .map(|(i, s)| (i, s.crashes))
                        .collect()
                })
                .unwrap_or_default(),
            reloads_ok: self.history.ok,
            reloads_failed: self.history.failed,
            last_reload: self.history.last.as_ref().map(|(at, outcome)| {
                let ago = at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                (outcome.clone(), ago)
            }),
            requests_by_gone_workers: procs.gone.requests,
            responses_by_gone_workers: procs.gone.responses,
            bytes_by_gone_workers: procs.gone.bytes,
            file_cache_by_gone_workers: procs.gone.file_cache,
            http2_by_gone_workers: procs.gone.http2.clone(),
            warnings: match (&self.tls.watch, procs.generations.get(&procs.current)) {
                (Some(watch), Some(g)) => watch.warnings(&g.tls),
                _ => Vec::new(),
            },
            reload,
            draining_stopped: procs.draining_stopped,
            health: self.health.view(),
            acme: self.acme_view(),
        }
    }

    /// What `admin::guard` compares a config from a caller who is not
    /// root with; `Err` when there is nothing to compare with yet.
    pub(super) fn admin_running(&self) -> Result<admin::guard::Running<'_>, String> {
        let Source::File(path) = &self.source else {
            return Err("the server runs the embedded default config".into());
        };
        let Some(serving) = self.procs.generations.get(&self.procs.current) else {
            return Err("the server is starting: send the config again once it is ready".into());
        };
        Ok(admin::guard::Running {
            path,
            overrides: &self.overrides,
            text: &self.running_text,
            config: &serving.config,
        })
    }

    /// Follows a change of `[admin]` in a committed config. The listener is
    /// kept when only the token (or nothing) changed: a new token applies
    /// from the next request on.
    pub(super) fn update_admin(&mut self, config: &Config) {
        match (self.res.admin.as_mut(), &config.admin) {
            (None, None) => return,
            (Some((_, old)), Some(new))
                if (&old.listen, old.mode, old.owner) == (&new.listen, new.mode, new.owner) =>
            {
                if old.token != new.token {
                    log::info!("admin API: token reloaded from {:?}", new.token_file);
                }
                *old = new.clone();
                return;
            }
            _ => {}
        }
        if let Some((mut old, _)) = self.res.admin.take() {
            let _ = self.poll.registry().deregister(&mut old);
            old.remove_file();
            log::info!("admin API closed");
        }
        if let Some(new) = &config.admin {
            match admin::Listener::bind(new) {
                Ok(mut l) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut l, ADMIN, Interest::READABLE)
                        .is_ok()
                    {
                        log::info!("admin API on {}", new.listen);
                        self.res.admin = Some((l, new.clone()));
                    }
                }
                Err(e) => log::error!("cannot serve the admin API on {}: {e}", new.listen),
            }
        }
    }
}

fn phase_name(phase: super::transaction::Phase) -> &'static str {
    use super::transaction::Phase;
    match phase {
        Phase::Idle => "idle",
        Phase::Preparing => "preparing",
        Phase::Starting => "starting",
        Phase::Committing => "committing",
        Phase::Handover => "handover",
    }
}
