//! The listen sockets, owned by the master for as long as any generation
//! uses them.
//!
//! A socket is shared by every worker of every generation that serves its
//! address, so its kernel accept queue outlives any one worker: a reload
//! hands the same socket (same inode) to the new generation and nothing
//! queued on it is lost. Per-worker SO_REUSEPORT copies would reset their
//! queue whenever one closed.
//!
//! A reload diffs the addresses: unchanged ones keep their socket, new ones
//! are bound here (the master keeps the privileges to do so), removed ones
//! are *retired*: they stop receiving new connections at once (see
//! `retire_all_but`), but a retired socket may still hold connections the
//! kernel has not queued yet (TCP_DEFER_ACCEPT keeps a connection out of the
//! accept queue until its first bytes, or the defer timeout), so it is kept
//! open and accepted from for a *linger*, after which nothing can arrive on
//! it any more: by the new generation when one of its addresses covers the
//! retired one (`covered`, a move such as 127.0.0.1:80 → 0.0.0.0:80), else
//! by the draining generation, whose config still has the sites. The master
//! closes its copy when the linger is over, or before if no live generation
//! holds it any more.
//! docs/architecture.md ("Retired listeners") has the measurements.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use baton_shared::config::{Config, Listen, ListenAddr};
use baton_shared::deadline;
use socket2::Socket;

use crate::activation::{Passed, is_listening, take_stdin};

pub mod handoff;
mod sockets;

use sockets::{bind_tcp, bind_to_ifindex, bind_unix, set_int, tune_tcp};

/// One bound, listening socket.
#[derive(Debug)]
pub struct Bound {
    pub addr: ListenAddr,
    pub socket: Socket,
    backlog: i32,
    mode: u32,
    /// For a unix socket: the (device, inode) of the socket file we created,
    /// so we only ever unlink our own file, never another instance's.
    unix_file: Option<(u64, u64)>,
    /// Retired sockets are kept only until the generations using them end.
    pub retired: bool,
    /// A retired socket may still get connections until then (see the
    /// module docs); `None` once that is over, or when not retired.
    pub lingers_until: Option<Instant>,
    /// Passed in by systemd or inetd rather than bound here.
    pub adopted: bool,
}

impl Bound {
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Every socket the master holds, by address.
#[derive(Debug, Default)]
pub struct ListenerSet {
    bound: BTreeMap<ListenAddr, Bound>,
}

/// A reload's plan for the listen sockets. `prepare` only binds what is
/// new (so a port that cannot be bound fails the reload before anything
/// changed); everything that touches a socket in use (bringing a retired
/// one back, backlog, mode, socket options) waits for `commit`, and `undo`
/// closes what `prepare` bound. A failed reload leaves every socket as it
/// was.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Addresses bound by it.
    pub added: Vec<ListenAddr>,
    /// Addresses it keeps, with their new settings (applied at commit).
    kept: Vec<Listen>,
}

/// An error binding one address, with the config entry it came from.
#[derive(Debug)]
pub struct BindError {
    pub listen: Listen,
    pub error: io::Error,
}

impl ListenerSet {
    pub fn get(&self, addr: &ListenAddr) -> Option<&Bound> {
        self.bound.get(addr)
    }

    /// Binds the addresses of `config` that are not bound yet (their
    /// socket options set for `config`); changes nothing else. On error,
    /// what it bound is closed again and the set is as before.
    pub fn prepare(&mut self, config: &Config) -> Result<Prepared, BindError> {
        let mut plan = Prepared::default();
        for listen in config.listens() {
            if self.bound.contains_key(&listen.addr) {
                plan.kept.push(listen.clone());
                continue;
            }
            match self.bind(listen) {
                Ok(bound) => {
                    if let ListenAddr::Tcp(_) = bound.addr {
                        tune_tcp(&bound.socket, config.defer_accept);
                    }
                    plan.added.push(listen.addr.clone());
                    self.bound.insert(listen.addr.clone(), bound);
                }
                Err(error) => {
                    self.undo(&plan);
                    return Err(BindError {
                        listen: listen.clone(),
                        error,
                    });
                }
            }
        }
        Ok(plan)
    }

