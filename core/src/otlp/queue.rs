//! The bounded span queue and the thread that writes it to the trace file.
//!
//! Like the SDK's `BatchSpanProcessor`: a queue of at most `max_queue_size` spans (when
//! full the oldest is dropped and counted), a worker that wakes when a batch's worth
//! is queued or `schedule_delay` has passed, and writes batches of at most
//! `max_batch_size` spans. Each batch is one line of the `.jsonl` file, handed to the
//! OS with one `write` (no user-space buffer), so a killed process loses at most the
//! batch being written and what is still queued.
//!
//! Progress is counted, not tracked per span: `accepted` spans were pushed, `done` of
//! them were written, failed or dropped. Spans leave the queue in order (written from
//! the front, dropped from the front), so `done >= n` means the first `n` are handled —
//! which is what [`Exporter::flush`] waits for.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

use super::encode::encode_request;
use super::span::SpanRecord;
use crate::owner::{OwnedThread, Owner};

/// The batch settings (the Python side reads them from `OTEL_BSP_*`).
#[derive(Clone, Debug)]
pub struct Config {
    pub max_queue_size: usize,
    pub max_batch_size: usize,
    pub schedule_delay: Duration,
}

impl Default for Config {
    /// The SDK's defaults.
    fn default() -> Self {
        Config {
            max_queue_size: 2048,
            max_batch_size: 512,
            schedule_delay: Duration::from_millis(5000),
        }
    }
}

/// What became of a pushed span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest span in the queue was dropped to make room.
    DroppedOldest,
    /// Refused: the exporter is shut down.
    Shutdown,
}

/// Counters since the exporter started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans waiting in the queue.
    pub queued: usize,
    /// Spans pushed (dropped ones included).
    pub accepted: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans written to the file.
    pub exported: u64,
    /// Spans lost to write errors.
    pub failed: u64,
}

/// Called (on the writer thread, no lock held) with the message of a failed write.
pub type ErrorHook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct State {
    queue: VecDeque<SpanRecord>,
    accepted: u64,
    done: u64,
    flush_to: u64,
    dropped: u64,
    exported: u64,
    failed: u64,
    shutdown: bool,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The worker waits on it.
    work: Condvar,
    /// Flushes and shutdown wait on it.
    progress: Condvar,
    config: Config,
    path: PathBuf,
    on_error: Option<ErrorHook>,
}

/// The queue and its writer thread for one trace file.
pub struct Exporter {
    shared: Arc<Shared>,
    worker: Mutex<Option<OwnedThread>>,
    owner: Owner,
}

impl Exporter {
    /// Starts the writer thread. The file (and its directory) is created on the first
    /// batch and appended to.
    pub fn start(
        path: impl Into<PathBuf>,
        config: Config,
        on_error: Option<ErrorHook>,
    ) -> std::io::Result<Self> {
        let config = Config {
            max_queue_size: config.max_queue_size.max(1),
            max_batch_size: config.max_batch_size.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            config,
            path: path.into(),
            on_error,
        });
        let for_worker = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("loom-span-export".into())
            .spawn(move || run(&for_worker))?;
        Ok(Exporter {
            shared,
            worker: Mutex::new(Some(OwnedThread::new(worker))),
            owner: Owner::this_process(),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Queues a finished span (never blocks on the writer: the lock is held only to
    /// move spans in and out of the queue).
    pub fn push(&self, span: SpanRecord) -> Pushed {
        let shared = &*self.shared;
        let mut st = shared.state.lock();
        if st.shutdown {
            return Pushed::Shutdown;
        }
        st.accepted += 1;
        let mut result = Pushed::Queued;
        if st.queue.len() >= shared.config.max_queue_size {
            st.queue.pop_front();
            st.dropped += 1;
            st.done += 1;
            result = Pushed::DroppedOldest;
        }
        st.queue.push_back(span);
        // Wake the worker once, when a batch's worth is there (not on every push).
        if st.queue.len() == shared.config.max_batch_size {
            shared.work.notify_one();
        }
        result
    }

    /// Waits until every span pushed before this call is written (or dropped, or lost
    /// to a write error). False if that did not happen within `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        if !self.owner.is_this_process() {
            return false; // a forked copy: no thread writes its queue
        }
        let shared = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut st = shared.state.lock();
        let target = st.accepted;
        if st.done >= target {
            return true;
        }
        if st.stopped {
            return false;
        }
        st.flush_to = st.flush_to.max(target);
        shared.work.notify_one();
        while st.done < target && !st.stopped {
            if shared.progress.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.done >= target
    }

    /// Refuses further spans, writes what is queued, stops the thread and closes the
    /// file. False if the thread did not finish within `timeout` (it goes on writing in
    /// the background). Idempotent.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        if !self.owner.is_this_process() {
            return false; // a forked copy: the thread is the parent's
        }
        let shared = &*self.shared;
        let deadline = Instant::now() + timeout;
        {
            let mut st = shared.state.lock();
            st.shutdown = true;
            shared.work.notify_one();
            while !st.stopped {
                if shared.progress.wait_until(&mut st, deadline).timed_out() {
                    return false;
                }
            }
        }
        if let Some(worker) = self.worker.lock().take() {
            let _ = worker.join();
        }
        true
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let st = self.shared.state.lock();
        Stats {
            queued: st.queue.len(),
            accepted: st.accepted,
            dropped: st.dropped,
            exported: st.exported,
            failed: st.failed,
        }
    }
}

