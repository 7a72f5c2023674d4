//! Configuration of the native tools, mirroring `loom.toml`:
//!
//! ```toml
//! [workspace]
//! root = "./workspace"
//!
//! [sandbox]
//! require = false          # true: refuse system:shell unless Landlock+seccomp are fully on
//!
//! [tools.fs]
//! deny_write = []          # added to the mandatory list (.git, .env, ...)
//! deny_read = [".env", ".env.*"]
//! max_read_bytes = 1048576
//!
//! [tools.shell]
//! allow = ["ls", "cat", ...]
//! network = false
//! timeout = 30.0
//! [tools.shell.limits]
//! cpu_seconds = 60
//! ```
//!
//! Every default is the safe one. Unknown keys inside `workspace`, `sandbox`,
//! `tools.fs`, `tools.shell` and `tools.shell.limits` are errors (a typo in a security
//! setting must not be silently ignored); other `tools.*` tables belong to other tools
//! and are ignored here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sandbox::process::Limits;

/// The default shell allowlist. No interpreter and nothing that can execute another
/// program or open the network; `docs/security.md` says why each is here.
pub const DEFAULT_SHELL_ALLOW: &[&str] = &[
    "ls",
    "cat",
    "head",
    "tail",
    "wc",
    "grep",
    "sort",
    "uniq",
    "cut",
    "tr",
    "echo",
    "true",
    "false",
    "date",
    "pwd",
    "stat",
    "file",
    "diff",
    "cmp",
    "basename",
    "dirname",
    "realpath",
    "mkdir",
    "touch",
    "cp",
    "mv",
    "rm",
    "tee",
    "sha256sum",
    "md5sum",
];

/// The whole native-tools configuration (`[workspace]`, `[sandbox]`, `[tools]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// `[workspace]`.
    pub workspace: WorkspaceConfig,
    /// `[sandbox]`.
    pub sandbox: SandboxSection,
    /// `[tools]` (only `fs` and `shell` are read here).
    pub tools: ToolsConfig,
}

/// `[workspace]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// The directory every tool is confined to. Required.
    pub root: PathBuf,
}

/// `[sandbox]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSection {
    /// Fail closed: refuse `system:shell` unless Landlock is fully enforced and seccomp
    /// is on.
    pub require: bool,
}

/// `[tools]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ToolsConfig {
    /// `[tools.fs]`.
    pub fs: FsConfig,
    /// `[tools.shell]`.
    pub shell: ShellConfig,
}

/// `[tools.fs]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsConfig {
    /// Register the `fs:*` tools.
    pub enabled: bool,
    /// Extra write-deny patterns, added to the mandatory list.
    pub deny_write: Vec<String>,
    /// Read-deny patterns for the fs tools (replaces the default `.env`, `.env.*`).
    pub deny_read: Vec<String>,
    /// Largest read, bytes.
    pub max_read_bytes: u64,
    /// Largest write, bytes.
    pub max_write_bytes: u64,
    /// Most entries `fs:list_dir` returns.
    pub max_list_entries: usize,
    /// Most matches `fs:search` returns.
    pub max_search_results: usize,
    /// Most entries `fs:search` visits.
    pub max_search_entries: usize,
    /// Most bytes of file content one `fs:search` reads, in all.
    pub max_search_bytes: u64,
    /// Most entries a recursive `fs:delete` removes.
    pub max_delete_entries: u64,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            deny_write: Vec::new(),
            deny_read: vec![".env".into(), ".env.*".into()],
            max_read_bytes: 1 << 20,
            max_write_bytes: 10 << 20,
            max_list_entries: 1000,
            max_search_results: 200,
            max_search_entries: 20_000,
            max_search_bytes: 64 << 20,
            max_delete_entries: 10_000,
        }
    }
}

