//! The worker's cache of small files: their bytes and the headers that
//! describe them, so that a hit costs no `open`, `stat`, `read` or `close`
//! and the response leaves in the one `send` that carries its head.
//!
//! Freshness does not rest on a time-to-live (lighttpd's stat cache trusts
//! an entry for a second, nginx's `open_file_cache` for
//! `open_file_cache_valid`, 60 s by default). Every entry is watched with
//! inotify(7): the file itself, its directory, and every directory above
//! it up to `/`, both along the root as configured and along its canonical
//! path. Any event that could change what the URL serves empties the whole
//! cache: the file written, truncated, touched, chmodded, renamed,
//! replaced or removed; a name created, removed or renamed in its
//! directory (an `x.br` appearing, an index file added); a directory on the
//! way renamed, swapped or chmodded; a `current -> releases/N` symlink on
//! the root's path re-pointed. Each watched directory only counts events
//! about the names that matter: the next component of the path above the
//! file, and in the file's own directory the file, its variants and the
//! index names. A busy `/tmp` above a root, or a log written beside the
//! files, costs a wake-up, not the cache.
//!
//! The worker reads the inotify queue before the other events of every poll
//! turn, again before it drives connections that carry on without a poll
//! (out of budget), and after accepting a batch of connections whose
//! requests it reads at once: so a request sent after a change to the disk
//! completed is answered from the changed file, with no window of
//! staleness beyond the turn in which the change lands. (The one way a
//! request can be read in the turn that answered the previous one is a
//! pipelined head past a full 16 KiB read; a client that pipelines sent it
//! before seeing the previous answer.) `tests/file_cache.rs` caught the
//! accept path serving a stale file before that last read was added.
//!
//! An entry is only made when its watches were provably in place before
//! its bytes were read: the watches are added first; then the path is
//! walked again from the root without following any symlink and must reach
//! the same inode (a path with a symlink below the root is never cached,
//! since its target's directories are not watched); then the bytes are
//! read between two `fstat`s that must agree; then the inotify queue is
//! drained, and any relevant event at all means nothing is cached.
//!
//! When the cache is full, further files are served as before (sendfile)
//! rather than evicting: a hot set that fits stays, and a set that does
//! not fit cannot make the worker churn. Everything is dropped on the next
//! change.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::rc::Rc;

use baton_shared::channel::FileCacheStats;
use baton_shared::config::compress::Coding;
use baton_shared::config::{Site, Symlinks};
use bytes::Bytes;
use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::conditional::Validators;
use super::open::open_under;
use super::precompressed;
use crate::http::response::http_date;

mod inotify;

use inotify::{ancestor_mask, file_mask, parent_mask, parse_events};

/// What an entry costs against `file_cache_size` besides its bytes and its
/// key (the request path, up to `max_uri_length`): headers, map slots,
/// watches. So an empty file cannot make the entry count unbounded, and
/// many spellings of one path (`/./a`, `//a`, `/x/../a`, each its own key)
/// cannot hold more memory than the setting says.
const ENTRY_OVERHEAD: u64 = 256;

/// A cached file: its bytes and everything its headers are made of.
#[derive(Debug)]
pub struct Entry {
    pub bytes: Bytes,
    pub content_type: String,
    /// The precompressed variant's `Content-Encoding`, if it is one.
    pub encoding: Option<&'static str>,
    pub validators: Validators,
    /// The mtime as an HTTP date, formatted once (`Last-Modified` while
    /// it is not in the future).
    pub last_modified: Option<String>,
    /// Its compressed variants (`compress`), each made once, on the first
    /// request that negotiates it (`FileCache::variant`).
    variants: RefCell<Vec<(Coding, Bytes)>>,
}

/// Which response a URL gives: the site (by address: sites live as long as
/// the worker's config) and the client's precompressed preference
/// (`precompressed::preference_key`).
type Class = (usize, u8);

