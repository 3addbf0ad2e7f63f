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
//! `retire`), the draining generation accepts what is already queued, and
//! the master closes its copy once no live generation holds it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use baton_shared::config::{Config, Listen, ListenAddr};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::activation::{Passed, is_listening, take_stdin};

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

    /// Makes sure every address of `config` is bound, binding the missing
    /// ones. Returns the addresses bound by this call (so a failed reload
    /// can close exactly those with `close`). On error, whatever this call
    /// bound is closed again and the set is as before.
    pub fn prepare(&mut self, config: &Config) -> Result<Vec<ListenAddr>, BindError> {
        let mut added = Vec::new();
        for listen in config.listens() {
            if let Some(existing) = self.bound.get_mut(&listen.addr) {
                if let Err(error) = existing.update(listen) {
                    self.close(&added);
                    return Err(BindError {
                        listen: listen.clone(),
                        error,
                    });
                }
                continue;
            }
            match self.bind(listen) {
                Ok(bound) => {
                    added.push(listen.addr.clone());
                    self.bound.insert(listen.addr.clone(), bound);
                }
                Err(error) => {
                    self.close(&added);
                    return Err(BindError {
                        listen: listen.clone(),
                        error,
                    });
                }
            }
        }
        Ok(added)
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
                adopted: true,
            },
        );
    }

    /// Stops new connections reaching retired sockets (those not in
    /// `keep`) while leaving what is already queued on them to be accepted
    /// by the draining generation.
    ///
    /// Binding the socket to an interface index that does not exist makes
    /// the kernel's listener lookup skip it (compute_score rejects a socket
    /// bound to another device), so a new SYN for a moved address reaches
    /// the new wildcard socket and one for a removed address is refused,
    /// instead of queueing on a socket about to close and being reset.
    /// Established connections already in its accept queue are untouched.
    pub fn retire_all_but(&mut self, keep: &[ListenAddr]) {
        for b in self.bound.values_mut() {
            if b.retired || keep.contains(&b.addr) {
                continue;
            }
            b.retired = true;
            if let ListenAddr::Tcp(_) = b.addr
                && let Err(e) = bind_to_ifindex(&b.socket, NO_SUCH_INTERFACE)
            {
                log::debug!(
                    "cannot steer new connections away from retired {}: {e}",
                    b.addr
                );
            }
        }
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

    /// Closes retired sockets that no generation in `in_use` holds.
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
    /// Applies changed options of an address that stays.
    fn update(&mut self, listen: &Listen) -> io::Result<()> {
        if self.retired {
            // A reload brought a retired address back before its last user
            // ended: it is ours again. Undo the steering (0: any interface).
            if let ListenAddr::Tcp(_) = self.addr {
                bind_to_ifindex(&self.socket, 0)?;
            }
            self.retired = false;
        }
        if self.adopted {
            // Its owner (systemd, inetd) set its options.
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

/// SO_BINDTOIFINDEX: restricts (or, with 0, unrestricts) which interface's
/// traffic a socket takes. socket2 only offers the by-name variant, which
/// needs an existing interface.
fn bind_to_ifindex(socket: &Socket, index: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a valid fd, a pointer to a live c_int and its
    // exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            (&raw const index).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // [::]:80 and 0.0.0.0:80 are separate config entries, separate sockets.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

fn bind_unix(path: &Path, backlog: i32, mode: u32) -> io::Result<(Socket, (u64, u64))> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        // A live server answers on it: never take over its path.
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                log::info!("removing stale socket file {}", path.display());
                std::fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    socket.listen(backlog)?;
    Ok((socket, (meta.dev(), meta.ino())))
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
