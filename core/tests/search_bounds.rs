//! `fs:search` can never be made to run past its timeout or keep a worker busy after
//! its caller gave up: adversarial globs (many `**`, `*a*a*a*b`, both mixed) over deep
//! and wide trees finish in polynomial time, and the deadline / cancel flag is checked
//! inside the glob matcher, not only between directory entries.
//!
//! Every call runs on its own thread and is waited for with a bound, so a regression
//! fails the test in seconds instead of hanging the suite.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use _core::tools::ToolError;
use common::*;
use serde_json::{json, Value};

/// `depth` nested directories `d00/d01/...`, each holding `files` files.
fn deep_tree(root: &Path, depth: usize, files: usize, name: &str) {
    let mut dir = root.to_path_buf();
    for d in 0..depth {
        dir = dir.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("{name}{f}")), "x").unwrap();
        }
    }
}

/// Runs `fs:search` on another thread; `None` if it has not returned after `wait`.
fn search_within(
    f: &Arc<Fixture>,
    args: Value,
    timeout: Option<Duration>,
    cancel: Option<Arc<AtomicBool>>,
    wait: Duration,
) -> Option<(Result<Value, ToolError>, Duration)> {
    let (tx, rx) = mpsc::channel();
    let f = f.clone();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let out = f
            .tools
            .call_cancellable("fs:search", args, timeout, cancel.as_deref());
        let _ = tx.send((out.result, t0.elapsed()));
    });
    rx.recv_timeout(wait).ok()
}

const DEEP_STARS: &str = "**/**/**/**/**/**/**/**/nomatch";

#[test]
fn many_double_stars_over_a_deep_tree_finish_quickly_without_a_timeout() {
    let f = Arc::new(Fixture::new());
    deep_tree(&f.root, 40, 3, "file");
    for glob in [
        DEEP_STARS,
        "**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/d39/nomatch",
        "**/*/**/*/**/*/**/*/**/*/**/*/**/*/**/*/nomatch",
        "**/d*/**/d*/**/d*/**/d*/**/d*/**/d*/**/d*/**/d*/x*y",
        "d00/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/zzz",
    ] {
        let (r, took) = search_within(
            &f,
            json!({"glob": glob}),
            None,
            None,
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("{glob}: still running after 5 s"));
        let r = r.unwrap();
        assert_eq!(r["results"], json!([]), "{glob}");
        assert_eq!(r["stopped"], Value::Null, "{glob}");
        assert!(took < Duration::from_secs(2), "{glob}: {took:?}");
    }
}

#[test]
fn double_stars_still_match_what_they_should_on_a_deep_tree() {
    let f = Arc::new(Fixture::new());
    deep_tree(&f.root, 40, 2, "file");
    let (r, _) = search_within(
        &f,
        json!({"glob": "**/**/**/**/**/**/**/**/d39/**/file1"}),
        None,
        None,
        Duration::from_secs(5),
    )
    .expect("still running after 5 s");
    let r = r.unwrap();
    let paths: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].ends_with("/d38/d39/file1"), "{paths:?}");
}

