//! Path confinement beneath a workspace root.
//!
//! A requested path is first checked lexically ([`RelPath::parse`]): NUL bytes, absolute
//! paths, over-long paths and `..` that climbs above the root are refused without touching
//! the filesystem. What is left is a list of plain components with no `.`/`..` in it,
//! which is then opened **relative to a directory fd of the root** by the kernel:
//!
//! * `openat2(root, path, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//!   where the kernel has it (5.6+), otherwise
//! * a component-wise walk, each step `openat(dir, name, O_NOFOLLOW | O_DIRECTORY)`.
//!
//! No symlink is ever followed, anywhere in the path, whether it points in or out: with no
//! symlinks and no `..`, the lexical path *is* the physical path, so the deny lists (which
//! are matched on the lexical path) cannot be sidestepped through an alias, and nothing
//! that is swapped in between a check and a use can redirect an open outside the root —
//! every open is relative to an fd we hold, with `O_NOFOLLOW` semantics.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::SandboxError;

/// Longest path accepted from a tool call, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// A lexically checked path relative to the workspace root: plain components only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelPath {
    components: Vec<String>,
}

impl RelPath {
    /// Checks a requested path and normalises it.
    ///
    /// Refused (with the rule name): `nul_byte`, `path_too_long`, `absolute_path`,
    /// `parent_escape` (a `..` that would climb above the root). `.` and empty components
    /// are dropped; a `..` that stays inside is applied lexically — sound because no
    /// symlink is ever followed, so `a/..` is the directory that holds `a`.
    pub fn parse(input: &str) -> Result<Self, SandboxError> {
        if input.contains('\0') {
            return Err(SandboxError::denied(
                "nul_byte",
                "path contains a NUL byte".to_string(),
            ));
        }
        if input.len() > MAX_PATH_BYTES {
            return Err(SandboxError::denied(
                "path_too_long",
                format!(
                    "path is {} bytes long; the limit is {MAX_PATH_BYTES}",
                    input.len()
                ),
            ));
        }
        if input.starts_with('/') {
            return Err(SandboxError::denied(
                "absolute_path",
                format!("{input:?} is absolute; paths are relative to the workspace root"),
            ));
        }
        let mut components: Vec<String> = Vec::new();
        for comp in input.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if components.pop().is_none() {
                        return Err(SandboxError::denied(
                            "parent_escape",
                            format!("{input:?} climbs above the workspace root"),
                        ));
                    }
                }
                name => {
                    if name.len() > MAX_NAME_BYTES {
                        return Err(SandboxError::denied(
                            "path_too_long",
                            format!(
                                "a component of the path is {} bytes long; the limit is {MAX_NAME_BYTES}",
                                name.len()
                            ),
                        ));
                    }
                    components.push(name.to_string());
                }
            }
        }
        Ok(Self { components })
    }

    /// The workspace root itself.
    pub fn root() -> Self {
        Self {
            components: Vec::new(),
        }
    }

    /// True for the root itself (`""`, `"."`, `"a/.."`).
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The normalised components.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The last component, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The parent (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        let mut components = self.components.clone();
        components.pop();
        RelPath { components }
    }

    /// This path with one more component (which must be a plain name).
    pub fn join(&self, name: &str) -> RelPath {
        let mut components = self.components.clone();
        components.push(name.to_string());
        RelPath { components }
    }

    /// The normalised path as `a/b/c` (`.` for the root).
    pub fn as_string(&self) -> String {
        if self.components.is_empty() {
            ".".to_string()
        } else {
            self.components.join("/")
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.as_string())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// How paths are resolved beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
    Openat2,
    /// Component-wise `openat(.., O_NOFOLLOW)` from the root fd (kernels before 5.6).
    Walk,
}

impl Resolver {
    /// The name reported in spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolver::Openat2 => "openat2",
            Resolver::Walk => "nofollow_walk",
        }
    }
}

/// The kind of object a resolved path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A regular file or a directory (never a device, FIFO, socket or symlink).
    Any,
}

