//! Which process made a thing, and the threads it started.
//!
//! After `fork()` a child holds copies of its parent's thread handles and child pids.
//! They are not its own: the threads do not exist in the child, and glibc gives their
//! descriptors and stacks to the child's new threads, so joining or detaching an old
//! handle acts on whichever new thread now has that descriptor (seen: a new thread's
//! join failing with `EINVAL`, and the heap corrupted). Anything that joins, detaches,
//! kills or waits in `Drop` checks its [`Owner`] first.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::thread::JoinHandle;

/// The process that made a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner(u32);

impl Owner {
    /// The calling process.
    pub fn this_process() -> Self {
        Owner(std::process::id())
    }

    /// Another process: how a forked copy sees its values (tests).
    #[cfg(test)]
    pub(crate) fn other_process() -> Self {
        Owner(std::process::id().wrapping_add(1))
    }

    /// Whether the calling process is the owner (not a forked copy of it).
    pub fn is_this_process(&self) -> bool {
        self.0 == std::process::id()
    }
}

/// A thread's handle that is joined only by the process that started the thread; in a
/// forked copy it is forgotten (neither joined nor detached).
#[derive(Debug)]
pub struct OwnedThread {
    handle: Option<JoinHandle<()>>,
    owner: Owner,
}

impl OwnedThread {
    /// The handle of a thread this process just started.
    pub fn new(handle: JoinHandle<()>) -> Self {
        OwnedThread {
            handle: Some(handle),
            owner: Owner::this_process(),
        }
    }

    /// Waits for the thread to end. False in a forked copy (the thread is the parent's)
    /// or if the thread panicked.
    pub fn join(mut self) -> bool {
        match self.handle.take() {
            Some(h) if self.owner.is_this_process() => h.join().is_ok(),
            Some(h) => {
                std::mem::forget(h);
                false
            }
            None => false,
        }
    }
}

impl Drop for OwnedThread {
    /// Detaches the thread in its own process; in a forked copy, forgets the handle.
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if !self.owner.is_this_process() {
                std::mem::forget(h);
            }
        }
    }
}

/// A process-wide value made on first use in each process: a forked child gets its own
/// (the parent's, with its threads and locks, is left alone and never dropped).
pub struct PerProcess<T> {
    current: AtomicPtr<(Owner, T)>,
}

impl<T> PerProcess<T> {
    /// Nothing made yet.
    pub const fn new() -> Self {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl<T: Send + Sync> PerProcess<T> {
    /// This process's value, made by `make` if it has none yet (if two threads race,
    /// one value wins and the other is dropped unused).
    pub fn get_or_init(&'static self, make: impl Fn() -> T) -> &'static T {
        loop {
            let seen = self.current.load(Ordering::Acquire);
            // SAFETY: a non-null pointer came from `Box::into_raw` below and is never
            // freed (values of other processes are leaked on purpose).
            if let Some((owner, value)) = unsafe { seen.as_ref() } {
                if owner.is_this_process() {
                    return value;
                }
            }
            let fresh = Box::into_raw(Box::new((Owner::this_process(), make())));
            match self
                .current
                .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: just stored; never freed (see above).
                Ok(_) => return unsafe { &(*fresh).1 },
                // SAFETY: `fresh` was never shared.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }
}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_the_calling_process() {
        assert!(Owner::this_process().is_this_process());
        assert!(!Owner::other_process().is_this_process());
    }

    #[test]
    fn a_thread_is_joined_by_its_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = OwnedThread::new(std::thread::spawn(move || tx.send(7).unwrap()));
        assert!(t.join());
        assert_eq!(rx.recv().unwrap(), 7);
        let panicked = OwnedThread::new(std::thread::spawn(|| panic!("on purpose")));
        assert!(!panicked.join());
    }

    #[test]
    fn a_forked_copy_does_not_wait_for_the_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut t = OwnedThread::new(std::thread::spawn(move || {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(20));
        }));
        // As a forked child sees it: the owner is another process.
        t.owner = Owner::other_process();
        let started = std::time::Instant::now();
        assert!(!t.join());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        drop(tx);
    }

    #[test]
    fn a_per_process_value_is_made_once_per_process() {
        static VALUE: PerProcess<Vec<u32>> = PerProcess::new();
        let a = VALUE.get_or_init(|| vec![1]);
        let b = VALUE.get_or_init(|| vec![2]);
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, &[1]);
        // As a forked child sees it: the stored value is another process's.
        let stale = Box::into_raw(Box::new((Owner::other_process(), vec![3])));
        VALUE.current.store(stale, Ordering::Release);
        assert_eq!(VALUE.get_or_init(|| vec![4]), &[4]);
        assert_eq!(VALUE.get_or_init(|| vec![5]), &[4]);
    }
}
