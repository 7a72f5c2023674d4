//! `fs:read_file`, `fs:write_file`, `fs:list_dir`, `fs:delete`.

use serde_json::{json, Value};

use super::config::FsConfig;
use super::trace::Trace;
use super::{arg_bool, arg_str, arg_u64, Cx, ToolError, ToolSpec};
use crate::sandbox::fs as sfs;
use crate::sandbox::path::RelPath;
use crate::sandbox::SandboxError;

const PATH_HELP: &str = "Path relative to the workspace root; absolute paths, '..' above the \
root and symbolic links are refused.";

fn path_prop() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 4096, "description": PATH_HELP})
}

pub(super) fn read_spec(c: &FsConfig) -> ToolSpec {
    ToolSpec {
        name: "fs:read_file".into(),
        description: format!(
            "Read a file in the workspace. Returns at most {} bytes from `offset`; if the file \
             is longer, `eof` is false and `next_offset` says where to continue. Text is \
             returned as UTF-8, anything else as base64 (see `encoding`).",
            c.max_read_bytes
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": path_prop(),
                "offset": {"type": "integer", "minimum": 0, "description": "Byte offset to start at (default 0)."},
                "limit": {"type": "integer", "minimum": 1, "maximum": c.max_read_bytes,
                          "description": "Most bytes to return (default and maximum: the configured cap)."},
                "encoding": {"enum": ["auto", "utf-8", "base64"],
                             "description": "auto (default): UTF-8 if the bytes are text, else base64."}
            },
            "required": ["path"],
            "additionalProperties": false
        }),
    }
}

pub(super) fn write_spec(c: &FsConfig) -> ToolSpec {
    ToolSpec {
        name: "fs:write_file".into(),
        description: format!(
            "Write a file in the workspace atomically (the old content is replaced in one \
             step). At most {} bytes. Missing parent directories are created unless \
             `create_parents` is false. Refuses git hooks and config, .env files, shell \
             start-up files and other protected paths.",
            c.max_write_bytes
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": path_prop(),
                "content": {"type": "string", "description": "The new content."},
                "encoding": {"enum": ["utf-8", "base64"], "description": "How `content` is encoded (default utf-8)."},
                "create_parents": {"type": "boolean", "description": "Create missing parent directories (default true)."},
                "overwrite": {"type": "boolean", "description": "Replace an existing file (default true)."}
            },
            "required": ["path", "content"],
            "additionalProperties": false
        }),
    }
}

pub(super) fn list_spec(c: &FsConfig) -> ToolSpec {
    ToolSpec {
        name: "fs:list_dir".into(),
        description: format!(
            "List a directory of the workspace: name, kind (file, directory, symlink, ...) and \
             size of each entry, sorted by name, at most {} entries.",
            c.max_list_entries
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 4096, "description": "Directory (default: the workspace root)."},
                "max_entries": {"type": "integer", "minimum": 1, "maximum": c.max_list_entries}
            },
            "additionalProperties": false
        }),
    }
}

pub(super) fn delete_spec() -> ToolSpec {
    ToolSpec {
        name: "fs:delete".into(),
        description: "Delete a file, a symbolic link (not its target) or, with `recursive`, a \
                      directory and everything in it. Refuses the workspace root and protected \
                      paths."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": path_prop(),
                "recursive": {"type": "boolean", "description": "Delete a non-empty directory (default false)."}
            },
            "required": ["path"],
            "additionalProperties": false
        }),
    }
}

/// Parses the path and checks the read deny list.
fn check_read(cx: &Cx<'_>, rel: RelPath) -> Result<RelPath, SandboxError> {
    if let Some(p) = cx.tools.deny_read.matches(&rel) {
        return Err(SandboxError::denied(
            "deny_read",
            format!("{rel} matches the read deny list ({p:?})"),
        ));
    }
    Ok(rel)
}

pub(super) fn read_file(cx: &Cx<'_>, args: &Value, trace: &mut Trace) -> Result<Value, ToolError> {
    let requested = arg_str(args, "path").unwrap_or_default();
    let max = cx.cfg().tools.fs.max_read_bytes;
    let offset = arg_u64(args, "offset").unwrap_or(0);
    let limit = arg_u64(args, "limit").unwrap_or(max).min(max);
    let encoding = arg_str(args, "encoding").unwrap_or("auto");
    let ws = cx.ws();
    let (rel, out) = trace
        .resolve(requested, "read", ws.resolver().as_str(), || {
            let rel = check_read(cx, RelPath::parse(requested)?)?;
            let out = sfs::read_file(ws, &rel, offset, limit)?;
            Ok((rel, out))
        })
        .map_err(|e| cx.err(e))?;
    let mut data = out.data;
    if !out.eof && encoding != "base64" {
        // Do not cut a UTF-8 sequence in two: stop before it, the next read starts there.
        let keep = utf8_prefix_len(&data);
        if keep > 0 {
            data.truncate(keep);
        }
    }
    let n = data.len() as u64;
    let (content, used) = match (encoding, String::from_utf8(data)) {
        ("base64", Ok(s)) => (base64(s.as_bytes()), "base64"),
        ("base64", Err(e)) => (base64(e.as_bytes()), "base64"),
        (_, Ok(s)) => (s, "utf-8"),
        ("utf-8", Err(e)) => (
            String::from_utf8_lossy(e.as_bytes()).into_owned(),
            "utf-8-lossy",
        ),
        (_, Err(e)) => (base64(e.as_bytes()), "base64"),
    };
    let end = offset.saturating_add(n);
    let eof = end >= out.size;
    Ok(json!({
        "path": rel.as_string(),
        "content": content,
        "encoding": used,
        "offset": offset,
        "bytes_read": n,
        "size": out.size,
        "eof": eof,
        "next_offset": if eof { Value::Null } else { json!(end) },
    }))
}

