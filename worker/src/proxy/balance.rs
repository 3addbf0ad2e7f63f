//! Which server of an upstream takes a request, and which are down.
//!
//! Per worker: each worker balances and marks servers down on its own
//! (passive health), as nginx's workers do without a shared zone.

use std::time::{Duration, Instant};

use baton_shared::config::{Balance, Upstream};
use log::warn;

use crate::limits::after;

/// One server's state in this worker.
#[derive(Debug, Default, Clone)]
pub struct ServerState {
    /// Smooth weighted round robin's running weight.
    current: i64,
    /// Failures since `first_fail` (within `fail_timeout`).
    fails: u32,
    first_fail: Option<Instant>,
    pub down_until: Option<Instant>,
    /// Marked down by the master's active health checks (shared by every
    /// worker; see `ProxyState::apply_health`).
    pub checked_down: bool,
    /// Requests in flight to it from this worker (`least_conn`).
    pub active: u32,
    /// Counters for `/metrics`.
    pub requests: u64,
    pub failures: u64,
}

impl ServerState {
    /// Down by either health: passive (this worker's own failures) or
    /// active (the master's checks).
    fn down(&self, now: Instant) -> bool {
        self.checked_down || self.down_until.is_some_and(|t| t > now)
    }
}

/// What picking found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    Server(usize),
    /// Every server not tried yet is down: a 503, retry after this long.
    AllDown(Duration),
    /// Every server was tried.
    Exhausted,
}

/// Picks a server not in `tried`: among those up and not backups, else
/// among up backups. `key` is the hash key (`ip_hash`, `header:`).
pub fn pick(
    up: &Upstream,
    state: &mut [ServerState],
    tried: &[usize],
    key: Option<&[u8]>,
    now: Instant,
) -> Pick {
    let usable = |i: usize, s: &ServerState, backup: bool| {
        up.servers[i].backup == backup && !tried.contains(&i) && !s.down(now)
    };
    for backup in [false, true] {
        let candidates: Vec<usize> = (0..up.servers.len().min(state.len()))
            .filter(|&i| usable(i, &state[i], backup))
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let chosen = match (&up.balance, key) {
            (Balance::LeastConn, _) => least_conn(up, state, &candidates),
            (Balance::IpHash | Balance::Header(_), Some(k)) => hashed(up, &candidates, k),
            _ => round_robin(up, state, &candidates),
        };
        return Pick::Server(chosen);
    }
    let untried: Vec<&ServerState> = state
        .iter()
        .enumerate()
        .filter(|(i, _)| !tried.contains(i))
        .map(|(_, s)| s)
        .collect();
    if untried.is_empty() {
        return Pick::Exhausted;
    }
    // When the first server may be back: at the end of its fail_timeout
    // (passive), or after the checks that can bring it up (active: `rise`
    // passes, one per `interval`); both if it is down by both.
    let back_in = |s: &&ServerState| -> Option<Duration> {
        let passive = s
            .down_until
            .filter(|t| *t > now)
            .map(|t| t.saturating_duration_since(now));
        let active = s.checked_down.then(|| {
            up.health.as_ref().map_or(Duration::from_secs(1), |h| {
                h.interval.saturating_mul(h.rise)
            })
        });
        match (passive, active) {
            (Some(p), Some(a)) => Some(p.max(a)),
            (p, a) => p.or(a),
        }
    };
    let soonest = untried
        .iter()
        .filter_map(back_in)
        .min()
        .unwrap_or(Duration::from_secs(1));
    Pick::AllDown(soonest)
}

/// nginx's smooth weighted round robin: each pick adds every candidate's
/// weight to its running weight, takes the largest and subtracts the
/// total from it, which spreads a 5:1:1 as a a b a c a a, not a a a a a b c.
fn round_robin(up: &Upstream, state: &mut [ServerState], candidates: &[usize]) -> usize {
    let mut total = 0i64;
    let mut best = candidates[0];
    for &i in candidates {
        let w = i64::from(up.servers[i].weight);
        state[i].current += w;
        total += w;
        if state[i].current > state[best].current {
            best = i;
        }
    }
    state[best].current -= total;
    best
}

fn least_conn(up: &Upstream, state: &mut [ServerState], candidates: &[usize]) -> usize {
    // Fewest in flight per unit of weight; ties go round robin.
    let load =
        |i: usize| u64::from(state[i].active) * 1000 / u64::from(up.servers[i].weight.max(1));
    let min = candidates.iter().map(|&i| load(i)).min().unwrap_or(0);
    let tied: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| load(i) == min)
        .collect();
    round_robin(up, state, &tied)
}

/// The same key goes to the same server while the candidates stay the
/// same (weights count: a weight-2 server has two slots).
fn hashed(up: &Upstream, candidates: &[usize], key: &[u8]) -> usize {
    // FNV-1a: stable across workers and restarts.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let total: u64 = candidates
        .iter()
        .map(|&i| u64::from(up.servers[i].weight))
        .sum();
    let mut slot = h % total.max(1);
    for &i in candidates {
        let w = u64::from(up.servers[i].weight);
        if slot < w {
            return i;
        }
        slot -= w;
    }
    candidates[0]
}

