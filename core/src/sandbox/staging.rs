//! Staged writes for sandboxed processes.
//!
//! A process sees the workspace through an overlay whose upper layer lives on a private
//! tmpfs of the call's own (its write budget: a full tmpfs is `ENOSPC` in the kernel).
//! Everything else in its mount namespace is read-only (see [`super::child`]). When
//! every process of the call has exited, [`commit`] reads the upper layer — exactly
//! what the call changed — checks the whole change set, and copies it into the real
//! workspace through the same fd-relative primitives as the `fs:*` tools.
//!
//! Why not Landlock alone: Landlock restricts *opening* files beneath a tree, not names
//! and not metadata. It cannot stop `mkdir -p sub/.git && cp x sub/.git/config`, a new
//! `app/.env`, or a renamed ancestor of a protected path, and a file's owner (root,
//! without capabilities) may still `chmod`/`utime` it anywhere. Checking the finished
//! change set has no count limit, covers names created at any depth and through any
//! rename (a moved tree is new paths plus deletions), and is all or nothing: if one
//! change is refused, none is kept.
//!
//! Overlay options are fixed (`redirect_dir=off,metacopy=off,index=off,xino=off`) so
//! the upper layer holds only plain directories (opaque or not), full copies of files,
//! symlinks and whiteouts; a renamed directory is copied (`EXDEV` makes `mv` copy).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::deny::DenyList;
use super::fs::{self, Replace};
use super::path::{RelPath, Want, Workspace};
use super::SandboxError;

const FSOPEN_CLOEXEC: usize = 1;
const FSCONFIG_SET_STRING: usize = 1;
const FSCONFIG_CMD_CREATE: usize = 6;
const FSMOUNT_CLOEXEC: usize = 1;
pub(super) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(super) const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Bytes and inodes one call may add to the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Size of the call's tmpfs: data written, including copies of modified files.
    pub bytes: u64,
    /// Files, directories and links the call may create (the tmpfs's inode count).
    pub inodes: u64,
}

/// The upper layer and the overlay of one call.
#[derive(Debug)]
pub struct Scratch {
    /// Root of the private tmpfs (detached: in no mount namespace).
    tmpfs: OwnedFd,
    /// The overlay, detached; the child moves it onto the workspace path.
    overlay: OwnedFd,
}

impl Scratch {
    /// Creates the tmpfs and the overlay of `ws` (nothing is mounted anywhere yet).
    pub fn new(ws: &Workspace, budget: Budget) -> Result<Self, SandboxError> {
        let fs = fsopen("tmpfs")?;
        fsconfig(&fs, "size", &budget.bytes.to_string())?;
        fsconfig(&fs, "nr_inodes", &budget.inodes.max(16).to_string())?;
        fsconfig(&fs, "mode", "0700")?;
        let tmpfs = fsmount(
            &fs,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )?;
        // The overlay's root takes the upper root's attributes: give it the workspace's.
        let st =
            rfs::fstat(ws.root_fd()).map_err(|e| SandboxError::io("workspace root", e.into()))?;
        for dir in ["u", "w"] {
            rfs::mkdirat(&tmpfs, dir, Mode::from_raw_mode(0o700))
                .map_err(|e| SandboxError::io("staging tmpfs", e.into()))?;
        }
        rfs::chmodat(
            &tmpfs,
            "u",
            Mode::from_raw_mode(st.st_mode & 0o1777),
            AtFlags::empty(),
        )
        .and_then(|()| {
            rfs::chownat(
                &tmpfs,
                "u",
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
                AtFlags::empty(),
            )
        })
        .map_err(|e| SandboxError::io("staging tmpfs", e.into()))?;
        let ov = fsopen("overlay")?;
        let t = tmpfs.as_raw_fd();
        fsconfig(&ov, "lowerdir", &escape_layer(ws.root_path()))?;
        fsconfig(&ov, "upperdir", &format!("/proc/self/fd/{t}/u"))?;
        fsconfig(&ov, "workdir", &format!("/proc/self/fd/{t}/w"))?;
        for (key, value) in [
            ("redirect_dir", "off"),
            ("metacopy", "off"),
            ("index", "off"),
            ("xino", "off"),
        ] {
            fsconfig(&ov, key, value)?;
        }
        let overlay = fsmount(&ov, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
        Ok(Self { tmpfs, overlay })
    }

    /// The detached overlay mount, for `move_mount` in the child.
    pub fn overlay_fd(&self) -> BorrowedFd<'_> {
        self.overlay.as_fd()
    }

    fn upper(&self) -> Result<OwnedFd, SandboxError> {
        open_dir(self.tmpfs.as_fd(), "u", &RelPath::root())
    }
}

