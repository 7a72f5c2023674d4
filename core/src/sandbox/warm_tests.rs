//! Tests of [`super`]: prepared processes, and the working directory opened beneath
//! the root.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::sandbox::path::Workspace;
use crate::sandbox::process::{Limits, Output, PolicyConfig, Request};
use crate::sandbox::staging::Budget;
use crate::sandbox::stock::{Staged, Stock};

const BUDGET: Budget = Budget {
    bytes: 1 << 20,
    inodes: 64,
};

fn exe(name: &str) -> PathBuf {
    std::fs::canonicalize(format!("/usr/bin/{name}")).unwrap()
}

/// A policy for `dir`, or `None` where calls cannot be staged (not root).
fn policy(dir: &Path, var: &str) -> Option<Arc<Policy>> {
    let p = Policy::new(&PolicyConfig {
        workspace: dir.to_path_buf(),
        executables: ["env", "pwd", "ls", "sleep", "touch", "cat"]
            .map(exe)
            .to_vec(),
        read_paths: vec![PathBuf::from("/proc")],
        network: false,
        limits: Limits::default(),
        env: vec![
            ("PATH".into(), "/usr/bin".into()),
            ("VAR".into(), var.into()),
        ],
        max_output_bytes: 64 * 1024,
        require: false,
    })
    .unwrap();
    if !p.enforcement().staged_writes {
        eprintln!("SKIPPED: no staged writes (not root, or no overlayfs)");
        return None;
    }
    Some(Arc::new(p))
}

/// A temporary workspace root and a policy on it (None where the sandbox cannot run);
/// the directory lives as long as the returned guard.
fn setup(var: &str) -> Option<(tempfile::TempDir, PathBuf, Arc<Policy>)> {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let p = policy(&root, var)?;
    Some((dir, root, p))
}

fn run(
    p: &Policy,
    dir: &Path,
    staged: &Staged,
    argv: &[&str],
    cwd: &str,
) -> Result<Output, SandboxError> {
    let cwd_fd = std::fs::File::open(dir.join(cwd)).unwrap();
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    p.run(&Request {
        exe: &exe(&argv[0]),
        argv: &argv,
        cwd: cwd_fd.as_fd(),
        cwd_rel: cwd,
        timeout: Duration::from_secs(5),
        cancel: None,
        staging: Some(staged),
    })
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_prepared_process_runs_its_call_with_the_calls_own_argv_env_cwd_and_fds() {
    let Some((_dir, root, p)) = setup("first") else {
        return;
    };
    std::fs::create_dir(root.join("sub")).unwrap();
    let ws = Workspace::open(&root).unwrap();
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    assert!(staged.has_prepared_process());
    // Fully prepared before the call: it waits, blocked, with no child.
    std::thread::sleep(Duration::from_millis(50));
    let out = run(&p, &root, &staged, &["pwd"], "sub").unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("{}\n", root.join("sub").display()).as_bytes()
    );
    assert!(!staged.has_prepared_process(), "handed out once");

    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let out = run(&p, &root, &staged, &["env"], "").unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "PATH=/usr/bin\nVAR=first\n"
    );

    // Only stdio (and ls's own directory fd): not the go socket, status pipe,
    // ruleset or anything of the host.
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let out = run(&p, &root, &staged, &["ls", "/proc/self/fd"], "").unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "0\n1\n2\n3\n");
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let out = run(&p, &root, &staged, &["ls", "-l", "/proc/self/fd/0"], "").unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("/dev/null"));

    // The workspace as it is when the call runs, not when its process was prepared.
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(root.join("sub/late"), "").unwrap();
    let out = run(&p, &root, &staged, &["ls"], "sub").unwrap();
    assert_eq!(out.stdout, b"late\n", "{out:?}");
    std::fs::remove_file(root.join("sub/late")).unwrap();

    // Writes land in the call's overlay, not in the workspace, until committed.
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let out = run(&p, &root, &staged, &["touch", "made"], "sub").unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(
        !root.join("sub/made").exists(),
        "written through the overlay only"
    );
    let deny = crate::sandbox::deny::DenyList::new(Vec::<String>::new()).unwrap();
    crate::sandbox::staging::commit(&ws, staged.scratch(), &deny, 100).unwrap();
    assert!(root.join("sub/made").exists(), "committed");
}

