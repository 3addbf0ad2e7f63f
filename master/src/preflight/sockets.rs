//! Who holds a listening socket: the kernel's socket tables
//! (`/proc/net/tcp`, `tcp6`, `unix`) matched against the fds of a process
//! (`/proc/PID/fd`). Read-only: nothing is bound or connected to.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// A listening socket the kernel reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listening {
    Tcp(SocketAddr, u64),
    Unix(PathBuf, u64),
}

impl Listening {
    pub fn inode(&self) -> u64 {
        match self {
            Listening::Tcp(_, i) | Listening::Unix(_, i) => *i,
        }
    }
}

/// Every listening TCP and unix socket of this network namespace.
pub fn listening() -> Vec<Listening> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(text.lines().skip(1).filter_map(|l| parse_tcp(l, v6)));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/unix") {
        out.extend(text.lines().skip(1).filter_map(parse_unix));
    }
    out
}

/// `sl local rem st ... uid timeout inode`; only state 0A (LISTEN).
fn parse_tcp(line: &str, v6: bool) -> Option<Listening> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(3) != Some(&"0A") {
        return None;
    }
    let (ip_hex, port_hex) = f.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // The kernel prints the address as 32-bit words in host byte order.
    let ip = if v6 {
        if ip_hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_mut(4).enumerate() {
            let word = u32::from_str_radix(ip_hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        let word = u32::from_str_radix(ip_hex, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()))
    };
    let inode = f.get(9)?.parse().ok()?;
    Some(Listening::Tcp(SocketAddr::new(ip, port), inode))
}

/// `Num RefCount Protocol Flags Type St Inode Path`; flag 0x10000
/// (`__SO_ACCEPTCON`) marks a listening socket.
fn parse_unix(line: &str) -> Option<Listening> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
    if flags & 0x10000 == 0 {
        return None;
    }
    let inode = f.get(6)?.parse().ok()?;
    let path = f.get(7)?;
    // Abstract sockets start with '@': they have no file.
    if !path.starts_with('/') {
        return None;
    }
    Some(Listening::Unix(PathBuf::from(path), inode))
}

/// The socket inodes among `pid`'s open fds (empty if it cannot be read).
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        if let Some(inode) = std::fs::read_link(entry.path())
            .ok()
            .and_then(|t| socket_inode(&t))
        {
            out.insert(inode);
        }
    }
    out
}

fn socket_inode(link: &Path) -> Option<u64> {
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Some process holding the socket `inode`, as "pid N (comm)", for an
/// error message; `None` when none can be seen (another user's process
/// when not root, another namespace).
pub fn holder(inode: u64) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if socket_inodes(pid).contains(&inode) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", comm.trim()));
        }
    }
    None
}

/// Whether a socket bound to `a` keeps `b` from being bound: the same
/// port and family, and the same address or either one the wildcard.
/// (IPv6 sockets are bound v6-only, as Baton binds them.)
pub fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_tables() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let expect: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        #[cfg(target_endian = "little")]
        assert_eq!(parse_tcp(v4, false), Some(Listening::Tcp(expect, 12345)));
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_tcp(&established, false), None);
        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        #[cfg(target_endian = "little")]
        assert_eq!(
            parse_tcp(v6, true),
            Some(Listening::Tcp("[::1]:80".parse().unwrap(), 777))
        );
        let unix = "0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/baton/baton.ctl";
        assert_eq!(
            parse_unix(unix),
            Some(Listening::Unix("/run/baton/baton.ctl".into(), 4242))
        );
        let connected = "0000000000000000: 00000002 00000000 00000000 0001 03 4243 /run/x";
        assert_eq!(parse_unix(connected), None);
        assert_eq!(parse_tcp("garbage", false), None);
        assert_eq!(parse_unix("garbage"), None);
    }

    #[test]
    fn overlap_follows_the_kernels_bind_rules() {
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(&p("0.0.0.0:80"), &p("127.0.0.1:80")));
        assert!(overlaps(&p("127.0.0.1:80"), &p("127.0.0.1:80")));
        assert!(!overlaps(&p("127.0.0.1:80"), &p("127.0.0.2:80")));
        assert!(!overlaps(&p("127.0.0.1:80"), &p("127.0.0.1:81")));
        assert!(!overlaps(&p("[::]:80"), &p("0.0.0.0:80")));
    }
}
