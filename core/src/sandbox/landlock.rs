//! Landlock rulesets, built with the `landlock` crate (maintained by Landlock's authors).
//!
//! The ruleset is built **in the parent**, once, at start-up (it allocates and opens
//! paths); the child only calls `landlock_restrict_self(fd)` between fork and exec, which
//! is a single async-signal-safe syscall, so the crate hands its ruleset fd over
//! (`Option<OwnedFd>::from(RulesetCreated)`) instead of calling `restrict_self()`. Rights
//! are an allowlist: whatever is not granted below is denied for every access type the
//! kernel's ABI can handle.
//!
//! ABI features used: filesystem rights (1), `REFER` (2), `TRUNCATE` (3), TCP
//! bind/connect (4), `IOCTL_DEV` (5), signal and abstract-unix-socket scoping (6).
//! With ABI ≥ 6 the ruleset is *fully enforced*; with 1–5 it is *partially enforced*
//! (the missing rights are reported and documented); without Landlock, *not enforced*.
//! Loom asks for exactly what the running kernel's ABI supports, as a hard requirement:
//! the crate never silently drops a right Loom believes enforced.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, Scope, ABI,
};

use super::SandboxError;

/// The ABI at which every restriction Loom asks for exists.
pub const FULL_ABI: i32 = 6;

/// Filesystem rights, as the kernel numbers them (include/uapi/linux/landlock.h).
pub const EXECUTE: u64 = AccessFs::Execute as u64;
pub const WRITE_FILE: u64 = AccessFs::WriteFile as u64;
pub const READ_FILE: u64 = AccessFs::ReadFile as u64;
pub const READ_DIR: u64 = AccessFs::ReadDir as u64;
pub const REMOVE_DIR: u64 = AccessFs::RemoveDir as u64;
pub const REMOVE_FILE: u64 = AccessFs::RemoveFile as u64;
pub const MAKE_DIR: u64 = AccessFs::MakeDir as u64;
pub const MAKE_REG: u64 = AccessFs::MakeReg as u64;
pub const REFER: u64 = AccessFs::Refer as u64;
pub const TRUNCATE: u64 = AccessFs::Truncate as u64;
pub const IOCTL_DEV: u64 = AccessFs::IoctlDev as u64;

/// Rights that apply to files (a rule on a non-directory may only hold these).
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

/// Rights granted beneath the workspace: read, write, create files and directories,
/// delete, rename within it. Not granted: execute, device/FIFO/socket/symlink creation,
/// device ioctls.
pub const WORKSPACE_RIGHTS: u64 = READ_FILE
    | READ_DIR
    | WRITE_FILE
    | TRUNCATE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | REFER;

/// How much of the requested ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every restriction (ABI ≥ 6).
    FullyEnforced,
    /// Some restrictions; the kernel's ABI lacks the rest.
    PartiallyEnforced,
    /// No Landlock at all.
    NotEnforced,
}

impl Status {
    /// The name reported in results and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::FullyEnforced => "fully_enforced",
            Status::PartiallyEnforced => "partially_enforced",
            Status::NotEnforced => "not_enforced",
        }
    }

    fn for_abi(abi: Option<i32>) -> Self {
        match abi {
            Some(v) if v >= FULL_ABI => Status::FullyEnforced,
            Some(v) if v >= 1 => Status::PartiallyEnforced,
            _ => Status::NotEnforced,
        }
    }
}

/// The kernel's Landlock ABI version, or `None` if Landlock is unavailable (not built,
/// not enabled at boot, or filtered by an outer seccomp policy).
pub fn abi_version() -> Option<i32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns an integer.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    (v >= 1).then_some(v as i32)
}

