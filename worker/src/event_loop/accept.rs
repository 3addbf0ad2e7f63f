//! Accepting: batches from a listener, each new connection served in the
//! turn that accepts it and registered only if it has to wait.

use std::io;
use std::net::IpAddr;

use log::{debug, warn};
use mio::Interest;
use mio::unix::SourceFd;

use super::{Worker, connection_token, listener_token};
use crate::client::Client;
use crate::connection::{Connection, Drive};
use crate::limits::{ACCEPT_BUDGET_SHARED, STATS_EVERY, TICK, after};
use crate::stream::Stream;

impl Worker {
    /// Accepts up to `budget` connections from listener `i` and serves
    /// each at once (see `serve_new`).
    pub(super) fn accept_from(&mut self, i: usize, budget: usize) {
        let mut accepted = std::mem::take(&mut self.accepted);
        self.accept_batch(i, budget, &mut accepted);
        if budget == ACCEPT_BUDGET_SHARED {
            self.requeue(i, !accepted.is_empty());
        }
        if !accepted.is_empty() {
            // These connections' requests are read below without a poll,
            // so a change on disk that happened before they connected must
            // be known first: one read of the file cache's queue for the
            // whole batch, after accept4 returned them.
            self.files.on_events();
        }
        for (stream, peer) in accepted.drain(..) {
            self.serve_new(stream, peer, i);
        }
        self.accepted = accepted;
    }

    /// Other workers share listener `i`: after taking a connection, go to
    /// the back of its wake-up order (see `Acceptor::requeue`), so that the
    /// next one goes to another worker if one is idle. A busy worker is
    /// not woken anyway, and this one still takes what is queued (its
    /// listener stays ready until accept says WouldBlock): nothing waits.
    fn requeue(&mut self, i: usize, took: bool) {
        let Some(Some(slot)) = self.listeners.get_mut(i) else {
            return;
        };
        if !took && slot.registered {
            return;
        }
        match slot.acceptor.requeue(&self.poll, listener_token(i)) {
            Ok(()) => slot.registered = true,
            Err(e) => {
                // Out of memory, most likely. Unregistered, it would never
                // be woken: stay ready, and try again after a tick.
                slot.registered = false;
                slot.ready = true;
                slot.paused_until = Some(after(self.now, TICK));
                warn!("registering a listener again: {e} (retrying)");
            }
        }
    }

    pub(super) fn accept_batch(
        &mut self,
        i: usize,
        budget: usize,
        accepted: &mut Vec<(Stream, Option<IpAddr>)>,
    ) {
        for _ in 0..budget {
            let Some(Some(slot)) = self.listeners.get_mut(i) else {
                return;
            };
            if slot.paused_until.is_some() {
                return;
            }
            // At the limit, connections stay in the listen queue, where
            // another worker (or this one, a tick later) takes them.
            if self.conns.len() + accepted.len() >= self.config.http.max_connections {
                slot.paused_until = Some(after(self.now, TICK));
                return;
            }
            match slot.acceptor.accept() {
                Ok(conn) => accepted.push(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    slot.ready = false;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of fds or memory, most likely: the connection
                    // stays queued; try again on the next tick.
                    slot.paused_until = Some(after(self.now, TICK));
                    let quiet = self
                        .last_accept_warning
                        .is_some_and(|t| self.now.duration_since(t) < STATS_EVERY * 10);
                    if !quiet {
                        warn!("accept failed: {e} (retrying; further failures not logged for 10s)");
                        self.last_accept_warning = Some(self.now);
                    }
                    return;
                }
            }
        }
    }

    /// A connection just accepted: a fresh socket can take a response, and
    /// its request has often arrived already, so it is driven now and
    /// registered with the poll only if it has to wait. A short
    /// connection thus costs no epoll_ctl and no second wake-up. (The
    /// caller has read the file cache's queue since accepting it.)
    /// Registering late loses nothing: epoll reports what is already
    /// ready when a socket is added.
    pub(super) fn serve_new(&mut self, stream: Stream, peer: Option<IpAddr>, listener: usize) {
        let Some(stream) = self.wrap_tls(stream, listener) else {
            return;
        };
        let mut conn = Connection::new(stream, peer, listener, self.now);
        conn.on_ready(true, false, false);
        conn.set_token(connection_token(self.conns.vacant_key()));
        let key = self.conns.insert(Client::Http1(conn));
        let drive = {
            let (mut ctx, conns) = self.ctx();
            conns[key].drive(&mut ctx)
        };
        if drive == Drive::Closed {
            self.remove(key);
            return;
        }
        let conn = &mut self.conns[key];
        let interest = if conn.take_write_interest() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&conn.raw_fd()),
            connection_token(key),
            interest,
        ) {
            debug!("registering a connection: {e}");
            self.remove(key);
            return;
        }
        if drive == Drive::Again {
            self.runnable.push_back(key);
        }
    }

    /// The stream as the listener serves it: under TLS, a new session.
    pub(super) fn wrap_tls(&self, stream: Stream, listener: usize) -> Option<Stream> {
        match self.tls.session(listener) {
            None => Some(stream),
            Some(Ok(session)) => Some(Stream::tls(stream, session)),
            Some(Err(e)) => {
                debug!("cannot start a TLS session: {e}");
                None
            }
        }
    }

    /// A connection accepted while draining: registered, served when the
    /// poll says so.
    pub(crate) fn add_connection(&mut self, stream: Stream, peer: Option<IpAddr>, listener: usize) {
        let Some(stream) = self.wrap_tls(stream, listener) else {
            return;
        };
        let entry = self.conns.vacant_entry();
        let token = connection_token(entry.key());
        let mut conn = Connection::new(stream, peer, listener, self.now);
        conn.set_token(token);
        match self
            .poll
            .registry()
            .register(conn.stream_mut(), token, Interest::READABLE)
        {
            Ok(()) => {
                entry.insert(Client::Http1(conn));
            }
            Err(e) => debug!("registering a connection: {e}"),
        }
    }
}