/// Bounds the memory the staging tmpfs of concurrent calls can hold in all: each call
/// reserves its `write_bytes` before its tmpfs exists and gives it back when it ends.
#[derive(Debug)]
pub struct StagingPool {
    free: crate::sync::Mutex<u64>,
    freed: crate::sync::Condvar,
    total: u64,
}

/// Bytes of a [`StagingPool`] held by one call (returned on drop).
#[derive(Debug)]
pub struct Reservation<'a> {
    pool: &'a StagingPool,
    bytes: u64,
}

impl StagingPool {
    /// A pool of `total` bytes.
    pub fn new(total: u64) -> Self {
        Self {
            free: crate::sync::Mutex::new(total),
            freed: crate::sync::Condvar::new(),
            total,
        }
    }

    /// Waits until `bytes` are free (or `deadline`, or `cancel`), then holds them.
    /// `None`: the deadline passed or the call was cancelled first.
    pub fn reserve(
        &self,
        bytes: u64,
        deadline: std::time::Instant,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Option<Reservation<'_>> {
        let bytes = bytes.min(self.total);
        let mut free = self.free.lock();
        while *free < bytes {
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                return None;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let slice = (deadline - now).min(std::time::Duration::from_millis(50));
            self.freed.wait_for(&mut free, slice);
        }
        *free -= bytes;
        Some(Reservation { pool: self, bytes })
    }

    /// The pool's size.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.pool.free.lock() += self.bytes;
        self.pool.freed.notify_all();
    }
}

/// Can this process build a [`Scratch`] (root, Linux 5.12+ with overlayfs and the new
/// mount API)?
pub fn supported(ws: &Workspace) -> bool {
    Scratch::new(
        ws,
        Budget {
            bytes: 1 << 20,
            inodes: 16,
        },
    )
    .is_ok()
}

/// A refused or failed [`commit`].
#[derive(Debug)]
pub struct CommitError {
    /// Why.
    pub error: SandboxError,
    /// Some changes were applied before the failure (only a file-system error or a
    /// concurrent change can do that: the checks run on the whole set first).
    pub partial: bool,
}

/// What [`commit`] copied into the workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Files and symlinks written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Paths removed (each counted once, whatever it held).
    pub removed: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

#[derive(Debug)]
enum Change {
    /// Remove whatever is at the path in the workspace (a deletion, or a type change).
    Remove(RelPath),
    /// Make sure a directory exists (created with `mode` if it does not).
    Dir(RelPath, u32),
    /// Write a file from the upper layer.
    File {
        rel: RelPath,
        mode: u32,
        size: u64,
        times: rfs::Timestamps,
    },
    /// Write a symlink with this target.
    Symlink(RelPath, Vec<u8>),
}

/// Checks everything the call changed and, if every change is allowed, copies it into
/// the workspace. Refusals (nothing is kept): `deny_write` (a path on the deny list, or
/// a removal of one or of a directory holding one), `special_file` (devices, FIFOs,
/// sockets), `non_utf8_name`, `too_deep`, `too_many_entries`, `hard_link` (replacing a
/// workspace file that has other links). Set-id bits are never committed.
pub fn commit(
    ws: &Workspace,
    scratch: &Scratch,
    deny: &DenyList,
    max_entries: u64,
) -> Result<Committed, CommitError> {
    let whole = |error| CommitError {
        error,
        partial: false,
    };
    let upper = scratch.upper().map_err(whole)?;
    let mut changes = Vec::new();
    let mut budget = max_entries;
    collect(
        ws,
        &upper,
        &RelPath::root(),
        deny,
        0,
        &mut budget,
        &mut changes,
    )
    .map_err(|e| match e {
        SandboxError::Denied {
            rule: "too_many_entries",
            ..
        } => SandboxError::denied(
            "too_many_entries",
            format!("the call changed more than {max_entries} entries (max_delete_entries)"),
        ),
        other => other,
    })
    .map_err(whole)?;
    // Checked as a whole above; what can still fail here is the file system (disk full,
    // a concurrent writer): say how far the commit got.
    let mut out = Committed::default();
    for (done, change) in changes.iter().enumerate() {
        apply(ws, &upper, change, deny, max_entries, &mut out).map_err(|e| CommitError {
            partial: done > 0,
            error: {
                let how_far = format!(
                    "committing the call's changes stopped after {done} of {} (the rest were \
                 not applied)",
                    changes.len()
                );
                match e {
                    SandboxError::Denied { rule, reason } => {
                        SandboxError::denied(rule, format!("{reason}; {how_far}"))
                    }
                    SandboxError::Io { context, source } => {
                        SandboxError::io(format!("{how_far}: {context}"), source)
                    }
                    other => SandboxError::io(
                        format!("{how_far}: {other}"),
                        std::io::Error::other("commit failed"),
                    ),
                }
            },
        })?;
    }
    Ok(out)
}

