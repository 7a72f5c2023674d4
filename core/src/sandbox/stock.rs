//! Staged calls made ahead: a few fresh [`Staged`] (a call's tmpfs, overlay and Landlock
//! ruleset) kept ready by one background thread, which also drops the used ones.
//!
//! Making one is ~20 syscalls (two file-system contexts, two mounts, a ruleset rebuilt
//! rule by rule) and dropping one unmounts both: together a few hundred µs that a call no
//! longer waits for. Nothing is shared between calls — each [`Staged`] is used by exactly
//! one call, then dropped — and an unused overlay has looked nothing up yet, so it shows
//! the workspace as it is when the call runs, not as it was when it was made. If the
//! stock is empty (a burst of calls) or making one fails, the call makes its own
//! (and reports the failure itself).
//!
//! The thread runs at `SCHED_IDLE` ([`super::sched`]): on CPU time the calls do not
//! want, so under load the stock empties and calls make their own rather than wait
//! for it; [`Stock::take`] hands out one with a prepared process first.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::sync::{Condvar, Mutex};

use super::landlock::Ruleset;
use super::path::Workspace;
use super::process::Policy;
use super::staging::Budget;
use super::staging::Scratch;
use super::warm::Warm;
use super::SandboxError;
use crate::owner::{OwnedThread, Owner};

/// What one staged call needs besides its argv, made before the call (it can be made
/// ahead of it, see [`super::stock`]): the call's overlay and tmpfs, and a Landlock
/// ruleset with every rule of the policy's plus the workspace rule on the overlay's root
/// (a rule on the directory the overlay is mounted over does not reach into it). Used
/// by one call only, then dropped.
#[derive(Debug)]
pub struct Staged {
    /// Dropped first: the prepared process is killed and reaped before the overlay goes.
    pub(super) warm: Mutex<Option<Warm>>,
    scratch: Scratch,
    rules: Option<Ruleset>,
    owner: Arc<()>,
}

impl Staged {
    /// The overlay and its upper layer (what [`staging::commit`] reads).
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    /// Whether a prepared process is waiting for this call ([`Policy::prepare_ahead`]).
    pub fn has_prepared_process(&self) -> bool {
        self.warm.lock().is_some()
    }
}

impl Staged {
    pub(super) fn new(
        owner: Arc<()>,
        scratch: Scratch,
        rules: Option<Ruleset>,
        warm: Option<Warm>,
    ) -> Self {
        Self {
            warm: Mutex::new(warm),
            scratch,
            rules,
            owner,
        }
    }

    pub(super) fn set_warm(&self, warm: Warm) {
        *self.warm.lock() = Some(warm);
    }

    /// The policy it was made for ([`Policy`]'s token).
    pub(super) fn owner(&self) -> &Arc<()> {
        &self.owner
    }

    /// The prepared process, once: whoever takes it runs the only call it will serve.
    pub(super) fn take_warm(&self) -> Option<Warm> {
        self.warm.lock().take().filter(Warm::in_host)
    }

    /// The call's ruleset (`None` without Landlock).
    pub(super) fn rules(&self) -> Option<&Ruleset> {
        self.rules.as_ref()
    }
}

/// How many are kept ready.
const READY: usize = 4;

/// How many used ones may wait for the thread to drop them.
const USED_MAX: usize = 2 * READY;

/// A few ready [`Staged`] for one policy, workspace and budget.
#[derive(Debug)]
pub struct Stock {
    inner: Arc<Inner>,
    thread: Mutex<Option<OwnedThread>>,
    /// In a forked copy the ready ones are the parent's (their overlays too) and the
    /// thread is gone: calls make their own, and nothing is joined or dropped.
    owner: Owner,
}

#[derive(Debug)]
struct Inner {
    policy: Arc<Policy>,
    ws: Workspace,
    budget: Budget,
    state: Mutex<State>,
    wake: Condvar,
    /// The thread's tid once it is at `SCHED_IDLE` (0 before, or if it is not).
    idle_tid: AtomicI32,
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<Staged>,
    used: Vec<Staged>,
    stop: bool,
    /// The thread could not start: calls make and drop their own.
    off: bool,
}