    /// The reload succeeded: the addresses it keeps get its settings
    /// (a retired one is ours again). Returns the retired addresses it
    /// brought back, whose draining holders must let go of them.
    pub fn commit(&mut self, plan: &Prepared, defer_accept: Duration) -> Vec<ListenAddr> {
        let mut revived = Vec::new();
        for listen in &plan.kept {
            let Some(b) = self.bound.get_mut(&listen.addr) else {
                continue;
            };
            if b.retired {
                revived.push(listen.addr.clone());
            }
            if let Err(e) = b.update(listen, defer_accept) {
                log::warn!("cannot apply the new settings of {}: {e}", listen.addr);
            }
        }
        revived
    }

    /// The reload failed: closes what its `prepare` bound, steering new
    /// connections away first (the failed generation's workers still hold
    /// the sockets while they finish what they accepted).
    pub fn undo(&mut self, plan: &Prepared) {
        for addr in &plan.added {
            if let Some(b) = self.bound.get_mut(addr) {
                b.retire();
            }
        }
        self.close(&plan.added);
    }

    fn bind(&mut self, listen: &Listen) -> io::Result<Bound> {
        match &listen.addr {
            ListenAddr::Tcp(sa) => {
                let socket = match bind_tcp(*sa, listen.backlog, false) {
                    Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                        self.bind_beside_our_own(*sa, listen.backlog, e)?
                    }
                    other => other?,
                };
                Ok(Bound {
                    addr: listen.addr.clone(),
                    socket,
                    backlog: listen.backlog,
                    mode: listen.mode,
                    unix_file: None,
                    retired: false,
                    lingers_until: None,
                    adopted: false,
                })
            }
            ListenAddr::Stdin => Err(io::Error::other(
                "stdin can only be taken over at start (from inetd), not on a reload",
            )),
            ListenAddr::Unix(path) => {
                let (socket, id) = bind_unix(path, listen.backlog, listen.mode)?;
                Ok(Bound {
                    addr: listen.addr.clone(),
                    socket,
                    backlog: listen.backlog,
                    mode: listen.mode,
                    unix_file: Some(id),
                    retired: false,
                    lingers_until: None,
                    adopted: false,
                })
            }
        }
    }

    /// `addr` is in use. If one of *our* sockets overlaps it (the usual case:
    /// a reload moving 127.0.0.1:P to 0.0.0.0:P, where Linux refuses a
    /// wildcard bind beside a listening specific one even with
    /// SO_REUSEADDR), both sockets get SO_REUSEPORT, which lets the same
    /// user bind them side by side; the old one is then retired by the
    /// reload without a gap in service. Otherwise the port really belongs to
    /// someone else and the original error stands.
    fn bind_beside_our_own(
        &mut self,
        addr: SocketAddr,
        backlog: i32,
        original: io::Error,
    ) -> io::Result<Socket> {
        let overlapping: Vec<&Bound> = self
            .bound
            .values()
            .filter(|b| match &b.addr {
                ListenAddr::Tcp(other) => {
                    other.port() == addr.port()
                        && other.is_ipv4() == addr.is_ipv4()
                        && (other.ip().is_unspecified() || addr.ip().is_unspecified())
                }
                ListenAddr::Unix(_) | ListenAddr::Stdin => false,
            })
            .collect();
        if overlapping.is_empty() {
            return Err(original);
        }
        for b in &overlapping {
            b.socket.set_reuse_port(true)?;
        }
        bind_tcp(addr, backlog, true).map_err(|_| original)
    }

    /// Adopts the sockets systemd passed whose address is in `config`;
    /// logs and closes the rest. Call before `prepare`, which then binds
    /// only what is still missing.
    pub fn adopt_passed(&mut self, passed: Vec<Passed>, config: &Config) {
        for p in passed {
            let label = p.name.as_deref().unwrap_or("unnamed");
            let socket = Socket::from(p.fd);
            let Some(addr) = passed_addr(&socket) else {
                log::warn!("closing passed socket ({label}): not a TCP or unix socket");
                continue;
            };
            if !is_listening(socket.as_raw_fd()) {
                log::warn!("closing passed socket {addr} ({label}): it is not listening");
                continue;
            }
            let Some(listen) = config.listens().into_iter().find(|l| l.addr == addr) else {
                log::warn!("closing passed socket {addr} ({label}): no site listens there");
                continue;
            };
            if self.bound.contains_key(&addr) {
                log::warn!("closing passed socket {addr} ({label}): passed twice");
                continue;
            }
            if let Err(e) = socket.set_nonblocking(true) {
                log::warn!("closing passed socket {addr} ({label}): {e}");
                continue;
            }
            log::info!("using passed socket {addr} ({label})");
            self.insert_adopted(listen, socket);
        }
    }

    /// Takes over fd 0 for `listen = ["stdin"]`.
    pub fn adopt_stdin(&mut self, config: &Config) -> Result<(), BindError> {
        let Some(listen) = config
            .listens()
            .into_iter()
            .find(|l| l.addr == ListenAddr::Stdin)
        else {
            return Ok(());
        };
        let socket = take_stdin()
            .map(Socket::from)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|error| BindError {
                listen: listen.clone(),
                error,
            })?;
        log::info!("using the listening socket passed on stdin");
        self.insert_adopted(listen, socket);
        Ok(())
    }

    fn insert_adopted(&mut self, listen: &Listen, socket: Socket) {
        self.bound.insert(
            listen.addr.clone(),
            Bound {
                addr: listen.addr.clone(),
                socket,
                // What its owner chose; never re-listen()ed by us.
                backlog: listen.backlog,
                mode: listen.mode,
                // Its owner created any socket file; never unlinked by us.
                unix_file: None,
                retired: false,
                lingers_until: None,
                adopted: true,
            },
        );
    }

    /// Retires the sockets not in `keep`: no new connection reaches them
    /// from now on (see `Bound::retire`), and the connections already on
    /// their way are accepted for `linger` more (see the module docs). A
    /// unix socket has nothing on its way: a connect(2) to it is queued or
    /// refused at once, so what its draining workers sweep is all there is.
    pub fn retire_all_but(&mut self, keep: &[ListenAddr], linger: Duration) {
        let until = deadline::from_now(linger);
        for b in self.bound.values_mut() {
            if b.retired || keep.contains(&b.addr) {
                continue;
            }
            b.retire();
            if !matches!(b.addr, ListenAddr::Unix(_)) {
                b.lingers_until = Some(until);
            }
        }
    }

    /// The sockets a generation running `config` takes over from the
    /// retired or about to be: each bound socket whose address `config`
    /// does not list but covers (see `covers`), and on which connections
    /// may still arrive, with the address of `config` it is served as.
    pub fn covered(&self, config: &Config) -> Vec<(ListenAddr, ListenAddr)> {
        let listens = config.listens();
        self.bound
            .values()
            .filter(|b| !b.retired || b.lingers_until.is_some())
            .filter(|b| !listens.iter().any(|l| l.addr == b.addr))
            .filter_map(|b| {
                let by = listens.iter().find(|l| covers(&l.addr, &b.addr))?;
                Some((b.addr.clone(), by.addr.clone()))
            })
            .collect()
    }

    /// Whether `addr` is retired and may still get connections.
    pub fn lingering(&self, addr: &ListenAddr) -> bool {
        self.bound
            .get(addr)
            .is_some_and(|b| b.retired && b.lingers_until.is_some())
    }

    /// When the next linger ends.
    pub fn next_linger_end(&self) -> Option<Instant> {
        self.bound.values().filter_map(|b| b.lingers_until).min()
    }

    /// The retired sockets whose linger is over by `now` (from then on
    /// nothing can arrive on them: they may be closed once nobody holds
    /// them).
    pub fn lingered(&mut self, now: Instant) -> Vec<ListenAddr> {
        let mut out = Vec::new();
        for b in self.bound.values_mut() {
            if b.lingers_until.is_some_and(|t| t <= now) {
                b.lingers_until = None;
                out.push(b.addr.clone());
            }
        }
        out
    }

    /// Closes and forgets the given addresses (unlinking unix socket files
    /// that are still ours).
    pub fn close(&mut self, addrs: &[ListenAddr]) {
        for addr in addrs {
            if let Some(b) = self.bound.remove(addr) {
                b.unlink_if_ours();
            }
        }
    }

    /// Closes retired sockets that no generation in `in_use` holds (their
    /// listed addresses and the retired sockets they took over).
    pub fn close_unused(&mut self, in_use: &[ListenAddr]) {
        let gone: Vec<ListenAddr> = self
            .bound
            .values()
            .filter(|b| b.retired && !in_use.contains(&b.addr))
            .map(|b| b.addr.clone())
            .collect();
        for addr in &gone {
            log::info!("closed listener {addr}, no longer configured");
        }
        self.close(&gone);
    }

    /// Closes everything (at exit).
    pub fn close_all(&mut self) {
        let all: Vec<ListenAddr> = self.bound.keys().cloned().collect();
        self.close(&all);
    }
}

