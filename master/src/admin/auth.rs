//! Who is calling the admin API, and whether they may (docs/admin-api.md,
//! "Security model").
//!
//! - On the unix socket the kernel says who the peer is (SO_PEERCRED,
//!   SO_PEERGROUPS, taken when it connected). Root and the master's own
//!   user are let in as root; the socket's `owner`, and members of its
//!   group when `mode` gives the group write access, as callers who are not
//!   root; anyone else only with the token. The socket's mode is a second
//!   fence, not the check: a mode loosened by hand, or a socket reached
//!   through a bind mount, still lets nobody else in.
//! - Over TCP the peer could be any local user: the bearer token is the
//!   only proof, and a token holder is never root.
//!
//! Being root matters for one thing: `POST /config` may change the
//! settings only root may (`baton_shared::config::root_only_changes`).

use std::io;
use std::os::fd::AsRawFd;

use baton_shared::config::Admin;

/// Who made a request that was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Root, or the master's own user: may change anything.
    pub root: bool,
    /// For the log and for refusals: "uid 1000 (the socket's owner)".
    pub who: String,
}

/// The other end of an admin connection, as the kernel reported it when it
/// connected.
#[derive(Debug, Clone)]
pub enum Peer {
    /// Over TCP: some local process, nobody knows whose.
    Tcp,
    Unix {
        uid: u32,
        gid: u32,
        /// Its supplementary groups (empty if the kernel cannot tell).
        groups: Vec<u32>,
    },
}

/// A refusal: 401 (no or wrong token; the reply asks for one) or 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: u16,
    pub message: String,
}

impl Peer {
    /// The credentials of a unix socket's peer.
    pub fn of_unix(stream: &mio::net::UnixStream) -> io::Result<Peer> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
        Ok(Peer::Unix {
            uid: cred.uid(),
            gid: cred.gid(),
            groups: peer_groups(stream.as_raw_fd()),
        })
    }
}

/// SO_PEERGROUPS (Linux 4.13+): the peer's supplementary groups when it
/// connected. Empty when unavailable: group members are then only
/// recognised by their primary group.
fn peer_groups(fd: i32) -> Vec<u32> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of `len` bytes; the kernel
        // writes at most `len` bytes and sets `len` to what it wrote, or to
        // what it needs with ERANGE.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return groups;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || count <= groups.len()
        {
            return Vec::new();
        }
        groups.resize(count, 0);
    }
    Vec::new()
}

/// Decides on a request from `peer` carrying `authorization` (the header's
/// value, if any), under the running `[admin]`. `master` is the master's
/// (euid, egid): its own user is as good as root, as it could edit the
/// config anyway, and a socket without `owner` belongs to it.
pub fn authorize(
    peer: &Peer,
    authorization: Option<&str>,
    admin: &Admin,
    master: (u32, u32),
) -> Result<Caller, Denied> {
    let token = || check_token(authorization, admin);
    match peer {
        Peer::Tcp => {
            token()?;
            Ok(Caller {
                root: false,
                who: "a token holder over TCP".into(),
            })
        }
        Peer::Unix { uid, gid, groups } => {
            let (owner_uid, socket_gid) = admin.owner.unwrap_or(master);
            if *uid == 0 || *uid == master.0 {
                return Ok(Caller {
                    root: true,
                    who: format!("uid {uid} (root)"),
                });
            }
            if *uid == owner_uid {
                return Ok(Caller {
                    root: false,
                    who: format!("uid {uid} (the socket's owner)"),
                });
            }
            let group_may = admin.mode & 0o020 != 0;
            if group_may && (*gid == socket_gid || groups.contains(&socket_gid)) {
                return Ok(Caller {
                    root: false,
                    who: format!("uid {uid} (group {socket_gid})"),
                });
            }
            if authorization.is_some() && admin.token.is_some() {
                token()?;
                return Ok(Caller {
                    root: false,
                    who: format!("uid {uid} with the token"),
                });
            }
            let mut allowed = format!("root, uid {}", master.0);
            if owner_uid != master.0 {
                allowed.push_str(&format!(", the socket's owner (uid {owner_uid})"));
            }
            if group_may {
                allowed.push_str(&format!(", members of group {socket_gid}"));
            }
            if admin.token.is_some() {
                allowed.push_str(" and token holders");
            }
            Err(Denied {
                status: 403,
                message: format!("uid {uid} may not use the admin API (allowed: {allowed})"),
            })
        }
    }
}