impl Stock {
    /// A stock for `policy` on `ws` (its own handle of the root); the thread starts with
    /// the first [`Stock::take`].
    pub fn new(policy: Arc<Policy>, ws: Workspace, budget: Budget) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                ws,
                budget,
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                idle_tid: AtomicI32::new(0),
            }),
            thread: Mutex::new(None),
            owner: Owner::this_process(),
        }
    }

    /// A fresh [`Staged`], ready-made if one is, else made now.
    pub fn take(&self) -> Result<Staged, super::SandboxError> {
        if !self.owner.is_this_process() {
            return self.inner.policy.prepare(&self.inner.ws, self.inner.budget);
        }
        self.start();
        let ready = {
            let mut st = self.inner.state.lock();
            // A prepared process first: while the stager refills, fresh overlays without
            // one are pushed behind those that have one.
            match st.ready.iter().rposition(Staged::has_prepared_process) {
                Some(i) => Some(st.ready.remove(i)),
                None => st.ready.pop(),
            }
        };
        self.inner.wake.notify_one();
        match ready {
            Some(s) => Ok(s),
            None => self.inner.policy.prepare(&self.inner.ws, self.inner.budget),
        }
    }

    /// Hands a used [`Staged`] to the thread to drop (unmounting takes a while) if its
    /// overlay is `empty` (the commit found no change), else drops it here: what a call
    /// wrote is memory, given back before the call's share of the staging budget is,
    /// not whenever the thread (on spare CPU time only) gets to it. Also dropped here
    /// when the thread is behind by [`USED_MAX`].
    pub fn discard(&self, used: Staged, empty: bool) {
        if !empty || !self.owner.is_this_process() {
            drop(used);
            return;
        }
        let mut st = self.inner.state.lock();
        if st.off || st.stop || st.used.len() >= USED_MAX {
            drop(st);
            drop(used);
            return;
        }
        st.used.push(used);
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Returns an unused [`Staged`] to the ready ones (tests).
    #[cfg(test)]
    pub(super) fn put_back_for_test(&self, s: Staged) {
        self.inner.state.lock().ready.push(s);
    }

    /// The pids of the ready prepared processes (tests).
    #[cfg(test)]
    pub(super) fn prepared_pids_for_test(&self) -> Vec<libc::pid_t> {
        let st = self.inner.state.lock();
        st.ready
            .iter()
            .filter_map(|s| s.warm.lock().as_ref().map(|w| w.pid()))
            .collect()
    }

    /// Stops the thread and drops the ready ones (killing and reaping their prepared
    /// processes); afterwards [`Stock::take`] makes each call's own, as without a thread.
    pub fn close(&self) {
        if !self.owner.is_this_process() {
            return; // the thread, its lock and the ready ones are the parent's
        }
        // At the closer's priority, so that it stops soon on a busy machine too; before
        // `stop`, while the thread is certainly alive (it leaves only on `stop`).
        let tid = self.inner.idle_tid.swap(0, Ordering::SeqCst);
        if tid != 0 {
            let _ = super::sched::adopt(tid);
        }
        self.inner.state.lock().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        let (ready, used) = {
            let mut st = self.inner.state.lock();
            (std::mem::take(&mut st.ready), std::mem::take(&mut st.used))
        };
        drop((ready, used));
    }

    fn start(&self) {
        let mut thread = self.thread.lock();
        let st = self.inner.state.lock();
        if thread.is_some() || st.off || st.stop {
            return;
        }
        drop(st);
        let inner = self.inner.clone();
        match std::thread::Builder::new()
            .name("loom-stager".into())
            .spawn(move || {
                // The prepared processes' B inherits an empty bounding set (this thread
                // never execs).
                super::spawn::empty_bounding_set();
                // Spare CPU time only; each call's processes get their caller's.
                if super::sched::lower_this_thread() {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    inner.idle_tid.store(tid, Ordering::SeqCst);
                }
                inner.run();
                inner.idle_tid.store(0, Ordering::SeqCst);
            }) {
            Ok(h) => *thread = Some(OwnedThread::new(h)),
            Err(_) => self.inner.state.lock().off = true,
        }
    }
}