#[test]
fn a_prepared_process_serves_one_call_and_a_second_call_gets_a_fresh_one() {
    let Some((_dir, root, p)) = setup("x") else {
        return;
    };
    let ws = Workspace::open(&root).unwrap();
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let warm = staged.take_warm().unwrap();
    let pid = warm.pid();
    assert!(staged.take_warm().is_none(), "cannot be taken twice");
    *staged.warm.lock() = Some(warm);
    // The pid of the process that ran the call: A's own namespace, B is pid 2.
    let out = run(&p, &root, &staged, &["ls", "-l", "/proc/self/ns/pid"], "").unwrap();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let first_ns = String::from_utf8(out.stdout).unwrap();
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!alive(pid), "A exits with its call");
    // The same Staged again: no prepared process left, and its overlay went with
    // the first call's namespace: the usual path refuses, nothing runs.
    match run(&p, &root, &staged, &["touch", "again"], "") {
        Err(SandboxError::Denied { rule, .. }) => assert_eq!(rule, "sandbox_setup"),
        other => panic!("{other:?}"),
    }
    assert!(!root.join("again").exists());
    // A fresh one: a namespace of its own.
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let out = run(&p, &root, &staged, &["ls", "-l", "/proc/self/ns/pid"], "").unwrap();
    let second_ns = String::from_utf8(out.stdout).unwrap();
    let ns = |s: &str| s.rsplit("->").next().unwrap().trim().to_string();
    assert_ne!(ns(&first_ns), ns(&second_ns));
}

#[test]
fn a_prepared_process_is_killed_at_the_timeout_and_when_dropped_unused() {
    let Some((_dir, root, p)) = setup("x") else {
        return;
    };
    let ws = Workspace::open(&root).unwrap();
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let cwd = std::fs::File::open(&root).unwrap();
    let argv = ["sleep".to_string(), "30".to_string()];
    let t0 = Instant::now();
    let out = p
        .run(&Request {
            exe: &exe("sleep"),
            argv: &argv,
            cwd: cwd.as_fd(),
            cwd_rel: "",
            timeout: Duration::from_millis(200),
            cancel: None,
            staging: Some(&staged),
        })
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    let unused = p.prepare_ahead(&ws, BUDGET).unwrap();
    let pid = unused.take_warm().map(|w| {
        let pid = w.pid();
        assert!(alive(pid));
        drop(w);
        pid
    });
    assert!(!alive(pid.unwrap()), "killed and reaped on drop");
}

#[test]
fn the_stocks_prepared_processes_are_gone_once_it_is_dropped() {
    let Some((_dir, root, p)) = setup("x") else {
        return;
    };
    let stock = Stock::new(p.clone(), Workspace::open(&root).unwrap(), BUDGET);
    let first = stock.take().unwrap(); // starts the thread; made on this one: cold
    assert!(!first.has_prepared_process());
    let t0 = Instant::now();
    let mut pids = Vec::new();
    while pids.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        let s = stock.take().unwrap();
        if let Some(w) = s.take_warm() {
            pids.push(w.pid());
            *s.warm.lock() = Some(w);
            stock.put_back_for_test(s);
        } else {
            stock.discard(s, true);
        }
    }
    assert!(!pids.is_empty(), "the stager made no prepared process");
    let all = stock.prepared_pids_for_test();
    assert!(!all.is_empty());
    for &pid in &all {
        assert!(alive(pid));
    }
    drop(first);
    drop(stock);
    for pid in all.into_iter().chain(pids) {
        assert!(!alive(pid), "{pid} outlived the stock");
    }
}

#[test]
fn a_staged_call_of_another_policy_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (Some(p1), Some(p2)) = (policy(&root, "one"), policy(&root, "two")) else {
        return;
    };
    let ws = Workspace::open(&root).unwrap();
    for staged in [
        p1.prepare_ahead(&ws, BUDGET).unwrap(),
        p1.prepare(&ws, BUDGET).unwrap(),
    ] {
        match run(&p2, &root, &staged, &["touch", "ran"], "") {
            Err(SandboxError::Denied { rule, .. }) => assert_eq!(rule, "sandbox_setup"),
            other => panic!("{other:?}"),
        }
        assert!(!root.join("ran").exists());
        let staged_ok = run(&p1, &root, &staged, &["env"], "").unwrap();
        assert!(String::from_utf8(staged_ok.stdout)
            .unwrap()
            .contains("VAR=one"));
    }
}

fn open(root: &std::path::Path, rel: &str) -> Result<std::path::PathBuf, i32> {
    let root = CString::new(root.as_os_str().as_bytes()).unwrap();
    let rel = CString::new(rel).unwrap();
    // SAFETY: valid C strings.
    let fd = unsafe { open_beneath(&root, rel.as_ptr().cast()) }?;
    // SAFETY: a fresh fd of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap())
}

