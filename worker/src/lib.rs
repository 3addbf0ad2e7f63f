//! Baton's worker: one single-threaded mio loop per process that accepts on
//! the listen sockets the master shares with it and serves HTTP/1.1.
//!
//! The master forks the worker, cleans up what fork left behind (its epoll
//! and signalfd, fds that are not this worker's), drops privileges and then
//! calls `run`. Nothing in here needs root.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use baton_shared::config::{Config, ListenAddr};

/// A listen socket the master bound, shared by every worker.
#[derive(Debug)]
pub struct Listener {
    /// A listening, non-blocking TCP or unix stream socket.
    pub fd: OwnedFd,
    /// The address it was bound to, for routing to the right sites.
    pub addr: ListenAddr,
}

/// Everything a freshly forked worker needs.
#[derive(Debug)]
pub struct Setup {
    pub config: Arc<Config>,
    /// The worker generation this worker belongs to (1 for the first).
    pub generation: u64,
    pub listeners: Vec<Listener>,
    /// This worker's end of its channel to the master.
    pub channel: UnixStream,
}

/// Runs the worker until it has drained or was told to stop; returns the
/// process exit status.
pub fn run(setup: Setup) -> i32 {
    let _ = setup;
    unimplemented!("being written")
}
