//! File operations beneath a [`Workspace`], built only on fds resolved by it.
//!
//! Rules enforced here (each refusal is a [`SandboxError::Denied`] naming its rule):
//! * reads open regular files only (`special_file`, `symlink`);
//! * writes are atomic — a temp file in the target's directory, `fsync`, then `renameat`
//!   on the directory fd — so a reader never sees half a file and an existing inode is
//!   never written in place;
//! * writes refuse a target that is a symlink (`symlink`), not a regular file
//!   (`special_file`), has more than one hard link (`hard_link`), or matches the deny list
//!   (`deny_write`);
//! * deletes refuse the root (`workspace_root`), deny-listed paths and directories that
//!   contain one (`deny_write`), never follow symlinks (a symlink is removed, not its
//!   target), and are bounded (`too_many_entries`, `too_deep`).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::deny::DenyList;
use super::path::{check_type, display_name, kind_name, RelPath, Want, Workspace};
pub(super) use super::walk::{child_rel, entries};
pub use super::walk::{open_entry_for_read, walk, Walk, Walked};
use super::SandboxError;

/// What [`read_file`] returns.
#[derive(Debug, Clone)]
pub struct ReadOut {
    /// The bytes read.
    pub data: Vec<u8>,
    /// The file's size when it was opened.
    pub size: u64,
    /// True if the read reached the end of the file.
    pub eof: bool,
}

/// Reads at most `limit` bytes at `offset` from a regular file beneath the root.
pub fn read_file(
    ws: &Workspace,
    rel: &RelPath,
    offset: u64,
    limit: u64,
) -> Result<ReadOut, SandboxError> {
    let (fd, st) = ws.open_file_read(rel)?;
    let size = st.st_size as u64;
    let file = File::from(fd);
    let want = limit.min(size.saturating_sub(offset));
    let mut data = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
    let mut got = 0usize;
    while got < data.len() {
        match file.read_at(&mut data[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SandboxError::io(rel.as_string(), e)),
        }
    }
    data.truncate(got);
    Ok(ReadOut {
        eof: offset + got as u64 >= size,
        data,
        size,
    })
}

/// What [`write_file`] returns.
#[derive(Debug, Clone, Copy)]
pub struct WriteOut {
    /// True if the file did not exist before.
    pub created: bool,
    /// Bytes written.
    pub bytes: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `rel` atomically (temp file + `renameat` via the directory fd).
pub fn write_file(
    ws: &Workspace,
    rel: &RelPath,
    data: &[u8],
    create_parents: bool,
    overwrite: bool,
    deny: &DenyList,
) -> Result<WriteOut, SandboxError> {
    let opts = Replace {
        mode: None,
        times: None,
        sync: true,
        create_parents,
        overwrite,
    };
    let out = replace(ws, rel, deny, &opts, |f| f.write_all(data))?;
    Ok(WriteOut {
        created: out.created,
        bytes: data.len() as u64,
    })
}

/// How [`replace`] writes.
#[derive(Debug, Clone)]
pub struct Replace {
    /// Permission bits of the new file (set-id bits are always dropped); `None` keeps
    /// the existing file's, or 0644 for a new one.
    pub mode: Option<u32>,
    /// Access and modification times to set, if any.
    pub times: Option<rfs::Timestamps>,
    /// `fsync` the data before the rename.
    pub sync: bool,
    /// Create missing parent directories.
    pub create_parents: bool,
    /// Replace an existing file (else `Exists`).
    pub overwrite: bool,
}

/// Writes a file atomically: `fill` writes the content into a temp file in the target's
/// directory, which is then renamed over the target on the directory fd. Refuses a
/// deny-listed target, a symlink, a special file or a file with other hard links.
pub fn replace(
    ws: &Workspace,
    rel: &RelPath,
    deny: &DenyList,
    opts: &Replace,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<WriteOut, SandboxError> {
    let Some(name) = rel.file_name() else {
        return Err(SandboxError::IsADirectory {
            path: rel.as_string(),
        });
    };
    if let Some(pattern) = deny.matches(rel) {
        return Err(deny_write(rel, pattern));
    }
    let dir = ws
        .open_parent(rel, opts.create_parents)
        .map_err(|e| match e {
            SandboxError::NotFound { .. } => SandboxError::NotFound {
                path: rel.parent().as_string(),
            },
            other => other,
        })?;
    let existing = check_write_target(&dir, name, rel)?;
    if existing.is_some() && !opts.overwrite {
        return Err(SandboxError::Exists {
            path: rel.as_string(),
        });
    }
    let tmp = temp_name();
    let mode = opts
        .mode
        .or(existing.as_ref().map(|st| st.st_mode))
        .unwrap_or(0o644)
        & 0o1777;
    let tmp_fd = rfs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| SandboxError::io(format!("{}: temp file", rel.parent()), e.into()))?;
    let cleanup = |e: SandboxError| {
        let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        e
    };
    let mut file = File::from(tmp_fd);
    // The umask applied at creation: set the bits exactly (never set-id bits).
    let _ = rfs::fchmod(&file, Mode::from_raw_mode(mode));
    if let Some(st) = &existing {
        // As root, keep the owner.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let _ = rfs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            );
        }
    }
    fill(&mut file)
        .and_then(|()| if opts.sync { file.sync_data() } else { Ok(()) })
        .map_err(|e| cleanup(SandboxError::io(rel.as_string(), e)))?;
    if let Some(times) = &opts.times {
        let _ = rfs::futimens(&file, times);
    }
    drop(file);
    // Re-check just before the rename: the target may have changed meanwhile.
    let again = check_write_target(&dir, name, rel).map_err(cleanup)?;
    let flags = if opts.overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    };
    rename_into(&dir, &tmp, name, flags, rel).map_err(cleanup)?;
    Ok(WriteOut {
        created: again.is_none(),
        bytes: 0,
    })
}