impl Bound {
    /// Stops new connections reaching this socket while what is on its way
    /// still can.
    ///
    /// Binding the socket to an interface index that does not exist makes
    /// the kernel's listener lookup skip it (compute_score rejects a socket
    /// bound to another device), so a new SYN for a moved address reaches
    /// the new wildcard socket and one for a removed address is refused,
    /// instead of queueing on a socket about to close and being reset.
    /// Connections already in its accept queue, and those that completed
    /// their handshake but wait for their first bytes (TCP_DEFER_ACCEPT),
    /// are untouched: the latter are found by their own lookup, not the
    /// listener's. Turning TCP_DEFER_ACCEPT off makes those mature at their
    /// next SYN-ACK retransmission (the client's ACK is no longer dropped)
    /// rather than at the end of the defer period: measured on Linux 6.18,
    /// a connection 1.5 s old on a listener with a 30 s defer was queued
    /// 1.5 s after the switch, instead of 30 s later.
    fn retire(&mut self) {
        self.retired = true;
        if let ListenAddr::Tcp(_) = self.addr {
            if let Err(e) = bind_to_ifindex(&self.socket, NO_SUCH_INTERFACE) {
                log::debug!(
                    "cannot steer new connections away from retired {}: {e}",
                    self.addr
                );
            }
            if let Err(e) = set_int(&self.socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 0) {
                log::debug!(
                    "cannot turn TCP_DEFER_ACCEPT off on retired {}: {e}",
                    self.addr
                );
            }
        }
    }

