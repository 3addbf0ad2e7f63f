//! The inotify(7) side of the file cache: the masks each kind of watch
//! asks for, and the events parsed out of what a read of the fd returned.

use nix::sys::inotify::AddWatchFlags;

/// IN_MASK_ADD (which nix does not name): widen a watch another entry made
/// on the same inode instead of replacing its mask.
pub(super) fn mask_add() -> AddWatchFlags {
    AddWatchFlags::from_bits_retain(libc::IN_MASK_ADD)
}

/// Events on a directory above the file's own: names coming and going, the
/// directory itself renamed, removed or made unreadable.
pub(super) fn ancestor_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
        | mask_add()
}

/// The file's own directory also reports writes to the files in it.
pub(super) fn parent_mask() -> AddWatchFlags {
    ancestor_mask() | AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CLOSE_WRITE
}

pub(super) fn file_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | mask_add()
}

/// One event of an inotify read.
pub(super) struct Event<'a> {
    pub(super) wd: i32,
    pub(super) mask: u32,
    pub(super) name: Option<&'a [u8]>,
}

/// The events in what a read of an inotify fd returned (inotify(7)):
/// `wd: i32, mask: u32, cookie: u32, len: u32` in native byte order, then
/// `len` bytes of name padded with NULs. A truncated tail is ignored (the
/// kernel never splits an event across reads).
pub(super) fn parse_events(mut buf: &[u8]) -> impl Iterator<Item = Event<'_>> {
    std::iter::from_fn(move || {
        let field = |b: &[u8], at: usize| -> Option<[u8; 4]> { b.get(at..at + 4)?.try_into().ok() };
        let wd = i32::from_ne_bytes(field(buf, 0)?);
        let mask = u32::from_ne_bytes(field(buf, 4)?);
        let len = u32::from_ne_bytes(field(buf, 12)?) as usize;
        let raw = buf.get(16..16 + len)?;
        buf = &buf[16 + len..];
        let name = raw.split(|&b| b == 0).next().filter(|n| !n.is_empty());
        Some(Event { wd, mask, name })
    })
}
