//! `Raw` → `Config`: the checks that look across sites and at the system
//! (directories, interfaces, users). Only looks: creates, binds and opens
//! nothing.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::unistd::{Group, User};

use super::locate::Errors;
use super::model::{Config, Identity, Listen, ListenAddr, Pos, Site, Source};
use super::parse::{At, Raw, RawSite};

/// What validation needs to know about the process, apart from what it can
/// look up (kept apart so tests can play a non-root master).
pub(crate) struct System {
    pub euid: u32,
}

impl System {
    pub(crate) fn current() -> Self {
        System {
            euid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// sun_path holds 108 bytes on Linux, the terminating NUL included.
const MAX_UNIX_PATH: usize = 107;

pub(crate) fn check(mut raw: Raw, source: Source, sys: &System, errs: &mut Errors<'_>) -> Config {
    let site_routes = raw
        .sites
        .iter_mut()
        .map(|s| std::mem::take(&mut s.routes))
        .collect();
    let (upstreams, mut routes) =
        super::upstream_check::check(std::mem::take(&mut raw.upstreams), site_routes, errs);
    routes.reverse();
    check_listens(&raw.sites, errs);
    for site in &raw.sites {
        if let Some(root) = &site.root {
            check_root(root, errs);
        }
    }
    check_addresses(&raw.sites, errs);
    if let Some(p) = &raw.pid_file {
        check_pid_file(p, errs);
    }
    if let Some(p) = &raw.error_log {
        check_file_path("error_log", p, errs);
    }
    let identity = identity(&raw, sys, errs);
    let acme = super::acme_check::check(&raw, sys, errs);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| super::admin::check_admin(a, errs));
    for at in raw
        .sites
        .iter()
        .filter_map(|s| s.access_log.as_ref())
        .chain(raw.access_log.as_ref())
    {
        if let Some(path) = &at.value {
            let p = At {
                value: path.clone(),
                pos: at.pos,
            };
            check_file_path("access_log", &p, errs);
        }
    }
    let log_owner = raw
        .log_owner
        .as_ref()
        .and_then(|o| lookup_user(&o.value, o.pos, errs).map(|u| (u.uid.as_raw(), u.gid.as_raw())));
    let global_log = raw.access_log.as_ref().and_then(|a| a.value.clone());

    let pid_file = match raw.pid_file {
        Some(p) => p.value,
        None => super::default_pid_file_for(sys.euid, std::env::var_os("XDG_RUNTIME_DIR")),
    };
    let sites = raw
        .sites
        .into_iter()
        .filter_map(|s| {
            let routes = routes.pop().unwrap_or_default();
            // No root: only a site with routes (parse said so otherwise).
            if s.root.is_none() && routes.is_empty() {
                return None;
            }
            Some(Site {
                routes,
                listen: s.listen,
                names: s.names.into_iter().map(|n| n.value).collect(),
                root: s.root.map(|r| r.value),
                index: s.index,
                files: s.files,
                access_log: match &s.access_log {
                    Some(at) => at.value.clone(),
                    None => global_log.clone(),
                },
                tls: s.tls,
                redirect_https: s.redirect_https.map(|r| r.value),
                http2: s.http2.is_none_or(|h| h.value),
                pos: s.pos,
            })
        })
        .collect();
    Config {
        source,
        identity,
        run_as_root: raw.run_as_root,
        workers: raw.workers,
        pid_file,
        grace: raw.grace,
        error_log: raw.error_log.map(|p| p.value),
        log_level: raw.log_level,
        worker_ready_timeout: raw.worker_ready_timeout,
        max_draining_generations: raw.max_draining_generations,
        drain_linger: raw.drain_linger,
        inetd_idle_exit: raw.inetd_idle_exit,
        keepalive_timeout: raw.keepalive_timeout,
        header_timeout: raw.header_timeout,
        defer_accept: raw.defer_accept,
        http: raw.http,
        sites,
        admin,
        access_log_format: raw.access_log_format,
        log_mode: raw.log_mode,
        log_owner,
        tls: raw.tls,
        worker_rlimit_nofile: raw.worker_rlimit_nofile,
        tls_loaded: Default::default(),
        proxy: super::upstream::ProxyConfig {
            upstreams,
            trusted_proxies: raw.trusted_proxies,
        },
        acme,
    }
}

/// HTTP/2 on one address: every site there offers it or none does (one
/// ALPN list per TLS listener, one preface check per plain one), `h2c` is
/// for plain listeners of sites that have HTTP/2, and every entry of an
/// address says the same about it.
fn check_http2(
    site: &RawSite,
    l: &Listen,
    first: &Listen,
    others: &[&RawSite],
    errs: &mut Errors<'_>,
) {
    let on = |s: &RawSite| s.http2.as_ref().is_none_or(|h| h.value);
    if let Some(other) = others.iter().find(|o| on(o) != on(site)) {
        let (off_line, on_line) = if on(site) {
            (other.pos.line, site.pos.line)
        } else {
            (site.pos.line, other.pos.line)
        };
        let pos = site.http2.as_ref().map_or(l.pos, |h| h.pos);
        let message = format!(
            "{} has HTTP/2 off for the site on line {off_line} but on for the site on line \
             {on_line}: sites sharing an address must agree (set \"http2\" the same in both, \
             or give them different addresses)",
            l.addr
        );
        errs.at(pos, message);
    }
    if l.h2c && site.tls.is_some() {
        let message = format!(
            "\"h2c\" is cleartext HTTP/2, but {} is a TLS address of this site: \
             TLS clients get HTTP/2 with ALPN, no \"h2c\" needed",
            l.addr
        );
        errs.at(l.pos, message);
    } else if l.h2c && !on(site) {
        errs.at(
            l.pos,
            format!("\"h2c\" on {} but this site has \"http2 = false\"", l.addr),
        );
    }
    if first.h2c != l.h2c && !std::ptr::eq(first, l) {
        let message = format!(
            "{} has h2c = {} here but {} on line {}: an address has one h2c setting for all \
             its sites",
            l.addr, l.h2c, first.h2c, first.pos.line
        );
        errs.at(l.pos, message);
    }
}

/// Addresses listed twice in a site, sites that would both claim a request
/// on one address, and one address given different socket options.
fn check_listens(sites: &[RawSite], errs: &mut Errors<'_>) {
    // Every address: its first entry, and the sites on it so far.
    let mut seen: BTreeMap<&ListenAddr, (&Listen, Vec<&RawSite>)> = BTreeMap::new();
    for site in sites {
        let mut in_site: Vec<&Listen> = Vec::new();
        for l in &site.listen {
            if let Some(first) = in_site.iter().find(|f| f.addr == l.addr) {
                let message = format!(
                    "{} is listed twice in this site (also on line {})",
                    l.addr, first.pos.line
                );
                errs.at(l.pos, message);
                continue;
            }
            in_site.push(l);
            let (first, others) = seen.entry(&l.addr).or_insert((l, Vec::new()));
            if first.backlog != l.backlog || first.mode != l.mode {
                let message = match l.addr {
                    ListenAddr::Tcp(_) | ListenAddr::Stdin => format!(
                        "{} has backlog {} here but {} on line {}: \
                         an address has one backlog for all its sites",
                        l.addr, l.backlog, first.backlog, first.pos.line
                    ),
                    ListenAddr::Unix(_) => format!(
                        "{} has backlog {} and mode {:04o} here but {} and {:04o} on line {}: \
                         an address has one backlog and mode for all its sites",
                        l.addr, l.backlog, l.mode, first.backlog, first.mode, first.pos.line
                    ),
                };
                errs.at(l.pos, message);
            }
            if let Some(other) = others
                .iter()
                .find(|o| o.tls.is_some() != site.tls.is_some())
            {
                let (with, without) = if site.tls.is_some() {
                    (
                        "this site".to_owned(),
                        format!("the site on line {}", other.pos.line),
                    )
                } else {
                    (
                        format!("the site on line {}", other.pos.line),
                        "this site".to_owned(),
                    )
                };
                let message = format!(
                    "{} mixes TLS and plain HTTP: {with} has \"tls\" but {without} does not \
                     (sites sharing an address must agree; give them different addresses)",
                    l.addr
                );
                errs.at(l.pos, message);
            }
            check_http2(site, l, first, others, errs);
            if site.tls.is_some() && site.redirect_https.is_some() {
                // Reported once per site, at its first address.
                if in_site.len() == 1 {
                    errs.at(
                        site.pos,
                        "\"redirect_https\" is for a plain-HTTP site, but this one has \"tls\"",
                    );
                }
            }
            if site.names.is_empty()
                && let Some(other) = others.iter().find(|o| o.names.is_empty())
            {
                let message = format!(
                    "the site on line {} already answers any host name on {}: \
                     only one site per address may have no \"names\"",
                    other.pos.line, l.addr
                );
                errs.at(l.pos, message);
            }
            for name in &site.names {
                let other = others
                    .iter()
                    .find(|o| o.names.iter().any(|n| n.value == name.value));
                if let Some(other) = other {
                    let message = format!(
                        "name {:?} on {} is already taken by the site on line {}",
                        name.value, l.addr, other.pos.line
                    );
                    errs.at(name.pos, message);
                }
            }
            others.push(site);
        }
    }
}

fn check_root(root: &At<std::path::PathBuf>, errs: &mut Errors<'_>) {
    let path = &root.value;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => errs.at(root.pos, format!("root {path:?} is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            errs.at(root.pos, format!("root {path:?} does not exist"));
        }
        Err(e) => errs.at(root.pos, format!("root {path:?}: {e}")),
    }
}

/// Each distinct address once: a TCP address's IP must be this machine's, a
/// unix socket's directory must exist.
fn check_addresses(sites: &[RawSite], errs: &mut Errors<'_>) {
    let mut done: Vec<&ListenAddr> = Vec::new();
    let mut local: Option<Option<Vec<IpAddr>>> = None;
    for l in sites.iter().flat_map(|s| &s.listen) {
        if done.contains(&&l.addr) {
            continue;
        }
        done.push(&l.addr);
        match &l.addr {
            ListenAddr::Tcp(a) => {
                let ip = a.ip();
                if ip.is_unspecified() || is_loopback_v4(ip) {
                    continue;
                }
                let Some(ips) = local.get_or_insert_with(local_ips) else {
                    continue;
                };
                if !ips.contains(&ip) {
                    let message =
                        format!("address {a} is not assigned to any interface of this machine");
                    errs.at(l.pos, message);
                }
            }
            ListenAddr::Unix(path) => check_socket_path(path, l.pos, errs),
            // Whether fd 0 is a listening socket is seen at start.
            ListenAddr::Stdin => {}
        }
    }
}

/// All of 127.0.0.0/8 is local on Linux, though only 127.0.0.1 is listed.
fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_loopback())
}