/// A failure of server `i`: counted, and past `max_fails` within
/// `fail_timeout` the server is down for `fail_timeout`.
pub fn failed(up: &Upstream, s: &mut ServerState, i: usize, now: Instant) {
    s.failures = s.failures.saturating_add(1);
    if up.max_fails == 0 {
        return;
    }
    let window_over = s
        .first_fail
        .is_none_or(|t| now.saturating_duration_since(t) >= up.fail_timeout);
    if window_over {
        s.first_fail = Some(now);
        s.fails = 0;
    }
    s.fails = s.fails.saturating_add(1);
    if s.fails >= up.max_fails && !up.fail_timeout.is_zero() {
        s.down_until = Some(after(now, up.fail_timeout));
        s.fails = 0;
        s.first_fail = None;
        warn!(
            "upstream {:?} server {} marked down for {:?} after {} failure(s)",
            up.name, up.servers[i].addr, up.fail_timeout, up.max_fails
        );
    }
}

/// A response came: the server works.
pub fn succeeded(s: &mut ServerState) {
    s.fails = 0;
    s.first_fail = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_shared::config::{Pos, UpstreamAddr, UpstreamServer};

    fn upstream(weights: &[(u32, bool)], balance: Balance) -> Upstream {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &(weight, backup))| UpstreamServer {
                addr: UpstreamAddr::Tcp(format!("127.0.0.1:{}", 1000 + i).parse().unwrap()),
                weight,
                backup,
                host: None,
                pos: Pos::default(),
            })
            .collect();
        let mut up = Upstream::with_defaults("t".into(), servers, Pos::default());
        up.balance = balance;
        up
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let up = upstream(&[(5, false), (1, false), (1, false)], Balance::RoundRobin);
        let mut st = vec![ServerState::default(); 3];
        let now = Instant::now();
        let seq: Vec<usize> = (0..7)
            .map(|_| match pick(&up, &mut st, &[], None, now) {
                Pick::Server(i) => i,
                p => panic!("{p:?}"),
            })
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn backups_only_when_the_rest_is_down_and_then_503() {
        let up = upstream(&[(1, false), (1, true)], Balance::RoundRobin);
        let mut st = vec![ServerState::default(); 2];
        let now = Instant::now();
        assert_eq!(pick(&up, &mut st, &[], None, now), Pick::Server(0));
        failed(&up, &mut st[0], 0, now);
        assert_eq!(pick(&up, &mut st, &[], None, now), Pick::Server(1));
        assert_eq!(
            pick(&up, &mut st, &[1], None, now),
            Pick::AllDown(up.fail_timeout)
        );
        assert_eq!(pick(&up, &mut st, &[0, 1], None, now), Pick::Exhausted);
        // Up again after fail_timeout.
        let later = now + up.fail_timeout;
        assert_eq!(pick(&up, &mut st, &[], None, later), Pick::Server(0));
    }

    #[test]
    fn a_server_the_checks_marked_down_is_skipped_and_all_down_is_503() {
        let up = upstream(&[(1, false), (1, false)], Balance::RoundRobin);
        let mut st = vec![ServerState::default(); 2];
        let now = Instant::now();
        st[0].checked_down = true;
        for _ in 0..4 {
            assert_eq!(pick(&up, &mut st, &[], None, now), Pick::Server(1));
        }
        st[1].checked_down = true;
        // Back after the checks that can bring one up: no health settings
        // here (a second), then `rise` intervals.
        assert_eq!(
            pick(&up, &mut st, &[], None, now),
            Pick::AllDown(Duration::from_secs(1))
        );
        let mut checked = up.clone();
        let mut health = baton_shared::config::HealthCheck::with_defaults(Pos::default());
        health.interval = Duration::from_secs(5);
        health.rise = 2;
        checked.health = Some(health);
        assert_eq!(
            pick(&checked, &mut st, &[], None, now),
            Pick::AllDown(Duration::from_secs(10))
        );
        // Down by both: the later of the two.
        failed(&checked, &mut st[1], 1, now);
        assert_eq!(
            pick(&checked, &mut st, &[], None, now),
            Pick::AllDown(Duration::from_secs(10))
        );
        st[0].checked_down = false;
        assert_eq!(pick(&up, &mut st, &[], None, now), Pick::Server(0));
    }

    #[test]
    fn hashing_is_sticky() {
        let up = upstream(&[(1, false), (1, false), (1, false)], Balance::IpHash);
        let mut st = vec![ServerState::default(); 3];
        let now = Instant::now();
        let first = pick(&up, &mut st, &[], Some(b"10.0.0.1"), now);
        for _ in 0..10 {
            assert_eq!(pick(&up, &mut st, &[], Some(b"10.0.0.1"), now), first);
        }
    }
}
