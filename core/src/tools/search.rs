//! `fs:search`: find entries by glob and/or name substring, optionally by content, within
//! the workspace. Bounded (results, entries visited, bytes read per file, time) and
//! never following a symlink (they are matched by name, never descended or read).

use std::io::Read;

use rustix::fs::FileType;
use serde_json::{json, Value};

use super::config::FsConfig;
use super::trace::{truncate, Trace};
use super::{arg_bool, arg_str, arg_u64, Cx, ToolError, ToolSpec};
use crate::sandbox::deny::glob_component;
use crate::sandbox::fs::{self as sfs, Walk};
use crate::sandbox::path::{kind_name, RelPath};

pub(super) fn spec(c: &FsConfig) -> ToolSpec {
    ToolSpec {
        name: "fs:search".into(),
        description: format!(
            "Search the workspace below `path` for files and directories whose path matches \
             `glob` (`*`, `?` within a name, `**` across directories; a pattern without '/' \
             matches the name only) and/or whose name contains `name_contains`, and, with \
             `content`, files containing that text (reported per line). Hidden entries are \
             skipped unless `include_hidden`. At most {} results; symbolic links are never \
             followed.",
            c.max_search_results
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 4096, "description": "Directory to search (default: the workspace root)."},
                "glob": {"type": "string", "minLength": 1, "maxLength": 1024},
                "name_contains": {"type": "string", "minLength": 1, "maxLength": 1024},
                "content": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "Text to look for inside files."},
                "case_sensitive": {"type": "boolean", "description": "Default true."},
                "include_hidden": {"type": "boolean", "description": "Also search names starting with '.' (default false)."},
                "max_results": {"type": "integer", "minimum": 1, "maximum": c.max_search_results}
            },
            "additionalProperties": false
        }),
    }
}

/// Matches a `/`-separated path against a glob with `**`.
pub(crate) fn glob_path(pattern: &str, path: &str) -> bool {
    fn rec(p: &[&str], s: &[&str]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&"**", rest)) => (0..=s.len()).any(|i| rec(rest, &s[i..])),
            Some((first, rest)) => {
                !s.is_empty() && glob_component(first, s[0]) && rec(rest, &s[1..])
            }
        }
    }
    let p: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    if !pattern.contains('/') {
        let name = path.rsplit('/').next().unwrap_or(path);
        return glob_component(pattern, name);
    }
    let s: Vec<&str> = path.split('/').collect();
    rec(&p, &s)
}