/// A workspace root held open as a directory fd; every path is resolved beneath it.
#[derive(Debug)]
pub struct Workspace {
    root: OwnedFd,
    root_path: PathBuf,
    resolver: Resolver,
}

impl Workspace {
    /// Opens the root (which must be an existing directory) and picks the resolver.
    ///
    /// The configured root is trusted (it comes from `loom.toml`), so it is canonicalised
    /// with symlinks followed; everything beneath it is not.
    pub fn open(root: &Path) -> Result<Self, SandboxError> {
        let root_path = std::fs::canonicalize(root)
            .map_err(|e| SandboxError::io(format!("workspace root {}", root.display()), e))?;
        let fd = rfs::open(
            &root_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            SandboxError::io(format!("workspace root {}", root_path.display()), e.into())
        })?;
        let resolver = if openat2_works(fd.as_fd()) {
            Resolver::Openat2
        } else {
            Resolver::Walk
        };
        Ok(Self {
            root: fd,
            root_path,
            resolver,
        })
    }

    /// Another handle of the same root (the fd duplicated, not the path opened again).
    pub fn try_clone(&self) -> Result<Self, SandboxError> {
        Ok(Self {
            root: self
                .root
                .try_clone()
                .map_err(|e| SandboxError::io("workspace root (dup)", e))?,
            root_path: self.root_path.clone(),
            resolver: self.resolver,
        })
    }

    /// Forces a resolver (tests run the escape corpus through both).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The resolver in use.
    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// The canonical absolute path of the root (for `HOME`/Landlock; never used to
    /// resolve tool paths).
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The root directory fd.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens `rel` beneath the root with `flags` (`O_CLOEXEC`/`O_NOFOLLOW` are added).
    ///
    /// Errors: `symlink` (a symlink anywhere in the path), `escape` (the kernel saw an
    /// escape attempt), `NotFound`, or an I/O error.
    pub fn open_raw(
        &self,
        rel: &RelPath,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, SandboxError> {
        let mut flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        // openat2 rejects (EINVAL) any flag beside O_DIRECTORY/O_NOFOLLOW/O_CLOEXEC with O_PATH.
        if !flags.contains(OFlags::PATH) {
            flags |= OFlags::NOCTTY;
        }
        match self.resolver {
            Resolver::Openat2 => self.open_openat2(rel, flags, mode),
            Resolver::Walk => self.open_walk(rel, flags, mode),
        }
    }

    fn open_openat2(
        &self,
        rel: &RelPath,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, SandboxError> {
        let path = rel.as_string();
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        // EAGAIN: the kernel saw a concurrent rename/mount while resolving; retry a little.
        let mut attempts = 0;
        loop {
            match rfs::openat2(&self.root, path.as_str(), flags, mode, resolve) {
                Ok(fd) => return Ok(fd),
                Err(Errno::AGAIN) if attempts < 8 => attempts += 1,
                Err(e) => return Err(classify(rel, e)),
            }
        }
    }

    fn open_walk(&self, rel: &RelPath, flags: OFlags, mode: Mode) -> Result<OwnedFd, SandboxError> {
        let comps = rel.components();
        let Some((last, dirs)) = comps.split_last() else {
            // The root itself: reopen "." relative to the root fd.
            return rfs::openat(&self.root, ".", flags, mode).map_err(|e| classify(rel, e));
        };
        let mut cur: Option<OwnedFd> = None;
        for name in dirs {
            let dir = cur.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let next = rfs::openat(
                dir,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| classify_walk(dir, name, rel, e))?;
            cur = Some(next);
        }
        let dir = cur.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
        let fd = rfs::openat(dir, last.as_str(), flags, mode)
            .map_err(|e| classify_walk(dir, last, rel, e))?;
        // O_PATH|O_NOFOLLOW opens a symlink itself instead of failing: refuse it here.
        if flags.contains(OFlags::PATH) {
            let st = rfs::fstat(&fd).map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return Err(symlink_denial(rel));
            }
        }
        Ok(fd)
    }

    /// Resolves `rel` to an `O_PATH` fd and checks its type; devices, FIFOs, sockets and
    /// symlinks are refused with rule `special_file`/`symlink`.
    pub fn resolve(&self, rel: &RelPath, want: Want) -> Result<(OwnedFd, rfs::Stat), SandboxError> {
        // No O_DIRECTORY: with O_PATH|O_NOFOLLOW a trailing symlink is opened as itself
        // (openat2 documents this even with RESOLVE_NO_SYMLINKS), so `check_type` can name
        // it instead of reporting ENOTDIR.
        let fd = self
            .open_raw(rel, OFlags::PATH, Mode::empty())
            .map_err(|e| match e {
                SandboxError::Io { ref source, .. }
                    if source.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    SandboxError::NotADirectory {
                        path: rel.as_string(),
                    }
                }
                other => other,
            })?;
        let st = rfs::fstat(&fd).map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
        check_type(rel, &st, want)?;
        Ok((fd, st))
    }

    /// Opens a regular file for reading. The type is checked on an `O_PATH` fd first, so
    /// a device or FIFO in the workspace is never opened for real; the second open is
    /// compared with the first (device + inode) so a swap in between is detected.
    pub fn open_file_read(&self, rel: &RelPath) -> Result<(OwnedFd, rfs::Stat), SandboxError> {
        let (_probe, st) = self.resolve(rel, Want::File)?;
        let fd = self.open_raw(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let st2 = rfs::fstat(&fd).map_err(|e| SandboxError::io(rel.as_string(), e.into()))?;
        check_type(rel, &st2, Want::File)?;
        if st.st_dev != st2.st_dev || st.st_ino != st2.st_ino {
            return Err(SandboxError::denied(
                "race",
                format!("{rel} changed while it was being opened"),
            ));
        }
        Ok((fd, st2))
    }

    /// Opens a directory for listing (`O_RDONLY | O_DIRECTORY`).
    pub fn open_dir_read(&self, rel: &RelPath) -> Result<OwnedFd, SandboxError> {
        let (_probe, _st) = self.resolve(rel, Want::Dir)?;
        self.open_raw(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| match e {
                SandboxError::Io { ref source, .. }
                    if source.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    SandboxError::NotADirectory {
                        path: rel.as_string(),
                    }
                }
                other => other,
            })
    }

    /// Opens (and with `create`, makes) the parent directory of `rel`, beneath the root,
    /// without following symlinks. Returns the directory fd.
    pub fn open_parent(&self, rel: &RelPath, create: bool) -> Result<OwnedFd, SandboxError> {
        let parent = rel.parent();
        if !create {
            return self.open_dir_path(&parent);
        }
        // Make missing components one at a time, each relative to the fd of the one above.
        let mut cur = self.open_dir_path(&RelPath::root())?;
        let mut sofar = RelPath::root();
        for name in parent.components() {
            sofar = sofar.join(name);
            match rfs::mkdirat(&cur, name.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(classify(&sofar, e)),
            }
            cur = rfs::openat(
                &cur,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| classify_walk(cur.as_fd(), name, &sofar, e))?;
        }
        Ok(cur)
    }

    fn open_dir_path(&self, rel: &RelPath) -> Result<OwnedFd, SandboxError> {
        self.resolve(rel, Want::Dir).map(|(fd, _)| fd)
    }
}

