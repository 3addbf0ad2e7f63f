//! The state one image of the master hands to the next across `execve`:
//! what it holds (by fd number: the fds themselves are inherited) and what
//! it knows (generations, children, counters, keys).
//!
//! Format, in a sealed memfd: the magic `BATONUPG`, the format version
//! (u32 LE), the payload's length (u64 LE), the payload (JSON), and an
//! FNV-1a 64 checksum of the payload (u64 LE). The reader checks each
//! before it believes anything: a state from another format version, cut
//! short, or altered is refused as a whole (and the reading image rolls
//! back to the one that wrote it). Sealed (`F_SEAL_WRITE|GROW|SHRINK`), so
//! nobody can change it under the reader, not even the writer.

use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use baton_shared::channel::{FileCacheStats, Http2Counters};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"BATONUPG";
/// The format this image writes and reads. A new image that cannot read
/// it says so in its preflight handshake, before the old one execs it.
pub const VERSION: u32 = 1;
/// A state is a few KiB; anything past this is not ours.
const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// Which image reads the state, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Role {
    /// A new image: adopt, then start a generation from the new code.
    Upgrade,
    /// The old image again, after the new one failed: adopt and serve,
    /// and tell the waiter `status` and `reason`.
    Rollback { status: i32, reason: String },
}

/// A listen address, as `ListenAddr`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Stdin,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listener {
    pub addr: Addr,
    pub fd: RawFd,
    pub backlog: i32,
    pub mode: u32,
    pub unix_file: Option<(u64, u64)>,
    pub retired: bool,
    /// Milliseconds of linger left, if it lingers.
    pub linger_left_ms: Option<u64>,
    pub adopted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    /// "starting", "serving" or "draining".
    pub phase: String,
    pub addrs: Vec<Addr>,
    pub took_over: Vec<(Addr, Addr)>,
    pub access_logs: Vec<RawFd>,
    /// Milliseconds left of its grace period, if draining.
    pub drain_left_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Child {
    pub pid: i32,
    pub generation: u64,
    pub slot: usize,
    pub listeners: Vec<Addr>,
    /// Its channel's fd, if the channel is open.
    pub channel: Option<RawFd>,
    /// Bytes read from the channel and not yet a whole message, and bytes
    /// queued for it and not yet sent: the framing must not slip.
    pub inbuf: Vec<u8>,
    pub outbuf: Vec<u8>,
    pub ready: bool,
    pub draining: bool,
    pub connections: u64,
    pub requests: u64,
    pub responses: [u64; 5],
    pub bytes: u64,
    /// Absent from a state written before they were carried: zero until
    /// the worker's next report.
    #[serde(default)]
    pub file_cache: FileCacheStats,
    #[serde(default)]
    pub http2: Http2Counters,
}

/// Counters of workers that exited before the upgrade
/// (`supervisor::process_table::GoneTotals`), so that no total goes down
/// across one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gone {
    pub requests: u64,
    pub responses: [u64; 5],
    pub bytes: u64,
    pub file_cache_hits: u64,
    pub file_cache_misses: u64,
    pub http2: Http2Counters,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Admin {
    Tcp { fd: RawFd, port: u16 },
    Unix { fd: RawFd, path: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub role: Role,
    /// The binary's path as installed (what an upgrade executes).
    pub exe: PathBuf,
    /// The config file; `None`: the embedded default.
    pub source: Option<PathBuf>,
    pub pid_file_override: Option<PathBuf>,
    pub grace_override_ms: Option<u64>,
    pub pid_file: PathBuf,
    pub lock: RawFd,
    pub control: Option<(RawFd, PathBuf)>,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub generations: Vec<Generation>,
    pub children: Vec<Child>,
    pub current: u64,
    pub last_number: u64,
    pub ticket_keys: Vec<[u8; 32]>,
    /// The text of the config the serving generation runs.
    pub running_text: String,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// How long the master has run, for its uptime.
    pub uptime_ms: u64,
    pub restarts: u64,
    /// The `baton -s upgrade` connection waiting for the outcome.
    pub waiter: Option<RawFd>,
    /// The executable to roll back to (the image that wrote an `Upgrade`
    /// state), open for `execveat`.
    pub old_exe: Option<RawFd>,
    /// Active health checks' state (`crate::health`), so the next image
    /// neither resurrects a dead server nor forks workers that think every
    /// server is up. Absent from a state written before health checks:
    /// then every server starts up and is checked at once.
    #[serde(default)]
    pub health: Vec<HealthEntry>,
    /// Absent from a state written before exited workers' counters were
    /// carried.
    #[serde(default)]
    pub gone: Gone,
}

/// One checked upstream server and whether it is up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthEntry {
    pub upstream: String,
    pub server: Addr,
    pub up: bool,
}

