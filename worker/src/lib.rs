//! Baton's worker: one single-threaded mio loop per process that accepts on
//! the listen sockets the master shares with it and serves HTTP/1.1.
//!
//! The master forks the worker, cleans up what fork left behind (its epoll
//! and signalfd, fds that are not this worker's), drops privileges and then
//! calls `run`. Nothing in here needs root.
//!
//! Where things are:
//!
//! - `signals`: dispositions, mask and the signalfd (TERM/QUIT drain, INT stops);
//! - `event_loop`: the `Poll`, tokens, accepting, the tick, the channel;
//! - `drain`: how a worker stops accepting and hands over;
//! - `connection`: one client's state machine, its timeouts, lingering close;
//! - `http2`: HTTP/2 connections (ALPN `h2`, h2c), which take over from
//!   `connection` when a client speaks it (`client`: either, in the slab);
//! - `http::request` / `http::response`: heads in, heads out;
//! - `http::body`: request bodies, read and discarded within limits;
//! - `handler`, `routing`, `static_files`: what a request is answered with;
//! - `outgoing`, `stream`, `acceptor`: bytes and sockets;
//! - `limits`: the fixed sizes and timings (the tunable ones are config).

mod acceptor;
mod access_log;
mod acme;
mod client;
pub mod compress;
mod connection;
mod drain;
mod event_loop;
mod handler;
pub mod http;
mod http2;
mod limits;
mod outgoing;
mod proxy;
mod routing;
mod signals;
mod static_files;
mod stream;
#[cfg(test)]
mod test_config;
mod test_hooks;
mod tls;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use baton_shared::config::{Config, ListenAddr};

/// A listen socket the master bound, shared by every worker.
#[derive(Debug)]
pub struct Listener {
    /// A listening, non-blocking TCP or unix stream socket.
    pub fd: OwnedFd,
    /// The address whose sites answer its connections (routing, TLS): the
    /// one it was bound to, or for a socket taken over, the address of this
    /// worker's config that covers it.
    pub addr: ListenAddr,
    /// A retired socket taken over from the previous generation (its
    /// address moved, say from 127.0.0.1:80 to 0.0.0.0:80) for the
    /// connections still on their way to it: accepted from like any other,
    /// but its socket options are left alone, and it is closed on the
    /// master's `CloseListeners`.
    pub taken_over: bool,
}

/// Everything a freshly forked worker needs.
#[derive(Debug)]
pub struct Setup {
    pub config: Arc<Config>,
    /// The worker generation this worker belongs to (1 for the first).
    pub generation: u64,
    /// Its slot in the generation (for logs and the test hooks).
    pub slot: usize,
    pub listeners: Vec<Listener>,
    /// The access log files, in `Config::access_logs` order, opened by the
    /// master.
    pub access_logs: Vec<OwnedFd>,
    /// This worker's end of its channel to the master.
    pub channel: UnixStream,
    /// The certificates and keys, loaded and verified by the master (the
    /// worker never reads key files).
    pub tls: Arc<baton_shared::tls::Material>,
    /// Session ticket keys made by the master, newest first.
    pub ticket_keys: Vec<[u8; 32]>,
    /// The active health of upstream servers when it was forked, so a new
    /// generation starts from the master's state, not "all healthy".
    pub health: Vec<baton_shared::channel::HealthMark>,
}

/// Runs the worker until it has drained or was told to stop; returns the
/// process exit status.
///
/// 1. Signals: HUP, USR1, USR2 and PIPE ignored; TERM, QUIT, INT read from
///    a signalfd; everything else unblocked.
/// 2. A fresh `Poll` with the listeners, the channel and the signalfd;
///    then `Ready` to the master.
/// 3. The loop: accept, serve, `Stats` every second, timeouts on a tick.
/// 4. On `Drain`, TERM/QUIT or the master's death: drain (see `drain`) and
///    return 0 once no connection is left. On `Stop` or INT: return 0 now.
///
/// Returns 1 if the worker could not be set up at all.
pub fn run(setup: Setup) -> i32 {
    baton_shared::logging::set_role_worker();
    if let Err(reason) = check_roots(&setup.config) {
        // Tell the master why instead of `Ready`: a reload to this config
        // then fails with this reason and the old generation keeps serving.
        log::error!("{reason}");
        if let Ok(mut channel) = baton_shared::channel::Channel::new(setup.channel) {
            let _ = channel.send(&baton_shared::channel::ToMaster::Failed(reason));
        }
        return 2;
    }
    let generation = setup.generation;
    let listeners = setup.listeners.len();
    match event_loop::Worker::new(setup) {
        Ok(worker) => {
            log::debug!("generation {generation}: serving on {listeners} listener(s)");
            worker.run()
        }
        Err(e) => {
            log::error!("worker setup failed: {e}");
            1
        }
    }
}

/// Every site root must be reachable by this worker's user (searchable
/// directory). The master validated the config as root and cannot see
/// this; a worker that would answer every request with 403 must not pass
/// for a ready one.
fn check_roots(config: &Config) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    for site in &config.sites {
        let Some(root) = &site.root else { continue };
        if let Err(e) = access(root, AccessFlags::X_OK) {
            let who = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| nix::unistd::geteuid().to_string());
            return Err(config
                .error_at(
                    site.pos,
                    format!(
                        "root {} is not accessible to user {who}: {}",
                        root.display(),
                        e.desc()
                    ),
                )
                .to_string());
        }
    }
    Ok(())
}