/// Refuses anything that is not what the caller wants; devices, FIFOs and sockets are
/// always refused.
pub fn check_type(rel: &RelPath, st: &rfs::Stat, want: Want) -> Result<(), SandboxError> {
    match (FileType::from_raw_mode(st.st_mode), want) {
        (FileType::RegularFile, Want::File | Want::Any) => Ok(()),
        (FileType::Directory, Want::Dir | Want::Any) => Ok(()),
        (FileType::RegularFile, Want::Dir) => Err(SandboxError::NotADirectory {
            path: rel.as_string(),
        }),
        (FileType::Directory, Want::File) => Err(SandboxError::IsADirectory {
            path: rel.as_string(),
        }),
        (FileType::Symlink, _) => Err(symlink_denial(rel)),
        (other, _) => Err(SandboxError::denied(
            "special_file",
            format!(
                "{rel} is a {}; only regular files and directories are allowed",
                kind_name(other)
            ),
        )),
    }
}

/// Human name of a file type.
pub fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "unknown file type",
    }
}

fn symlink_denial(rel: &RelPath) -> SandboxError {
    SandboxError::denied(
        "symlink",
        format!("{rel} goes through a symbolic link; symlinks are never followed"),
    )
}

fn classify(rel: &RelPath, e: Errno) -> SandboxError {
    match e {
        Errno::LOOP => symlink_denial(rel),
        Errno::XDEV => SandboxError::denied(
            "escape",
            format!("{rel} resolves outside the workspace root"),
        ),
        Errno::NOENT => SandboxError::NotFound {
            path: rel.as_string(),
        },
        Errno::NAMETOOLONG => SandboxError::denied("path_too_long", format!("{rel} is too long")),
        other => SandboxError::io(rel.as_string(), other.into()),
    }
}