/// `[tools.shell]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShellConfig {
    /// Register `system:shell`.
    pub enabled: bool,
    /// Binaries that may be run: bare names (looked up in `/usr/bin`, `/bin`,
    /// `/usr/sbin`, `/sbin`) or absolute paths; resolved once at start-up.
    pub allow: Vec<String>,
    /// Let children open network sockets (seccomp and Landlock otherwise refuse them).
    pub network: bool,
    /// Default timeout, seconds.
    pub timeout: f64,
    /// Largest timeout a call may ask for, seconds.
    pub max_timeout: f64,
    /// Bytes of stdout and of stderr returned, each.
    pub max_output_bytes: usize,
    /// Extra read-only paths for the children (absolute).
    pub read_paths: Vec<PathBuf>,
    /// Extra environment variables for the children (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Permit interpreters and exec-capable binaries in `allow` (off: they are a config
    /// error).
    pub allow_unsafe_binaries: bool,
    /// `[tools.shell.limits]`.
    pub limits: LimitsConfig,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow: DEFAULT_SHELL_ALLOW.iter().map(|s| s.to_string()).collect(),
            network: false,
            timeout: 30.0,
            max_timeout: 300.0,
            max_output_bytes: 64 << 10,
            read_paths: Vec::new(),
            env: BTreeMap::new(),
            allow_unsafe_binaries: false,
            limits: LimitsConfig::default(),
        }
    }
}

/// `[tools.shell.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `RLIMIT_CPU`, seconds.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS`, bytes.
    pub address_space_bytes: u64,
    /// Processes alive at once (pid-namespace `pid_max`; `RLIMIT_NPROC`).
    pub processes: u64,
    /// `RLIMIT_FSIZE`, bytes.
    pub file_size_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// Bytes one call may write to the workspace in all (staged writes).
    pub write_bytes: u64,
    /// Files and directories one call may create or modify (staged writes).
    pub write_files: u64,
    /// Bytes the staging of all concurrent calls may hold at once (it is memory); a call
    /// waits for its `write_bytes` within its timeout.
    pub write_bytes_total: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            cpu_seconds: l.cpu_seconds,
            address_space_bytes: l.address_space_bytes,
            processes: l.processes,
            file_size_bytes: l.file_size_bytes,
            open_files: l.open_files,
            write_bytes: l.write_bytes,
            write_files: l.write_files,
            write_bytes_total: 2 << 30,
        }
    }
}

impl From<LimitsConfig> for Limits {
    fn from(c: LimitsConfig) -> Self {
        Limits {
            cpu_seconds: c.cpu_seconds,
            address_space_bytes: c.address_space_bytes,
            processes: c.processes,
            file_size_bytes: c.file_size_bytes,
            open_files: c.open_files,
            write_bytes: c.write_bytes,
            write_files: c.write_files,
        }
    }
}

/// An invalid configuration; `key` is the dotted `loom.toml` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{key}] {message}")]
pub struct ConfigError {
    /// The dotted key, e.g. `tools.shell.allow`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl SandboxConfig {
    /// Parses the JSON form (what the Python side sends).
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde_json's " at line 1 column 161" is a position in JSON the user never
            // wrote; the dotted key says where the problem is.
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            let key = if path == "." { "tools" } else { path.as_str() };
            ConfigError::new(key, message)
        })
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workspace.root.as_os_str().is_empty() {
            return Err(ConfigError::new("workspace.root", "is required"));
        }
        let sh = &self.tools.shell;
        if !(sh.timeout.is_finite() && sh.timeout > 0.0) {
            return Err(ConfigError::new(
                "tools.shell.timeout",
                "must be a positive number of seconds",
            ));
        }
        if !(sh.max_timeout.is_finite() && sh.max_timeout >= sh.timeout) {
            return Err(ConfigError::new(
                "tools.shell.max_timeout",
                "must be >= tools.shell.timeout",
            ));
        }
        if sh.max_output_bytes == 0 {
            return Err(ConfigError::new(
                "tools.shell.max_output_bytes",
                "must be > 0",
            ));
        }
        let l = &sh.limits;
        if l.processes == 0 || l.processes > 10_000 {
            return Err(ConfigError::new(
                "tools.shell.limits.processes",
                "must be between 1 and 10000",
            ));
        }
        if l.open_files < 16 {
            return Err(ConfigError::new(
                "tools.shell.limits.open_files",
                "must be >= 16",
            ));
        }
        if l.write_bytes < (1 << 20) || l.write_files < 16 {
            return Err(ConfigError::new(
                "tools.shell.limits",
                "write_bytes must be >= 1 MiB and write_files >= 16",
            ));
        }
        if l.write_bytes_total < l.write_bytes {
            return Err(ConfigError::new(
                "tools.shell.limits.write_bytes_total",
                "must be >= write_bytes (one call must fit)",
            ));
        }
        if l.cpu_seconds == 0 || l.address_space_bytes < (64 << 20) || l.file_size_bytes == 0 {
            return Err(ConfigError::new(
                "tools.shell.limits",
                "cpu_seconds and file_size_bytes must be > 0, address_space_bytes >= 64 MiB",
            ));
        }
        for p in &sh.read_paths {
            if !p.is_absolute() {
                return Err(ConfigError::new(
                    "tools.shell.read_paths",
                    format!("{} is not absolute", p.display()),
                ));
            }
        }
        for key in sh.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(ConfigError::new(
                    "tools.shell.env",
                    format!("invalid variable name {key:?}"),
                ));
            }
            if is_unsafe_env(key) {
                return Err(ConfigError::new(
                    "tools.shell.env",
                    format!("{key} changes how binaries load code and may not be set"),
                ));
            }
        }
        let fs = &self.tools.fs;
        if fs.max_read_bytes == 0 || fs.max_write_bytes == 0 {
            return Err(ConfigError::new(
                "tools.fs",
                "max_read_bytes and max_write_bytes must be > 0",
            ));
        }
        Ok(())
    }
}

