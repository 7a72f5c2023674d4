//! The native tools doing their ordinary jobs: reads with offset/limit, atomic writes,
//! listing, deleting, searching, argument validation, specs and spans.

mod common;

use std::sync::Arc;
use std::time::Duration;

use _core::tools::ToolError;
use common::*;
use serde_json::{json, Value};

#[test]
fn specs_are_namespaced_with_closed_schemas() {
    let f = Fixture::new();
    let names: Vec<String> = f.tools.specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "fs:delete",
            "fs:list_dir",
            "fs:read_file",
            "fs:search",
            "fs:write_file",
            "system:shell"
        ]
    );
    for s in f.tools.specs() {
        assert_eq!(s.parameters["type"], "object", "{}", s.name);
        assert_eq!(s.parameters["additionalProperties"], false, "{}", s.name);
        assert!(!s.description.is_empty());
    }
    let shell = f
        .tools
        .specs()
        .into_iter()
        .find(|s| s.name == "system:shell")
        .unwrap();
    assert!(shell.description.contains("cat") && !shell.description.contains("python"));
}

#[test]
fn tools_can_be_disabled() {
    let f = Fixture::with(|c| {
        c["tools"] = json!({"shell": {"enabled": false}, "fs": {"enabled": false}})
    });
    assert!(f.tools.specs().is_empty());
    assert!(matches!(f.shell(&["ls"]), Err(ToolError::NotFound { .. })));
}

#[test]
fn unknown_tool_and_invalid_arguments() {
    let f = Fixture::new();
    assert!(
        matches!(f.call("fs:nope", json!({})), Err(ToolError::NotFound { tool }) if tool == "fs:nope")
    );
    match f.call("fs:read_file", json!({"pth": "x", "offset": -1})) {
        Err(ToolError::InvalidArguments { tool, errors }) => {
            assert_eq!(tool, "fs:read_file");
            assert_eq!(errors.len(), 3, "{errors:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.call("system:shell", json!({"argv": []})),
        Err(ToolError::InvalidArguments { .. })
    ));
    assert!(matches!(
        f.call("fs:search", json!({})),
        Err(ToolError::InvalidArguments { .. })
    ));
    assert!(matches!(
        f.call("system:shell", json!({"argv": ["ls"], "timeout": 0})),
        Err(ToolError::InvalidArguments { .. })
    ));
}

#[test]
fn read_with_offset_limit_and_cap() {
    let f = Fixture::with(|c| c["tools"] = json!({"fs": {"max_read_bytes": 10}}));
    std::fs::write(f.ws("t.txt"), "0123456789abcdefghij").unwrap();
    let r = f.read("t.txt").unwrap();
    assert_eq!(r["content"], "0123456789");
    assert_eq!(r["eof"], false);
    assert_eq!(r["next_offset"], 10);
    assert_eq!(r["size"], 20);
    let r = f
        .call(
            "fs:read_file",
            json!({"path": "t.txt", "offset": 15, "limit": 3}),
        )
        .unwrap();
    assert_eq!(r["content"], "fgh");
    let r = f
        .call("fs:read_file", json!({"path": "t.txt", "offset": 18}))
        .unwrap();
    assert_eq!(r["content"], "ij");
    assert_eq!(r["eof"], true);
    assert_eq!(r["next_offset"], Value::Null);
    assert!(matches!(
        f.call("fs:read_file", json!({"path": "t.txt", "limit": 11})),
        Err(ToolError::InvalidArguments { .. })
    ));
}

#[test]
fn read_never_cuts_a_utf8_character_and_binary_is_base64() {
    let f = Fixture::with(|c| c["tools"] = json!({"fs": {"max_read_bytes": 4}}));
    std::fs::write(f.ws("u.txt"), "ab€cd").unwrap(); // € is 3 bytes
    let r = f.read("u.txt").unwrap();
    assert_eq!(r["content"], "ab");
    assert_eq!(r["next_offset"], 2);
    let r = f
        .call("fs:read_file", json!({"path": "u.txt", "offset": 2}))
        .unwrap();
    assert_eq!(r["content"], "€c");
    std::fs::write(f.ws("b.bin"), [0xffu8, 0xfe, 0x00, 0x01]).unwrap();
    let r = f.read("b.bin").unwrap();
    assert_eq!(r["encoding"], "base64");
    assert_eq!(r["content"], "//4AAQ==");
}

#[test]
fn write_is_atomic_creates_parents_and_keeps_mode() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let r = f.write("a/b/c.txt", "one").unwrap();
    assert_eq!(r["created"], true);
    std::fs::set_permissions(f.ws("a/b/c.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let ino_before = std::fs::metadata(f.ws("a/b/c.txt"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let r = f.write("a/b/c.txt", "two").unwrap();
    assert_eq!(r["created"], false);
    let md = std::fs::metadata(f.ws("a/b/c.txt")).unwrap();
    assert_eq!(std::fs::read_to_string(f.ws("a/b/c.txt")).unwrap(), "two");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&md),
        ino_before,
        "replaced by rename, not written in place"
    );
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(f.ws("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(matches!(
        f.call(
            "fs:write_file",
            json!({"path": "a/b/c.txt", "content": "x", "overwrite": false})
        ),
        Err(ToolError::Failed { .. })
    ));
    assert!(matches!(
        f.call(
            "fs:write_file",
            json!({"path": "x/y.txt", "content": "x", "create_parents": false})
        ),
        Err(ToolError::Failed { .. })
    ));
    let r = f
        .call(
            "fs:write_file",
            json!({"path": "bin.dat", "content": "AAEC", "encoding": "base64"}),
        )
        .unwrap();
    assert_eq!(r["bytes_written"], 3);
    assert_eq!(std::fs::read(f.ws("bin.dat")).unwrap(), [0, 1, 2]);
}

