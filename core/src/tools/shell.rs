//! `system:shell`: run one allowlisted binary with an argv list — never through a shell —
//! inside the process sandbox ([`crate::sandbox::process`]).
//!
//! The allowlist is resolved to canonical absolute paths once, at start-up; a call may
//! name a binary by its allowlisted name or by an absolute path whose canonical form is
//! allowlisted (so `/usr/bin/python3` is refused whatever symlinks lead to it), and the
//! binary that runs is always the canonical path resolved at start-up. Only those files
//! (and their ELF interpreter) are executable under Landlock, so an allowlisted tool
//! that tries to exec something else is refused by the kernel too.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::config::{ConfigError, SandboxConfig};
use super::shell_unsafe::is_unsafe;
use super::trace::{truncate, Trace};
use super::{arg_str, Cx, ToolError, ToolSpec};
use crate::sandbox::path::{RelPath, Want, Workspace};
use crate::sandbox::process::{Killed, Output, Policy, PolicyConfig, Request, Staged};
use crate::sandbox::staging::{self, Budget, StagingPool};
use crate::sandbox::stock::Stock;
use crate::sandbox::SandboxError;

/// Where bare allowlist names are looked up (not `/usr/local/bin`: what an admin or a
/// package manager dropped there has not been reviewed).
const SEARCH_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

#[derive(Debug, Clone)]
struct Allowed {
    /// Canonical path: what runs.
    path: PathBuf,
}

/// The shell tool's resolved state.
#[derive(Debug)]
pub(super) struct Shell {
    by_name: BTreeMap<String, Allowed>,
    by_path: BTreeMap<PathBuf, String>,
    missing: Vec<String>,
    policy: Arc<Policy>,
    /// Memory the staging tmpfs of concurrent calls may hold in all.
    staging: StagingPool,
    /// Overlays and rulesets made ahead of the calls (with staged writes).
    stock: Option<Stock>,
}

