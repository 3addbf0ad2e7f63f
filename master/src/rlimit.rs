//! `worker_rlimit_nofile`: the master sets its own RLIMIT_NOFILE before it
//! forks workers (which inherit it), so the limit is the same under
//! systemd, sysvinit, OpenRC or a shell: what the config needs, not what
//! the init system happened to give.
//!
//! RLIMIT_NOFILE is per process. A worker holds at most `max_connections`
//! connections, each of which may hold a second fd (a file being sent, a
//! backend connection), plus its listeners, logs and channel; the master
//! holds a channel per worker of every generation. "auto" asks for the
//! larger of the two, and only ever raises.

use baton_shared::config::Config;

/// Headroom for what is not a connection: log files, the channel, the
/// epoll and signal fds, the file cache's open files.
const SLACK: u64 = 64;

/// The soft limit "auto" asks for.
pub fn needed(config: &Config) -> u64 {
    let listens = config.listens().len() as u64;
    let worker = (config.http.max_connections as u64)
        .saturating_mul(2)
        .saturating_add(SLACK)
        .saturating_add(listens);
    // Per worker of every generation that may be alive at once: its
    // channel and pidfd, twice for margin.
    let generations = (config.max_draining_generations as u64).saturating_add(1);
    let master = (config.workers as u64)
        .saturating_mul(generations)
        .saturating_mul(4)
        .saturating_add(SLACK)
        .saturating_add(listens);
    worker.max(master)
}

/// What `apply` did, for the log and the tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already enough (auto never lowers).
    Unchanged {
        soft: u64,
    },
    Set {
        soft: u64,
        hard: u64,
    },
    /// The hard limit is below the target and could not be raised: the
    /// soft limit is set to the hard one.
    Capped {
        wanted: u64,
        soft: u64,
        error: String,
    },
}

/// Sets RLIMIT_NOFILE for `config` and logs what happened (a warning when
/// the hard limit is too low).
pub fn apply(config: &Config) {
    let wanted = config.worker_rlimit_nofile;
    let target = wanted.unwrap_or_else(|| needed(config));
    match set(target, wanted.is_some()) {
        Ok(Outcome::Unchanged { soft }) => {
            log::debug!("RLIMIT_NOFILE {soft} is enough (needed {target})")
        }
        Ok(Outcome::Set { soft, hard }) => {
            log::info!("RLIMIT_NOFILE set to {soft} (hard {hard})")
        }
        Ok(Outcome::Capped {
            wanted,
            soft,
            error,
        }) => log::warn!(
            "RLIMIT_NOFILE: {wanted} needed ({}), but the hard limit is {soft} and cannot be \
             raised ({error}); each worker may refuse connections past about {} \
             (raise LimitNOFILE= in the unit, ulimit -Hn, or lower max_connections)",
            match config.worker_rlimit_nofile {
                Some(_) => "worker_rlimit_nofile".to_string(),
                None => format!("max_connections = {}", config.http.max_connections),
            },
            soft.saturating_sub(SLACK) / 2
        ),
        Err(e) => log::warn!("cannot set RLIMIT_NOFILE to {target}: {e}"),
    }
}

fn set(target: u64, exact: bool) -> std::io::Result<Outcome> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft == target || (!exact && soft >= target) {
        return Ok(Outcome::Unchanged { soft });
    }
    if target <= hard {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
        return Ok(Outcome::Set { soft: target, hard });
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE (root has it unless a
    // unit's CapabilityBoundingSet removed it) and target <= fs.nr_open.
    match setrlimit(Resource::RLIMIT_NOFILE, target, target) {
        Ok(()) => Ok(Outcome::Set {
            soft: target,
            hard: target,
        }),
        Err(e) => {
            if soft < hard {
                setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
            }
            Ok(Outcome::Capped {
                wanted: target,
                soft: hard,
                error: e.desc().to_string(),
            })
        }
    }
}