#[test]
fn write_cap() {
    let f = Fixture::with(|c| c["tools"] = json!({"fs": {"max_write_bytes": 5}}));
    assert_eq!(rule(f.write("a.txt", "123456")), "max_write_bytes");
    f.write("a.txt", "12345").unwrap();
}

#[test]
fn concurrent_writers_never_produce_a_torn_file() {
    let f = Arc::new(Fixture::new());
    let big_a = "a".repeat(200_000);
    let big_b = "b".repeat(200_000);
    let writers: Vec<_> = [big_a.clone(), big_b.clone()]
        .into_iter()
        .map(|content| {
            let f = f.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    f.write("shared.txt", &content).unwrap();
                }
            })
        })
        .collect();
    for _ in 0..50 {
        if let Ok(r) = f.call("fs:read_file", json!({"path": "shared.txt"})) {
            let c = r["content"].as_str().unwrap();
            assert!(c == big_a || c == big_b, "torn read of {} bytes", c.len());
        }
    }
    for w in writers {
        w.join().unwrap();
    }
}

#[test]
fn list_dir_and_delete() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.ws("d/e")).unwrap();
    std::fs::write(f.ws("d/e/f.txt"), "x").unwrap();
    std::fs::write(f.ws("z.txt"), "zz").unwrap();
    symlink("z.txt", f.ws("link"));
    let r = f.call("fs:list_dir", json!({})).unwrap();
    let entries: Vec<(String, String)> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("d".into(), "directory".into()),
            ("link".into(), "symlink".into()),
            ("z.txt".into(), "file".into())
        ]
    );
    assert_eq!(r["entries"][1]["target"], "z.txt");
    let r = f.call("fs:list_dir", json!({"max_entries": 1})).unwrap();
    assert_eq!(r["truncated"], true);
    assert!(
        matches!(f.call("fs:delete", json!({"path": "d"})), Err(ToolError::Failed { reason, .. }) if reason.contains("recursive"))
    );
    let r = f
        .call("fs:delete", json!({"path": "d", "recursive": true}))
        .unwrap();
    assert_eq!(r["files_removed"], 1);
    assert_eq!(r["dirs_removed"], 2);
    assert!(!f.ws("d").exists());
    assert!(matches!(
        f.call("fs:delete", json!({"path": "d"})),
        Err(ToolError::Failed { .. })
    ));
}

#[test]
fn recursive_delete_is_bounded() {
    let f = Fixture::with(|c| c["tools"] = json!({"fs": {"max_delete_entries": 5}}));
    std::fs::create_dir_all(f.ws("many")).unwrap();
    for i in 0..10 {
        std::fs::write(f.ws(&format!("many/{i}")), "x").unwrap();
    }
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": "many", "recursive": true}))),
        "too_many_entries"
    );
    assert_eq!(
        std::fs::read_dir(f.ws("many")).unwrap().count(),
        10,
        "nothing deleted"
    );
}

