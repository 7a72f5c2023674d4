//! Walking a tree beneath a [`Workspace`] and listing directories, bounded in time,
//! entries and descriptors, never following a symlink.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags};

use super::fs::MAX_DEPTH;
use super::path::{RelPath, Workspace};
use super::SandboxError;

/// Entries of a directory fd as (name, type), without `.`/`..`; names are raw bytes
/// (callers refuse or skip the non-UTF-8 ones).
pub(super) fn entries(fd: &OwnedFd, rel: &RelPath) -> Result<Entries, SandboxError> {
    Ok(entries_bounded(fd, rel, usize::MAX, &|| false)?.unwrap_or_default())
}

pub(super) fn child_rel(rel: &RelPath, name: &[u8]) -> Result<RelPath, SandboxError> {
    let name = std::str::from_utf8(name).map_err(|_| {
        SandboxError::denied(
            "non_utf8_name",
            format!("{rel} contains an entry whose name is not UTF-8"),
        )
    })?;
    Ok(rel.join(name))
}

/// What a walk visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Go on (descend into this entry if it is a directory).
    Continue,
    /// Do not descend into this directory.
    SkipDir,
    /// Stop the walk.
    Stop,
}

/// How a [`walk`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// Every entry was visited, or the visitor said [`Walk::Stop`].
    Done,
    /// `expired` said stop (the deadline passed or the call was cancelled).
    Expired,
}

/// Walks the tree beneath `start` breadth-first, never following symlinks (they are
/// visited as entries of kind `Symlink`). The visitor gets the entry's path, its type and
/// the fd of the directory that holds it (to open it with [`open_entry_for_read`]).
///
/// Bounded in time and descriptors: `expired` is asked while a directory is being read
/// (a directory of a million entries takes a while), and a directory is listed at most
/// `max_list` entries far (the caller's entry budget: past it the walk stops anyway).
/// Queued directories are kept as paths and opened (beneath the root, no symlinks)
/// only when their turn comes, so a wide tree costs one descriptor, not one per queued
/// directory — thousands of open fds would starve every other tool and socket of the
/// process.
pub fn walk(
    ws: &Workspace,
    start: &RelPath,
    max_depth: usize,
    max_list: usize,
    expired: &dyn Fn() -> bool,
    mut visit: impl FnMut(&RelPath, FileType, BorrowedFd<'_>, &str) -> Walk,
) -> Result<Walked, SandboxError> {
    let root = ws.open_dir_read(start)?;
    let mut queue = std::collections::VecDeque::new();
    queue.push_back((Some(root), start.clone(), 0usize));
    while let Some((fd, rel, depth)) = queue.pop_front() {
        let fd = match fd {
            Some(fd) => fd,
            None => match ws.open_raw(&rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
                Ok(fd) => fd,
                Err(_) => continue, // gone or replaced since it was listed
            },
        };
        let list = match entries_bounded(&fd, &rel, max_list, expired) {
            Ok(Some(list)) => list,
            Ok(None) => return Ok(Walked::Expired),
            Err(_) => continue,
        };
        let mut list = list;
        list.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in list {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            let crel = rel.join(&name);
            match visit(&crel, ft, fd.as_fd(), &name) {
                Walk::Stop => return Ok(Walked::Done),
                Walk::SkipDir => {}
                Walk::Continue => {
                    // Deeper than a tool call can name (`RelPath::parse` refuses longer
                    // paths) is not descended into: nothing there could be used anyway.
                    if ft == FileType::Directory
                        && depth + 1 < max_depth.min(MAX_DEPTH)
                        && crel.as_string().len() < super::path::MAX_PATH_BYTES
                    {
                        queue.push_back((None, crel, depth + 1));
                    }
                }
            }
        }
    }
    Ok(Walked::Done)
}

/// A directory's entries: raw name and type.
pub(super) type Entries = Vec<(Vec<u8>, FileType)>;

/// [`entries`], stopping after `cap` entries, and `None` once `expired` says so
/// (asked every 256 entries).
fn entries_bounded(
    fd: &OwnedFd,
    rel: &RelPath,
    cap: usize,
    expired: &dyn Fn() -> bool,
) -> Result<Option<Entries>, SandboxError> {
    let mut dir = Dir::read_from(fd).map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(ent) = dir.read() {
        seen += 1;
        if seen % 256 == 0 && expired() {
            return Ok(None);
        }
        let ent = ent.map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if out.len() >= cap {
            break;
        }
        let mut ft = ent.file_type();
        if ft == FileType::Unknown {
            ft = rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode))
                .unwrap_or(FileType::Unknown);
        }
        out.push((name.to_vec(), ft));
    }
    Ok(Some(out))
}

/// Opens a walked entry for reading: regular files only, never through a symlink.
pub fn open_entry_for_read(dir: BorrowedFd<'_>, name: &str) -> Option<(File, u64)> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rfs::fstat(&fd).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
        .then(|| (File::from(fd), st.st_size as u64))
}
