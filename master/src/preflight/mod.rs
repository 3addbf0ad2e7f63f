//! `baton -tt`: the deep preflight. `-t` validates the config and reads
//! what the master reads (certificates, keys, the admin token); this
//! checks what only shows when the server starts, still without touching
//! a running server or creating anything:
//!
//! - each listen address (and the admin API's) can be bound, or is already
//!   held by the running instance of this config (its master, found
//!   through the pidfile, has the listening socket among its fds: matched
//!   by socket inode in `/proc/net/*`, so a stale pidfile or another
//!   server on the port cannot pass for it). TCP is probed with bind(2)
//!   alone (no listen, closed at once); a unix socket, whose bind would
//!   create a file, is checked through its directory;
//! - the workers' user can enter and list each document root (checked in
//!   a child that drops to that user, as a worker does: the kernel
//!   decides, ACLs and all);
//! - each log file can be opened for appending: an existing one is opened
//!   (without `O_CREAT`, never written), a missing one needs a directory
//!   the master can write in (it is not created: that is the start's job).

mod sockets;

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use baton_shared::config::{Config, ConfigError, ConfigErrors, Identity, ListenAddr, Pos};
use socket2::{Domain, Socket, Type};

use sockets::Listening;

/// Runs every check; all the problems found, each located.
pub fn check(config: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let running = Running::find(config);
    for l in config.listens() {
        if let Err(m) = check_listen(&l.addr, &running) {
            errors.push(config.error_at(l.pos, m));
        }
    }
    if let Some(a) = &config.admin
        && let Err(m) = check_listen(&a.listen, &running)
    {
        errors.push(config.error_at(a.pos, format!("[admin] {m}")));
    }
    errors.extend(check_roots(config));
    if let Some(path) = &config.error_log
        && let Err(m) = check_log(path)
    {
        // error_log keeps no position: the message names the key.
        errors.push(config.error_at(Pos::default(), format!("error_log: {m}")));
    }
    let mut seen = Vec::new();
    for site in &config.sites {
        if let Some(path) = &site.access_log
            && !seen.contains(&path)
        {
            seen.push(path);
            if let Err(m) = check_log(path) {
                errors.push(config.error_at(site.pos, format!("access_log: {m}")));
            }
        }
    }
    // In file order, as `-t` reports (unlocated ones, line 0, first).
    errors.sort_by_key(|e| (e.pos.line, e.pos.col));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The running instance of this config (by its pidfile) and the
/// listening sockets it holds.
struct Running {
    pid: Option<u32>,
    inodes: std::collections::HashSet<u64>,
    listening: Vec<Listening>,
}

impl Running {
    fn find(config: &Config) -> Running {
        let pid = crate::pidfile::read(&config.pid_file)
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
        Running {
            pid,
            inodes: pid.map(sockets::socket_inodes).unwrap_or_default(),
            listening: sockets::listening(),
        }
    }

    /// Whether the running instance listens on `addr` (or an address
    /// overlapping it, which a reload binds beside with SO_REUSEPORT).
    fn holds(&self, addr: &ListenAddr) -> bool {
        self.listening
            .iter()
            .filter(|l| self.inodes.contains(&l.inode()))
            .any(|l| matches_addr(l, addr))
    }

    /// Who else listens there, for the message.
    fn other_holder(&self, addr: &ListenAddr) -> String {
        self.listening
            .iter()
            .filter(|l| matches_addr(l, addr))
            .find_map(|l| sockets::holder(l.inode()))
            .map(|h| format!(" by {h}"))
            .unwrap_or_default()
    }
}

fn matches_addr(l: &Listening, addr: &ListenAddr) -> bool {
    match (l, addr) {
        (Listening::Tcp(a, _), ListenAddr::Tcp(b)) => sockets::overlaps(a, b),
        (Listening::Unix(a, _), ListenAddr::Unix(b)) => a == b,
        _ => false,
    }
}

fn check_listen(addr: &ListenAddr, running: &Running) -> Result<(), String> {
    if running.holds(addr) {
        return Ok(());
    }
    let not_ours = || match running.pid {
        Some(pid) => format!("not by this config's running instance (pid {pid})"),
        None => "and this config's server is not running".to_owned(),
    };
    match addr {
        ListenAddr::Tcp(sa) => probe_tcp(*sa).map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "cannot bind {addr}: the address is in use{}, {}",
                running.other_holder(addr),
                not_ours()
            ),
            Some(libc::EACCES) => format!(
                "cannot bind {addr}: {e} (a port below {} needs root or CAP_NET_BIND_SERVICE)",
                baton_shared::config::unprivileged_port_start()
            ),
            Some(libc::EADDRNOTAVAIL) => {
                format!("cannot bind {addr}: {e} (no interface of this machine has that address)")
            }
            _ => format!("cannot bind {addr}: {e}"),
        }),
        ListenAddr::Unix(path) => check_unix_path(path).map_err(|m| {
            if m.is_empty() {
                format!(
                    "cannot bind {addr}: a server listens on it{}, {}",
                    running.other_holder(addr),
                    not_ours()
                )
            } else {
                format!("cannot bind {addr}: {m}")
            }
        }),
        // Only inetd can hand it over; nothing to probe beforehand.
        ListenAddr::Stdin => Ok(()),
    }
}