/// The crate's name for an ABI level, capped at the one Loom needs (later levels add
/// nothing Loom asks for).
fn abi_level(abi: i32) -> ABI {
    match abi {
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

/// What a ruleset handles: every right the ABI knows (network only when it is off).
#[derive(Debug, Clone, Copy)]
struct Handled {
    fs: BitFlags<AccessFs>,
    net: BitFlags<AccessNet>,
    scope: BitFlags<Scope>,
}

impl Handled {
    fn for_abi(abi: i32, network: bool) -> Self {
        let level = abi_level(abi);
        Handled {
            fs: AccessFs::from_all(level),
            net: if network {
                BitFlags::empty()
            } else {
                AccessNet::from_all(level)
            },
            scope: Scope::from_all(level),
        }
    }

    /// A new, empty ruleset handling these rights.
    fn create(&self) -> Result<RulesetCreated, SandboxError> {
        let mut r = landlock::Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(self.fs)
            .map_err(ruleset_error("landlock ruleset (filesystem rights)"))?;
        if !self.net.is_empty() {
            r = r
                .handle_access(self.net)
                .map_err(ruleset_error("landlock ruleset (network rights)"))?;
        }
        if !self.scope.is_empty() {
            r = r
                .scope(self.scope)
                .map_err(ruleset_error("landlock ruleset (scopes)"))?;
        }
        r.create().map_err(ruleset_error("landlock_create_ruleset"))
    }
}

fn ruleset_error(context: &'static str) -> impl Fn(RulesetError) -> SandboxError {
    move |e| SandboxError::io(context, std::io::Error::other(e.to_string()))
}

fn add_rule(
    ruleset: RulesetCreated,
    dir: BorrowedFd<'_>,
    allowed: u64,
) -> Result<RulesetCreated, RulesetError> {
    ruleset.add_rule(PathBeneath::new(
        dir,
        BitFlags::<AccessFs>::from_bits_truncate(allowed),
    ))
}

/// The crate's ruleset, as the fd the child restricts itself with.
fn into_fd(ruleset: RulesetCreated) -> Result<OwnedFd, SandboxError> {
    Option::<OwnedFd>::from(ruleset).ok_or_else(|| {
        SandboxError::io(
            "landlock_create_ruleset",
            std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        )
    })
}

/// What the ruleset grants.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Directories (or files) readable, hierarchies included: `/usr`, `/lib*`, ...
    pub read: Vec<PathBuf>,
    /// Files readable and executable: the allowlisted binaries and their interpreters.
    pub exec: Vec<PathBuf>,
    /// Files readable and writable (not creatable): `/dev/null`.
    pub read_write_files: Vec<PathBuf>,
    /// Hierarchies with [`WORKSPACE_RIGHTS`]: the workspace.
    pub workspace: Vec<PathBuf>,
    /// Leave TCP bind/connect unrestricted.
    pub network: bool,
}

/// A ruleset built at start-up; the child restricts itself with its fd.
#[derive(Debug)]
pub struct Ruleset {
    fd: OwnedFd,
    abi: i32,
    /// Paths from the spec that did not exist (skipped).
    pub skipped: Vec<PathBuf>,
    handled: Option<Handled>,
    /// Every rule as (`O_PATH` fd, rights), kept to build per-call rulesets.
    rules: Vec<(OwnedFd, u64)>,
}

impl Ruleset {
    /// Builds the ruleset; `Ok(None)` when the kernel has no Landlock.
    pub fn build(spec: &Spec) -> Result<Option<Self>, SandboxError> {
        let Some(abi) = abi_version() else {
            return Ok(None);
        };
        let handled = Handled::for_abi(abi, spec.network);
        let handled_fs = handled.fs.bits();
        let mut skipped = Vec::new();
        let mut rules: Vec<(OwnedFd, u64)> = Vec::new();
        let dir_read = READ_FILE | READ_DIR;
        let groups: [(&[PathBuf], u64); 4] = [
            (&spec.read, dir_read),
            (&spec.exec, READ_FILE | EXECUTE),
            (&spec.read_write_files, READ_FILE | WRITE_FILE | TRUNCATE),
            (&spec.workspace, WORKSPACE_RIGHTS),
        ];
        for (paths, rights) in groups {
            for p in paths {
                match open_rule(p, rights & handled_fs)? {
                    Some(rule) => rules.push(rule),
                    None => skipped.push(p.clone()),
                }
            }
        }
        let mut created = handled.create()?;
        for (pfd, allowed) in &rules {
            created = add_rule(created, pfd.as_fd(), *allowed)
                .map_err(ruleset_error("landlock_add_rule"))?;
        }
        Ok(Some(Ruleset {
            fd: into_fd(created)?,
            abi,
            skipped,
            handled: Some(handled),
            rules,
        }))
    }

    /// A new ruleset with every rule of this one plus [`WORKSPACE_RIGHTS`] beneath
    /// `dir` (the root of a call's staging overlay: a rule on the directory it is
    /// mounted over does not reach into the overlay, whose root hides it).
    pub fn with_workspace(&self, dir: BorrowedFd<'_>) -> Result<Ruleset, SandboxError> {
        let handled = self.handled.ok_or_else(|| {
            SandboxError::io(
                "landlock ruleset",
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        let mut created = handled.create()?;
        for (pfd, allowed) in &self.rules {
            created = add_rule(created, pfd.as_fd(), *allowed)
                .map_err(ruleset_error("landlock_add_rule"))?;
        }
        created = add_rule(created, dir, WORKSPACE_RIGHTS & handled.fs.bits())
            .map_err(ruleset_error("landlock_add_rule (staging overlay)"))?;
        Ok(Ruleset {
            fd: into_fd(created)?,
            abi: self.abi,
            skipped: Vec::new(),
            handled: Some(handled),
            rules: Vec::new(),
        })
    }

    /// A "ruleset" whose fd is not a Landlock ruleset (tests of the fail-closed path).
    #[cfg(test)]
    pub(crate) fn bogus() -> Self {
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        Self {
            fd,
            abi: FULL_ABI,
            skipped: Vec::new(),
            handled: None,
            rules: Vec::new(),
        }
    }

    /// The kernel's ABI version this ruleset was built for.
    pub fn abi(&self) -> i32 {
        self.abi
    }

    /// Enforcement level.
    pub fn status(&self) -> Status {
        Status::for_abi(Some(self.abi))
    }

    /// The ruleset fd (the child passes it to `landlock_restrict_self`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An `O_PATH` fd for `path` and the rights a rule on it may hold (`None`: absent).
fn open_rule(path: &Path, rights: u64) -> Result<Option<(OwnedFd, u64)>, SandboxError> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Err(SandboxError::io(
            format!("landlock rule {}", path.display()),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    };
    // SAFETY: `c` is a valid NUL-terminated path; open returns a new fd or -1.
    let raw = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if raw < 0 {
        return Ok(None);
    }
    // SAFETY: fresh fd owned by nobody else.
    let pfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut st: libc::stat = unsafe_zeroed_stat();
    // SAFETY: `pfd` is a valid fd and `st` a writable stat buffer.
    let is_dir = unsafe { libc::fstat(pfd.as_raw_fd(), &mut st) } == 0
        && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
    let allowed = if is_dir { rights } else { rights & FILE_RIGHTS };
    Ok(Some((pfd, allowed)))
}

/// The status when no ruleset could be built.
pub fn status_without_ruleset() -> Status {
    Status::NotEnforced
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// What the missing ABI levels leave unenforced, for reports and docs.
pub fn missing_features(abi: Option<i32>) -> Vec<&'static str> {
    let Some(abi) = abi else {
        return vec!["landlock"];
    };
    let mut out = Vec::new();
    if abi < 2 {
        out.push("refer (cross-directory renames are refused outright)");
    }
    if abi < 3 {
        out.push("truncate");
    }
    if abi < 4 {
        out.push("tcp_bind_connect");
    }
    if abi < 5 {
        out.push("ioctl_dev");
    }
    if abi < 6 {
        out.push("scope_signal_abstract_unix");
    }
    out
}

/// Reads `PT_INTERP` (the ELF program interpreter, e.g. `/lib64/ld-linux-x86-64.so.2`)
/// or a `#!` interpreter from an executable, so it can be granted `EXECUTE` too.
pub fn interpreter_of(path: &Path) -> Option<PathBuf> {
    let data = std::fs::read(path).ok()?;
    if let Some(rest) = data.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next()?;
        let interp = line
            .split(|b| b.is_ascii_whitespace())
            .find(|s| !s.is_empty())?;
        return Some(PathBuf::from(std::ffi::OsStr::from_bytes(interp)));
    }
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return None;
    }
    let le = data[5] == 1;
    let u16at = |o: usize| -> Option<u64> {
        let b: [u8; 2] = data.get(o..o + 2)?.try_into().ok()?;
        Some(u64::from(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let is64 = data[4] == 2;
    let (phoff, phentsize, phnum) = if is64 {
        (u64at(32)?, u16at(54)?, u16at(56)?)
    } else {
        (u32at(28)?, u16at(42)?, u16at(44)?)
    };
    for i in 0..phnum {
        let base = usize::try_from(phoff + i * phentsize).ok()?;
        if u32at(base)? != 3 {
            continue; // PT_INTERP == 3
        }
        let (off, size) = if is64 {
            (u64at(base + 8)?, u64at(base + 32)?)
        } else {
            (u32at(base + 4)?, u32at(base + 16)?)
        };
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        let raw = data.get(start..end)?;
        let raw = raw.split(|&b| b == 0).next()?;
        return Some(PathBuf::from(std::ffi::OsStr::from_bytes(raw)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_elf_interpreter_of_cat() {
        let cat = std::fs::canonicalize("/bin/cat").unwrap();
        let interp = interpreter_of(&cat).expect("cat is dynamically linked");
        assert!(interp.to_string_lossy().contains("ld-"), "{interp:?}");
        assert!(interp.exists());
    }

    #[test]
    fn status_levels() {
        assert_eq!(Status::for_abi(None), Status::NotEnforced);
        assert_eq!(Status::for_abi(Some(3)), Status::PartiallyEnforced);
        assert_eq!(Status::for_abi(Some(6)), Status::FullyEnforced);
        assert_eq!(Status::for_abi(Some(7)), Status::FullyEnforced);
        assert_eq!(missing_features(Some(7)), Vec::<&str>::new());
        assert!(missing_features(Some(3)).contains(&"tcp_bind_connect"));
    }
}
