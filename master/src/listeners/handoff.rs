//! The listen sockets across a binary upgrade: described for the state
//! (`export`) and rebuilt from it and the inherited fds (`import`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use baton_shared::config::ListenAddr;
use socket2::Socket;

use super::{Bound, ListenerSet};
use crate::upgrade::state::{self, Addr};

pub fn addr_out(a: &ListenAddr) -> Addr {
    match a {
        ListenAddr::Tcp(sa) => Addr::Tcp(*sa),
        ListenAddr::Unix(p) => Addr::Unix(p.clone()),
        ListenAddr::Stdin => Addr::Stdin,
    }
}

pub fn addr_in(a: &Addr) -> ListenAddr {
    match a {
        Addr::Tcp(sa) => ListenAddr::Tcp(*sa),
        Addr::Unix(p) => ListenAddr::Unix(p.clone()),
        Addr::Stdin => ListenAddr::Stdin,
    }
}

impl ListenerSet {
    /// Every socket, with the settings the next image must know.
    pub fn export(&self, now: Instant) -> Vec<state::Listener> {
        self.bound
            .values()
            .map(|b| state::Listener {
                addr: addr_out(&b.addr),
                fd: b.socket.as_raw_fd(),
                backlog: b.backlog,
                mode: b.mode,
                unix_file: b.unix_file,
                retired: b.retired,
                linger_left_ms: b
                    .lingers_until
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                adopted: b.adopted,
            })
            .collect()
    }

    /// Rebuilds the set from the state. Each fd must be an open listening
    /// socket (the previous image cleared its close-on-exec flag); one that
    /// is not is an error, and nothing is adopted.
    pub fn import(listeners: &[state::Listener], now: Instant) -> Result<ListenerSet, String> {
        for l in listeners {
            if !crate::activation::is_listening(l.fd) {
                return Err(format!(
                    "fd {} of {} is not a listening socket",
                    l.fd,
                    addr_in(&l.addr)
                ));
            }
        }
        let mut set = ListenerSet::default();
        for l in listeners {
            let addr = addr_in(&l.addr);
            // SAFETY: the previous image kept this fd open for us (checked
            // above to be a listening socket); nothing else owns it.
            let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(l.fd) });
            let _ = crate::upgrade::exec::set_cloexec(l.fd, true);
            set.bound.insert(
                addr.clone(),
                Bound {
                    addr,
                    socket,
                    backlog: l.backlog,
                    mode: l.mode,
                    unix_file: l.unix_file,
                    retired: l.retired,
                    lingers_until: l
                        .linger_left_ms
                        .map(|ms| baton_shared::deadline::after(now, Duration::from_millis(ms))),
                    adopted: l.adopted,
                },
            );
        }
        Ok(set)
    }
}