impl Shell {
    pub(super) fn new(cfg: &SandboxConfig, ws: &Workspace) -> Result<Self, ConfigError> {
        let sh = &cfg.tools.shell;
        let mut by_name = BTreeMap::new();
        let mut by_path = BTreeMap::new();
        let mut missing = Vec::new();
        for entry in &sh.allow {
            let key = "tools.shell.allow";
            if entry.is_empty() || entry.contains('\0') {
                return Err(ConfigError::new(key, format!("invalid entry {entry:?}")));
            }
            let found = if entry.contains('/') {
                if !entry.starts_with('/') {
                    return Err(ConfigError::new(
                        key,
                        format!("{entry:?}: give a bare name or an absolute path"),
                    ));
                }
                Path::new(entry).exists().then(|| PathBuf::from(entry))
            } else {
                SEARCH_DIRS
                    .iter()
                    .map(|d| Path::new(d).join(entry))
                    .find(|p| p.is_file())
            };
            let Some(found) = found else {
                missing.push(entry.clone());
                continue;
            };
            let canonical = std::fs::canonicalize(&found)
                .map_err(|e| ConfigError::new(key, format!("{entry}: {e}")))?;
            if !sh.allow_unsafe_binaries
                && (is_unsafe(entry) || is_unsafe(&canonical.to_string_lossy()))
            {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{entry} ({}) can run other programs, interpret code or reach the network; \
                         it is not allowed unless [tools.shell] allow_unsafe_binaries = true",
                        canonical.display()
                    ),
                ));
            }
            check_trusted(&canonical)
                .map_err(|m| ConfigError::new(key, format!("{entry}: {m}")))?;
            let name = entry.rsplit('/').next().unwrap_or(entry).to_string();
            by_path.insert(canonical.clone(), name.clone());
            by_name.insert(name, Allowed { path: canonical });
        }
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), ws.root_path().display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        for (k, v) in &sh.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let mut executables: Vec<PathBuf> = by_name.values().map(|a| a.path.clone()).collect();
        executables.sort();
        executables.dedup();
        let policy = Policy::new(&PolicyConfig {
            workspace: ws.root_path().to_path_buf(),
            executables,
            read_paths: sh.read_paths.clone(),
            network: sh.network,
            limits: sh.limits.into(),
            env,
            max_output_bytes: sh.max_output_bytes,
            require: cfg.sandbox.require,
        })
        .map_err(|e| ConfigError::new("tools.shell", e.to_string()))?;
        let policy = Arc::new(policy);
        let stock = if policy.enforcement().staged_writes {
            let ws = ws
                .try_clone()
                .map_err(|e| ConfigError::new("workspace.root", e.to_string()))?;
            let budget = Budget {
                bytes: sh.limits.write_bytes,
                inodes: sh.limits.write_files,
            };
            Some(Stock::new(policy.clone(), ws, budget))
        } else {
            None
        };
        Ok(Self {
            by_name,
            by_path,
            missing,
            policy,
            staging: StagingPool::new(sh.limits.write_bytes_total),
            stock,
        })
    }

    /// Stops the stock ([`Stock::close`]).
    pub(super) fn close(&self) {
        if let Some(stock) = &self.stock {
            stock.close();
        }
    }

    pub(super) fn spec(&self, cfg: &SandboxConfig) -> ToolSpec {
        let names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        let sh = &cfg.tools.shell;
        ToolSpec {
            name: "system:shell".into(),
            description: format!(
                "Run one program with arguments, in the workspace. `argv` is the program and its \
                 arguments as a list; there is no shell, so pipes, redirections, globs, `$VAR` and \
                 `;` are passed literally. Allowed programs: {}. No network{}; files outside the \
                 workspace are read-only system files or unreachable; the default timeout is {}s.{} \
                 Returns exit_code, stdout and stderr (each cut at {} bytes).",
                names.join(", "),
                if sh.network {
                    " restrictions"
                } else {
                    " access"
                },
                sh.timeout,
                if self.policy.enforcement().staged_writes {
                    " Changes to the workspace are kept when the program ends, and only if \
                     none touches a protected path (.git, .env*, shell rc files, ...): one \
                     refused change keeps none."
                } else {
                    ""
                },
                sh.max_output_bytes
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "argv": {"type": "array", "items": {"type": "string", "maxLength": 32768},
                             "minItems": 1, "maxItems": 1024,
                             "description": "Program name (from the allowed list) followed by its arguments."},
                    "cwd": {"type": "string", "maxLength": 4096, "description": "Working directory relative to the workspace root (default: the root)."},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": sh.max_timeout,
                                "description": "Seconds before every process of the call is killed."}
                },
                "required": ["argv"],
                "additionalProperties": false
            }),
        }
    }

    pub(super) fn status(&self) -> Value {
        json!({
            "allow": self.by_name.iter().map(|(n, a)| (n.clone(), json!(a.path.display().to_string()))).collect::<serde_json::Map<_, _>>(),
            "missing": self.missing,
            "enforcement": self.policy.enforcement().to_json(),
            "required_ok": self.policy.check_required().is_ok(),
        })
    }

    /// Maps argv[0] to the canonical allowlisted binary, or refuses.
    fn resolve_binary(&self, argv0: &str) -> Result<(String, PathBuf), (&'static str, String)> {
        if argv0.contains('\0') {
            return Err(("nul_byte", "argv[0] contains a NUL byte".into()));
        }
        if !argv0.contains('/') {
            return match self.by_name.get(argv0) {
                Some(a) => Ok((argv0.to_string(), a.path.clone())),
                None => Err((
                    "not_allowlisted",
                    format!("{argv0:?} is not on the allowlist"),
                )),
            };
        }
        if !argv0.starts_with('/') {
            return Err((
                "relative_executable",
                format!("{argv0:?}: programs in the workspace cannot be run; use a name from the allowlist"),
            ));
        }
        // An absolute path is accepted only if what it *really* is was allowlisted; the
        // canonical path resolved at start-up is what runs, never this string.
        let canonical = std::fs::canonicalize(argv0).map_err(|_| {
            (
                "not_allowlisted",
                format!("{argv0:?} is not on the allowlist"),
            )
        })?;
        match self.by_path.get(&canonical) {
            Some(name) => Ok((name.clone(), canonical)),
            None => Err((
                "not_allowlisted",
                format!(
                    "{argv0:?} ({}) is not on the allowlist",
                    canonical.display()
                ),
            )),
        }
    }

    pub(super) fn run(
        &self,
        cx: &Cx<'_>,
        args: &Value,
        trace: &mut Trace,
    ) -> Result<Value, ToolError> {
        let denied = |rule: &str, reason: String| ToolError::Denied {
            tool: cx.tool.to_string(),
            rule: rule.to_string(),
            reason,
        };
        let argv: Vec<String> = args
            .get("argv")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let total: usize = argv.iter().map(String::len).sum();
        if total > 256 * 1024 {
            return Err(ToolError::invalid(
                cx.tool,
                "/argv: more than 256 KiB of arguments",
            ));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(denied("nul_byte", "an argument contains a NUL byte".into()));
        }
        let (name, exe) = self
            .resolve_binary(&argv[0])
            .map_err(|(rule, reason)| denied(rule, reason))?;
        self.policy.check_required().map_err(|e| cx.err(e))?;

        let sh = &cx.cfg().tools.shell;
        let mut timeout = args
            .get("timeout")
            .and_then(Value::as_f64)
            .map_or(Duration::from_secs_f64(sh.timeout), Duration::from_secs_f64)
            .min(Duration::from_secs_f64(sh.max_timeout));
        if let Some((deadline, _)) = cx.deadline {
            timeout = timeout.min(deadline.saturating_duration_since(std::time::Instant::now()));
        }
        let requested_cwd = arg_str(args, "cwd").unwrap_or(".");
        let ws = cx.ws();
        let (cwd_rel, cwd) = trace
            .resolve(requested_cwd, "cwd", ws.resolver().as_str(), || {
                let rel = RelPath::parse(requested_cwd)?;
                let (fd, _) = ws.resolve(&rel, Want::Dir)?;
                Ok((rel, fd))
            })
            .map_err(|e| cx.err(e))?;

        let mut argv = argv;
        argv[0] = name.clone();
        let span = trace.start("sandbox.process");
        trace.attr(span, "loom.process.argv0", name.clone());
        trace.attr(span, "loom.process.executable", exe.display().to_string());
        trace.attr(span, "loom.process.argc", argv.len() as u64);
        trace.attr(span, "loom.process.cwd", cwd_rel.as_string());
        trace.attr(span, "loom.process.timeout_ms", timeout.as_millis() as u64);
        let e = self.policy.enforcement();
        trace.attr(span, "loom.sandbox.landlock", e.landlock.as_str());
        trace.attr(
            span,
            "loom.sandbox.landlock_abi",
            e.landlock_abi.map_or(Value::Null, |v| json!(v)),
        );
        trace.attr(span, "loom.sandbox.seccomp", e.seccomp);
        trace.attr(span, "loom.sandbox.network", e.network);
        trace.attr(span, "loom.sandbox.pid_namespace", e.pid_namespace);
        trace.attr(
            span,
            "loom.sandbox.process_limit",
            e.process_limit.map_or(Value::Null, |v| json!(v)),
        );
        trace.attr(span, "loom.sandbox.staged_writes", e.staged_writes);
        let limits = &sh.limits;
        // What errors report (waiting for staging memory uses part of it).
        let limit = timeout;
        // Held until the commit is done (the end of this function).
        let _reservation = if e.staged_writes {
            let deadline = std::time::Instant::now() + timeout;
            let Some(reservation) = self
                .staging
                .reserve(limits.write_bytes, deadline, cx.cancel)
            else {
                trace.error(span, "staging memory");
                trace.end(span);
                return Err(ToolError::Timeout {
                    tool: cx.tool.to_string(),
                    after: limit,
                    detail: format!(
                        "waited for staging memory: concurrent shell calls already hold \
                         [tools.shell.limits] write_bytes_total ({} bytes); nothing ran",
                        self.staging.total()
                    ),
                });
            };
            // The wait counts against the call's timeout.
            timeout = deadline.saturating_duration_since(std::time::Instant::now());
            Some(reservation)
        } else {
            None
        };
        let discard = match &self.stock {
            Some(stock) => match stock.take() {
                Ok(s) => Some(Discard(stock, Some(s), std::cell::Cell::new(false))),
                Err(err) => {
                    trace.error(span, err.to_string());
                    trace.end(span);
                    return Err(cx.err(err));
                }
            },
            None => None,
        };
        let staged = discard.as_ref().and_then(|d| d.1.as_ref());
        let scratch = staged.map(|s| s.scratch());
        let result = self.policy.run(&Request {
            exe: &exe,
            argv: &argv,
            cwd: std::os::fd::AsFd::as_fd(&cwd),
            cwd_rel: &cwd_rel.as_string(),
            timeout,
            cancel: cx.cancel,
            staging: staged,
        });
        let out = match result {
            Ok(out) => out,
            Err(err) => {
                trace.error(span, err.to_string());
                trace.end(span);
                return Err(cx.err(err));
            }
        };
        record(trace, span, &out);
        trace.end(span);
        let cap = sh.max_output_bytes;
        let stdout = render(&out.stdout, out.stdout_total, out.stdout_truncated, cap);
        let stderr = render(&out.stderr, out.stderr_total, out.stderr_truncated, cap);
        if out.killed == Some(Killed::Cancelled) {
            trace.error(span, "cancelled");
            return Err(ToolError::failed(
                cx.tool,
                "cancelled; every process of the call was killed",
            ));
        }
        if out.timed_out {
            trace.error(span, "timeout");
            let mut detail = format!(
                "every process of the call was killed (SIGKILL to the {}){}",
                if e.pid_namespace {
                    "pid namespace"
                } else {
                    "process group"
                },
                if scratch.is_some() {
                    " and its changes to the workspace were discarded"
                } else {
                    ""
                }
            );
            if !stdout.is_empty() {
                detail.push_str(&format!("; stdout so far: {}", truncate(&stdout, 2000)));
            }
            if !stderr.is_empty() {
                detail.push_str(&format!("; stderr so far: {}", truncate(&stderr, 2000)));
            }
            return Err(ToolError::Timeout {
                tool: cx.tool.to_string(),
                after: limit,
                detail,
            });
        }
        let changes = match &scratch {
            // Killed mid-way (output limit): what it left half-done is not kept.
            Some(_) if out.killed.is_some() => json!({"discarded": true}),
            Some(scratch) => {
                let committed = staging::commit(
                    ws,
                    scratch,
                    &cx.tools.deny_write,
                    cx.cfg().tools.fs.max_delete_entries,
                )
                .inspect(|done| {
                    if *done == staging::Committed::default() {
                        if let Some(d) = &discard {
                            d.2.set(true);
                        }
                    }
                })
                .map_err(|err| {
                    let code = out
                        .exit_code
                        .map_or_else(|| "was killed".to_string(), |c| format!("exited with {c}"));
                    let kept = if err.partial {
                        "only part of its changes to the workspace were kept"
                    } else {
                        "none of its changes to the workspace were kept"
                    };
                    match err.error {
                        SandboxError::Denied { rule, reason } => ToolError::Denied {
                            tool: cx.tool.to_string(),
                            rule: rule.to_string(),
                            reason: format!("{reason}; the command {code} and {kept}"),
                        },
                        other => cx.err(other),
                    }
                })?;
                json!({
                    "files": committed.files,
                    "dirs": committed.dirs,
                    "removed": committed.removed,
                    "bytes": committed.bytes,
                })
            }
            None => Value::Null,
        };
        Ok(json!({
            "argv0": name,
            "exit_code": out.exit_code,
            "signal": out.signal,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_bytes": out.stdout_total,
            "stderr_bytes": out.stderr_total,
            "stdout_truncated": out.stdout_truncated,
            "stderr_truncated": out.stderr_truncated,
            "killed": out.killed.map(|k| k.as_str()),
            "duration_ms": (out.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "changes": changes,
            "sandbox": out.enforcement.to_json(),
        }))
    }
}

