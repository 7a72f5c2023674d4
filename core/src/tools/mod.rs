//! The tool registry and the native tools (fs, shell).
//!
//! [`NativeTools`] is built once from a [`SandboxConfig`] and is `Send + Sync`: the
//! binding runs [`NativeTools::call`] on worker threads with the GIL released. Every call
//! validates its arguments against the tool's JSON Schema first, then runs the tool
//! beneath the workspace root, and returns a [`ToolOutcome`]: the JSON result or a typed
//! [`ToolError`], plus the [`SpanRecord`]s of what the sandbox did (path resolutions,
//! processes), which the Python side emits as children of the `execute_tool` span.

pub mod config;
mod fs;
mod glob;
pub mod schema;
mod search;
mod shell;
mod shell_unsafe;
mod trace;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use config::{ConfigError, SandboxConfig};
pub use trace::SpanRecord;

use crate::sandbox::deny::{DenyList, MANDATORY_DENY_WRITE};
use crate::sandbox::path::Workspace;
use crate::sandbox::SandboxError;
use trace::Trace;

/// A tool as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// `namespace:verb`, e.g. `fs:read_file`.
    pub name: String,
    /// One paragraph for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Why a tool call did not produce a result. Each variant maps to one Python class of
/// `loom.errors` (`ToolNotFound`, `ToolArgumentsInvalid`, `ToolDenied`, `ToolTimeout`,
/// `ToolFailed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// No tool of that name.
    #[error("{tool}: no such tool")]
    NotFound {
        /// The requested name.
        tool: String,
    },
    /// The arguments do not match the schema.
    #[error("{tool}: invalid arguments: {}", errors.join("; "))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// Every problem, `"<json pointer>: <what>"`.
        errors: Vec<String>,
    },
    /// A sandbox rule refused the call.
    #[error("{tool}: denied by rule {rule:?}: {reason}")]
    Denied {
        /// The tool.
        tool: String,
        /// The rule's stable name (see `docs/security.md`).
        rule: String,
        /// What was refused and why.
        reason: String,
    },
    /// The call ran out of time; its processes were killed.
    #[error("{tool}: timed out after {after:?}")]
    Timeout {
        /// The tool.
        tool: String,
        /// The timeout that expired.
        after: Duration,
        /// What had happened by then (partial output), for the model.
        detail: String,
    },
    /// The tool ran and failed.
    #[error("{tool}: {reason}")]
    Failed {
        /// The tool.
        tool: String,
        /// What went wrong.
        reason: String,
    },
}

impl ToolError {
    /// The tool's name.
    pub fn tool(&self) -> &str {
        match self {
            Self::NotFound { tool }
            | Self::InvalidArguments { tool, .. }
            | Self::Denied { tool, .. }
            | Self::Timeout { tool, .. }
            | Self::Failed { tool, .. } => tool,
        }
    }

    /// The reason, without the tool name (what `loom.errors.ToolError.reason` holds).
    pub fn reason(&self) -> String {
        match self {
            Self::NotFound { .. } => "no such tool".to_string(),
            Self::InvalidArguments { errors, .. } => {
                format!("invalid arguments: {}", errors.join("; "))
            }
            Self::Denied { reason, .. } => reason.clone(),
            Self::Timeout { after, detail, .. } => {
                if detail.is_empty() {
                    format!("timed out after {:.3}s", after.as_secs_f64())
                } else {
                    format!("timed out after {:.3}s; {detail}", after.as_secs_f64())
                }
            }
            Self::Failed { reason, .. } => reason.clone(),
        }
    }

    pub(crate) fn failed(tool: &str, reason: impl Into<String>) -> Self {
        Self::Failed {
            tool: tool.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(tool: &str, error: impl Into<String>) -> Self {
        Self::InvalidArguments {
            tool: tool.to_string(),
            errors: vec![error.into()],
        }
    }

    pub(crate) fn from_sandbox(tool: &str, e: SandboxError) -> Self {
        match e {
            SandboxError::Denied { rule, reason } => Self::Denied {
                tool: tool.to_string(),
                rule: rule.to_string(),
                reason,
            },
            other => Self::failed(tool, other.to_string()),
        }
    }
}

/// What [`NativeTools::call`] returns: the result and the spans recorded on the way.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    /// The tool's JSON result, or why there is none.
    pub result: Result<Value, ToolError>,
    /// Spans of the sandbox's work, in start order; `parent` indexes into this list.
    pub spans: Vec<SpanRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ReadFile,
    WriteFile,
    ListDir,
    Delete,
    Search,
    Shell,
}

/// The native tools, confined to one workspace. `Send + Sync`.
#[derive(Debug)]
pub struct NativeTools {
    cfg: SandboxConfig,
    ws: Workspace,
    deny_write: DenyList,
    deny_read: DenyList,
    shell: Option<shell::Shell>,
    tools: BTreeMap<String, (Kind, ToolSpec)>,
}

impl NativeTools {
    /// Opens the workspace, resolves the shell allowlist, builds the Landlock ruleset and
    /// the seccomp filter.
    pub fn new(cfg: SandboxConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let ws = Workspace::open(&cfg.workspace.root)
            .map_err(|e| ConfigError::new("workspace.root", e.to_string()))?;
        let deny_write = DenyList::new(
            MANDATORY_DENY_WRITE
                .iter()
                .map(|s| s.to_string())
                .chain(cfg.tools.fs.deny_write.iter().cloned()),
        )
        .map_err(|e| ConfigError::new("tools.fs.deny_write", e))?;
        let deny_read = DenyList::new(&cfg.tools.fs.deny_read)
            .map_err(|e| ConfigError::new("tools.fs.deny_read", e))?;
        let shell = if cfg.tools.shell.enabled {
            Some(shell::Shell::new(&cfg, &ws)?)
        } else {
            None
        };
        let mut tools = BTreeMap::new();
        let mut add = |kind: Kind, spec: ToolSpec| {
            tools.insert(spec.name.clone(), (kind, spec));
        };
        if cfg.tools.fs.enabled {
            let fsc = &cfg.tools.fs;
            add(Kind::ReadFile, fs::read_spec(fsc));
            add(Kind::WriteFile, fs::write_spec(fsc));
            add(Kind::ListDir, fs::list_spec(fsc));
            add(Kind::Delete, fs::delete_spec());
            add(Kind::Search, search::spec(fsc));
        }
        if let Some(sh) = &shell {
            add(Kind::Shell, sh.spec(&cfg));
        }
        Ok(Self {
            cfg,
            ws,
            deny_write,
            deny_read,
            shell,
            tools,
        })
    }