#[test]
fn search_by_glob_name_and_content() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.ws("src/a")).unwrap();
    std::fs::create_dir_all(f.ws(".hidden")).unwrap();
    std::fs::write(
        f.ws("src/main.rs"),
        "fn main() {\n    println!(\"Hello\");\n}\n",
    )
    .unwrap();
    std::fs::write(f.ws("src/a/lib.rs"), "pub fn hello() {}\n").unwrap();
    std::fs::write(f.ws("README.md"), "say hello\n").unwrap();
    std::fs::write(f.ws(".hidden/x.rs"), "hello").unwrap();
    let paths = |r: &Value| -> Vec<String> {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["path"].as_str().unwrap().to_string())
            .collect()
    };
    let r = f.call("fs:search", json!({"glob": "**/*.rs"})).unwrap();
    assert_eq!(paths(&r), ["src/main.rs", "src/a/lib.rs"]);
    let r = f
        .call("fs:search", json!({"glob": "*.rs", "include_hidden": true}))
        .unwrap();
    assert_eq!(paths(&r).len(), 3);
    let r = f
        .call("fs:search", json!({"name_contains": "READ"}))
        .unwrap();
    assert_eq!(paths(&r), ["README.md"]);
    let r = f
        .call(
            "fs:search",
            json!({"content": "hello", "case_sensitive": false}),
        )
        .unwrap();
    assert_eq!(paths(&r), ["README.md", "src/main.rs", "src/a/lib.rs"]);
    assert_eq!(r["results"][1]["line"], 2);
    let r = f
        .call("fs:search", json!({"content": "hello", "glob": "*.rs"}))
        .unwrap();
    assert_eq!(paths(&r), ["src/a/lib.rs"]);
    let r = f
        .call("fs:search", json!({"path": "src", "glob": "a/*.rs"}))
        .unwrap();
    assert_eq!(paths(&r), ["src/a/lib.rs"]);
    let r = f
        .call("fs:search", json!({"glob": "*", "max_results": 2}))
        .unwrap();
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    assert_eq!(r["stopped"], "max_results");
}

#[test]
fn search_is_bounded_by_entries_and_time() {
    let f = Fixture::with(|c| c["tools"] = json!({"fs": {"max_search_entries": 50}}));
    for i in 0..200 {
        std::fs::write(f.ws(&format!("f{i:03}.txt")), "x").unwrap();
    }
    let r = f
        .call("fs:search", json!({"glob": "nothing-matches"}))
        .unwrap();
    assert_eq!(r["stopped"], "max_entries");
    let r = f
        .call_t(
            "fs:search",
            json!({"content": "y"}),
            Duration::from_nanos(1),
        )
        .unwrap();
    assert_eq!(r["stopped"], "timeout");
}

#[test]
fn spans_record_resolution_and_denials() {
    let f = Fixture::new();
    let out = f.tools.call(
        "fs:read_file",
        json!({"path": "../outside/secret.txt"}),
        None,
    );
    assert!(out.result.is_err());
    let s = &out.spans[0];
    assert_eq!(s.name, "sandbox.resolve");
    assert_eq!(
        s.attr("loom.sandbox.path.requested"),
        Some(&json!("../outside/secret.txt"))
    );
    assert_eq!(s.attr("loom.sandbox.outcome"), Some(&json!("denied")));
    assert_eq!(s.attr("loom.sandbox.rule"), Some(&json!("parent_escape")));
    assert!(s.status_error.is_some());
    assert!(
        s.end_unix_nanos >= s.start_unix_nanos && s.start_unix_nanos > 1_600_000_000_000_000_000
    );
    std::fs::write(f.ws("ok.txt"), "x").unwrap();
    let out = f
        .tools
        .call("fs:read_file", json!({"path": "./ok.txt"}), None);
    let s = &out.spans[0];
    assert_eq!(s.attr("loom.sandbox.outcome"), Some(&json!("ok")));
    assert_eq!(s.attr("loom.sandbox.path.resolved"), Some(&json!("ok.txt")));
    assert_eq!(s.attr("loom.sandbox.resolver"), Some(&json!("openat2")));
    assert!(s.status_error.is_none());
    assert!(
        !serde_json::to_string(&s.to_json())
            .unwrap()
            .contains("\"x\""),
        "no file contents in spans"
    );
}