impl Inner {
    fn run(&self) {
        let mut st = self.state.lock();
        // After a failure, retry now and then (calls report the error themselves).
        let mut backoff: Option<Duration> = None;
        loop {
            if st.stop {
                return;
            }
            if !st.used.is_empty() {
                let used = std::mem::take(&mut st.used);
                drop(st);
                drop(used);
                st = self.state.lock();
                continue;
            }
            if st.ready.len() < READY && backoff.is_none() {
                drop(st);
                let made = self.policy.prepare(&self.ws, self.budget);
                st = self.state.lock();
                match made {
                    Ok(s) if !st.stop => st.ready.push(s),
                    Ok(_) => {}
                    Err(_) => backoff = Some(Duration::from_secs(1)),
                }
                continue;
            }
            // Full: now give the ready ones their prepared process, one by one, each moved
            // to the end (the next `take` pops it). Only when full, so that a burst of calls is refilled
            // at the speed of overlays alone, as it was without them.
            let cold = st.ready.iter().position(|s| !s.has_prepared_process());
            if let (Some(i), None) = (cold, backoff) {
                let staged = st.ready.remove(i);
                drop(st);
                let made = self.policy.prepare_process(&staged);
                st = self.state.lock();
                if made.is_err() {
                    backoff = Some(Duration::from_secs(1));
                }
                if st.stop {
                    drop(st);
                    drop(staged);
                    st = self.state.lock();
                } else {
                    st.ready.push(staged);
                }
                continue;
            }
            match backoff.take() {
                Some(wait) => {
                    self.wake.wait_for(&mut st, wait);
                }
                None => self.wake.wait(&mut st),
            }
        }
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        self.close();
    }
}

impl Policy {
    /// Makes a fresh [`Staged`] for one call on `ws` with `budget`.
    pub fn prepare(&self, ws: &Workspace, budget: Budget) -> Result<Staged, SandboxError> {
        let scratch = Scratch::new(ws, budget)?;
        let rules = match &self.ruleset {
            Some(r) => Some(r.with_workspace(scratch.overlay_fd())?),
            None => None,
        };
        Ok(Staged::new(self.token.clone(), scratch, rules, None))
    }

    /// [`Policy::prepare`] plus a process prepared for the call ([`super::warm`]): in its
    /// namespaces, the overlay mounted, every restriction of A applied, waiting for the
    /// call's argv. Without staged writes (no mount namespace) the same as `prepare`.
    /// For a thread that outlives the result (the child's parent-death signal follows
    /// the thread that made it): [`super::stock`]'s.
    pub fn prepare_ahead(&self, ws: &Workspace, budget: Budget) -> Result<Staged, SandboxError> {
        let staged = self.prepare(ws, budget)?;
        self.prepare_process(&staged)?;
        Ok(staged)
    }

    /// Adds the prepared process of [`Policy::prepare_ahead`] to an unused `staged` of
    /// this policy (no-op if it has one, or without staged writes).
    pub fn prepare_process(&self, staged: &Staged) -> Result<(), SandboxError> {
        if !(self.mountns && self.pidns)
            || self.check_required().is_err()
            || !Arc::ptr_eq(staged.owner(), &self.token)
            || staged.has_prepared_process()
        {
            return Ok(());
        }
        let warm = super::warm::Warm::spawn(self, staged.scratch(), staged.rules())?;
        staged.set_warm(warm);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sandbox::deny::DenyList;
    use crate::sandbox::process::{Limits, PolicyConfig, Request};
    use crate::sandbox::staging;

    #[test]
    fn a_staged_call_made_ahead_sees_the_workspace_as_it_is_when_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::fs::canonicalize("/usr/bin/cat").unwrap();
        let Some((policy, ws, budget)) = staged_policy(dir.path(), &exe) else {
            return;
        };
        let stock = Stock::new(policy.clone(), ws.try_clone().unwrap(), budget);
        stock.discard(stock.take().unwrap(), true); // starts the thread
        let full = || stock.inner.state.lock().ready.len() == READY;
        let t0 = std::time::Instant::now();
        while !full() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(full(), "the stock was not filled");
        // Written after every ready overlay was made.
        std::fs::write(dir.path().join("late.txt"), "written late\n").unwrap();
        let cwd = std::fs::File::open(dir.path()).unwrap();
        for _ in 0..READY + 1 {
            let staged = stock.take().unwrap();
            let argv = ["cat".to_string(), "late.txt".to_string()];
            let out = policy
                .run(&Request {
                    exe: &exe,
                    argv: &argv,
                    cwd: cwd.as_fd(),
                    cwd_rel: "",
                    timeout: Duration::from_secs(5),
                    cancel: None,
                    staging: Some(&staged),
                })
                .unwrap();
            assert_eq!(out.exit_code, Some(0), "{out:?}");
            assert_eq!(out.stdout, b"written late\n");
            let deny = DenyList::new(Vec::<String>::new()).unwrap();
            let done = staging::commit(&ws, staged.scratch(), &deny, 100).unwrap();
            assert_eq!(done, staging::Committed::default(), "cat changed nothing");
            stock.discard(staged, true);
        }
    }

