//! What the master holds on the system and must give back however it ends:
//! the instance lock, the pidfile, the control socket, the admin API's
//! socket and the listen sockets (unix socket files included).
//!
//! One owner and one `release`, used by every exit path: a clean stop, a
//! failed first generation, and a start that fails half-way (the setup in
//! `lib.rs` builds this step by step, and an early return drops it, which
//! releases what was made so far).

use std::path::PathBuf;

use baton_shared::config;
use mio::net::UnixListener;

use crate::admin;
use crate::listeners::ListenerSet;
use crate::pidfile::{self, InstanceLock};

pub struct Resources {
    /// The process these belong to. A worker is forked with a copy of them
    /// in memory; only this process may ever release them.
    owner: u32,
    pub pid_file: PathBuf,
    lock: Option<InstanceLock>,
    pub listeners: ListenerSet,
    pub control: Option<(UnixListener, PathBuf)>,
    pub admin: Option<(admin::Listener, config::Admin)>,
    released: bool,
}

impl Resources {
    /// Starts with the instance lock (the first thing a start takes).
    pub fn new(lock: InstanceLock, pid_file: PathBuf) -> Resources {
        Resources {
            owner: std::process::id(),
            pid_file,
            lock: Some(lock),
            listeners: ListenerSet::default(),
            control: None,
            admin: None,
            released: false,
        }
    }

    /// The instance lock's fd (kept open across a binary upgrade).
    pub fn lock_fd(&self) -> Option<std::os::fd::RawFd> {
        self.lock.as_ref().map(|l| l.raw_fd())
    }

    /// Gives everything back: the pidfile (only if it still holds our
    /// pid), the listen sockets and their files, the control and admin
    /// socket files, the lock. Idempotent.
    pub fn release(&mut self) {
        if self.released || std::process::id() != self.owner {
            return;
        }
        self.released = true;
        pidfile::remove_if_ours(&self.pid_file, self.owner);
        self.listeners.close_all();
        if let Some((_, path)) = self.control.take() {
            let _ = std::fs::remove_file(&path);
        }
        if let Some((admin, _)) = self.admin.take() {
            admin.remove_file();
        }
        self.lock = None;
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        self.release();
    }
}
