//! The crate's locks: `std::sync`'s, without poisoning, with the calling style of
//! `parking_lot` (`lock()` returns the guard; a condition variable waits on `&mut guard`).
//!
//! Not `parking_lot` itself: it parks waiting threads in one process-wide table, and after
//! `fork()` the child's copy of that table still lists the parent's parked threads (their
//! thread data on stacks glibc hands to the child's new threads), so the child's first
//! contended lock or condition variable follows stale pointers (seen: a forked child's
//! span writer crashing in `Condvar::notify_all`). `std`'s futex locks keep their state in
//! the lock: a lock made in the child works there. A panic while a lock is held does not
//! make the data unusable (no poisoning), as with `parking_lot`.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{self as s, PoisonError, TryLockError};
use std::time::{Duration, Instant};

/// A mutual-exclusion lock.
#[derive(Debug, Default)]
pub struct Mutex<T: ?Sized>(s::Mutex<T>);

/// Holds a [`Mutex`] until dropped.
#[derive(Debug)]
pub struct MutexGuard<'a, T: ?Sized>(Option<s::MutexGuard<'a, T>>);

impl<T> Mutex<T> {
    /// A lock holding `value`.
    pub const fn new(value: T) -> Self {
        Mutex(s::Mutex::new(value))
    }

    /// The value, the lock gone.
    pub fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Waits for the lock.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard(Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(g) => Some(MutexGuard(Some(g))),
            Err(TryLockError::Poisoned(p)) => Some(MutexGuard(Some(p.into_inner()))),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The value, through exclusive access (no locking).
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> MutexGuard<'_, T> {
    fn inner(&self) -> &s::MutexGuard<'_, T> {
        // The guard is taken out only for the length of a condition variable's wait.
        self.0.as_ref().expect("a guard outside a wait")
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.inner()
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("a guard outside a wait")
    }
}

/// Whether a timed wait ended at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the deadline passed (the condition may hold all the same).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// A condition variable that makes no system call when nobody waits (`std`'s wakes the
/// futex on every notify: a syscall per published event on the bus).
///
/// As with any condition variable, a notifier changes the waited-for state under the
/// mutex first; a waiter counts itself under the mutex before it releases it, so the
/// notifier, having taken the mutex after that, sees the count.
#[derive(Debug, Default)]
pub struct Condvar {
    inner: s::Condvar,
    waiters: AtomicUsize,
}

impl Condvar {
    /// A condition variable nobody waits on.
    pub const fn new() -> Self {
        Condvar {
            inner: s::Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.notify_one();
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.inner.notify_all();
        }
    }

    /// Releases the lock, waits for a notification (or a spurious wake-up), and takes
    /// the lock again.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        let g = guard.0.take().expect("a guard outside a wait");
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let g = self.inner.wait(g).unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        guard.0 = Some(g);
    }

    /// [`Condvar::wait`] for at most `timeout`.
    pub fn wait_for<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        let g = guard.0.take().expect("a guard outside a wait");
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let (g, r) = self
            .inner
            .wait_timeout(g, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        guard.0 = Some(g);
        WaitTimeoutResult(r.timed_out())
    }

    /// [`Condvar::wait`] until `deadline`.
    pub fn wait_until<T>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> WaitTimeoutResult {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return WaitTimeoutResult(true);
        }
        self.wait_for(guard, left)
    }
}

/// A reader-writer lock.
#[derive(Debug, Default)]
pub struct RwLock<T: ?Sized>(s::RwLock<T>);

impl<T> RwLock<T> {
    /// A lock holding `value`.
    pub const fn new(value: T) -> Self {
        RwLock(s::RwLock::new(value))
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Shared access.
    pub fn read(&self) -> s::RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access.
    pub fn write(&self) -> s::RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_panic_while_locked_leaves_the_value_usable() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("on purpose");
        })
        .join();
        *m.lock() += 1;
        assert_eq!(*m.try_lock().unwrap(), 2);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let m = Mutex::new(());
        let g = m.lock();
        assert!(m.try_lock().is_none());
        drop(g);
        assert!(m.try_lock().is_some());
    }

    #[test]
    fn waits_end_on_notify_or_deadline() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = pair.clone();
        let t = std::thread::spawn(move || {
            *p2.0.lock() = true;
            p2.1.notify_all();
        });
        let mut g = pair.0.lock();
        while !*g {
            pair.1.wait(&mut g);
        }
        drop(g);
        t.join().unwrap();
        let mut g = pair.0.lock();
        let started = Instant::now();
        let r = pair.1.wait_for(&mut g, Duration::from_millis(20));
        assert!(r.timed_out());
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(pair.1.wait_until(&mut g, Instant::now()).timed_out());
        assert!(*g, "the guard is usable after the waits");
    }

    #[test]
    fn an_rwlock_shares_reads_and_excludes_writes() {
        let l = RwLock::new(1);
        {
            let a = l.read();
            let b = l.read();
            assert_eq!(*a + *b, 2);
        }
        *l.write() = 5;
        assert_eq!(*l.read(), 5);
    }

    #[test]
    fn a_forked_child_uses_fresh_locks_while_the_parents_threads_are_parked() {
        // Parked at the fork: in a process-wide parking table these would stay listed
        // in the child, as threads that do not exist there.
        let parked: Vec<_> = (0..32)
            .map(|_| Arc::new((Mutex::new(false), Condvar::new())))
            .collect();
        let threads: Vec<_> = parked
            .iter()
            .cloned()
            .map(|p| {
                std::thread::spawn(move || {
                    let mut g = p.0.lock();
                    while !*g {
                        p.1.wait(&mut g);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: the child only locks, spawns threads and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let pairs: Arc<Vec<(Mutex<u32>, Condvar)>> =
                Arc::new((0..64).map(|_| (Mutex::new(0), Condvar::new())).collect());
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let pairs = pairs.clone();
                    std::thread::spawn(move || {
                        for i in 0..2000usize {
                            let (m, c) = &pairs[(i * 4 + w) % pairs.len()];
                            let mut g = m.lock();
                            *g += 1;
                            c.notify_all();
                            let _ = c.wait_for(&mut g, Duration::from_micros(50));
                        }
                    })
                })
                .collect();
            let ok = workers.into_iter().all(|t| t.join().is_ok());
            let total: u32 = pairs.iter().map(|(m, _)| *m.lock()).sum();
            // SAFETY: leaves the child without running the test harness's exit path.
            unsafe { libc::_exit(if ok && total == 8000 { 0 } else { 1 }) };
        }
        let mut status = 0;
        let started = Instant::now();
        loop {
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hung");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in &parked {
            *p.0.lock() = true;
            p.1.notify_all();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the forked child failed: status {status:#x}"
        );
    }
}
