use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::otlp::{Resource, Status, Text};

fn span(id: u64) -> SpanRecord {
    SpanRecord {
        trace_id: 1,
        span_id: id,
        trace_state: None,
        parent: None,
        name: Text::new("s"),
        kind: 1,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![],
        dropped_attributes: 0,
        events: vec![],
        dropped_events: 0,
        links: vec![],
        dropped_links: 0,
        status: Status::default(),
        resource: Arc::new(Resource::default()),
        scope: None,
    }
}

fn span_ids(path: &Path) -> Vec<Vec<u64>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut ids = vec![];
            for rs in v["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for s in ss["spans"].as_array().unwrap() {
                        ids.push(u64::from_str_radix(s["spanId"].as_str().unwrap(), 16).unwrap());
                    }
                }
            }
            ids
        })
        .collect()
}

fn config(queue: usize, batch: usize, delay_ms: u64) -> Config {
    Config {
        max_queue_size: queue,
        max_batch_size: batch,
        schedule_delay: Duration::from_millis(delay_ms),
    }
}

#[test]
fn flush_writes_everything_queued_in_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/run.jsonl");
    let ex = Exporter::start(&path, config(100, 4, 60_000), None).unwrap();
    assert!(!path.exists(), "the file is made on the first batch");
    for i in 1..=10 {
        assert_eq!(ex.push(span(i)), Pushed::Queued);
    }
    assert!(ex.flush(Duration::from_secs(10)));
    let lines = span_ids(&path);
    assert_eq!(lines.concat(), (1..=10).collect::<Vec<_>>());
    assert!(lines.iter().all(|l| l.len() <= 4));
    let st = ex.stats();
    assert_eq!(
        (st.accepted, st.exported, st.dropped, st.queued),
        (10, 10, 0, 0)
    );
    assert!(
        ex.flush(Duration::from_secs(1)),
        "nothing new: returns at once"
    );
    assert!(ex.shutdown(Duration::from_secs(10)));
}

#[test]
fn a_full_batch_is_written_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let ex = Exporter::start(&path, config(100, 3, 60_000), None).unwrap();
    for i in 1..=3 {
        ex.push(span(i));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ex.stats().exported < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(span_ids(&path), [vec![1, 2, 3]]);
    ex.shutdown(Duration::from_secs(10));
}

#[test]
fn the_schedule_delay_writes_a_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let ex = Exporter::start(&path, config(100, 50, 20), None).unwrap();
    ex.push(span(7));
    let deadline = Instant::now() + Duration::from_secs(10);
    while ex.stats().exported < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(span_ids(&path), [vec![7]]);
    ex.shutdown(Duration::from_secs(10));
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    // The batch size is above the queue size: nothing is written until the flush.
    let ex = Exporter::start(&path, config(5, 1000, 60_000), None).unwrap();
    let results: Vec<Pushed> = (1..=8).map(|i| ex.push(span(i))).collect();
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == Pushed::DroppedOldest)
            .count(),
        3
    );
    assert!(ex.flush(Duration::from_secs(10)));
    assert_eq!(span_ids(&path).concat(), vec![4, 5, 6, 7, 8]);
    let st = ex.stats();
    assert_eq!((st.accepted, st.dropped, st.exported), (8, 3, 5));
    ex.shutdown(Duration::from_secs(10));
}

#[test]
fn shutdown_writes_what_is_queued_then_refuses_spans() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let ex = Exporter::start(&path, config(100, 2, 60_000), None).unwrap();
    for i in 1..=5 {
        ex.push(span(i));
    }
    assert!(ex.shutdown(Duration::from_secs(10)));
    assert_eq!(span_ids(&path).concat(), vec![1, 2, 3, 4, 5]);
    assert_eq!(ex.push(span(6)), Pushed::Shutdown);
    assert!(ex.shutdown(Duration::from_secs(1)), "idempotent");
    assert!(ex.flush(Duration::from_secs(1)), "nothing accepted since");
    assert_eq!(ex.stats().accepted, 5);
}

#[test]
fn appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    std::fs::write(&path, "{\"resourceSpans\":[]}\n").unwrap();
    let ex = Exporter::start(&path, config(10, 10, 60_000), None).unwrap();
    ex.push(span(1));
    ex.shutdown(Duration::from_secs(10));
    assert_eq!(span_ids(&path), [vec![], vec![1]]);
}

#[test]
fn write_errors_are_reported_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: every open fails.
    let path = dir.path().join("run.jsonl");
    std::fs::create_dir(&path).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let hook: ErrorHook = Box::new(move |msg: &str| {
        assert!(msg.contains("cannot write spans to"), "{msg}");
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let ex = Exporter::start(&path, config(10, 10, 60_000), Some(hook)).unwrap();
    ex.push(span(1));
    assert!(
        ex.flush(Duration::from_secs(10)),
        "a failed batch is done too"
    );
    assert_eq!(ex.stats().failed, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    ex.shutdown(Duration::from_secs(10));
}

#[test]
fn concurrent_pushes_and_flushes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let ex = Arc::new(Exporter::start(&path, config(100_000, 64, 5), None).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ex = Arc::clone(&ex);
            std::thread::spawn(move || {
                for i in 0..500 {
                    ex.push(span(t * 1000 + i));
                    if i % 100 == 0 {
                        assert!(ex.flush(Duration::from_secs(10)));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(ex.shutdown(Duration::from_secs(10)));
    let mut ids = span_ids(&path).concat();
    ids.sort_unstable();
    let mut want: Vec<u64> = (0..4)
        .flat_map(|t| (0..500).map(move |i| t * 1000 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(ids, want);
}