impl State {
    /// Every fd the state names: exactly the fds that must survive exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.lock];
        fds.extend(self.control.iter().map(|(fd, _)| *fd));
        fds.extend(self.admin.iter().map(|a| match a {
            Admin::Tcp { fd, .. } | Admin::Unix { fd, .. } => *fd,
        }));
        fds.extend(self.listeners.iter().map(|l| l.fd));
        for g in &self.generations {
            fds.extend_from_slice(&g.access_logs);
        }
        fds.extend(self.children.iter().filter_map(|c| c.channel));
        fds.extend(self.waiter);
        fds.extend(self.old_exe);
        fds
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The state as bytes.
pub fn encode(state: &State) -> Vec<u8> {
    // Serialising plain data to JSON cannot fail (no maps with non-string
    // keys, no custom impls); an empty payload would be refused on read.
    let payload = serde_json::to_vec(state).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 28);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    out
}

/// Reads a state back, checking magic, version, length and checksum.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    let take = |at: usize, n: usize| -> Result<&[u8], String> {
        at.checked_add(n)
            .and_then(|end| bytes.get(at..end))
            .ok_or_else(|| format!("state cut short at byte {at} (of {})", bytes.len()))
    };
    if take(0, 8)? != MAGIC {
        return Err("not a Baton upgrade state (bad magic)".into());
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(take(8, 4)?);
    let version = u32::from_le_bytes(word);
    if version != VERSION {
        return Err(format!(
            "state format version {version}, this binary reads version {VERSION}"
        ));
    }
    let mut long = [0u8; 8];
    long.copy_from_slice(take(12, 8)?);
    let len = u64::from_le_bytes(long);
    if len > MAX_PAYLOAD {
        return Err(format!("state payload of {len} bytes is past the limit"));
    }
    let len = len as usize;
    let payload = take(20, len)?;
    long.copy_from_slice(take(20 + len, 8)?);
    if 28 + len != bytes.len() {
        return Err(format!(
            "state is {} bytes, its header says {}",
            bytes.len(),
            28 + len
        ));
    }
    if u64::from_le_bytes(long) != fnv1a(payload) {
        return Err("state checksum mismatch".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("state payload unreadable: {e}"))
}

/// Writes the state into a new sealed memfd (close-on-exec cleared by the
/// caller, with the other fds it keeps).
pub fn to_memfd(state: &State) -> io::Result<OwnedFd> {
    let name = c"baton-upgrade-state";
    // SAFETY: memfd_create with a valid C string; the result is a new fd.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and belongs to nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(&encode(state))?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own fd with integer arguments.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// Reads and checks the state in `fd` (from its start; the fd stays open,
/// for a rollback that hands the same state back).
pub fn from_fd(fd: RawFd) -> Result<State, String> {
    // SAFETY: fcntl(F_GETFD) only asks whether the number is an open fd.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("state fd {fd} is not open"));
    }
    // The fd must stay open: a borrowed File that is never dropped.
    // SAFETY: `fd` is open (checked above); ManuallyDrop keeps it open.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut bytes = Vec::new();
    let mut reader: &std::fs::File = &file;
    reader
        .seek(io::SeekFrom::Start(0))
        .map_err(|e| format!("cannot read the state: {e}"))?;
    reader
        .take(MAX_PAYLOAD + 28 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the state: {e}"))?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            role: Role::Upgrade,
            exe: "/usr/sbin/baton".into(),
            source: Some("/etc/baton/baton.toml".into()),
            pid_file_override: None,
            grace_override_ms: Some(3000),
            pid_file: "/run/baton.pid".into(),
            lock: 3,
            control: Some((4, "/run/baton.ctl".into())),
            admin: Some(Admin::Tcp { fd: 5, port: 9000 }),
            listeners: vec![Listener {
                addr: Addr::Tcp("127.0.0.1:80".parse().unwrap()),
                fd: 6,
                backlog: 511,
                mode: 0o666,
                unix_file: None,
                retired: false,
                linger_left_ms: None,
                adopted: false,
            }],
            generations: vec![Generation {
                number: 7,
                phase: "serving".into(),
                addrs: vec![Addr::Tcp("127.0.0.1:80".parse().unwrap())],
                took_over: vec![],
                access_logs: vec![8],
                drain_left_ms: None,
            }],
            children: vec![Child {
                pid: 100,
                generation: 7,
                slot: 0,
                listeners: vec![Addr::Tcp("127.0.0.1:80".parse().unwrap())],
                channel: Some(9),
                inbuf: vec![1, 2],
                outbuf: vec![],
                ready: true,
                draining: false,
                connections: 1,
                requests: 2,
                responses: [0, 2, 0, 0, 0],
                bytes: 10,
                file_cache: FileCacheStats {
                    hits: 3,
                    misses: 1,
                    bytes: 40,
                },
                http2: Http2Counters {
                    streams: 4,
                    ..Default::default()
                },
            }],
            current: 7,
            last_number: 7,
            ticket_keys: vec![[7u8; 32]],
            running_text: "workers = 1\n".into(),
            reloads_ok: 6,
            reloads_failed: 1,
            uptime_ms: 5000,
            restarts: 0,
            waiter: Some(10),
            old_exe: Some(11),
            health: vec![HealthEntry {
                upstream: "app".into(),
                server: Addr::Unix("/run/app.sock".into()),
                up: false,
            }],
            gone: Gone {
                requests: 12,
                http2: Http2Counters {
                    connections: 5,
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }

    #[test]
    fn round_trip_and_fds() {
        let s = sample();
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert_eq!(s.fds(), vec![3, 4, 5, 6, 8, 9, 10, 11]);
    }

    #[test]
    fn a_state_without_the_counters_added_later_still_reads() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("gone");
        let child = &mut v["children"][0];
        child.as_object_mut().unwrap().remove("http2");
        child.as_object_mut().unwrap().remove("file_cache");
        let s: State = serde_json::from_value(v).unwrap();
        assert_eq!(s.gone, Gone::default());
        assert_eq!(s.children[0].http2, Http2Counters::default());
    }

    #[test]
    fn refuses_what_is_not_a_whole_state_of_this_version() {
        let bytes = encode(&sample());
        for cut in [0, 7, 12, 19, 20, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("header says"));
        let mut altered = bytes.clone();
        altered[30] ^= 1;
        assert!(decode(&altered).unwrap_err().contains("checksum"));
        let mut other = bytes.clone();
        other[8] = 2;
        assert!(decode(&other).unwrap_err().contains("version 2"));
        let mut huge = bytes;
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().contains("limit"));
    }

    #[test]
    fn memfd_is_sealed_and_reads_back() {
        let s = sample();
        let fd = to_memfd(&s).unwrap();
        assert_eq!(from_fd(fd.as_raw_fd()).unwrap(), s);
        // Twice: the reader rewinds, so a rollback can read it again.
        assert_eq!(from_fd(fd.as_raw_fd()).unwrap(), s);
        let mut f = std::fs::File::from(fd);
        assert!(f.write_all(b"x").is_err(), "sealed against writes");
    }
}