/// `Authorization: Bearer <token>` with the configured token.
fn check_token(authorization: Option<&str>, admin: &Admin) -> Result<(), Denied> {
    let unauthorized = |message: &str| Denied {
        status: 401,
        message: message.to_owned(),
    };
    let Some(expected) = &admin.token else {
        // Validation refuses TCP without a token; never open by accident.
        return Err(Denied {
            status: 403,
            message: "no token_file is configured: the admin API takes no tokens".into(),
        });
    };
    let Some(value) = authorization else {
        return Err(unauthorized(
            "this admin API needs \"Authorization: Bearer <token>\" (the token in [admin] token_file)",
        ));
    };
    let presented = match value.trim().split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(unauthorized(
                "the Authorization header must be \"Bearer <token>\"",
            ));
        }
    };
    if !equal_in_constant_time(presented.as_bytes(), expected.as_bytes()) {
        return Err(unauthorized("wrong token"));
    }
    Ok(())
}

/// Compares the SHA-256 digests of both, every byte, whatever differs:
/// the time taken tells neither where they differ nor how long the token
/// is.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    use ring::digest::{SHA256, digest};
    let (da, db) = (digest(&SHA256, a), digest(&SHA256, b));
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_shared::config::{AdminToken, ListenAddr, Pos};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const MASTER: (u32, u32) = (0, 0);

    fn admin(owner: Option<(u32, u32)>, mode: u32, token: bool) -> Admin {
        Admin {
            listen: ListenAddr::Unix("/run/a.sock".into()),
            mode,
            owner,
            token_file: None,
            token: token.then(|| AdminToken::parse(TOKEN.as_bytes()).unwrap()),
            pos: Pos::default(),
        }
    }

    fn unix(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer::Unix {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn status(r: Result<Caller, Denied>) -> Result<bool, u16> {
        r.map(|c| c.root).map_err(|d| d.status)
    }

    #[test]
    fn unix_peers() {
        let a = admin(Some((1000, 1000)), 0o660, false);
        let check = |peer: Peer, auth: Option<&str>| status(authorize(&peer, auth, &a, MASTER));
        assert_eq!(check(unix(0, 0, &[]), None), Ok(true), "root");
        assert_eq!(
            check(unix(1000, 1000, &[]), None),
            Ok(false),
            "owner: not root"
        );
        assert_eq!(
            check(unix(1001, 1000, &[]), None),
            Ok(false),
            "primary group"
        );
        assert_eq!(
            check(unix(1001, 5, &[7, 1000]), None),
            Ok(false),
            "supplementary group"
        );
        assert_eq!(
            check(unix(65534, 65534, &[]), None),
            Err(403),
            "anyone else"
        );
        // Without group write in the mode, group members are not let in.
        let a = admin(Some((1000, 1000)), 0o600, false);
        let peer = unix(1001, 1000, &[]);
        assert_eq!(status(authorize(&peer, None, &a, MASTER)), Err(403));
        // A non-root master: its own user is root-equivalent.
        let a = admin(None, 0o600, false);
        let peer = unix(1000, 1000, &[]);
        assert_eq!(status(authorize(&peer, None, &a, (1000, 1000))), Ok(true));
        let peer = unix(1001, 1001, &[]);
        let denied = authorize(&peer, None, &a, (1000, 1000)).unwrap_err();
        assert_eq!(
            denied.message,
            "uid 1001 may not use the admin API (allowed: root, uid 1000)"
        );
    }

    #[test]
    fn tokens() {
        let a = admin(None, 0o666, true);
        let good = format!("Bearer {TOKEN}");
        let tcp = |auth: Option<&str>| status(authorize(&Peer::Tcp, auth, &a, MASTER));
        assert_eq!(tcp(Some(&good)), Ok(false), "a token holder is not root");
        assert_eq!(tcp(Some(&format!("bearer  {TOKEN} "))), Ok(false));
        assert_eq!(tcp(None), Err(401));
        assert_eq!(tcp(Some("Bearer wrong")), Err(401));
        assert_eq!(tcp(Some(&format!("Bearer {TOKEN}x"))), Err(401));
        assert_eq!(tcp(Some(&format!("Basic {TOKEN}"))), Err(401));
        assert_eq!(tcp(Some(TOKEN)), Err(401));
        // On the unix socket a stranger may use the token.
        let stranger = unix(65534, 65534, &[]);
        assert_eq!(
            status(authorize(&stranger, Some(&good), &a, MASTER)),
            Ok(false)
        );
        assert_eq!(
            status(authorize(&stranger, Some("Bearer x"), &a, MASTER)),
            Err(401)
        );
        assert_eq!(status(authorize(&stranger, None, &a, MASTER)), Err(403));
        // No token configured: TCP is never open.
        let none = admin(None, 0o600, false);
        let r = authorize(&Peer::Tcp, Some(&good), &none, MASTER);
        assert_eq!(status(r), Err(403));
    }

    #[test]
    fn comparison() {
        assert!(equal_in_constant_time(b"abc", b"abc"));
        assert!(!equal_in_constant_time(b"abc", b"abd"));
        assert!(!equal_in_constant_time(b"abc", b"abcd"));
        assert!(!equal_in_constant_time(b"", b"a"));
    }
}