    /// A policy that runs `exe` in `dir`, or `None` where calls cannot be staged.
    fn staged_policy(
        dir: &std::path::Path,
        exe: &std::path::Path,
    ) -> Option<(Arc<Policy>, Workspace, Budget)> {
        let policy = Arc::new(
            Policy::new(&PolicyConfig {
                workspace: dir.to_path_buf(),
                executables: vec![exe.to_path_buf()],
                read_paths: Vec::new(),
                network: false,
                limits: Limits::default(),
                env: vec![("PATH".into(), "/usr/bin".into())],
                max_output_bytes: 1024,
                require: false,
            })
            .unwrap(),
        );
        if !policy.enforcement().staged_writes {
            eprintln!("SKIPPED: no staged writes (not root, or no overlayfs)");
            return None;
        }
        let budget = Budget {
            bytes: 1 << 20,
            inodes: 64,
        };
        Some((policy, Workspace::open(dir).unwrap(), budget))
    }

    #[test]
    fn take_hands_out_a_prepared_process_before_a_fresh_overlay_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let true_exe = std::fs::canonicalize("/usr/bin/true").unwrap();
        let Some((policy, ws, budget)) = staged_policy(dir.path(), &true_exe) else {
            return;
        };
        let stock = Stock::new(policy.clone(), ws.try_clone().unwrap(), budget);
        // As while the stager refills: one with a prepared process, a fresh one after it.
        stock.put_back_for_test(policy.prepare_ahead(&ws, budget).unwrap());
        stock.put_back_for_test(policy.prepare(&ws, budget).unwrap());
        let taken = stock.take().unwrap();
        assert!(
            taken.has_prepared_process(),
            "the fresh overlay was taken first"
        );
        stock.close();
    }

    #[test]
    fn a_used_staging_that_may_hold_writes_is_dropped_before_discard_returns() {
        let dir = tempfile::tempdir().unwrap();
        let true_exe = std::fs::canonicalize("/usr/bin/true").unwrap();
        let Some((policy, ws, budget)) = staged_policy(dir.path(), &true_exe) else {
            return;
        };
        let stock = Stock::new(policy.clone(), ws.try_clone().unwrap(), budget);
        // Starts the thread.
        stock.discard(stock.take().unwrap(), true);
        // Its prepared process shows when it is dropped (killed and reaped then).
        let used = policy.prepare_ahead(&ws, budget).unwrap();
        let pid = used.warm.lock().as_ref().unwrap().pid();
        stock.discard(used, false);
        // SAFETY: signal 0 only checks for existence.
        assert_ne!(
            unsafe { libc::kill(pid, 0) },
            0,
            "not dropped before returning"
        );
        stock.close();
    }

    #[test]
    fn a_forked_copy_makes_its_own_and_leaves_the_parents_alone() {
        let dir = tempfile::tempdir().unwrap();
        let true_exe = std::fs::canonicalize("/usr/bin/true").unwrap();
        let Some((policy, ws, budget)) = staged_policy(dir.path(), &true_exe) else {
            return;
        };
        let mut stock = Stock::new(policy.clone(), ws.try_clone().unwrap(), budget);
        let parents = policy.prepare_ahead(&ws, budget).unwrap();
        let pid = parents.warm.lock().as_ref().unwrap().pid();
        stock.put_back_for_test(parents);
        stock.owner = Owner::other_process();
        // The ready one (its overlay and prepared process are the parent's) is not
        // handed out, and closing neither joins a thread nor drops it.
        let own = stock.take().unwrap();
        assert!(!own.has_prepared_process());
        stock.discard(own, true);
        stock.close();
        assert_eq!(stock.prepared_pids_for_test(), vec![pid]);
        assert!(
            stock.thread.lock().is_none(),
            "a forked copy started a thread"
        );
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(
            unsafe { libc::kill(pid, 0) },
            0,
            "the parent's process was killed"
        );
        stock.owner = Owner::this_process();
        stock.close();
        assert!(stock.prepared_pids_for_test().is_empty());
    }
}
