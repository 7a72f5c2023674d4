//! What a [`super::process::Policy`] is built from (limits, read paths, the child's
//! environment) and what it reports it enforces.

use std::path::PathBuf;

use super::landlock::{self, Status};

/// Resource limits of a sandboxed process (each applies per process; see `processes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_CPU`, seconds of CPU time.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS`, bytes of address space.
    pub address_space_bytes: u64,
    /// Processes (and threads) alive at once in the sandbox's pid namespace (the
    /// namespace's `pid_max`, Linux 6.14+; root only).
    pub processes: u64,
    /// `RLIMIT_FSIZE`, largest file the process may write, bytes.
    pub file_size_bytes: u64,
    /// `RLIMIT_NOFILE`, open file descriptors.
    pub open_files: u64,
    /// Bytes one call may write to the workspace in all (its staging tmpfs), including
    /// full copies of the existing files it modifies.
    pub write_bytes: u64,
    /// Files, directories and links one call may create or modify.
    pub write_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_seconds: 60,
            address_space_bytes: 4 << 30,
            processes: 64,
            file_size_bytes: 256 << 20,
            open_files: 256,
            write_bytes: 512 << 20,
            write_files: 10_000,
        }
    }
}

/// Read-only paths every sandboxed binary gets (beyond its own executable): the system
/// trees binaries and libraries live in, a curated part of `/etc` (not all of it: root
/// can read `/etc/shadow` even without capabilities), and harmless `/dev` nodes.
pub const SYSTEM_READ_PATHS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/locale.alias",
    "/etc/locale.conf",
    "/etc/default/locale",
    "/etc/magic",
    "/etc/magic.mime",
    "/etc/mime.types",
    "/etc/terminfo",
    "/etc/os-release",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// Extra read-only paths when network is enabled (name resolution, CA certificates).
pub const NETWORK_READ_PATHS: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
];

/// What a [`Policy`] is built from.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The workspace (canonical path): the only writable tree.
    pub workspace: PathBuf,
    /// Canonical paths of the binaries that may be executed.
    pub executables: Vec<PathBuf>,
    /// Extra read-only paths (`[tools.shell] read_paths`).
    pub read_paths: Vec<PathBuf>,
    /// Allow network sockets.
    pub network: bool,
    /// Resource limits.
    pub limits: Limits,
    /// The child's whole environment, `KEY=value`.
    pub env: Vec<(String, String)>,
    /// Bytes of stdout and of stderr kept, each.
    pub max_output_bytes: usize,
    /// Fail closed unless Landlock is fully enforced and seccomp is on.
    pub require: bool,
}

/// What is actually enforced on every process (reported in each result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// Landlock level.
    pub landlock: Status,
    /// The kernel's Landlock ABI, if any.
    pub landlock_abi: Option<i32>,
    /// Seccomp filter installed.
    pub seccomp: bool,
    /// Network sockets allowed.
    pub network: bool,
    /// Runs in its own pid namespace.
    pub pid_namespace: bool,
    /// Kernel-enforced cap on processes alive at once (per-namespace `pid_max`), if any.
    pub process_limit: Option<u64>,
    /// Runs in a private mount namespace where everything but the workspace is
    /// read-only and `nosuid`, and writes to the workspace are staged in an overlay and
    /// committed after the call, once checked ([`super::staging`]).
    pub staged_writes: bool,
    /// All capabilities dropped (bounding set, permitted, effective, ambient) — true
    /// whenever the caller had any.
    pub capabilities_dropped: bool,
    /// `PR_SET_NO_NEW_PRIVS` (always).
    pub no_new_privs: bool,
}

impl Enforcement {
    /// As JSON, for results and spans.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "landlock": self.landlock.as_str(),
            "landlock_abi": self.landlock_abi,
            "landlock_missing": landlock::missing_features(self.landlock_abi),
            "seccomp": self.seccomp,
            "network": self.network,
            "pid_namespace": self.pid_namespace,
            "process_limit": self.process_limit,
            "staged_writes": self.staged_writes,
            "capabilities_dropped": self.capabilities_dropped,
            "no_new_privs": self.no_new_privs,
        })
    }
}
