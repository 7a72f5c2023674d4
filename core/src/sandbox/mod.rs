//! OS-level confinement: paths beneath a root, process limits, Landlock, seccomp.
//!
//! * [`path`]: resolving tool paths beneath the workspace root (openat2 /
//!   `O_NOFOLLOW` walk), never by string comparison.
//! * [`deny`]: the write deny list (`.git`, `.env*`, shell rc files, ...).
//! * [`fs`]: reads, atomic writes, listing and deleting on top of [`path`]; `walk`: bounded
//!   tree walks (re-exported from `fs`).
//! * [`process`]: running an allowlisted binary in a pid namespace with rlimits,
//!   `no_new_privs`, no capabilities, a [`landlock`] ruleset and a [`seccomp`] filter,
//!   everything but the workspace read-only;
//!   ([`process`] builds on `spec` — limits, read paths, what is reported as enforced —
//!   and `probe`, what the kernel allows);
//! * [`staging`]: a process's writes to the workspace land in an overlay and are
//!   checked against the deny list and committed after it exits; [`stock`] makes a
//!   call's overlay and ruleset ahead of the call.
//!
//! Nothing here touches PyO3; every function is blocking and thread-safe.

mod child;
pub mod deny;
pub mod fs;
pub mod landlock;
pub mod path;
mod probe;
pub mod process;
mod sched;
pub mod seccomp;
mod spawn;
mod spec;
pub mod staging;
pub mod stock;
mod sys;
mod walk;
mod warm;

/// A refusal or failure of a sandboxed operation.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A rule refused the operation; `rule` is its stable name (see `docs/security.md`).
    #[error("{reason}")]
    Denied {
        /// The rule, e.g. `absolute_path`, `symlink`, `deny_write`, `landlock_required`.
        rule: &'static str,
        /// What was refused and why.
        reason: String,
    },
    /// The path does not exist.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The normalised path.
        path: String,
    },
    /// A directory was needed.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The normalised path.
        path: String,
    },
    /// A file was needed.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// The normalised path.
        path: String,
    },
    /// The target exists and overwriting was not asked for.
    #[error("{path}: already exists")]
    Exists {
        /// The normalised path.
        path: String,
    },
    /// A directory is not empty (and a recursive delete was not asked for).
    #[error("{path}: directory not empty (pass recursive=true to delete it with its contents)")]
    NotEmpty {
        /// The normalised path.
        path: String,
    },
    /// An operating-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SandboxError {
    /// A refusal by `rule`.
    pub fn denied(rule: &'static str, reason: String) -> Self {
        Self::Denied { rule, reason }
    }

    /// An OS error while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The rule name if this is a refusal.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Self::Denied { rule, .. } => Some(rule),
            _ => None,
        }
    }
}
