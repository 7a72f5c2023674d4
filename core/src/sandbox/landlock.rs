//! Landlock, through the raw syscalls.
//!
//! The ruleset is built **in the parent**, once, at start-up (it allocates and opens
//! paths); the child only calls `landlock_restrict_self(fd)` between fork and exec, which
//! is a single async-signal-safe syscall. Rights are an allowlist: whatever is not
//! granted below is denied for every access type the kernel's ABI can handle.
//!
//! ABI features used: filesystem rights (1), `REFER` (2), `TRUNCATE` (3), TCP
//! bind/connect (4), `IOCTL_DEV` (5), signal and abstract-unix-socket scoping (6).
//! With ABI ≥ 6 the ruleset is *fully enforced*; with 1–5 it is *partially enforced*
//! (the missing rights are reported and documented); without Landlock, *not enforced*.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::SandboxError;

/// The ABI at which every restriction Loom asks for exists.
pub const FULL_ABI: i32 = 6;

// Filesystem access rights (include/uapi/linux/landlock.h).
pub const EXECUTE: u64 = 1 << 0;
pub const WRITE_FILE: u64 = 1 << 1;
pub const READ_FILE: u64 = 1 << 2;
pub const READ_DIR: u64 = 1 << 3;
pub const REMOVE_DIR: u64 = 1 << 4;
pub const REMOVE_FILE: u64 = 1 << 5;
pub const MAKE_CHAR: u64 = 1 << 6;
pub const MAKE_DIR: u64 = 1 << 7;
pub const MAKE_REG: u64 = 1 << 8;
pub const MAKE_SOCK: u64 = 1 << 9;
pub const MAKE_FIFO: u64 = 1 << 10;
pub const MAKE_BLOCK: u64 = 1 << 11;
pub const MAKE_SYM: u64 = 1 << 12;
pub const REFER: u64 = 1 << 13;
pub const TRUNCATE: u64 = 1 << 14;
pub const IOCTL_DEV: u64 = 1 << 15;
// Network rights (ABI 4).
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
// Scopes (ABI 6).
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;

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

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

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
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (v >= 1).then_some(v as i32)
}

/// All filesystem rights the given ABI can handle.
fn fs_rights_for(abi: i32) -> u64 {
    let mut r = (1u64 << 13) - 1; // ABI 1: EXECUTE ..= MAKE_SYM
    if abi >= 2 {
        r |= REFER;
    }
    if abi >= 3 {
        r |= TRUNCATE;
    }
    if abi >= 5 {
        r |= IOCTL_DEV;
    }
    r
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
    attr: RulesetAttr,
    attr_size: usize,
    /// Every rule as (`O_PATH` fd, rights), kept to build per-call rulesets.
    rules: Vec<(OwnedFd, u64)>,
}

impl Ruleset {
    /// Builds the ruleset; `Ok(None)` when the kernel has no Landlock.
    pub fn build(spec: &Spec) -> Result<Option<Self>, SandboxError> {
        let Some(abi) = abi_version() else {
            return Ok(None);
        };
        let handled_fs = fs_rights_for(abi);
        let attr = RulesetAttr {
            handled_access_fs: handled_fs,
            handled_access_net: if abi >= 4 && !spec.network {
                NET_BIND_TCP | NET_CONNECT_TCP
            } else {
                0
            },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // Older kernels reject a struct larger than the one they know unless the extra
        // bytes are zero, but reject *non-zero* fields they do not know: pass the size
        // matching the ABI.
        let size = match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        let mut rs = Ruleset {
            fd: create_ruleset(&attr, size)?,
            abi,
            skipped: Vec::new(),
            attr,
            attr_size: size,
            rules: Vec::new(),
        };
        let dir_read = READ_FILE | READ_DIR;
        for p in &spec.read {
            rs.add(p, dir_read, handled_fs)?;
        }
        for p in &spec.exec {
            rs.add(p, READ_FILE | EXECUTE, handled_fs)?;
        }
        for p in &spec.read_write_files {
            rs.add(p, READ_FILE | WRITE_FILE | TRUNCATE, handled_fs)?;
        }
        for p in &spec.workspace {
            rs.add(p, WORKSPACE_RIGHTS, handled_fs)?;
        }
        Ok(Some(rs))
    }

    fn add(&mut self, path: &Path, rights: u64, handled: u64) -> Result<(), SandboxError> {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return Err(SandboxError::io(
                format!("landlock rule {}", path.display()),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        };
        // SAFETY: `c` is a valid NUL-terminated path; open returns a new fd or -1.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            self.skipped.push(path.to_path_buf());
            return Ok(());
        }
        // SAFETY: fresh fd owned by nobody else.
        let pfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: `pfd` is a valid fd and `st` a writable stat buffer.
        let is_dir = unsafe { libc::fstat(raw, &mut st) } == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        let mut allowed = rights & handled;
        if !is_dir {
            allowed &= FILE_RIGHTS;
        }
        add_rule(&self.fd, pfd.as_fd(), allowed)
            .map_err(|e| SandboxError::io(format!("landlock_add_rule {}", path.display()), e))?;
        self.rules.push((pfd, allowed));
        Ok(())
    }

    /// A new ruleset with every rule of this one plus [`WORKSPACE_RIGHTS`] beneath
    /// `dir` (the root of a call's staging overlay: a rule on the directory it is
    /// mounted over does not reach into the overlay, whose root hides it).
    pub fn with_workspace(&self, dir: BorrowedFd<'_>) -> Result<Ruleset, SandboxError> {
        let fd = create_ruleset(&self.attr, self.attr_size)?;
        for (pfd, allowed) in &self.rules {
            add_rule(&fd, pfd.as_fd(), *allowed)
                .map_err(|e| SandboxError::io("landlock_add_rule", e))?;
        }
        add_rule(&fd, dir, WORKSPACE_RIGHTS & self.attr.handled_access_fs)
            .map_err(|e| SandboxError::io("landlock_add_rule (staging overlay)", e))?;
        Ok(Ruleset {
            fd,
            abi: self.abi,
            skipped: Vec::new(),
            attr: self.attr,
            attr_size: self.attr_size,
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
            attr: RulesetAttr {
                handled_access_fs: 0,
                handled_access_net: 0,
                scoped: 0,
            },
            attr_size: 8,
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

fn create_ruleset(attr: &RulesetAttr, size: usize) -> Result<OwnedFd, SandboxError> {
    // SAFETY: `attr` is a valid, initialised landlock_ruleset_attr of at least `size`
    // bytes; the kernel copies it and returns a new fd or -1.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    if raw < 0 {
        return Err(SandboxError::io(
            "landlock_create_ruleset",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

fn add_rule(ruleset: &OwnedFd, dir: BorrowedFd<'_>, allowed: u64) -> std::io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: allowed,
        parent_fd: dir.as_raw_fd(),
    };
    // SAFETY: `attr` is a valid landlock_path_beneath_attr with an open fd; the ruleset
    // fd is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
