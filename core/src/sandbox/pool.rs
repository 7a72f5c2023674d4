//! The memory budget that the staging tmpfs of concurrent calls share
//! (`[tools.shell.limits] write_bytes_total`), handed out first come, first served.
//!
//! Each call reserves its `write_bytes` before its tmpfs exists and gives it back when it
//! ends. With the defaults (512 MiB of 2 GiB) four calls hold a reservation at once and
//! the others wait in line: in the order they came, so that no call waits while later
//! ones go ahead of it (a plain condition variable let whichever waiter woke first take
//! the freed bytes, and under eight callers some waited ten times as long as the rest).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Bounds the memory the staging tmpfs of concurrent calls can hold in all.
#[derive(Debug)]
pub struct StagingPool {
    state: Mutex<State>,
    freed: Condvar,
    total: u64,
}

#[derive(Debug)]
struct State {
    free: u64,
    /// Tickets of the waiting calls, first come first.
    line: VecDeque<u64>,
    next: u64,
}

/// Bytes of a [`StagingPool`] held by one call (returned on drop).
#[derive(Debug)]
pub struct Reservation<'a> {
    pool: &'a StagingPool,
    bytes: u64,
}

impl StagingPool {
    /// A pool of `total` bytes.
    pub fn new(total: u64) -> Self {
        Self {
            state: Mutex::new(State {
                free: total,
                line: VecDeque::new(),
                next: 0,
            }),
            freed: Condvar::new(),
            total,
        }
    }

    /// Waits until `bytes` are free and every call that came earlier has its share (or
    /// `deadline`, or `cancel`), then holds them. `None`: the deadline passed or the call
    /// was cancelled first.
    pub fn reserve(
        &self,
        bytes: u64,
        deadline: Instant,
        cancel: Option<&AtomicBool>,
    ) -> Option<Reservation<'_>> {
        let bytes = bytes.min(self.total);
        let mut st = self.state.lock();
        if st.line.is_empty() && st.free >= bytes {
            st.free -= bytes;
            return Some(Reservation { pool: self, bytes });
        }
        let ticket = st.next;
        st.next += 1;
        st.line.push_back(ticket);
        loop {
            if st.line.front() == Some(&ticket) && st.free >= bytes {
                st.line.pop_front();
                st.free -= bytes;
                if !st.line.is_empty() {
                    self.freed.notify_all(); // the next in line may fit too
                }
                return Some(Reservation { pool: self, bytes });
            }
            let now = Instant::now();
            if now >= deadline || cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                let first = st.line.front() == Some(&ticket);
                st.line.retain(|&t| t != ticket);
                if first {
                    self.freed.notify_all(); // the next in line may fit
                }
                return None;
            }
            let slice = (deadline - now).min(Duration::from_millis(50));
            self.freed.wait_for(&mut st, slice);
        }
    }

    /// The pool's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many calls wait (tests).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state.lock().line.len()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock();
        st.free += self.bytes;
        if !st.line.is_empty() {
            self.pool.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn waiting_calls_get_their_share_in_the_order_they_came() {
        let pool = Arc::new(StagingPool::new(2));
        let held = [pool.reserve(1, far(), None), pool.reserve(1, far(), None)];
        assert!(held.iter().all(Option::is_some));
        let (tx, rx) = mpsc::channel();
        let mut waiters = Vec::new();
        for i in 0..4 {
            let (p, tx) = (pool.clone(), tx.clone());
            waiters.push(std::thread::spawn(move || {
                let r = p.reserve(1, far(), None).unwrap();
                tx.send(i).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                drop(r);
            }));
            // In line before the next one starts.
            while pool.waiting() < i + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // A newcomer while others wait does not go ahead of them.
        let pool2 = pool.clone();
        let late = std::thread::spawn(move || {
            let r = pool2.reserve(1, far(), None).unwrap();
            drop(r);
        });
        while pool.waiting() < 5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        let order: Vec<usize> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 3]);
        for w in waiters {
            w.join().unwrap();
        }
        late.join().unwrap();
        assert_eq!(pool.state.lock().free, 2);
    }

    #[test]
    fn a_call_that_gives_up_leaves_the_line_and_lets_the_next_one_in() {
        let pool = Arc::new(StagingPool::new(1));
        let held = pool.reserve(1, far(), None).unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let (p, c) = (pool.clone(), cancel.clone());
        let first = std::thread::spawn(move || p.reserve(1, far(), Some(&c)).is_some());
        while pool.waiting() < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let p = pool.clone();
        let second = std::thread::spawn(move || p.reserve(1, far(), None).is_some());
        while pool.waiting() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let timed_out = pool.reserve(1, Instant::now() + Duration::from_millis(30), None);
        assert!(timed_out.is_none(), "nothing was free");
        cancel.store(true, Ordering::Relaxed);
        assert!(!first.join().unwrap(), "cancelled");
        drop(held);
        assert!(second.join().unwrap(), "the next in line got it");
        assert_eq!(pool.waiting(), 0);
        assert!(pool.reserve(1, far(), None).is_some());
    }

    #[test]
    fn a_small_call_does_not_overtake_a_larger_one_that_waits() {
        let pool = Arc::new(StagingPool::new(3));
        let held = pool.reserve(2, far(), None).unwrap();
        let p = pool.clone();
        let large = std::thread::spawn(move || p.reserve(2, far(), None).is_some());
        while pool.waiting() < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // One byte is free, but the call that came first needs two.
        let small = pool.reserve(1, Instant::now() + Duration::from_millis(30), None);
        assert!(small.is_none(), "went ahead of a waiting call");
        drop(held);
        assert!(large.join().unwrap());
    }
}
