//! Draining: how a worker hands over to the next generation.
//!
//! Triggered by the master's `Drain`, by SIGTERM/SIGQUIT, or by losing the
//! master (the channel reached EOF or broke). In order:
//!
//! 1. Every listener is deregistered from the poll *before* its fd is
//!    closed: epoll watches the socket, not the fd number, and the socket
//!    lives on in the master and the next generation, so a closed but
//!    still registered fd would keep waking this worker. Except those the
//!    master said to hold (`HoldListeners`, just before `Drain`): retired
//!    sockets no new connection reaches, on which connections that only
//!    this generation's config can serve may still arrive (see
//!    docs/architecture.md, "Retired listeners"). They are accepted from
//!    as usual until the master's `CloseListeners`, then closed the same
//!    way.
//! 2. What is already queued on each listener is accepted first, so those
//!    connections are served (each response with `Connection: close`), not
//!    left to a socket this worker no longer watches.
//! 3. In-flight requests finish. The next response on every connection
//!    carries `Connection: close` (unless the next pipelined request is
//!    already here; the last one then closes). An idle connection, including
//!    one accepted that has sent nothing yet, gets `drain_linger` to send
//!    one more request (see `Connection::deadline`).
//! 4. Connections close with a lingering close, never while a request is
//!    arriving unseen.
//! 5. The worker exits as soon as no connection and no held listener is
//!    left, not at the end of a grace period. When the master is gone
//!    nobody will kill a worker that takes too long, so it then gives up
//!    itself after `grace`.

use std::fmt;
use std::io;
use std::time::Instant;

use log::{debug, info, warn};

use crate::event_loop::Worker;
use crate::limits::{DRAIN_ACCEPT_MAX, after};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The master sent `Drain`.
    Ordered,
    /// SIGTERM or SIGQUIT.
    Signal,
    /// The channel to the master ended.
    Orphaned,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Ordered => "told to drain",
            Cause::Signal => "signalled to drain",
            Cause::Orphaned => "orphaned",
        })
    }
}

#[derive(Debug)]
pub struct Drain {
    pub started: Instant,
    /// Exit by then whatever is left (only when orphaned).
    pub give_up_at: Option<Instant>,
}

impl Worker {
    pub(crate) fn begin_drain(&mut self, cause: Cause) {
        let now = self.now;
        let give_up_at = (cause == Cause::Orphaned).then(|| after(now, self.config.grace));
        if let Some(drain) = self.drain.as_mut() {
            drain.give_up_at = drain.give_up_at.or(give_up_at);
            // Told again (a stop after a reload, or the master is gone):
            // nothing is held any more.
            self.close_listeners(&[]);
            return;
        }
        info!("{cause}: draining {} connection(s)", self.conns.len());
        // Idle upstream connections are closed now; those in use finish
        // their exchange and are closed after it, not pooled.
        self.proxy.closing = true;
        self.proxy.expire(&self.config, now);
        self.drain = Some(Drain {
            started: now,
            give_up_at,
        });
        let held = match cause {
            Cause::Ordered => std::mem::take(&mut self.held),
            Cause::Signal | Cause::Orphaned => Vec::new(),
        };
        self.close_listeners(&held);
        // From here on this worker accepts nothing: the master's reload may
        // tell its caller that new connections reach the new generation.
        if !self.hooks.hold_draining {
            self.send_to_master(&baton_shared::channel::ToMaster::Draining);
        }
    }

    /// Closes every listener but those in `held` (positions).
    fn close_listeners(&mut self, held: &[u32]) {
        for i in 0..self.listeners.len() {
            if !held.iter().any(|&h| h as usize == i) {
                self.close_listener(i);
            }
        }
    }

    /// Stops accepting on listener `i`: out of the poll, its queue
    /// accepted, then closed (our fd; the socket lives on elsewhere).
    pub(crate) fn close_listener(&mut self, i: usize) {
        let Some(slot) = self.listeners.get_mut(i).and_then(Option::take) else {
            return;
        };
        if let Err(e) = slot.acceptor.deregister(&self.poll) {
            debug!("deregistering a listener: {e}");
        }
        for _ in 0..DRAIN_ACCEPT_MAX {
            match slot.acceptor.accept() {
                Ok((stream, peer)) => self.add_connection(stream, peer, i),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    debug!("accepting the queue of a closing listener: {e}");
                    break;
                }
            }
        }
    }

    /// `Some(status)` when the worker should exit now.
    pub(crate) fn exit_status(&self) -> Option<i32> {
        if self.stop {
            return Some(0);
        }
        let drain = self.drain.as_ref()?;
        if self.conns.is_empty() && self.listeners.iter().all(Option::is_none) {
            info!("drained: exiting");
            return Some(0);
        }
        if drain.give_up_at.is_some_and(|t| t <= self.now) {
            warn!(
                "orphaned and past the grace period: exiting with {} connection(s) open",
                self.conns.len()
            );
            return Some(0);
        }
        None
    }
}
