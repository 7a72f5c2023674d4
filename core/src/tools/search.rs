//! `fs:search`: find entries by glob and/or name substring, optionally by content, within
//! the workspace. Bounded (results, entries visited, bytes read per file, time) and
//! never following a symlink (they are matched by name, never descended or read).
//!
//! Time: the deadline (and the caller's cancel flag) is checked for every entry, inside
//! the glob matcher ([`super::glob`], polynomial, with its own clock checks) and while a
//! directory is read, so a call returns within a few milliseconds of its timeout and an
//! abandoned call frees its worker thread as promptly.

use std::io::Read;

use rustix::fs::FileType;
use serde_json::{json, Value};

use super::config::FsConfig;
use super::glob::{Budget, Expired, Glob, States};
use super::trace::{truncate, Trace};
use super::{arg_bool, arg_str, arg_u64, Cx, ToolError, ToolSpec};
use crate::sandbox::fs::{self as sfs, Walk, Walked};
use crate::sandbox::path::{kind_name, RelPath};

pub(super) fn spec(c: &FsConfig) -> ToolSpec {
    ToolSpec {
        name: "fs:search".into(),
        description: format!(
            "Search the workspace below `path` for files and directories whose path matches \
             `glob` (`*` any characters within a name, `?` one character, `**` as a whole \
             component any number of directories; nothing else is special; a pattern \
             without '/' matches the name only) and/or whose name contains `name_contains`, and, with \
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
    let glob = glob.as_deref().map(Glob::new);
    let expired = || cx.expired();
    let mut budget = Budget::new(&expired);
    // The automaton's states for the directory whose entries are being visited (the
    // walk lists one directory at a time): one step per entry, not one per component.
    let mut parent_states: Option<(RelPath, States)> = None;
    let walk = sfs::walk(
        ws,
        &start,
        sfs::MAX_DEPTH,
        max_entries + 1,
        &expired,
        |rel, ft, dir, name| {
            visited += 1;
            if visited > max_entries {
                stopped = Some("max_entries");
                return Walk::Stop;
            }
            if cx.expired() {
                stopped = Some("timeout");
                return Walk::Stop;
            }
            if !hidden && name.starts_with('.') {
                return Walk::SkipDir;
            }
            let full = rel.as_string();
            let mut below_ok = true;
            let glob_ok = match &glob {
                None => true,
                Some(g) => match glob_entry(g, &start, rel, &fold, &mut parent_states, &mut budget)
                {
                    Ok((hit, below)) => {
                        below_ok = below;
                        hit
                    }
                    Err(_) => {
                        stopped = Some("timeout");
                        return Walk::Stop;
                    }
                },
            };
            // Nothing below can match the glob: do not descend (the other criteria only
            // narrow what the glob selects).
            let next = if below_ok {
                Walk::Continue
            } else {
                Walk::SkipDir
            };
            let name_ok = glob_ok
                && needle_name
                    .as_deref()
                    .map_or(true, |n| fold(name).contains(n));
            if !name_ok {
                return next;
            }
            let Some(needle) = needle.as_deref() else {
                results.push(json!({"path": full, "kind": kind_name(ft)}));
                return if results.len() >= max_results {
                    stopped = Some("max_results");
                    Walk::Stop
                } else {
                    next
                };
            };
            if ft != FileType::RegularFile || cx.tools.deny_read.matches(rel).is_some() {
                return next;
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
        },
    );
    trace.attr(span, "loom.fs.search.entries_visited", visited as u64);
    trace.attr(span, "loom.fs.search.files_read", files_read as u64);
    trace.attr(span, "loom.fs.search.results", results.len() as u64);
    if matches!(walk, Ok(Walked::Expired)) {
        stopped = Some("timeout");
    }
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

/// Matches one walked entry: `(matches, anything below it may match)`. The states of
/// its parent directory are cached in `parent` (the walk visits a directory's entries
/// together), so an entry costs one automaton step.
fn glob_entry(
    glob: &Glob,
    start: &RelPath,
    rel: &RelPath,
    fold: &dyn Fn(&str) -> String,
    parent: &mut Option<(RelPath, States)>,
    budget: &mut Budget<'_>,
) -> Result<(bool, bool), Expired> {
    let dir = rel.parent();
    if parent.as_ref().map_or(true, |(p, _)| *p != dir) {
        let mut states = glob.start();
        for c in &dir.components()[start.components().len()..] {
            let c: Vec<char> = fold(c).chars().collect();
            states = glob.step(&states, &c, budget)?;
        }
        *parent = Some((dir, states));
    }
    let (_, states) = parent.as_ref().expect("just set");
    let name: Vec<char> = fold(rel.file_name().unwrap_or_default()).chars().collect();
    let here = glob.step(states, &name, budget)?;
    Ok((
        glob.is_match(&here, &name, budget)?,
        glob.may_match_below(&here),
    ))
}
