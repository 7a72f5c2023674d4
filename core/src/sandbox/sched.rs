//! Scheduling attributes of the stager thread and of the prepared processes it makes.
//!
//! The stager ([`super::stock`]) does per-call work ahead of the calls — overlays,
//! rulesets, prepared processes, unmounting used overlays. With two cores and eight
//! callers that work competed for the CPU with the calls themselves (the event loop's
//! thread, the tool workers, the calls' processes), so it runs as `SCHED_IDLE`: only
//! on CPU time nothing else wants. When it falls behind, calls make their own staging
//! as they do without it.
//!
//! A prepared process is cloned by the stager and so inherits `SCHED_IDLE`. Before the
//! call wakes it, the calling thread gives it its own attributes ([`adopt`]), so the
//! call's processes run exactly as they would had the caller cloned them: never at the
//! stager's priority. If that cannot be done, the call fails (`sandbox_setup`) and
//! nothing runs.

use std::io;

/// `struct sched_attr` as of `SCHED_ATTR_SIZE_VER0` (Linux 3.14), what both calls take.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct SchedAttr {
    size: u32,
    pub(super) policy: u32,
    flags: u64,
    pub(super) nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

thread_local! {
    /// This thread moved itself to `SCHED_IDLE` ([`lower_this_thread`]).
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

const SIZE_VER0: u32 = 48;
const SCHED_IDLE: u32 = 5;
/// The only flag `sched_getattr` reports that `sched_setattr` takes back as it is.
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
const CAP_SYS_NICE: u32 = 23;

/// The attributes of thread `tid` (0: the calling thread).
pub(super) fn get(tid: libc::pid_t) -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most SIZE_VER0 bytes into `attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut SchedAttr,
            SIZE_VER0,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    attr.size = SIZE_VER0;
    attr.flags &= SCHED_FLAG_RESET_ON_FORK;
    Ok(attr)
}

/// Gives thread `tid` (0: the calling thread) the attributes `attr`.
pub(super) fn set(tid: libc::pid_t, attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: sched_setattr reads `attr`, whose size field says SIZE_VER0.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `attr` is `SCHED_IDLE`.
#[cfg(test)]
pub(super) fn is_idle(attr: &SchedAttr) -> bool {
    attr.policy == SCHED_IDLE
}

/// Moves the calling thread to `SCHED_IDLE` if the processes it clones can be given
/// another thread's attributes afterwards ([`adopt`] leaves `SCHED_IDLE`, which needs
/// `CAP_SYS_NICE`); else leaves it as it is. Returns whether it moved.
pub(super) fn lower_this_thread() -> bool {
    if !has_cap_sys_nice() {
        return false;
    }
    let Ok(mut attr) = get(0) else {
        return false;
    };
    attr.policy = SCHED_IDLE;
    attr.priority = 0;
    attr.nice = 0;
    let moved = set(0, &attr).is_ok();
    LOWERED.with(|c| c.set(moved));
    moved
}

/// Whether [`lower_this_thread`] moved the calling thread to `SCHED_IDLE`: what it
/// clones must then [`adopt`] their caller's attributes before they run a call.
pub(super) fn this_thread_lowered() -> bool {
    LOWERED.with(std::cell::Cell::get)
}

/// Gives process `pid` the calling thread's attributes.
pub(super) fn adopt(pid: libc::pid_t) -> io::Result<()> {
    set(pid, &get(0)?)
}

fn has_cap_sys_nice() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two `Data` for version 3.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    r == 0 && data[0].effective & (1 << CAP_SYS_NICE) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_lowered_to_idle_can_give_a_thread_of_its_own_its_attributes_back() {
        let caller = get(0).unwrap();
        assert!(!is_idle(&caller));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let lowered = std::thread::spawn(move || {
            let moved = lower_this_thread();
            // SAFETY: gettid has no preconditions.
            tx.send((moved, unsafe { libc::gettid() })).unwrap();
            done_rx.recv().unwrap();
        });
        let (moved, tid) = rx.recv().unwrap();
        if !moved {
            eprintln!("SKIPPED: no CAP_SYS_NICE");
            done_tx.send(()).unwrap();
            lowered.join().unwrap();
            return;
        }
        assert!(is_idle(&get(tid).unwrap()), "the thread was not lowered");
        adopt(tid).unwrap();
        let back = get(tid).unwrap();
        assert_eq!((back.policy, back.nice), (caller.policy, caller.nice));
        done_tx.send(()).unwrap();
        lowered.join().unwrap();
    }
}