/// Length of the longest prefix that does not end inside a UTF-8 sequence (the whole
/// slice if it is not UTF-8 near the end anyway).
fn utf8_prefix_len(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let i = b.len() - back;
        let byte = b[i];
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return b.len(),
        };
        return if back < need { i } else { b.len() };
    }
    b.len()
}

pub(super) fn write_file(cx: &Cx<'_>, args: &Value, trace: &mut Trace) -> Result<Value, ToolError> {
    let requested = arg_str(args, "path").unwrap_or_default();
    let content = arg_str(args, "content").unwrap_or_default();
    let data = match arg_str(args, "encoding").unwrap_or("utf-8") {
        "base64" => unbase64(content)
            .ok_or_else(|| ToolError::invalid(cx.tool, "/content: not valid base64"))?,
        _ => content.as_bytes().to_vec(),
    };
    let max = cx.cfg().tools.fs.max_write_bytes;
    if data.len() as u64 > max {
        return Err(ToolError::Denied {
            tool: cx.tool.to_string(),
            rule: "max_write_bytes".into(),
            reason: format!("{} bytes is more than the {max}-byte write cap", data.len()),
        });
    }
    let create_parents = arg_bool(args, "create_parents", true);
    let overwrite = arg_bool(args, "overwrite", true);
    let ws = cx.ws();
    let (rel, out) = trace
        .resolve(requested, "write", ws.resolver().as_str(), || {
            let rel = RelPath::parse(requested)?;
            let out = sfs::write_file(
                ws,
                &rel,
                &data,
                create_parents,
                overwrite,
                &cx.tools.deny_write,
            )?;
            Ok((rel, out))
        })
        .map_err(|e| cx.err(e))?;
    Ok(json!({"path": rel.as_string(), "bytes_written": out.bytes, "created": out.created}))
}

pub(super) fn list_dir(cx: &Cx<'_>, args: &Value, trace: &mut Trace) -> Result<Value, ToolError> {
    let requested = arg_str(args, "path").unwrap_or(".");
    let cap = cx.cfg().tools.fs.max_list_entries;
    let max = arg_u64(args, "max_entries").map_or(cap, |m| (m as usize).min(cap));
    let ws = cx.ws();
    let (rel, (entries, truncated)) = trace
        .resolve(requested, "list", ws.resolver().as_str(), || {
            let rel = RelPath::parse(requested)?;
            let out = sfs::list_dir(ws, &rel, max)?;
            Ok((rel, out))
        })
        .map_err(|e| cx.err(e))?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut v = json!({"name": e.name, "kind": e.kind, "size": e.size});
            if let Some(t) = e.target {
                v["target"] = json!(t);
            }
            v
        })
        .collect();
    Ok(json!({"path": rel.as_string(), "entries": entries, "truncated": truncated}))
}

pub(super) fn delete(cx: &Cx<'_>, args: &Value, trace: &mut Trace) -> Result<Value, ToolError> {
    let requested = arg_str(args, "path").unwrap_or_default();
    let recursive = arg_bool(args, "recursive", false);
    let max = cx.cfg().tools.fs.max_delete_entries;
    let ws = cx.ws();
    let (rel, out) = trace
        .resolve(requested, "delete", ws.resolver().as_str(), || {
            let rel = RelPath::parse(requested)?;
            let out = sfs::delete(ws, &rel, recursive, &cx.tools.deny_write, max)?;
            Ok((rel, out))
        })
        .map_err(|e| cx.err(e))?;
    Ok(json!({"path": rel.as_string(), "files_removed": out.files, "dirs_removed": out.dirs}))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn unbase64(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if clean.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => B64.iter().position(|&x| x == c)? as u32,
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(unbase64(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert!(unbase64("Zm8").is_none());
        assert!(unbase64("Z=8=").is_none());
    }

    #[test]
    fn utf8_cut() {
        let s = "aé€😀".as_bytes();
        assert_eq!(utf8_prefix_len(s), s.len());
        assert_eq!(utf8_prefix_len(&s[..s.len() - 1]), s.len() - 4);
        assert_eq!(utf8_prefix_len(&s[..s.len() - 3]), s.len() - 4);
        assert_eq!(utf8_prefix_len(&s[..2]), 1);
        assert_eq!(utf8_prefix_len(b"\xff\xfe"), 2);
    }
}
