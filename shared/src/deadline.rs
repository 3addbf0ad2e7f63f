//! Deadlines: the one place where master and workers add a duration to an
//! instant.
//!
//! `Instant + Duration` panics when the sum does not fit, and durations come
//! from the config and the command line. They are bounded in validation
//! (`config::bounds`), but a deadline must not depend on that to be safe:
//! every `now + d` in the master and the workers goes through `after`, which
//! saturates at a far future instead of panicking. A panic in the master
//! would abort it and orphan every worker.

use std::time::{Duration, Instant};

/// What "never" means for a deadline: a hundred years.
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `t + d`, or a far-future instant when that does not fit: an absurdly
/// long duration means "practically never", not an overflow panic.
pub fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(FAR_FUTURE))
        // No far future fits either (an `Instant` near the end of its
        // range): the latest instant that does, found by halving.
        .unwrap_or_else(|| latest_after(t, d.min(FAR_FUTURE)))
}

/// `now + d` (see `after`).
pub fn from_now(d: Duration) -> Instant {
    after(Instant::now(), d)
}

fn latest_after(t: Instant, mut d: Duration) -> Instant {
    let mut latest = t;
    while !d.is_zero() {
        if let Some(later) = latest.checked_add(d) {
            latest = later;
        }
        d /= 2;
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let far = after(now, Duration::MAX);
        assert!(far >= now + Duration::from_secs(50 * 365 * 24 * 3600));
        assert!(from_now(Duration::MAX) > now);
        // Durations from the config are u64 seconds at most.
        assert!(after(now, Duration::from_secs(u64::MAX)) > now);
        // Whatever `t` is, no panic, and never earlier than `t`.
        let late = latest_after(now, Duration::MAX);
        assert!(after(late, Duration::MAX) >= late);
    }
}