/// What is at `rel` in the workspace (not following symlinks), if anything.
fn lower_type(ws: &Workspace, rel: &RelPath) -> Result<Option<FileType>, SandboxError> {
    let Some(name) = rel.file_name() else {
        return Ok(Some(FileType::Directory));
    };
    let dir = match ws.resolve(&rel.parent(), Want::Dir) {
        Ok((fd, _)) => fd,
        Err(SandboxError::NotFound { .. } | SandboxError::NotADirectory { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(SandboxError::io(rel.as_string(), e.into())),
    }
}

/// A workspace file with other hard links is never replaced (see `fs::replace`).
fn refuse_hard_link(ws: &Workspace, rel: &RelPath) -> Result<(), SandboxError> {
    let Some(name) = rel.file_name() else {
        return Ok(());
    };
    let Ok((dir, _)) = ws.resolve(&rel.parent(), Want::Dir) else {
        return Ok(());
    };
    match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_nlink > 1 => {
            Err(SandboxError::denied(
                "hard_link",
                format!("{rel} has {} hard links; refusing to replace a file that is also reachable elsewhere", st.st_nlink),
            ))
        }
        _ => Ok(()),
    }
}

fn refuse_write(rel: &RelPath, deny: &DenyList) -> Result<(), SandboxError> {
    match deny.matches(rel) {
        Some(pattern) => Err(fs::deny_write(rel, pattern)),
        None => Ok(()),
    }
}

/// A removal of `rel` from the workspace is allowed: it is not deny-listed and holds
/// nothing that is.
fn check_remove(
    ws: &Workspace,
    rel: &RelPath,
    deny: &DenyList,
    budget: &mut u64,
) -> Result<(), SandboxError> {
    if let Some(pattern) = deny.matches(rel).or_else(|| deny.contains_anchored(rel)) {
        return Err(fs::deny_write(rel, pattern));
    }
    if lower_type(ws, rel)? == Some(FileType::Directory) {
        fs::check_tree(ws, rel, deny, budget)?;
    }
    Ok(())
}

fn collect(
    ws: &Workspace,
    dir: &OwnedFd,
    rel: &RelPath,
    deny: &DenyList,
    depth: usize,
    budget: &mut u64,
    out: &mut Vec<Change>,
) -> Result<(), SandboxError> {
    if depth >= fs::MAX_DEPTH {
        return Err(SandboxError::denied(
            "too_deep",
            format!("{rel} is nested deeper than {} levels", fs::MAX_DEPTH),
        ));
    }
    for (name, _) in fs::entries(dir, rel)? {
        let crel = fs::child_rel(rel, &name)?;
        if *budget == 0 {
            return Err(SandboxError::denied(
                "too_many_entries",
                "too many entries".into(),
            ));
        }
        *budget -= 1;
        let name = std::str::from_utf8(&name).unwrap_or_default();
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| SandboxError::io(crel.as_string(), e.into()))?;
        let lower = lower_type(ws, &crel)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::CharacterDevice if st.st_rdev == 0 => {
                // A whiteout: the call removed this path.
                check_remove(ws, &crel, deny, budget)?;
                out.push(Change::Remove(crel));
            }
            FileType::Directory => {
                refuse_write(&crel, deny)?;
                let sub = open_dir(dir.as_fd(), name, &crel)?;
                let replaced = is_opaque(&sub) || lower.is_some_and(|t| t != FileType::Directory);
                if replaced && lower.is_some() {
                    check_remove(ws, &crel, deny, budget)?;
                    out.push(Change::Remove(crel.clone()));
                }
                out.push(Change::Dir(crel.clone(), st.st_mode & 0o1777));
                collect(ws, &sub, &crel, deny, depth + 1, budget, out)?;
            }
            FileType::RegularFile => {
                refuse_write(&crel, deny)?;
                refuse_hard_link(ws, &crel)?;
                if lower == Some(FileType::Directory) {
                    check_remove(ws, &crel, deny, budget)?;
                    out.push(Change::Remove(crel.clone()));
                }
                out.push(Change::File {
                    rel: crel,
                    mode: st.st_mode & 0o1777,
                    size: st.st_size as u64,
                    times: rfs::Timestamps {
                        last_access: rfs::Timespec {
                            tv_sec: st.st_atime,
                            tv_nsec: st.st_atime_nsec as _,
                        },
                        last_modification: rfs::Timespec {
                            tv_sec: st.st_mtime,
                            tv_nsec: st.st_mtime_nsec as _,
                        },
                    },
                });
            }
            FileType::Symlink => {
                refuse_write(&crel, deny)?;
                if lower == Some(FileType::Directory) {
                    check_remove(ws, &crel, deny, budget)?;
                    out.push(Change::Remove(crel.clone()));
                }
                let target = rfs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| SandboxError::io(crel.as_string(), e.into()))?;
                out.push(Change::Symlink(crel, target.into_bytes()));
            }
            other => {
                return Err(SandboxError::denied(
                    "special_file",
                    format!(
                    "the call created {crel}, a {}; only files, directories and symlinks are kept",
                    super::path::kind_name(other)
                ),
                ))
            }
        }
    }
    Ok(())
}

