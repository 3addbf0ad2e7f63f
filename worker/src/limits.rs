//! The worker's fixed limits and timings, in one place.
//!
//! The limits and timeouts an operator tunes (`header_timeout`,
//! `keepalive_timeout`, `max_header_size`, `send_timeout`, ...) live in the
//! config (`HttpLimits`); these are the ones that have not needed a knob.

use std::time::Duration;

/// Bytes read from a socket at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// After `shutdown(Write)`, how long input is read and discarded before the
/// socket is closed (so late bytes never turn the close into a reset).
pub const LINGERING_CLOSE: Duration = Duration::from_secs(1);

/// The coarse timer: deadlines are checked this often.
pub const TICK: Duration = Duration::from_millis(250);

/// How often `Stats` go to the master.
pub const STATS_EVERY: Duration = Duration::from_secs(1);

/// Connections accepted per listener per loop turn by a worker alone on its
/// listen sockets, so that one busy listener cannot starve the connections
/// already open.
pub const ACCEPT_BUDGET: usize = 64;

/// The same when other workers of the generation share the listen sockets:
/// one per pass, as nginx does without `multi_accept`, so that a worker
/// serves the connection it took before it takes the next and another
/// worker can take that one. With a batch, a burst of connections (h2load's
/// 50 at once, queued before any worker has woken) went to the first
/// worker to run (46 of 50, measured). Alone this changed little (50/0 in
/// 7 of 10 bursts of 50); with the re-registration after each accept
/// (`Acceptor::requeue`) it spreads them. Nothing waits for it: a listener
/// with more queued keeps the loop from sleeping (`run_pending` takes the
/// next at once), so a worker alone in practice (the others busy, full or
/// gone) still drains the queue, one per pass.
pub const ACCEPT_BUDGET_SHARED: usize = 1;

/// How many connections a pass of the loop takes from a listener.
pub fn accept_budget(workers: usize) -> usize {
    if workers > 1 {
        ACCEPT_BUDGET_SHARED
    } else {
        ACCEPT_BUDGET
    }
}

/// Connections accepted from a listener's queue when draining, before it is
/// closed: what was queued is served, but a flood cannot keep us there.
pub const DRAIN_ACCEPT_MAX: usize = 4096;

/// Bytes one connection may move per loop turn before others get a go.
pub const TURN_BYTES: usize = 1024 * 1024;

/// Requests one connection may have answered per loop turn.
pub const TURN_REQUESTS: usize = 32;

/// While draining, a response still keeps the connection open if the next
/// pipelined request is already buffered; at most this many times.
pub const DRAIN_PIPELINED_MAX: u32 = 16;

/// `t + d` without a panic (see `baton_shared::deadline`): every deadline
/// of the worker goes through it.
pub use baton_shared::deadline::after;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_accept_per_pass_only_when_workers_share_the_listeners() {
        assert_eq!(accept_budget(1), ACCEPT_BUDGET);
        assert_eq!(accept_budget(2), ACCEPT_BUDGET_SHARED);
        assert_eq!(accept_budget(64), ACCEPT_BUDGET_SHARED);
    }
}