/// The addresses of this machine's interfaces; `None` if they cannot be
/// listed (then the check is skipped rather than failing every address).
fn local_ips() -> Option<Vec<IpAddr>> {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => Some(
            addrs
                .filter_map(|ifa| {
                    let a = ifa.address?;
                    if let Some(v4) = a.as_sockaddr_in() {
                        Some(IpAddr::V4(v4.ip()))
                    } else {
                        a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                    }
                })
                .collect(),
        ),
        Err(e) => {
            log::warn!("cannot list network interfaces ({e}); not checking listen addresses");
            None
        }
    }
}

pub(crate) fn check_socket_path(path: &Path, pos: Pos, errs: &mut Errors<'_>) {
    let what = format!("unix socket {path:?}");
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_UNIX_PATH {
        let message = format!("{what} is too long ({len} bytes, at most {MAX_UNIX_PATH})");
        errs.at(pos, message);
        return;
    }
    if !check_parent(&what, path, pos, errs) {
        return;
    }
    // Whatever sits there is replaced by the socket when it is bound: only
    // a stale socket may be.
    if let Ok(m) = std::fs::symlink_metadata(path)
        && !m.file_type().is_socket()
    {
        errs.at(pos, format!("{what} exists and is not a socket"));
    }
}

/// The parent directory of a file the master will write must exist, and
/// the file must not be a directory.
fn check_file_path(key: &str, path: &At<std::path::PathBuf>, errs: &mut Errors<'_>) {
    let what = format!("{key} {:?}", path.value);
    if check_parent(&what, &path.value, path.pos, errs) && path.value.is_dir() {
        errs.at(path.pos, format!("{what} is a directory"));
    }
}

