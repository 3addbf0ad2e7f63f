//! The master's timers: one deadline per owner, in one table. The poll
//! timeout is the earliest entry and the expiry dispatch takes the due
//! ones, so a timer can never be armed without being dispatched or the
//! other way round (the old loop listed every timer twice).

use std::collections::BTreeMap;
use std::time::Instant;

/// Who a deadline belongs to; each owner has at most one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// The reload transaction (a ready deadline or the handover's).
    Transaction,
    /// A draining generation: killed at its grace deadline.
    Drain(u64),
    /// A worker slot of the serving generation: respawned after backoff.
    Respawn(u64, usize),
    /// The stop: whatever is left is killed.
    Stop,
    /// A log reopen: workers that did not confirm are reported.
    Reopen,
    /// The certificate files are looked at again, or a staple expires.
    CertWatch,
    /// A new session ticket key.
    TicketRotation,
    /// A retired listen socket's linger ends.
    Linger,
    /// inetd mode: time to look whether the server has been idle.
    IdleExit,
    /// A binary upgrade's preflight (`NEW -t`) must have finished.
    Upgrade,
    /// An active health check is due, or one in flight times out.
    Health,
    /// The certificate helper died: it is forked again after backoff.
    Helper,
}

#[derive(Debug, Default)]
pub struct Timers {
    due: BTreeMap<Owner, Instant>,
}

impl Timers {
    /// Arms (or moves) `owner`'s deadline; `None` disarms it.
    pub fn set(&mut self, owner: Owner, at: Option<Instant>) {
        match at {
            Some(at) => {
                self.due.insert(owner, at);
            }
            None => {
                self.due.remove(&owner);
            }
        }
    }

    /// `owner`'s deadline, if armed.
    pub fn get(&self, owner: Owner) -> Option<Instant> {
        self.due.get(&owner).copied()
    }

    /// The earliest deadline: what the loop's poll waits for at most.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Removes and returns the owners whose deadline has come, in the
    /// table's order (the transaction first, then generations by number).
    pub fn take_due(&mut self, now: Instant) -> Vec<Owner> {
        let due: Vec<Owner> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(owner, _)| *owner)
            .collect();
        for owner in &due {
            self.due.remove(owner);
        }
        due
    }

    /// Disarms every timer of a generation (it ended).
    pub fn forget_generation(&mut self, number: u64) {
        self.due.retain(|owner, _| match owner {
            Owner::Drain(n) | Owner::Respawn(n, _) => *n != number,
            _ => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_deadline_per_owner_and_due_ones_are_taken_once() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.set(Owner::Stop, Some(at(50)));
        timers.set(Owner::Drain(3), Some(at(10)));
        timers.set(Owner::Drain(3), Some(at(30)));
        timers.set(Owner::Respawn(4, 1), Some(at(20)));
        assert_eq!(timers.next(), Some(at(20)), "moved, not added");
        assert_eq!(
            timers.take_due(at(30)),
            [Owner::Drain(3), Owner::Respawn(4, 1)]
        );
        assert!(timers.take_due(at(30)).is_empty());
        assert_eq!(timers.next(), Some(at(50)));
        timers.set(Owner::Stop, None);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_generation_that_ended_leaves_no_timer() {
        let t = Instant::now();
        let mut timers = Timers::default();
        timers.set(Owner::Drain(2), Some(t));
        timers.set(Owner::Respawn(2, 0), Some(t));
        timers.set(Owner::Respawn(3, 0), Some(t));
        timers.forget_generation(2);
        assert_eq!(timers.take_due(t), [Owner::Respawn(3, 0)]);
    }
}