/// bind(2) as the master binds (SO_REUSEADDR, v6-only), without listen(2):
/// the port is held only until the socket closes, a moment later.
fn probe_tcp(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

/// A unix socket path: a file in the way, a live listener on it (`Err`
/// with an empty message), or a directory the master cannot create it in.
fn check_unix_path(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err("the path exists and is not a socket".into());
        }
        Ok(_) => {
            let live = sockets::listening()
                .iter()
                .any(|l| matches!(l, Listening::Unix(p, _) if p == path));
            // A stale socket file is removed by the master at start.
            return if live { Err(String::new()) } else { Ok(()) };
        }
        Err(_) => {}
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    writable_dir(dir)
}

/// The master (this process's user) can create files in `dir`.
fn writable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("directory {}: {e}", dir.display())),
    }
    access(dir, libc::W_OK | libc::X_OK)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))
}

fn access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A log file: opened for appending if it exists (not created, not
/// written), else its directory must let the master create it.
fn check_log(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            // A FIFO without a reader must not hang the check.
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot open {} for appending: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            writable_dir(dir).map_err(|m| format!("{} does not exist and {m}", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Each site root, as the workers' user: search and read permission
/// (`access(2)` after dropping to that user, so every directory on the
/// way and any ACL count).
fn check_roots(config: &Config) -> Vec<ConfigError> {
    let roots: Vec<(&Path, Pos)> = config
        .sites
        .iter()
        .filter_map(|s| s.root.as_deref().map(|r| (r, s.pos)))
        .collect();
    if roots.is_empty() {
        return Vec::new();
    }
    let paths: Vec<&Path> = roots.iter().map(|(r, _)| *r).collect();
    let (results, who) = match &config.identity {
        Some(id) => match access_as(id, &paths) {
            Ok(r) => (r, format!("user {}", id.user)),
            Err(e) => {
                return vec![config.error_at(
                    id.pos,
                    format!("cannot check the roots as user {}: {e}", id.user),
                )];
            }
        },
        None => (
            paths
                .iter()
                .map(|p| {
                    access(p, libc::R_OK | libc::X_OK)
                        .err()
                        .and_then(|e| e.raw_os_error())
                        .unwrap_or(0)
                })
                .collect(),
            "the workers' user (this user)".to_owned(),
        ),
    };
    roots
        .iter()
        .zip(results)
        .filter(|(_, errno)| *errno != 0)
        .map(|((root, pos), errno)| {
            config.error_at(
                *pos,
                format!(
                    "root {}: {who} cannot enter and list it: {}",
                    root.display(),
                    io::Error::from_raw_os_error(errno)
                ),
            )
        })
        .collect()
}

/// `access(R_OK|X_OK)` of each path in a child that took the workers'
/// identity; one errno per path (0: allowed).
fn access_as(id: &Identity, paths: &[&Path]) -> io::Result<Vec<i32>> {
    // Everything the child needs is prepared before fork: it only makes
    // system calls.
    let cpaths: Vec<CString> = paths
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let groups: Vec<libc::gid_t> = id.groups.clone();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: `-tt` runs in a single thread; the child only calls
    // async-signal-safe functions (setgroups, setgid, setuid, access,
    // write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: both fds are ours and open.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: see the fork above; the child exits without unwinding.
        unsafe {
            libc::close(rd);
            let dropped = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setgid(id.gid) == 0
                && libc::setuid(id.uid) == 0;
            if !dropped {
                libc::_exit(2);
            }
            for c in &cpaths {
                let errno: i32 = if libc::access(c.as_ptr(), libc::R_OK | libc::X_OK) == 0 {
                    0
                } else {
                    *libc::__errno_location()
                };
                let bytes = errno.to_ne_bytes();
                if libc::write(wr, bytes.as_ptr().cast(), bytes.len()) != bytes.len() as isize {
                    libc::_exit(3);
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the write end is ours; closing it lets read see EOF.
    unsafe { libc::close(wr) };
    // SAFETY: `rd` is an open fd we own from here on.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(rd) };
    let mut bytes = Vec::new();
    let read = io::Read::read_to_end(&mut file, &mut bytes);
    let mut status = 0;
    // SAFETY: waits for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(io::Error::other("could not take the workers' identity"));
    }
    let results: Vec<i32> = bytes
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if results.len() != paths.len() {
        return Err(io::Error::other("the checking child answered short"));
    }
    Ok(results)
}