    /// Applies the settings of a committed reload to an address that stays.
    fn update(&mut self, listen: &Listen, defer_accept: Duration) -> io::Result<()> {
        if self.retired {
            // A reload brought a retired address back before its last user
            // ended: it is ours again. Undo the steering (0: any interface);
            // TCP_DEFER_ACCEPT is set again below.
            if let ListenAddr::Tcp(_) = self.addr {
                bind_to_ifindex(&self.socket, 0)?;
            }
            self.retired = false;
            self.lingers_until = None;
        }
        if let ListenAddr::Tcp(_) = self.addr {
            tune_tcp(&self.socket, defer_accept);
        }
        if self.adopted {
            // Its owner (systemd, inetd) chose its backlog and mode.
            return Ok(());
        }
        if listen.backlog != self.backlog {
            // listen(2) again on a listening socket only changes its backlog.
            self.socket.listen(listen.backlog)?;
            self.backlog = listen.backlog;
        }
        if let ListenAddr::Unix(path) = &self.addr
            && listen.mode != self.mode
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(listen.mode))?;
            self.mode = listen.mode;
        }
        Ok(())
    }

    fn unlink_if_ours(&self) {
        let (ListenAddr::Unix(path), Some((dev, ino))) = (&self.addr, self.unix_file) else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.dev() == dev && m.ino() == ino => {
                if let Err(e) = std::fs::remove_file(path) {
                    log::warn!("cannot remove socket file {}: {e}", path.display());
                }
            }
            Ok(_) => log::info!(
                "left {} alone: it is no longer our socket file",
                path.display()
            ),
            Err(_) => {}
        }
    }
}

/// An interface index no interface has: a listener bound to it is skipped
/// by the kernel's lookup for every incoming connection.
const NO_SUCH_INTERFACE: libc::c_int = libc::c_int::MAX;

/// Whether connections to `retired` can all be served as connections to
/// `by`: same family and port, and `by` is the wildcard address (a
/// specific address only covers itself, which is then not retired).
fn covers(by: &ListenAddr, retired: &ListenAddr) -> bool {
    match (by, retired) {
        (ListenAddr::Tcp(by), ListenAddr::Tcp(r)) => {
            by.port() == r.port() && by.is_ipv4() == r.is_ipv4() && by.ip().is_unspecified()
        }
        _ => false,
    }
}

/// The config address a passed socket is bound to.
fn passed_addr(socket: &Socket) -> Option<ListenAddr> {
    let local = socket.local_addr().ok()?;
    if let Some(sa) = local.as_socket() {
        return Some(ListenAddr::Tcp(sa));
    }
    local
        .as_pathname()
        .map(|p| ListenAddr::Unix(p.to_path_buf()))
}

#[cfg(test)]
mod tests;
