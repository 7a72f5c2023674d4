//! Shared fixtures for the sandbox tests: a temp dir holding a workspace and, beside it,
//! an "outside" directory with a secret that no tool may ever reveal or change.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use _core::sandbox::path::Resolver;
use _core::tools::{NativeTools, SandboxConfig, ToolError};
use serde_json::{json, Value};

/// What the outside secret file contains.
pub const SECRET: &str = "TOPSECRET-outside-the-workspace";

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub base: PathBuf,
    pub root: PathBuf,
    pub outside: PathBuf,
    pub tools: NativeTools,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(edit: impl FnOnce(&mut Value)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("loom-sbx-")
            .tempdir()
            .unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        let mut cfg = json!({"workspace": {"root": root}});
        edit(&mut cfg);
        let cfg: SandboxConfig = serde_json::from_value(cfg).unwrap();
        let tools = NativeTools::new(cfg).unwrap();
        Self {
            _dir: dir,
            base,
            root,
            outside,
            tools,
        }
    }

    pub fn resolver(mut self, r: Resolver) -> Self {
        self.tools = self.tools.with_resolver(r);
        self
    }

    pub fn call(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        self.tools.call(name, args, None).result
    }

    pub fn call_t(&self, name: &str, args: Value, timeout: Duration) -> Result<Value, ToolError> {
        self.tools.call(name, args, Some(timeout)).result
    }

    pub fn read(&self, path: &str) -> Result<Value, ToolError> {
        self.call("fs:read_file", json!({"path": path}))
    }

    pub fn write(&self, path: &str, content: &str) -> Result<Value, ToolError> {
        self.call("fs:write_file", json!({"path": path, "content": content}))
    }

    pub fn shell(&self, argv: &[&str]) -> Result<Value, ToolError> {
        self.call("system:shell", json!({"argv": argv}))
    }

    pub fn ws(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Asserts the outside directory holds only the untouched secret.
    pub fn assert_outside_untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["secret.txt".to_string()], "outside dir changed");
        assert_eq!(
            std::fs::read_to_string(self.outside.join("secret.txt")).unwrap(),
            SECRET
        );
    }
}

/// The rule of a `Denied` error, panicking on anything else.
#[track_caller]
pub fn rule(r: Result<Value, ToolError>) -> String {
    match r {
        Err(ToolError::Denied { rule, .. }) => rule,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// True if a result (or error) mentions the secret anywhere.
pub fn leaks(r: &Result<Value, ToolError>) -> bool {
    match r {
        Ok(v) => v.to_string().contains(SECRET),
        Err(e) => e.to_string().contains(SECRET),
    }
}

pub fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Host pids whose command line contains `marker`.
pub fn procs_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a visible skip line and returns true if Landlock is unavailable.
pub fn skip_without_landlock(test: &str) -> bool {
    if _core::sandbox::landlock::abi_version().is_none() {
        eprintln!("SKIPPED {test}: the kernel has no Landlock (landlock_create_ruleset failed)");
        return true;
    }
    false
}

/// Prints a visible skip line and returns true if pid namespaces cannot be created.
pub fn skip_without_pidns(test: &str) -> bool {
    if !_core::sandbox::process::probe_pid_namespace() {
        eprintln!("SKIPPED {test}: cannot create pid namespaces here (not root?)");
        return true;
    }
    false
}

pub fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{n}", std::process::id())
}