/// Replaces `rel` (a file or symlink, or nothing) by a symlink to `target`, atomically.
pub fn replace_symlink(
    ws: &Workspace,
    rel: &RelPath,
    target: &[u8],
    deny: &DenyList,
) -> Result<(), SandboxError> {
    let Some(name) = rel.file_name() else {
        return Err(SandboxError::IsADirectory {
            path: rel.as_string(),
        });
    };
    if let Some(pattern) = deny.matches(rel) {
        return Err(deny_write(rel, pattern));
    }
    let dir = ws.open_parent(rel, true)?;
    let tmp = temp_name();
    let target = std::ffi::OsStr::from_bytes(target);
    rfs::symlinkat(target, &dir, tmp.as_str())
        .map_err(|e| SandboxError::io(format!("{}: temp link", rel.parent()), e.into()))?;
    rename_into(&dir, &tmp, name, RenameFlags::empty(), rel).inspect_err(|_| {
        let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
    })
}

fn temp_name() -> String {
    format!(
        ".loom-tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn rename_into(
    dir: &OwnedFd,
    tmp: &str,
    name: &str,
    flags: RenameFlags,
    rel: &RelPath,
) -> Result<(), SandboxError> {
    match rfs::renameat_with(dir, tmp, dir, name, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(SandboxError::Exists {
            path: rel.as_string(),
        }),
        Err(Errno::ISDIR) => Err(SandboxError::IsADirectory {
            path: rel.as_string(),
        }),
        Err(e) => Err(SandboxError::io(rel.as_string(), e.into())),
    }
}

/// Checks an existing write target without following it; `None` if it does not exist.
fn check_write_target(
    dir: &OwnedFd,
    name: &str,
    rel: &RelPath,
) -> Result<Option<rfs::Stat>, SandboxError> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            check_type(rel, &st, Want::File)?;
            if st.st_nlink > 1 {
                return Err(SandboxError::denied(
                    "hard_link",
                    format!("{rel} has {} hard links; refusing to write a file that is also reachable elsewhere", st.st_nlink),
                ));
            }
            Ok(Some(st))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(SandboxError::io(rel.as_string(), e.into())),
    }
}

pub(super) fn deny_write(rel: &RelPath, pattern: &str) -> SandboxError {
    SandboxError::denied(
        "deny_write",
        format!("{rel} matches the write deny list ({pattern:?})"),
    )
}

/// One directory entry, as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's name (lossy UTF-8).
    pub name: String,
    /// `file`, `directory`, `symlink`, `FIFO`, ...
    pub kind: &'static str,
    /// Size in bytes (of the link itself for symlinks).
    pub size: u64,
    /// Where a symlink points (informational: it is never followed).
    pub target: Option<String>,
}

/// Lists a directory beneath the root, sorted by name; at most `max` entries.
pub fn list_dir(
    ws: &Workspace,
    rel: &RelPath,
    max: usize,
) -> Result<(Vec<Entry>, bool), SandboxError> {
    let fd = ws.open_dir_read(rel)?;
    let mut names = Vec::new();
    let mut dir = Dir::read_from(&fd).map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
    while let Some(ent) = dir.read() {
        let ent = ent.map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(name.to_vec());
        if names.len() > 100_000 {
            break;
        }
    }
    names.sort();
    let truncated = names.len() > max;
    names.truncate(max);
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let st = match rfs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue, // removed meanwhile
            Err(e) => return Err(SandboxError::io(rel.as_string(), e.into())),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let target = (ft == FileType::Symlink)
            .then(|| rfs::readlinkat(&fd, name.as_slice(), Vec::new()).ok())
            .flatten()
            .map(|t| display_name(t.to_bytes()));
        out.push(Entry {
            name: display_name(&name),
            kind: kind_name(ft),
            size: st.st_size as u64,
            target,
        });
    }
    Ok((out, truncated))
}

/// What [`delete`] removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteOut {
    /// Files, symlinks and other non-directories removed.
    pub files: u64,
    /// Directories removed.
    pub dirs: u64,
}

/// Deepest directory nesting a recursive delete or a walk descends into.
pub const MAX_DEPTH: usize = 256;