#[test]
fn the_working_directory_is_opened_beneath_the_root_without_following_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("a/out")).unwrap();
    std::os::unix::fs::symlink("b", root.join("a/in")).unwrap();
    std::fs::write(root.join("a/file"), "").unwrap();
    assert_eq!(open(&root, ".").unwrap(), root);
    assert_eq!(open(&root, "a/b").unwrap(), root.join("a/b"));
    assert_eq!(open(&root, "a//./b/").unwrap(), root.join("a/b"));
    // A symlink is never followed: as the last component ENOTDIR (O_DIRECTORY with
    // O_NOFOLLOW), before another ELOOP.
    assert_eq!(open(&root, "a/out"), Err(libc::ENOTDIR));
    assert_eq!(open(&root, "a/out/ssl"), Err(libc::ENOTDIR));
    assert_eq!(open(&root, "a/in"), Err(libc::ENOTDIR), "not even within");
    assert_eq!(open(&root, "a/b/../.."), Err(libc::EPERM));
    assert_eq!(open(&root, ".."), Err(libc::EPERM));
    assert_eq!(open(&root, "a/file"), Err(libc::ENOTDIR));
    assert_eq!(open(&root, "a/missing"), Err(libc::ENOENT));
    assert_eq!(open(&root, &"x".repeat(300)), Err(libc::ENAMETOOLONG));
}

#[test]
fn a_forked_copy_of_the_host_neither_takes_nor_kills_a_prepared_process() {
    let Some((_dir, root, p)) = setup("x") else {
        return;
    };
    let ws = Workspace::open(&root).unwrap();
    let staged = p.prepare_ahead(&ws, BUDGET).unwrap();
    let pid = staged.warm.lock().as_ref().unwrap().pid();
    // SAFETY: the child only locks a mutex no other thread uses, drops and _exits.
    let forked = unsafe { libc::fork() };
    if forked == 0 {
        let taken = staged.take_warm().is_some();
        drop(staged);
        // SAFETY: ending the forked child without running the test harness's exit.
        unsafe { libc::_exit(if taken { 1 } else { 0 }) };
    }
    let mut st = 0;
    // SAFETY: waiting for our forked child.
    assert_eq!(unsafe { libc::waitpid(forked, &mut st, 0) }, forked);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "the copy took it"
    );
    assert!(alive(pid), "the copy killed it");
    let out = run(&p, &root, &staged, &["env"], "").unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("VAR=x"));
}

/// (policy, nice) from a `/proc/.../stat` text: fields 41 and 19.
fn sched_of(stat: &str) -> (u32, i32) {
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (f[38].parse().unwrap(), f[16].parse().unwrap())
}

/// The tid of this process's thread named `name`.
fn thread_named(name: &str) -> Option<String> {
    std::fs::read_dir("/proc/self/task").unwrap().find_map(|e| {
        let tid = e.unwrap().file_name().into_string().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
        (comm.trim() == name).then_some(tid)
    })
}

#[test]
fn a_prepared_process_runs_at_its_callers_priority_not_the_stagers() {
    let Some((_dir, root, p)) = setup("x") else {
        return;
    };
    let ws = Workspace::open(&root).unwrap();
    let stock = Stock::new(p.clone(), ws.try_clone().unwrap(), BUDGET);
    stock.discard(stock.take().unwrap(), true); // starts the thread
    let t0 = Instant::now();
    while stock.prepared_pids_for_test().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let a = *stock
        .prepared_pids_for_test()
        .first()
        .expect("no prepared process");
    let stager = thread_named("loom-stager").expect("no stager thread");
    let stat = |path: String| sched_of(&std::fs::read_to_string(path).unwrap());
    if stat(format!("/proc/self/task/{stager}/stat")).0 != libc::SCHED_IDLE as u32 {
        eprintln!("SKIPPED: the stager is not at SCHED_IDLE (no CAP_SYS_NICE)");
        return;
    }
    // What this test is about: the prepared process inherited the stager's SCHED_IDLE.
    assert_eq!(stat(format!("/proc/{a}/stat")).0, libc::SCHED_IDLE as u32);
    // SAFETY: gettid/setpriority on this thread only.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 3) }, 0);
    // The process of a call gets the calling thread's attributes (SCHED_OTHER, nice 3),
    // with a prepared process as without one (made by this thread, the usual path).
    for prepared in [true, false] {
        let staged = if prepared {
            let t0 = Instant::now();
            loop {
                let s = stock.take().unwrap();
                if s.has_prepared_process() || t0.elapsed() > Duration::from_secs(10) {
                    break s;
                }
                stock.discard(s, true);
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            p.prepare(&ws, BUDGET).unwrap()
        };
        assert_eq!(staged.has_prepared_process(), prepared);
        let out = run(&p, &root, &staged, &["cat", "/proc/self/stat"], "").unwrap();
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        let got = sched_of(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(got, (libc::SCHED_OTHER as u32, 3), "prepared: {prepared}");
        stock.discard(staged, true);
    }
    // SAFETY: as above (back to nice 0: this thread may, as root).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 0) };
}