#[test]
fn star_backtracking_patterns_on_long_names_are_polynomial() {
    let f = Arc::new(Fixture::new());
    // 250-char names of 'a' (the worst case for `*a*a*...b`), wide and a few levels deep.
    let long = "a".repeat(250);
    for d in 0..4 {
        let dir = f.root.join(format!("{long}{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            std::fs::write(dir.join(format!("{}{i:03}", &long[..240])), "").unwrap();
        }
    }
    let name_pat = format!("{}b", "*a".repeat(200));
    for glob in [
        name_pat.clone(),
        format!("**/{name_pat}"),
        format!("**/{}/**/{}", "*a".repeat(60), "*a".repeat(60) + "b"),
        format!("{}/**/**/**/{}", "*a*".repeat(40), "?*a".repeat(80) + "*b"),
    ] {
        let (r, took) = search_within(
            &f,
            json!({"glob": glob}),
            None,
            None,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("{glob}: still running after 10 s"));
        assert_eq!(r.unwrap()["results"], json!([]), "{glob}");
        assert!(took < Duration::from_secs(3), "{glob}: {took:?}");
    }
}

/// Many entries with long names and a pattern whose every match is the scan's worst
/// case (each retry runs along 120 literals, then fails): seconds of honest work, so
/// only the deadline (or the cancel flag) can end the call in time.
fn costly_tree() -> (Arc<Fixture>, String) {
    let f = Arc::new(Fixture::with(|c| {
        c["tools"] = json!({"fs": {"max_search_entries": 1_000_000}})
    }));
    let long = "a".repeat(240);
    let mut dir = f.root.clone();
    for d in 0..8 {
        dir = dir.join(format!("{}{d}", &long[..200]));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..600 {
            std::fs::write(dir.join(format!("{long}{i:03}")), "").unwrap();
        }
    }
    let costly = format!("*{}b", "a".repeat(120));
    (f, format!("**/{costly}/**/{costly}/**/{costly}"))
}

#[test]
fn an_adversarial_glob_never_overruns_its_timeout() {
    let (f, glob) = costly_tree();
    // First the search without a deadline: it finishes, and how long it takes here
    // (0.16-0.33 s on the 2-core machine) sets the timeouts, so that it is the
    // deadline that stops the searches below on a fast machine and a slow one alike.
    let (r, unbounded) = search_within(
        &f,
        json!({"glob": glob}),
        None,
        None,
        Duration::from_secs(60),
    )
    .expect("still running after 60 s");
    assert_eq!(r.unwrap()["stopped"], Value::Null);
    assert!(
        unbounded > Duration::from_millis(60),
        "{unbounded:?}: fixture too cheap"
    );
    for timeout in [unbounded / 6, unbounded / 3] {
        let (r, took) = search_within(
            &f,
            json!({"glob": glob}),
            Some(timeout),
            None,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("still running 10 s after a {timeout:?} timeout"));
        let r = r.unwrap();
        assert_eq!(r["stopped"], "timeout", "{r} (unbounded: {unbounded:?})");
        assert_eq!(r["truncated"], true);
        assert!(
            took < timeout + Duration::from_millis(30),
            "took {took:?} with a {timeout:?} timeout"
        );
    }
}

#[test]
fn double_stars_with_a_timeout_return_in_time() {
    // The reported attack: exponential backtracking, with the clock looked at only
    // between directory entries.
    let f = Arc::new(Fixture::new());
    deep_tree(&f.root, 60, 20, "file");
    for glob in [
        DEEP_STARS.to_string(),
        format!("{}nomatch", "**/*/".repeat(12)),
    ] {
        let timeout = Duration::from_millis(200);
        let (r, took) = search_within(
            &f,
            json!({"glob": glob}),
            Some(timeout),
            None,
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("{glob}: still running 5 s after a 200 ms timeout"));
        assert!(r.is_ok());
        assert!(
            took < timeout + Duration::from_millis(30),
            "{glob}: {took:?}"
        );
    }
}

#[test]
fn a_cancelled_search_stops_promptly() {
    // Without a timeout, only the caller's cancel flag can end it (the binding sets it
    // when the awaiting task is cancelled).
    let f = Arc::new(Fixture::new());
    deep_tree(&f.root, 60, 20, "file");
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::Relaxed);
    });
    let (r, took) = search_within(
        &f,
        json!({"glob": DEEP_STARS}),
        None,
        Some(cancel),
        Duration::from_secs(5),
    )
    .expect("still running 5 s after being cancelled at 100 ms");
    assert!(r.is_ok());
    assert!(took < Duration::from_millis(150), "{took:?}");
}

#[test]
fn a_cancelled_costly_search_stops_inside_the_matcher() {
    let (f, glob) = costly_tree();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, Ordering::Relaxed);
    });
    let (r, took) = search_within(
        &f,
        json!({"glob": glob}),
        None,
        Some(cancel),
        Duration::from_secs(10),
    )
    .expect("still running 10 s after being cancelled at 100 ms");
    assert_eq!(r.unwrap()["stopped"], "timeout");
    assert!(took < Duration::from_millis(130), "{took:?}");
}

#[test]
fn a_wide_tree_does_not_hold_one_descriptor_per_queued_directory() {
    // Breadth-first with every queued directory open would hold thousands of fds at
    // once (the process's whole table, for every other tool and socket).
    let f = Arc::new(Fixture::with(|c| {
        c["tools"] = json!({"fs": {"max_search_entries": 100_000}})
    }));
    for i in 0..3000 {
        std::fs::create_dir_all(f.root.join(format!("d{i:04}/sub"))).unwrap();
    }
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (p, d) = (peak.clone(), done.clone());
    let sampler = std::thread::spawn(move || {
        while !d.load(Ordering::Relaxed) {
            p.fetch_max(fds(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let (r, _) = search_within(
        &f,
        json!({"glob": "**/nomatch"}),
        None,
        None,
        Duration::from_secs(10),
    )
    .expect("still running after 10 s");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(r.unwrap()["entries_visited"], 6000);
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak < before + 64,
        "{before} fds before, {peak} during the walk"
    );
}