/// In the walk, `O_NOFOLLOW | O_DIRECTORY` on a symlink reports `ENOTDIR`; look at the
/// entry (without following it) to give the right reason.
fn classify_walk(dir: BorrowedFd<'_>, name: &str, rel: &RelPath, e: Errno) -> SandboxError {
    if matches!(e, Errno::NOTDIR | Errno::LOOP) {
        if let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return symlink_denial(rel);
            }
        }
    }
    classify(rel, e)
}

/// Probes `openat2` once: ENOSYS (or a seccomp'd EPERM) means "use the walk".
fn openat2_works(root: BorrowedFd<'_>) -> bool {
    rfs::openat2(
        root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .is_ok()
}

/// Name of a directory entry as UTF-8 (lossy) for reporting.
pub fn display_name(name: &[u8]) -> String {
    OsStr::from_bytes(name).to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(input: &str) -> Option<&'static str> {
        match RelPath::parse(input) {
            Ok(_) => None,
            Err(SandboxError::Denied { rule, .. }) => Some(rule),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn lexical_refusals() {
        assert_eq!(rule("/etc/passwd"), Some("absolute_path"));
        assert_eq!(rule("/proc/self/root/etc/passwd"), Some("absolute_path"));
        assert_eq!(rule("../x"), Some("parent_escape"));
        assert_eq!(rule("a/../../x"), Some("parent_escape"));
        assert_eq!(rule("./.././x"), Some("parent_escape"));
        assert_eq!(rule("a\0b"), Some("nul_byte"));
        assert_eq!(rule(&"a/".repeat(3000)), Some("path_too_long"));
        assert_eq!(rule(&"x".repeat(256)), Some("path_too_long"));
        assert_eq!(rule("x".repeat(255).as_str()), None);
    }

    #[test]
    fn normalisation() {
        let p = RelPath::parse("a/./b//c/../d/").unwrap();
        assert_eq!(p.components(), ["a", "b", "d"]);
        assert_eq!(p.as_string(), "a/b/d");
        assert!(RelPath::parse("").unwrap().is_root());
        assert!(RelPath::parse("a/..").unwrap().is_root());
        assert_eq!(RelPath::parse(".").unwrap().as_string(), ".");
        // Look-alikes are ordinary names.
        let p = RelPath::parse("\u{2024}\u{2024}/etc").unwrap();
        assert_eq!(p.components().len(), 2);
        let p = RelPath::parse("..\u{ff0f}etc\u{ff0f}passwd").unwrap();
        assert_eq!(p.components().len(), 1);
        let p = RelPath::parse("..\\..\\etc").unwrap();
        assert_eq!(p.components().len(), 1);
    }
}