#[test]
fn status_reports_the_allowlist_and_enforcement() {
    let f = Fixture::with(|c| {
        c["tools"] = json!({"shell": {"allow": ["cat", "definitely-not-installed"]}})
    });
    let st = f.tools.status();
    assert_eq!(
        st["shell"]["allow"]["cat"],
        json!(std::fs::canonicalize("/bin/cat").unwrap())
    );
    assert_eq!(st["shell"]["missing"], json!(["definitely-not-installed"]));
    assert!(st["deny_write"]
        .as_array()
        .unwrap()
        .contains(&json!(".git")));
}

#[test]
fn many_threads_at_once() {
    let f = Arc::new(Fixture::new());
    std::fs::write(f.ws("r.txt"), "shared").unwrap();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let f = f.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    let r = f.shell(&["echo", &format!("{i}-{j}")]).unwrap();
                    assert_eq!(r["stdout"], format!("{i}-{j}\n"));
                    assert_eq!(f.read("r.txt").unwrap()["content"], "shared");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn the_config_block_in_docs_tools_md_is_the_default() {
    // The documented `loom.toml` must parse and say exactly what the code defaults to.
    let doc = include_str!("../../docs/tools.md");
    let start = doc.find("```toml\n").expect("a toml block") + 8;
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(block.as_bytes())?;
            c.wait_with_output()
        });
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "SKIPPED the_config_block_in_docs_tools_md_is_the_default: no python3 with tomllib"
        );
        return;
    };
    let mut documented: Value = serde_json::from_slice(&out.stdout).unwrap();
    documented["workspace"]["root"] = json!("/somewhere");
    let documented: _core::tools::SandboxConfig = serde_json::from_value(documented).unwrap();
    let default: _core::tools::SandboxConfig =
        serde_json::from_value(json!({"workspace": {"root": "/somewhere"}})).unwrap();
    assert_eq!(documented, default);
}

#[test]
fn content_search_is_bounded_by_bytes_read() {
    let f = Fixture::with(|c| c["tools"] = json!({"fs": {"max_search_bytes": 1000}}));
    for i in 0..10 {
        std::fs::write(f.ws(&format!("f{i}.txt")), "x".repeat(300)).unwrap();
    }
    let r = f.call("fs:search", json!({"content": "y"})).unwrap();
    assert_eq!(r["stopped"], "max_bytes");
}

#[test]
fn arguments_nested_too_deep_are_invalid_not_a_crash() {
    // On a thread with a small stack, like the binding's workers: a recursive check,
    // validation or drop of these values would overflow it.
    let f = std::sync::Arc::new(Fixture::new());
    let g = f.clone();
    let out = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut errors = Vec::new();
            for (levels, object) in [(101, false), (10_000, true), (200_000, false)] {
                // (`json!` would serialise `v` recursively: build by hand.)
                let obj = |key: &str, v: Value| {
                    let mut m = serde_json::Map::new();
                    m.insert(key.to_string(), v);
                    Value::Object(m)
                };
                let mut v = json!("x");
                for _ in 0..levels {
                    v = if object {
                        obj("path", v)
                    } else {
                        Value::Array(vec![v])
                    };
                }
                let args = if object { v } else { obj("path", v) };
                errors.push(g.tools.call("fs:read_file", args, None).result);
            }
            // The deepest accepted value is validated as usual.
            let mut v = json!("x");
            for _ in 0..99 {
                v = Value::Array(vec![v]);
            }
            errors.push(
                g.tools
                    .call("fs:read_file", json!({ "path": v }), None)
                    .result,
            );
            errors
        })
        .unwrap()
        .join()
        .expect("the worker thread crashed");
    for r in &out[..3] {
        match r {
            Err(ToolError::InvalidArguments { errors, .. }) => {
                assert!(
                    errors[0].contains("nested deeper than 100 levels"),
                    "{errors:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    match &out[3] {
        Err(ToolError::InvalidArguments { errors, .. }) => {
            assert!(errors[0].contains("/path: expected string"), "{errors:?}")
        }
        other => panic!("{other:?}"),
    }
}