    /// The registered tools, sorted by name.
    /// Drops what was made ahead of calls (the shell's ready stagings and prepared
    /// processes) and stops making more; calls still work, making their own.
    pub fn close(&self) {
        if let Some(sh) = &self.shell {
            sh.close();
        }
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|(_, s)| s.clone()).collect()
    }

    /// What the process sandbox enforces on this kernel, and the resolved allowlist.
    pub fn status(&self) -> Value {
        serde_json::json!({
            "workspace": self.ws.root_path().display().to_string(),
            "resolver": self.ws.resolver().as_str(),
            "deny_write": self.deny_write.patterns().collect::<Vec<_>>(),
            "deny_read": self.deny_read.patterns().collect::<Vec<_>>(),
            "shell": self.shell.as_ref().map(shell::Shell::status),
        })
    }

    /// The workspace (for tests and the binding).
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// Forces a path resolver (the escape corpus runs through both).
    pub fn with_resolver(mut self, resolver: crate::sandbox::path::Resolver) -> Self {
        self.ws = self.ws.with_resolver(resolver);
        self
    }

    /// Runs tool `name` with `args`. Blocking; safe to call from many threads at once.
    /// `args` nested deeper than [`crate::json::MAX_DEPTH`] are `InvalidArguments`.
    /// `timeout` caps the call (for `system:shell`, together with the `timeout` argument
    /// and `[tools.shell] max_timeout`).
    pub fn call(&self, name: &str, args: Value, timeout: Option<Duration>) -> ToolOutcome {
        self.call_cancellable(name, args, timeout, None)
    }

    /// [`NativeTools::call`] that stops early (killing its processes) once `cancel` is set.
    pub fn call_cancellable(
        &self,
        name: &str,
        args: Value,
        timeout: Option<Duration>,
        cancel: Option<&AtomicBool>,
    ) -> ToolOutcome {
        let mut trace = Trace::default();
        if let Err(e) = crate::json::check_depth(&args) {
            crate::json::drop_iteratively(args);
            return ToolOutcome {
                result: Err(ToolError::invalid(name, format!("/: {e}"))),
                spans: Vec::new(),
            };
        }
        let result = self.dispatch(name, &args, timeout, cancel, &mut trace);
        ToolOutcome {
            result,
            spans: trace.into_spans(),
        }
    }

    fn dispatch(
        &self,
        name: &str,
        args: &Value,
        timeout: Option<Duration>,
        cancel: Option<&AtomicBool>,
        trace: &mut Trace,
    ) -> Result<Value, ToolError> {
        let Some((kind, spec)) = self.tools.get(name) else {
            return Err(ToolError::NotFound {
                tool: name.to_string(),
            });
        };
        schema::validate(&spec.parameters, args).map_err(|errors| ToolError::InvalidArguments {
            tool: name.to_string(),
            errors,
        })?;
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let cx = Cx {
            tools: self,
            tool: name,
            deadline,
            cancel,
        };
        match kind {
            Kind::ReadFile => fs::read_file(&cx, args, trace),
            Kind::WriteFile => fs::write_file(&cx, args, trace),
            Kind::ListDir => fs::list_dir(&cx, args, trace),
            Kind::Delete => fs::delete(&cx, args, trace),
            Kind::Search => search::search(&cx, args, trace),
            Kind::Shell => match &self.shell {
                Some(sh) => sh.run(&cx, args, trace),
                None => Err(ToolError::NotFound {
                    tool: name.to_string(),
                }),
            },
        }
    }
}

/// What a tool implementation gets besides its arguments.
pub(crate) struct Cx<'a> {
    pub(crate) tools: &'a NativeTools,
    pub(crate) tool: &'a str,
    /// The call's deadline and the timeout it came from.
    pub(crate) deadline: Option<(Instant, Duration)>,
    /// Set by the caller to stop the call.
    pub(crate) cancel: Option<&'a AtomicBool>,
}

impl Cx<'_> {
    pub(crate) fn ws(&self) -> &Workspace {
        &self.tools.ws
    }

    pub(crate) fn cfg(&self) -> &SandboxConfig {
        &self.tools.cfg
    }

    pub(crate) fn err(&self, e: SandboxError) -> ToolError {
        ToolError::from_sandbox(self.tool, e)
    }

    /// Past the deadline, or cancelled.
    pub(crate) fn expired(&self) -> bool {
        self.deadline.is_some_and(|(d, _)| Instant::now() >= d)
            || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// String argument (schema-validated already).
pub(crate) fn arg_str<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// Unsigned integer argument.
pub(crate) fn arg_u64(args: &Value, key: &str) -> Option<u64> {
    args.get(key).and_then(Value::as_u64)
}

/// Boolean argument with a default.
pub(crate) fn arg_bool(args: &Value, key: &str, default: bool) -> bool {
    args.get(key).and_then(Value::as_bool).unwrap_or(default)
}