/// The pidfile's directory is a runtime directory (`/run/baton`) that init
/// systems remove on stop (systemd's `RuntimeDirectory=`, a tmpfs reboot):
/// the master creates it at start when missing (`pidfile::acquire`), so a
/// missing one is valid as long as the directory it would go in exists.
/// `baton -t` thus passes after `systemctl stop`, as the start would.
fn check_pid_file(path: &At<std::path::PathBuf>, errs: &mut Errors<'_>) {
    let missing_dir = path
        .value
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists() && d.symlink_metadata().is_err())
        .and_then(|d| d.parent())
        .is_some_and(|grandparent| grandparent.is_dir());
    if !missing_dir {
        check_file_path("pid_file", path, errs);
    }
}

/// `true` if `path`'s parent is an existing directory; else records why not.
fn check_parent(what: &str, path: &Path, pos: Pos, errs: &mut Errors<'_>) -> bool {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        errs.at(pos, format!("{what} is not a file path"));
        return false;
    };
    let message = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return true,
        Ok(_) => format!("{dir:?} (the directory of {what}) is not a directory"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            format!("directory {dir:?} of {what} does not exist")
        }
        Err(e) => format!("directory {dir:?} of {what}: {e}"),
    };
    errs.at(pos, message);
    false
}

/// Who the workers run as. See the module docs of `config` for the rules.
fn identity(raw: &Raw, sys: &System, errs: &mut Errors<'_>) -> Option<Identity> {
    let user = match &raw.user {
        Some(u) => lookup_user(&u.value, u.pos, errs),
        None if sys.euid == 0 => {
            let user = lookup_user("nobody", Pos { line: 1, col: 1 }, errs);
            if user.is_none() {
                errs.at(
                    Pos { line: 1, col: 1 },
                    "the master runs as root and \"user\" is not set; \
                     set it to the user workers should run as",
                );
            }
            user
        }
        None => None,
    };
    let group = raw
        .group
        .as_ref()
        .and_then(|g| lookup_group(&g.value, g.pos, errs));

    if sys.euid != 0 {
        if let (Some(at), Some(u)) = (&raw.user, &user)
            && u.uid.as_raw() != sys.euid
        {
            log::warn!(
                "{}:{}:{}: user {:?} is ignored: the master is not root, \
                 so workers run as the user that started it",
                errs.file(),
                at.pos.line,
                at.pos.col,
                at.value
            );
        }
        return None;
    }

    let user = user?;
    let pos = match (&raw.user, &raw.group) {
        (Some(u), _) => u.pos,
        (None, Some(g)) => g.pos,
        (None, None) => Pos::default(),
    };
    if user.uid.is_root() && !raw.run_as_root {
        let at = raw.user.as_ref().map_or(Pos { line: 1, col: 1 }, |u| u.pos);
        errs.at(
            at,
            "workers would run as root; set run_as_root = true to allow it",
        );
    }
    let gid = match (&raw.group, group) {
        (None, _) => user.gid.as_raw(),
        (Some(_), Some(g)) => g.gid.as_raw(),
        // Already reported.
        (Some(_), None) => return None,
    };
    let groups = match std::ffi::CString::new(user.name.as_str())
        .map(|name| nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)))
    {
        Ok(Ok(groups)) => groups.into_iter().map(|g| g.as_raw()).collect(),
        Ok(Err(e)) => {
            errs.at(
                pos,
                format!("cannot list the groups of user {:?}: {e}", user.name),
            );
            return None;
        }
        Err(_) => return None, // a NUL byte: lookup_user refused it already
    };
    Some(Identity {
        user: user.name,
        uid: user.uid.as_raw(),
        gid,
        groups,
        pos,
    })
}

pub(crate) fn lookup_user(name: &str, pos: Pos, errs: &mut Errors<'_>) -> Option<User> {
    match User::from_name(name) {
        Ok(Some(u)) => Some(u),
        Ok(None) => {
            errs.at(pos, format!("user {name:?} does not exist"));
            None
        }
        Err(e) => {
            errs.at(pos, format!("cannot look up user {name:?}: {e}"));
            None
        }
    }
}

fn lookup_group(name: &str, pos: Pos, errs: &mut Errors<'_>) -> Option<Group> {
    match Group::from_name(name) {
        Ok(Some(g)) => Some(g),
        Ok(None) => {
            errs.at(pos, format!("group {name:?} does not exist"));
            None
        }
        Err(e) => {
            errs.at(pos, format!("cannot look up group {name:?}: {e}"));
            None
        }
    }
}