/// A used [`Staged`]: handed to its stock's thread to be dropped (off the call's path)
/// if the commit found its overlay empty (the third field), else dropped here — before
/// the call's reservation of staging memory is given back, so what a call wrote never
/// outlives its share of `write_bytes_total` (the stager runs on spare CPU time only).
struct Discard<'a>(&'a Stock, Option<Staged>, std::cell::Cell<bool>);

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.1.take() {
            self.0.discard(s, self.2.get());
        }
    }
}

fn record(trace: &mut Trace, span: usize, out: &Output) {
    trace.attr(
        span,
        "loom.process.exit_code",
        out.exit_code.map_or(Value::Null, |v| json!(v)),
    );
    trace.attr(
        span,
        "loom.process.signal",
        out.signal.map_or(Value::Null, |v| json!(v)),
    );
    trace.attr(
        span,
        "loom.process.duration_ms",
        out.duration.as_secs_f64() * 1000.0,
    );
    trace.attr(span, "loom.process.stdout_bytes", out.stdout_total);
    trace.attr(span, "loom.process.stderr_bytes", out.stderr_total);
    trace.attr(
        span,
        "loom.process.truncated",
        out.stdout_truncated || out.stderr_truncated,
    );
    trace.attr(
        span,
        "loom.process.killed",
        out.killed.map_or(Value::Null, |k| json!(k.as_str())),
    );
}

/// Output as text with a truncation marker.
fn render(bytes: &[u8], total: u64, truncated: bool, cap: usize) -> String {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if truncated {
        s.push_str(&format!(
            "\n[... output truncated: {total} bytes in all, the first {} shown ...]",
            bytes.len().min(cap)
        ));
    }
    s
}

/// A binary that someone other than root could replace is not trusted (we run as root).
fn check_trusted(path: &Path) -> Result<(), String> {
    let md = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !md.is_file() {
        return Err("not a regular file".into());
    }
    if md.permissions().mode() & 0o111 == 0 {
        return Err("not executable".into());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if md.uid() != 0 && md.uid() != euid {
        return Err(format!("owned by uid {}, not root", md.uid()));
    }
    if md.permissions().mode() & 0o022 != 0 {
        return Err("writable by group or others".into());
    }
    Ok(())
}