/// URL path → entry, or `None`: uncacheable until the next change.
type Paths = HashMap<Box<str>, Option<Rc<Entry>>>;

/// A URL as the cache files it: the site, the client's precompressed
/// preference (`precompressed::preference_key`) and the request's path
/// (before the query).
#[derive(Clone, Copy)]
pub struct Key<'a> {
    pub site: &'a Site,
    pub pref: u8,
    pub path: &'a str,
}

impl Key<'_> {
    fn class(&self) -> Class {
        (site_id(self.site), self.pref)
    }
}

/// A watched directory or file: which names in it matter (`None`: every
/// event does).
type Relevant = Option<HashSet<Box<[u8]>>>;

pub struct FileCache {
    /// `None`: the cache is off (configured so, or inotify unavailable).
    inotify: Option<Inotify>,
    /// Lookups answered from the cache, and not, for `Stats`.
    hits: u64,
    misses: u64,
    max_size: u64,
    max_file_size: u64,
    used: u64,
    /// Per class, URL path → entry, or `None` for a path found
    /// uncacheable (a symlink below the root, a file changing while read),
    /// so that it does not pay for a fill on every request. A short list:
    /// one class per site in practice, two or three with precompressed
    /// files.
    entries: Vec<(Class, Paths)>,
    /// By raw watch descriptor, as events carry it.
    watches: HashMap<i32, (WatchDescriptor, Relevant)>,
    /// Where inotify events are read (never zeroed again).
    events_buf: Box<[u8]>,
    /// Sites whose root cannot be watched (an ancestor the worker's user
    /// cannot read): never filled.
    unwatchable: HashSet<usize>,
}

/// What the cache knows of a URL.
pub enum Lookup {
    Hit(Rc<Entry>),
    /// Found uncacheable since the last change: serve it from disk.
    Refused,
    Miss,
}

/// Why a fill did not happen.
enum Refusal {
    /// This path, until the next change.
    Path,
    /// This site's root cannot be watched.
    Site,
    /// The watch limit was reached: the cache is turned off.
    Off,
    /// An event came in while filling; the cache was emptied.
    Changed,
}

