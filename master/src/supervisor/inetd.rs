//! inetd mode (`listen = ["stdin"]`): the server exits once it had no
//! connection for `inetd_idle_exit`, as lighttpd does, so the superserver
//! (which keeps the listening socket and watches it while no server runs)
//! starts it again on the next connection. Connections that arrive during
//! the exit wait in the listening socket's backlog for that next server.
//!
//! A timer of the master's own loop (the master stays single-threaded, so
//! fork stays safe) looks at what the workers last reported (open
//! connections, requests served; each reports about once a second): any
//! open connection, or any change in the counters, is activity. After
//! `inetd_idle_exit` without any, the master begins a graceful stop, the
//! same as an operator's SIGTERM. A reload applies a new value.

use std::time::{Duration, Instant};

use baton_shared::config::{Config, ListenAddr};
use baton_shared::deadline;

use super::Master;
use super::timers::Owner;

pub(super) struct IdleExit {
    period: Duration,
    last_active: Instant,
    /// (worker pid, requests) as last seen.
    seen: Vec<(i32, u64)>,
}

impl IdleExit {
    /// The idle exit `config` asks for, if it serves stdin and has one.
    pub(super) fn from_config(config: &Config, now: Instant) -> Option<IdleExit> {
        let stdin = config.listens().iter().any(|l| l.addr == ListenAddr::Stdin);
        (stdin && !config.inetd_idle_exit.is_zero()).then(|| IdleExit {
            period: config.inetd_idle_exit,
            last_active: now,
            seen: Vec::new(),
        })
    }

    /// How often to look: a tenth of the period (so the exit is at most a
    /// tenth late), between 200 ms and the workers' 1 s report interval.
    fn every(&self) -> Duration {
        (self.period / 10).clamp(Duration::from_millis(200), Duration::from_secs(1))
    }
}

impl Master {
    /// Arms (or disarms) the idle exit for the config now serving.
    pub(super) fn arm_idle_exit(&mut self, config: &Config) {
        let now = Instant::now();
        self.idle = IdleExit::from_config(config, now);
        let next = self.idle.as_ref().map(|i| deadline::after(now, i.every()));
        self.timers.set(Owner::IdleExit, next);
    }

    /// The idle exit's turn: note activity, or stop once idle long enough.
    pub(super) fn check_idle(&mut self) {
        if self.lifecycle.stopping() {
            return;
        }
        let now = Instant::now();
        let mut seen: Vec<(i32, u64)> = self
            .procs
            .children
            .values()
            .map(|c| (c.pid.as_raw(), c.requests))
            .collect();
        seen.sort_unstable();
        let open = self.procs.children.values().any(|c| c.connections > 0);
        let Some(idle) = self.idle.as_mut() else {
            return;
        };
        if open || seen != idle.seen {
            idle.last_active = now;
        }
        idle.seen = seen;
        if now.saturating_duration_since(idle.last_active) >= idle.period {
            log::info!(
                "inetd mode: no connection for {}s, exiting (inetd_idle_exit)",
                idle.period.as_secs_f64()
            );
            self.stop(false);
            return;
        }
        let next = deadline::after(now, idle.every());
        self.timers.set(Owner::IdleExit, Some(next));
    }
}