/// Variables that make the dynamic loader, libc or an interpreter load code or data from
/// elsewhere (glibc's "unsecure" list and friends).
fn is_unsafe_env(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "GCONV_PATH",
        "GETCONF_DIR",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
        "BASH_ENV",
        "ENV",
        "PS4",
        "SHELLOPTS",
        "IFS",
        "CDPATH",
        "NODE_OPTIONS",
        "PERL5OPT",
        "PERL5LIB",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "RUBYOPT",
        "RUBYLIB",
        "GIT_EXEC_PATH",
        "HOME",
        "PATH",
    ];
    key.starts_with("LD_")
        || key.starts_with("MALLOC_")
        || key.starts_with("GLIBC_")
        || EXACT.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let c = SandboxConfig::from_json(r#"{"workspace": {"root": "/tmp"}}"#).unwrap();
        c.validate().unwrap();
        assert!(!c.tools.shell.network);
        assert!(!c.tools.shell.allow_unsafe_binaries);
        assert!(c
            .tools
            .shell
            .allow
            .iter()
            .all(|b| !["sh", "bash", "python3", "env", "find"].contains(&b.as_str())));
        assert_eq!(c.tools.fs.deny_read, [".env", ".env.*"]);
    }

    #[test]
    fn typos_in_security_settings_are_errors() {
        let e = SandboxConfig::from_json(
            r#"{"workspace": {"root": "/tmp"}, "tools": {"shell": {"netwrok": true}}}"#,
        );
        assert!(e.unwrap_err().message.contains("netwrok"));
        // Other tools' tables are not ours to judge.
        SandboxConfig::from_json(r#"{"workspace": {"root": "/tmp"}, "tools": {"http": {"allow": []}, "require_approval": []}}"#).unwrap();
    }

    #[test]
    fn staging_limits_are_validated() {
        let bad = |limits: &str| {
            let json = format!(
                r#"{{"workspace": {{"root": "/tmp"}}, "tools": {{"shell": {{"limits": {limits}}}}}}}"#
            );
            SandboxConfig::from_json(&json)
                .and_then(|c| c.validate().map(|()| c))
                .unwrap_err()
        };
        assert!(bad(r#"{"write_bytes": 1000}"#)
            .message
            .contains("write_bytes"));
        assert!(bad(r#"{"write_files": 3}"#).message.contains("write_files"));
        let e = bad(r#"{"write_bytes": 4194304, "write_bytes_total": 1048576}"#);
        assert_eq!(e.key, "tools.shell.limits.write_bytes_total");
    }

    #[test]
    fn loader_variables_are_refused() {
        for key in ["LD_PRELOAD", "GCONV_PATH", "PATH", "BASH_ENV"] {
            let json = format!(
                r#"{{"workspace": {{"root": "/tmp"}}, "tools": {{"shell": {{"env": {{"{key}": "x"}}}}}}}}"#
            );
            let c = SandboxConfig::from_json(&json).unwrap();
            assert_eq!(c.validate().unwrap_err().key, "tools.shell.env", "{key}");
        }
        assert!(
            SandboxConfig::from_json(r#"{}"#)
                .unwrap()
                .validate()
                .is_err(),
            "root is required"
        );
    }
}
