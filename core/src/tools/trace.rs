//! Spans recorded by the native tools, handed to the Python side (which emits them as
//! children of `execute_tool {tool}` through the OpenTelemetry SDK).
//!
//! Attributes never hold environment values or file contents: requested paths, rule
//! names, argv[0], counts, sizes, exit codes and what the sandbox enforced.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::sandbox::path::RelPath;
use crate::sandbox::SandboxError;

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// `sandbox.resolve`, `sandbox.process`, ...
    pub name: String,
    /// Start, ns since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, ns since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Attributes, in insertion order.
    pub attributes: Vec<(String, Value)>,
    /// Set if the span records a failure or refusal.
    pub status_error: Option<String>,
    /// Index of the parent span in the same list, if any.
    pub parent: Option<usize>,
}

impl SpanRecord {
    /// The value of an attribute.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// As a JSON object (what the binding sends to Python).
    pub fn to_json(&self) -> Value {
        let attrs: serde_json::Map<String, Value> = self.attributes.iter().cloned().collect();
        serde_json::json!({
            "name": self.name,
            "start_unix_nanos": self.start_unix_nanos,
            "end_unix_nanos": self.end_unix_nanos,
            "attributes": attrs,
            "status_error": self.status_error,
            "parent": self.parent,
        })
    }
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Collects spans during one call.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    spans: Vec<SpanRecord>,
}

impl Trace {
    pub(crate) fn start(&mut self, name: &str) -> usize {
        let t = now_nanos();
        self.spans.push(SpanRecord {
            name: name.to_string(),
            start_unix_nanos: t,
            end_unix_nanos: t,
            attributes: Vec::new(),
            status_error: None,
            parent: None,
        });
        self.spans.len() - 1
    }

    pub(crate) fn attr(&mut self, id: usize, key: &str, value: impl Into<Value>) {
        if let Some(s) = self.spans.get_mut(id) {
            s.attributes.push((key.to_string(), value.into()));
        }
    }

    pub(crate) fn error(&mut self, id: usize, message: impl Into<String>) {
        if let Some(s) = self.spans.get_mut(id) {
            s.status_error = Some(message.into());
        }
    }

    pub(crate) fn end(&mut self, id: usize) {
        if let Some(s) = self.spans.get_mut(id) {
            s.end_unix_nanos = now_nanos().max(s.start_unix_nanos);
        }
    }

    /// Records a `sandbox.resolve` span around a path check + open.
    pub(crate) fn resolve<T>(
        &mut self,
        requested: &str,
        access: &str,
        resolver: &str,
        f: impl FnOnce() -> Result<(RelPath, T), SandboxError>,
    ) -> Result<(RelPath, T), SandboxError> {
        let id = self.start("sandbox.resolve");
        self.attr(id, "loom.sandbox.path.requested", truncate(requested, 512));
        self.attr(id, "loom.sandbox.access", access);
        self.attr(id, "loom.sandbox.resolver", resolver);
        let r = f();
        match &r {
            Ok((rel, _)) => {
                self.attr(id, "loom.sandbox.path.resolved", rel.as_string());
                self.attr(id, "loom.sandbox.outcome", "ok");
            }
            Err(e) => {
                let outcome = match e {
                    SandboxError::Denied { rule, .. } => {
                        self.attr(id, "loom.sandbox.rule", *rule);
                        "denied"
                    }
                    SandboxError::NotFound { .. } => "not_found",
                    _ => "error",
                };
                self.attr(id, "loom.sandbox.outcome", outcome);
                self.error(id, e.to_string());
            }
        }
        self.end(id);
        r
    }

    pub(crate) fn into_spans(self) -> Vec<SpanRecord> {
        self.spans
    }
}

/// At most `max` bytes of `s`, cut on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