fn apply(
    ws: &Workspace,
    upper: &OwnedFd,
    change: &Change,
    deny: &DenyList,
    max_entries: u64,
    out: &mut Committed,
) -> Result<(), SandboxError> {
    match change {
        Change::Remove(rel) => match fs::delete(ws, rel, true, deny, max_entries) {
            Ok(_) => out.removed += 1,
            Err(SandboxError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        },
        Change::Dir(rel, mode) => {
            if rel.is_root() {
                return Ok(());
            }
            let parent = ws.open_parent(rel, true)?;
            let name = rel.file_name().unwrap_or_default();
            match rfs::mkdirat(&parent, name, Mode::from_raw_mode(*mode)) {
                Ok(()) => {
                    let _ =
                        rfs::chmodat(&parent, name, Mode::from_raw_mode(*mode), AtFlags::empty());
                    out.dirs += 1;
                }
                Err(Errno::EXIST) => {
                    ws.resolve(rel, Want::Dir)?;
                }
                Err(e) => return Err(SandboxError::io(rel.as_string(), e.into())),
            }
        }
        Change::File {
            rel,
            mode,
            size,
            times,
        } => {
            let src = rfs::openat(
                upper,
                rel.as_string().as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
            let mut src = File::from(src);
            let opts = Replace {
                mode: Some(*mode),
                times: Some(times.clone()),
                sync: false,
                create_parents: true,
                overwrite: true,
            };
            fs::replace(ws, rel, deny, &opts, |dst| {
                std::io::copy(&mut src, dst).map(|_| ())
            })?;
            out.files += 1;
            out.bytes += size;
        }
        Change::Symlink(rel, target) => {
            fs::replace_symlink(ws, rel, target, deny)?;
            out.files += 1;
        }
    }
    Ok(())
}

/// `trusted.overlay.opaque = "y"`: the directory replaced whatever the workspace had.
fn is_opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 4];
    // SAFETY: fgetxattr into a stack buffer on our own fd.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n > 0 && buf[0] == b'y'
}

fn open_dir(dir: BorrowedFd<'_>, name: &str, rel: &RelPath) -> Result<OwnedFd, SandboxError> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::io(format!("staged {rel}"), e.into()))
}

/// A layer path for overlay's option parser (`\`, `,` and `:` are escaped).
fn escape_layer(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn fsopen(fstype: &str) -> Result<OwnedFd, SandboxError> {
    let name = CString::new(fstype).unwrap_or_default();
    // SAFETY: fsopen with a valid C string; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(SandboxError::io(
            format!("fsopen({fstype})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh fd returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fsconfig(fs: &OwnedFd, key: &str, value: &str) -> Result<(), SandboxError> {
    let k = CString::new(key).unwrap_or_default();
    let v = CString::new(value.as_bytes()).map_err(|_| {
        SandboxError::denied(
            "nul_byte",
            format!("{key} for the staging overlay contains a NUL byte"),
        )
    })?;
    // SAFETY: fsconfig(SET_STRING) with valid C strings on our fs-context fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(SandboxError::io(
            format!("staging: {key}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn fsmount(fs: &OwnedFd, attrs: u64) -> Result<OwnedFd, SandboxError> {
    // SAFETY: fsconfig(CMD_CREATE) then fsmount on our fs-context fd.
    let fd = unsafe {
        if libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        ) < 0
        {
            -1
        } else {
            libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
        }
    };
    if fd < 0 {
        return Err(SandboxError::io(
            "staging: creating the mount",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh fd returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_are_escaped() {
        assert_eq!(escape_layer(Path::new("/a,b:c\\d")), "/a\\,b\\:c\\\\d");
        assert_eq!(escape_layer(Path::new("/plain/path")), "/plain/path");
    }
}