impl Drop for Exporter {
    /// Tells the thread to write what is queued and stop, without waiting for it. In a
    /// forked copy nothing is touched: the thread is the parent's, its lock may have been
    /// held by a thread that is gone, and its handle is forgotten ([`OwnedThread`]).
    fn drop(&mut self) {
        if !self.owner.is_this_process() {
            return;
        }
        if let Some(mut st) = self.shared.state.try_lock() {
            st.shutdown = true;
            self.shared.work.notify_one();
        }
    }
}

fn run(shared: &Shared) {
    let config = &shared.config;
    let mut file: Option<File> = None;
    let mut line = Vec::with_capacity(64 * 1024);
    let mut deadline = Instant::now() + config.schedule_delay;
    loop {
        let batch: Vec<SpanRecord> = {
            let mut st = shared.state.lock();
            loop {
                let urgent =
                    st.queue.len() >= config.max_batch_size || st.flush_to > st.done || st.shutdown;
                if !st.queue.is_empty() && (urgent || Instant::now() >= deadline) {
                    break;
                }
                if st.shutdown {
                    st.stopped = true;
                    shared.progress.notify_all();
                    return; // `file` is closed as it drops
                }
                if Instant::now() >= deadline {
                    deadline = Instant::now() + config.schedule_delay;
                }
                shared.work.wait_until(&mut st, deadline);
            }
            let n = st.queue.len().min(config.max_batch_size);
            st.queue.drain(..n).collect()
        };
        let spans = batch.len() as u64;
        line.clear();
        encode_request(&batch, &mut line);
        drop(batch);
        line.push(b'\n');
        let result = write_line(&mut file, &shared.path, &line);
        // Reported before the batch counts as done, so a flush returns after the log.
        if let (Err(e), Some(hook)) = (&result, &shared.on_error) {
            hook(&format!(
                "cannot write spans to {}: {e}",
                shared.path.display()
            ));
        }
        {
            let mut st = shared.state.lock();
            st.done += spans;
            if result.is_ok() {
                st.exported += spans;
            } else {
                st.failed += spans;
            }
            shared.progress.notify_all();
        }
        deadline = Instant::now() + config.schedule_delay;
    }
}

/// Appends one line with one `write_all` (opening the file on first use; after an error
/// the next batch opens it again).
fn write_line(file: &mut Option<File>, path: &Path, line: &[u8]) -> std::io::Result<()> {
    if file.is_none() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        *file = Some(OpenOptions::new().create(true).append(true).open(path)?);
    }
    let result = file.as_mut().map_or(Ok(()), |f| f.write_all(line));
    if result.is_err() {
        *file = None;
    }
    result
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