impl FileCache {
    /// A cache of at most `max_size` bytes of files of at most
    /// `max_file_size` bytes each; `max_size == 0` turns it off.
    pub fn new(max_size: u64, max_file_size: u64) -> FileCache {
        let inotify = if max_size == 0 || max_file_size == 0 {
            None
        } else {
            match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(i) => Some(i),
                Err(e) => {
                    // EMFILE here is fs.inotify.max_user_instances.
                    warn!("file cache off: inotify_init1: {e}");
                    None
                }
            }
        };
        FileCache {
            inotify,
            hits: 0,
            misses: 0,
            max_size,
            max_file_size,
            used: 0,
            entries: Vec::new(),
            watches: HashMap::new(),
            events_buf: vec![0; 4096].into_boxed_slice(),
            unwatchable: HashSet::new(),
        }
    }

    /// The inotify fd, for the worker's poll.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// What is known of `key`.
    pub fn get(&mut self, key: Key) -> Lookup {
        let class = key.class();
        let lookup = match self.entries.iter().find(|(c, _)| *c == class) {
            None => Lookup::Miss,
            Some((_, map)) => match map.get(key.path) {
                None => Lookup::Miss,
                Some(None) => Lookup::Refused,
                Some(Some(entry)) => Lookup::Hit(Rc::clone(entry)),
            },
        };
        if matches!(lookup, Lookup::Hit(_)) {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        lookup
    }

    /// Counters and size for the master's status and metrics.
    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            hits: self.hits,
            misses: self.misses,
            bytes: self.used,
        }
    }

    /// Whether a found file of `len` bytes is worth a fill for `key`.
    pub fn wants(&self, key: Key, len: u64) -> bool {
        self.inotify.is_some()
            && len <= self.max_file_size
            && self.fits(key, len)
            && !self.unwatchable.contains(&site_id(key.site))
    }

    /// What an entry of `len` bytes for `key` costs.
    fn cost(key: Key, len: u64) -> u64 {
        len + key.path.len() as u64 + ENTRY_OVERHEAD
    }

    fn fits(&self, key: Key, len: u64) -> bool {
        self.used + Self::cost(key, len) <= self.max_size
    }

    /// Caches `file` (opened for `segments` under the site's root) as the
    /// answer to `key`, if it can be proved to be watched; the new entry,
    /// or `None` (serve the file as it is).
    pub fn fill(
        &mut self,
        key: Key,
        segments: &[Vec<u8>],
        file: &File,
        content_type: &str,
        encoding: Option<&'static str>,
    ) -> Option<Rc<Entry>> {
        let class = key.class();
        match self.try_fill(key.site, segments, file) {
            Ok((bytes, meta)) => {
                let modified = meta.modified().ok();
                let validators = Validators::new(meta.len(), modified);
                let last_modified = validators.modified.map(http_date);
                let entry = Rc::new(Entry {
                    bytes: bytes.into(),
                    content_type: content_type.to_owned(),
                    encoding,
                    validators,
                    last_modified,
                    variants: RefCell::new(Vec::new()),
                });
                self.used += Self::cost(key, meta.len());
                self.class(class)
                    .insert(key.path.into(), Some(Rc::clone(&entry)));
                Some(entry)
            }
            Err(Refusal::Path) => {
                // Remembered while it fits, at the cost of its key.
                if self.fits(key, 0) {
                    self.used += Self::cost(key, 0);
                    self.class(class).insert(key.path.into(), None);
                }
                None
            }
            Err(Refusal::Site) => {
                self.unwatchable.insert(class.0);
                None
            }
            Err(Refusal::Off) => {
                self.clear();
                self.inotify = None;
                None
            }
            Err(Refusal::Changed) => None,
        }
    }

    /// `coding`'s variant of `entry` at `level`: compressed on the first
    /// request for it, then kept beside the entry while it fits in
    /// `file_cache_size` (its bytes and `ENTRY_OVERHEAD` count like an
    /// entry's). A variant lives exactly as long as its entry: a change
    /// on disk empties the cache, and the next request makes a new entry
    /// and new variants from the new file. One that does not fit is
    /// returned all the same, for this response only. `None`: the coder
    /// failed (it cannot allocate its state).
    ///
    /// `entry` is one `get` or `fill` just returned, in the same request:
    /// nothing can have emptied the cache since, so its cost is counted
    /// against the cache that holds it.
    pub fn variant(&mut self, entry: &Entry, coding: Coding, level: i32) -> Option<Bytes> {
        if let Some((_, v)) = entry.variants.borrow().iter().find(|(c, _)| *c == coding) {
            return Some(v.clone());
        }
        let bytes: Bytes = match crate::compress::encode_all(coding, level, &entry.bytes) {
            Ok(b) => b.into(),
            Err(e) => {
                warn!("compress: {} failed: {e}", coding.name());
                return None;
            }
        };
        let cost = bytes.len() as u64 + ENTRY_OVERHEAD;
        if self.used + cost <= self.max_size {
            self.used += cost;
            entry.variants.borrow_mut().push((coding, bytes.clone()));
        }
        Some(bytes)
    }

    fn class(&mut self, class: Class) -> &mut Paths {
        let i = match self.entries.iter().position(|(c, _)| *c == class) {
            Some(i) => i,
            None => {
                self.entries.push((class, HashMap::new()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    fn try_fill(
        &mut self,
        site: &Site,
        segments: &[Vec<u8>],
        file: &File,
    ) -> Result<(Vec<u8>, Metadata), Refusal> {
        let Some((name, dirs)) = segments.split_last() else {
            return Err(Refusal::Path); // the root itself is no file
        };
        // 1. Watches: above the root (as configured and canonical), then
        //    the directories under it, then the file.
        let root = super::site_root(site);
        // (Failing here is a race with the root being swapped: try again
        // after the next change.)
        let canonical = std::fs::canonicalize(root).map_err(|_| Refusal::Path)?;
        for r in [root, canonical.as_path()] {
            let mut child = r;
            while let (Some(parent), Some(n)) = (child.parent(), child.file_name()) {
                self.watch(parent, ancestor_mask(), Some(&[n.as_bytes()]))
                    .map_err(|e| site_refusal(e, parent))?;
                child = parent;
            }
        }
        let mut dir = root.to_path_buf();
        for seg in dirs {
            self.watch(&dir, ancestor_mask(), Some(&[seg]))
                .map_err(|e| path_refusal(e, &dir))?;
            dir.push(OsStr::from_bytes(seg));
        }
        let names = sibling_names(name, &site.index);
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        self.watch(&dir, parent_mask(), Some(&names))
            .map_err(|e| path_refusal(e, &dir))?;
        dir.push(OsStr::from_bytes(name));
        self.watch(&dir, file_mask(), None)
            .map_err(|e| path_refusal(e, &dir))?;

        // 2. The path still leads to this file, through no symlink.
        let before = file.metadata().map_err(|_| Refusal::Path)?;
        let (_, walked) = open_under(root, segments, Symlinks::Never).map_err(|_| Refusal::Path)?;
        if (walked.dev(), walked.ino()) != (before.dev(), before.ino()) || !before.is_file() {
            return Err(Refusal::Path);
        }

        // 3. The bytes, between two fstats that agree.
        let len = usize::try_from(before.len()).map_err(|_| Refusal::Path)?;
        let mut bytes = vec![0; len];
        let mut done = 0;
        while done < len {
            match file.read_at(&mut bytes[done..], done as u64) {
                Ok(0) => return Err(Refusal::Path), // shrank under us
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Refusal::Path),
            }
        }
        let after = file.metadata().map_err(|_| Refusal::Path)?;
        if after.len() != before.len()
            || (after.mtime(), after.mtime_nsec()) != (before.mtime(), before.mtime_nsec())
        {
            return Err(Refusal::Path);
        }

        // 4. Nothing happened since the watches went in.
        if self.take_events() {
            self.clear();
            return Err(Refusal::Changed);
        }
        Ok((bytes, after))
    }

    /// Adds (or widens) a watch; `names`: the names in a directory whose
    /// events matter, `None`: all of them.
    fn watch(
        &mut self,
        path: &Path,
        mask: AddWatchFlags,
        names: Option<&[&[u8]]>,
    ) -> Result<(), Errno> {
        let Some(inotify) = &self.inotify else {
            return Err(Errno::EBADF);
        };
        let wd = inotify.add_watch(path, mask)?;
        let (_, relevant) = self
            .watches
            .entry(wd.as_raw())
            .or_insert_with(|| (wd, Some(HashSet::new())));
        match (relevant.as_mut(), names) {
            (Some(set), Some(names)) => {
                set.extend(names.iter().map(|n| Box::<[u8]>::from(*n)));
            }
            (Some(_), None) => *relevant = None,
            (None, _) => {}
        }
        Ok(())
    }

    /// Reads the inotify queue: the cache is emptied if anything relevant
    /// happened. Called when the poll says the fd is readable, first in
    /// the turn.
    pub fn on_events(&mut self) {
        // Nothing watched, nothing to learn (what is queued, IN_IGNORED of
        // removed watches, is drained by the next fill): no syscall.
        if self.watches.is_empty() {
            return;
        }
        if self.take_events() {
            debug!("file cache: a watched path changed; emptied");
            self.clear();
        }
    }

    /// Drains the queue; whether any event was relevant.
    ///
    /// Read by hand into the cache's own buffer: nix's `read_events`
    /// zeroes a 4 KiB array and allocates a Vec and a name per event on
    /// every call, and this runs once per accepted batch of connections.
    fn take_events(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let mut relevant = false;
        loop {
            let n = match nix::unistd::read(inotify.as_fd(), &mut self.events_buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => break, // EAGAIN: drained
            };
            for event in parse_events(&self.events_buf[..n]) {
                relevant |= event.mask & libc::IN_Q_OVERFLOW != 0
                    || match self.watches.get(&event.wd) {
                        None => false, // a watch removed by `clear`
                        Some((_, None)) => true,
                        Some((_, Some(names))) => event.name.is_none_or(|n| names.contains(n)),
                    };
            }
        }
        relevant
    }

    /// Forgets every entry and every watch.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
        if let Some(inotify) = &self.inotify {
            for (_, (wd, _)) in self.watches.drain() {
                // Its IN_IGNORED event is read later and matches no watch.
                let _ = inotify.rm_watch(wd);
            }
        }
        self.watches.clear();
    }
}

/// The names in a cached file's directory whose coming or going could
/// change what a cached URL serves: the file, its precompressed variants
/// (or, for a variant, the file it is a variant of and its siblings), and
/// the index files (an earlier one appearing takes over a directory URL).
/// Other files in the directory (a log written there, say) do not empty
/// the cache.
fn sibling_names(name: &[u8], index: &[String]) -> Vec<Vec<u8>> {
    let mut bases = vec![name.to_vec()];
    for (_, suffix) in precompressed::ENCODINGS {
        if let Some(base) = name.strip_suffix(suffix.as_bytes()) {
            bases.push(base.to_vec());
        }
    }
    let mut names = Vec::new();
    for base in bases {
        for (_, suffix) in precompressed::ENCODINGS {
            names.push([base.as_slice(), suffix.as_bytes()].concat());
        }
        names.push(base);
    }
    names.extend(index.iter().map(|i| i.as_bytes().to_vec()));
    names
}

fn site_id(site: &Site) -> usize {
    std::ptr::from_ref(site) as usize
}

fn site_refusal(e: Errno, dir: &Path) -> Refusal {
    match e {
        Errno::ENOSPC => {
            warn!(
                "file cache off: the inotify watch limit (fs.inotify.max_user_watches) is reached"
            );
            Refusal::Off
        }
        // An ancestor the workers' user may not read: it will not change.
        Errno::EACCES | Errno::EPERM => {
            debug!(
                "file cache: cannot watch {}: {e}; this site is not cached",
                dir.display()
            );
            Refusal::Site
        }
        // Vanished while being watched (a swap in progress).
        _ => Refusal::Path,
    }
}

fn path_refusal(e: Errno, dir: &Path) -> Refusal {
    match e {
        Errno::ENOSPC => site_refusal(e, dir),
        _ => Refusal::Path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(wd: i32, mask: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&wd.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(padded as u32).to_ne_bytes());
        b.extend_from_slice(name);
        b.resize(16 + padded, 0);
        b
    }

    #[test]
    fn inotify_events_parse_and_a_truncated_tail_is_ignored() {
        let mut buf = event(3, libc::IN_MODIFY, b"index.html", 16);
        buf.extend(event(7, libc::IN_DELETE_SELF, b"", 0));
        buf.extend(event(9, libc::IN_CREATE, b"x", 16));
        buf.truncate(buf.len() - 5);
        let got: Vec<_> = parse_events(&buf)
            .map(|e| (e.wd, e.mask, e.name.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            got,
            [
                (3, libc::IN_MODIFY, Some(b"index.html".to_vec())),
                (7, libc::IN_DELETE_SELF, None),
            ]
        );
        assert_eq!(parse_events(&[]).count(), 0);
        assert_eq!(parse_events(&[1, 2, 3]).count(), 0);
    }
}