/// Deletes a file, symlink or (with `recursive`) a directory tree beneath the root.
///
/// A recursive delete first scans the whole tree (at most `max_entries` entries) and
/// refuses before removing anything if an entry matches the deny list.
pub fn delete(
    ws: &Workspace,
    rel: &RelPath,
    recursive: bool,
    deny: &DenyList,
    max_entries: u64,
) -> Result<DeleteOut, SandboxError> {
    let Some(name) = rel.file_name() else {
        return Err(SandboxError::denied(
            "workspace_root",
            "refusing to delete the workspace root".to_string(),
        ));
    };
    if let Some(pattern) = deny.matches(rel).or_else(|| deny.contains_anchored(rel)) {
        return Err(deny_write(rel, pattern));
    }
    let dir = ws.open_parent(rel, false)?;
    let st = match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => {
            return Err(SandboxError::NotFound {
                path: rel.as_string(),
            })
        }
        Err(e) => return Err(SandboxError::io(rel.as_string(), e.into())),
    };
    let mut out = DeleteOut::default();
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        unlink(&dir, name, rel, false)?;
        out.files = 1;
        return Ok(out);
    }
    if !recursive {
        return match rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => {
                out.dirs = 1;
                Ok(out)
            }
            Err(Errno::NOTEMPTY | Errno::EXIST) => Err(SandboxError::NotEmpty {
                path: rel.as_string(),
            }),
            Err(e) => Err(SandboxError::io(rel.as_string(), e.into())),
        };
    }
    let sub = open_subdir(&dir, name, rel)?;
    let mut budget = max_entries;
    scan_tree(&sub, rel, deny, 0, &mut budget)?;
    remove_tree(&sub, rel, deny, 0, &mut out)?;
    unlink(&dir, name, rel, true)?;
    out.dirs += 1;
    Ok(out)
}

/// Refuses (before anything is removed) if the directory tree at `rel` holds a
/// deny-listed entry or more than `budget` entries.
pub(super) fn check_tree(
    ws: &Workspace,
    rel: &RelPath,
    deny: &DenyList,
    budget: &mut u64,
) -> Result<(), SandboxError> {
    let fd = ws.open_dir_read(rel)?;
    scan_tree(&fd, rel, deny, 0, budget)
}

fn unlink(dir: &OwnedFd, name: &str, rel: &RelPath, is_dir: bool) -> Result<(), SandboxError> {
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rfs::unlinkat(dir, name, flags).map_err(|e| match e {
        Errno::NOENT => SandboxError::NotFound {
            path: rel.as_string(),
        },
        Errno::NOTEMPTY | Errno::EXIST => SandboxError::NotEmpty {
            path: rel.as_string(),
        },
        other => SandboxError::io(rel.as_string(), other.into()),
    })
}

fn open_subdir(dir: &OwnedFd, name: &str, rel: &RelPath) -> Result<OwnedFd, SandboxError> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => SandboxError::denied(
            "symlink",
            format!("{rel} changed into a symlink during the operation"),
        ),
        other => SandboxError::io(rel.as_string(), other.into()),
    })
}

fn scan_tree(
    fd: &OwnedFd,
    rel: &RelPath,
    deny: &DenyList,
    depth: usize,
    budget: &mut u64,
) -> Result<(), SandboxError> {
    if depth >= MAX_DEPTH {
        return Err(SandboxError::denied(
            "too_deep",
            format!("{rel} is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    for (name, ft) in entries(fd, rel)? {
        let crel = child_rel(rel, &name)?;
        if *budget == 0 {
            return Err(SandboxError::denied(
                "too_many_entries",
                format!("{rel} holds more entries than a recursive delete may remove"),
            ));
        }
        *budget -= 1;
        if let Some(pattern) = deny.matches(&crel) {
            return Err(deny_write(&crel, pattern));
        }
        if ft == FileType::Directory {
            let name = std::str::from_utf8(&name).unwrap_or_default();
            let sub = open_subdir(fd, name, &crel)?;
            scan_tree(&sub, &crel, deny, depth + 1, budget)?;
        }
    }
    Ok(())
}

fn remove_tree(
    fd: &OwnedFd,
    rel: &RelPath,
    deny: &DenyList,
    depth: usize,
    out: &mut DeleteOut,
) -> Result<(), SandboxError> {
    if depth >= MAX_DEPTH {
        return Err(SandboxError::denied(
            "too_deep",
            format!("{rel} is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    for (name, ft) in entries(fd, rel)? {
        let crel = child_rel(rel, &name)?;
        // The tree may have changed since the scan: check again before each removal.
        if let Some(pattern) = deny.matches(&crel) {
            return Err(deny_write(&crel, pattern));
        }
        let name = std::str::from_utf8(&name).unwrap_or_default();
        if ft == FileType::Directory {
            let sub = open_subdir(fd, name, &crel)?;
            remove_tree(&sub, &crel, deny, depth + 1, out)?;
            unlink(fd, name, &crel, true)?;
            out.dirs += 1;
        } else {
            unlink(fd, name, &crel, false)?;
            out.files += 1;
        }
    }
    Ok(())
}