pub(super) fn search(cx: &Cx<'_>, args: &Value, trace: &mut Trace) -> Result<Value, ToolError> {
    let glob = arg_str(args, "glob");
    let name_contains = arg_str(args, "name_contains");
    let content = arg_str(args, "content");
    if glob.is_none() && name_contains.is_none() && content.is_none() {
        return Err(ToolError::invalid(
            cx.tool,
            "/: give at least one of \"glob\", \"name_contains\", \"content\"",
        ));
    }
    let case = arg_bool(args, "case_sensitive", true);
    let hidden = arg_bool(args, "include_hidden", false);
    let fsc = &cx.cfg().tools.fs;
    let max_results = arg_u64(args, "max_results").map_or(fsc.max_search_results, |m| {
        (m as usize).min(fsc.max_search_results)
    });
    let max_entries = fsc.max_search_entries;
    let mut byte_budget = fsc.max_search_bytes;
    let max_bytes = fsc.max_read_bytes;
    let fold = |s: &str| {
        if case {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let needle_name = name_contains.map(fold);
    let needle = content.map(fold);
    let glob = glob.map(fold);

    let requested = arg_str(args, "path").unwrap_or(".");
    let ws = cx.ws();
    let (start, ()) = trace
        .resolve(requested, "search", ws.resolver().as_str(), || {
            let rel = RelPath::parse(requested)?;
            ws.resolve(&rel, crate::sandbox::path::Want::Dir)?;
            Ok((rel, ()))
        })
        .map_err(|e| cx.err(e))?;

    let span = trace.start("fs.search.walk");
    let mut results: Vec<Value> = Vec::new();
    let mut visited = 0usize;
    let mut files_read = 0usize;
    let mut skipped_large = 0usize;
    let mut stopped: Option<&str> = None;
    let prefix_len = if start.is_root() {
        0
    } else {
        start.as_string().len() + 1
    };
    let walk = sfs::walk(ws, &start, sfs::MAX_DEPTH, |rel, ft, dir, name| {
        visited += 1;
        if visited > max_entries {
            stopped = Some("max_entries");
            return Walk::Stop;
        }
        if visited % 64 == 1 && cx.expired() {
            stopped = Some("timeout");
            return Walk::Stop;
        }
        if !hidden && name.starts_with('.') {
            return Walk::SkipDir;
        }
        let full = rel.as_string();
        let below = &full[prefix_len.min(full.len())..];
        let name_ok = glob.as_deref().map_or(true, |g| glob_path(g, &fold(below)))
            && needle_name
                .as_deref()
                .map_or(true, |n| fold(name).contains(n));
        if !name_ok {
            return Walk::Continue;
        }
        let Some(needle) = needle.as_deref() else {
            results.push(json!({"path": full, "kind": kind_name(ft)}));
            return if results.len() >= max_results {
                stopped = Some("max_results");
                Walk::Stop
            } else {
                Walk::Continue
            };
        };
        if ft != FileType::RegularFile || cx.tools.deny_read.matches(rel).is_some() {
            return Walk::Continue;
        }
        let Some((file, size)) = sfs::open_entry_for_read(dir, name) else {
            return Walk::Continue;
        };
        if size > max_bytes {
            skipped_large += 1;
            return Walk::Continue;
        }
        if size > byte_budget {
            stopped = Some("max_bytes");
            return Walk::Stop;
        }
        byte_budget -= size;
        files_read += 1;
        let mut buf = Vec::with_capacity(size as usize);
        if file.take(max_bytes).read_to_end(&mut buf).is_err()
            || buf[..buf.len().min(8192)].contains(&0)
        {
            return Walk::Continue; // unreadable or binary
        }
        let text = String::from_utf8_lossy(&buf);
        for (i, line) in text.lines().enumerate() {
            if fold(line).contains(needle) {
                results.push(json!({"path": full, "line": i + 1, "text": truncate(line, 300)}));
                if results.len() >= max_results {
                    stopped = Some("max_results");
                    return Walk::Stop;
                }
            }
        }
        Walk::Continue
    });
    trace.attr(span, "loom.fs.search.entries_visited", visited as u64);
    trace.attr(span, "loom.fs.search.files_read", files_read as u64);
    trace.attr(span, "loom.fs.search.results", results.len() as u64);
    if let Some(s) = stopped {
        trace.attr(span, "loom.fs.search.stopped", s);
    }
    trace.end(span);
    walk.map_err(|e| cx.err(e))?;
    Ok(json!({
        "path": start.as_string(),
        "results": results,
        "truncated": stopped.is_some(),
        "stopped": stopped,
        "entries_visited": visited.min(max_entries),
        "files_skipped_too_large": skipped_large,
    }))
}

#[cfg(test)]
mod tests {
    use super::glob_path;

    #[test]
    fn globs() {
        assert!(glob_path("*.rs", "src/main.rs"));
        assert!(glob_path("src/*.rs", "src/main.rs"));
        assert!(!glob_path("src/*.rs", "src/a/main.rs"));
        assert!(glob_path("src/**/*.rs", "src/a/b/main.rs"));
        assert!(glob_path("src/**/*.rs", "src/main.rs"));
        assert!(glob_path("**/test_?.py", "a/b/test_1.py"));
        assert!(!glob_path("**/test_?.py", "a/b/test_10.py"));
    }
}
