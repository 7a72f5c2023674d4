//! A prepared process: the namespace's init "A" of [`super::process`] made ahead of its
//! call, with everything that does not depend on the call already done — new pid and
//! mount namespaces, its own process group without a terminal, the parent-death signal,
//! the namespace's `pid_max`, the read-only view with the call's overlay on the
//! workspace, rlimits, stdio, every other fd closed, `no_new_privs` and the seccomp
//! filter. It then blocks reading its "go" socket (fd 6). The call sends one message —
//! pointers to the exe, argv, envp and working directory it keeps alive until A has
//! reported — and A changes into the directory, forks B, which drops its capabilities,
//! applies Landlock (as for every call) and execs.
//!
//! * Each prepared process serves exactly one call: [`Staged::take_warm`] hands it out
//!   once, and A closes the socket before it forks, so a second message has no reader.
//! * It belongs to one [`Staged`] (its overlay, ruleset and pipes are that call's own, made
//!   with it) and so to one policy; [`Policy::run`] refuses a [`Staged`] of another policy.
//! * An unused one is killed and reaped when its [`Staged`] is dropped (at the latest when
//!   the stock is); it also dies with the thread that made it (`PR_SET_PDEATHSIG`) and so
//!   with the host process. While idle it is one blocked process per ready [`Staged`].
//! * It is made, and waits, at the stager's `SCHED_IDLE` ([`super::sched`]); the call
//!   gives it the calling thread's scheduling attributes before it wakes it, so A, B and
//!   all B starts run as they would had the caller cloned them (or the call fails,
//!   `sandbox_setup`, nothing run).
//!
//! [`Staged`]: super::stock::Staged
//! [`Staged::take_warm`]: super::stock::Staged
//! [`Policy::run`]: super::process::Policy::run

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::child::{a_entry, decimal, fail, read_records, Launch, Plan, Record, STAGE_CHDIR};
use super::landlock::Ruleset;
use super::process::Policy;
use super::sched;
use super::spawn::{bounding_set_empty, Stacks};
use super::spawn::{dup_high, kill_all, open_devnull, pipe, pump, BlockSignals, Child, Pumped};
use super::staging::Scratch;
use super::sys::sys;
use super::SandboxError;
use crate::owner::Owner;

/// What A's plan points to, on the heap so that its addresses do not move with [`Warm`].
struct Keep {
    ws: CString,
    pid_max: [u8; 24],
    last_pid: [u8; 24],
    filter: Vec<libc::sock_filter>,
    fprog: Option<libc::sock_fprog>,
}

/// A prepared process waiting for its call (see the module docs).
pub(crate) struct Warm {
    /// Dropped (closed) first: an unused A reads EOF and exits.
    go: Option<OwnedFd>,
    out: OwnedFd,
    err: OwnedFd,
    status: OwnedFd,
    /// `None` once handed to [`Warm::run`]'s reaping.
    child: Option<Child>,
    /// A reads these until it has reported (or been reaped): freed after `child`.
    plan: Box<Plan<'static>>,
    keep: Box<Keep>,
    /// The process that made it: after a `fork` of the host, the copy in the child must
    /// neither send (A would read the pointers in the parent's memory) nor kill.
    host: Owner,
    /// Made by a thread at `SCHED_IDLE` ([`super::sched`]): A must be given the caller's
    /// scheduling attributes before it runs the call.
    lowered: bool,
}

// SAFETY: the raw pointers in `plan`/`keep` point into `keep`'s own heap data (or are
// null); nothing is shared with another thread but the process, which only reads.
unsafe impl Send for Warm {}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm")
            .field("pid", &self.child.as_ref().map(|c| c.pid))
            .finish_non_exhaustive()
    }
}

/// The message a call sends: exe, argv, envp, working directory (relative).
const MSG: usize = 4 * std::mem::size_of::<usize>();

impl Warm {
    /// Starts A for `policy` with the call's overlay and ruleset (from one [`Staged`]).
    ///
    /// [`Staged`]: super::stock::Staged
    pub(super) fn spawn(
        policy: &Policy,
        scratch: &Scratch,
        rules: Option<&Ruleset>,
    ) -> Result<Self, SandboxError> {
        let filter: Vec<libc::sock_filter> = policy
            .seccomp
            .as_ref()
            .map(|f| f.instructions().to_vec())
            .unwrap_or_default();
        let mut keep = Box::new(Keep {
            ws: CString::new(policy.workspace.as_os_str().as_bytes()).map_err(|_| {
                SandboxError::denied("nul_byte", "the workspace path contains a NUL byte".into())
            })?,
            pid_max: decimal(300 + policy.limits.processes),
            last_pid: decimal(299),
            filter,
            fprog: None,
        });
        if policy.seccomp.is_some() {
            keep.fprog = Some(libc::sock_fprog {
                len: keep.filter.len() as libc::c_ushort,
                filter: keep.filter.as_mut_ptr(),
            });
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let (go, go_child) = seqpacket_pair()?;
        let devnull = open_devnull()?;
        let c_in = dup_high(devnull.as_fd())?;
        let c_out = dup_high(out_w.as_fd())?;
        let c_err = dup_high(err_w.as_fd())?;
        let c_st = dup_high(st_w.as_fd())?;
        let c_rules = match rules {
            Some(r) => Some(dup_high(r.fd())?),
            None => None,
        };
        let c_go = dup_high(go_child.as_fd())?;
        drop((out_w, err_w, st_w, devnull, go_child));
        let stacks = Stacks::new()?;
        // SAFETY: `keep` is boxed and outlives the plan (both owned by the `Warm`, the
        // plan dropped first and only after A is reaped or has reported); the
        // references are made 'static so the plan can be stored next to them.
        let (ws, pid_max, last_pid): (&'static CStr, &'static [u8; 24], &'static [u8; 24]) = unsafe {
            (
                &*(keep.ws.as_c_str() as *const CStr),
                &*(&keep.pid_max as *const [u8; 24]),
                &*(&keep.last_pid as *const [u8; 24]),
            )
        };
        let plan = Box::new(Plan {
            b_stack: stacks.b_top(),
            exe: std::ptr::null(),
            argv: std::ptr::null(),
            envp: std::ptr::null(),
            fds: [
                c_in.as_raw_fd(),
                c_out.as_raw_fd(),
                c_err.as_raw_fd(),
                c_st.as_raw_fd(),
                c_rules.as_ref().map_or(-1, |f| f.as_raw_fd()),
                -1,
                c_go.as_raw_fd(),
            ],
            rlimits: policy.rlimits(),
            pid_max: policy.pid_max_per_ns.then_some((pid_max, last_pid)),
            seccomp: keep.fprog.as_ref().map(|p| p as *const libc::sock_fprog),
            drop_caps: policy.drop_caps,
            bounding_set_empty: bounding_set_empty(),
            in_pidns: true,
            mount_ns: true,
            overlay: scratch.overlay_fd().as_raw_fd(),
            ws_path: ws,
            cwd_rel: c".",
        });
        let pid = {
            let _mask = BlockSignals::new();
            // SAFETY: as in `Policy::run`: clone(CLONE_VM) onto our own stack; the child
            // runs `a_entry` on the boxed plan, which the `Warm` keeps alive until the
            // child is reaped or has closed its status pipe.
            unsafe {
                libc::clone(
                    a_entry,
                    stacks.a_top(),
                    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_VM,
                    &*plan as *const Plan<'_> as *mut libc::c_void,
                )
            }
        };
        drop((c_in, c_out, c_err, c_st, c_rules, c_go));
        if pid < 0 {
            return Err(SandboxError::io("clone", std::io::Error::last_os_error()));
        }
        Ok(Self {
            go: Some(go),
            out: out_r,
            err: err_r,
            status: st_r,
            child: Some(Child {
                pid,
                reaped: false,
                stacks: Some(stacks),
            }),
            plan,
            keep,
            host: Owner::this_process(),
            lowered: sched::this_thread_lowered(),
        })
    }

    /// Whether this is the process that made it (not a forked copy of it).
    pub(super) fn in_host(&self) -> bool {
        self.host.is_this_process()
    }

    /// Runs the call: sends it, reads the pipes until every process is gone (killing at
    /// `deadline` or on `cancel`), and reaps A as [`Policy::run`] does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        mut self,
        policy: &Policy,
        exe: &CStr,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
        cwd_rel: &CStr,
        deadline: Instant,
        cancel: Option<&AtomicBool>,
    ) -> Result<(Pumped, Vec<Record>), SandboxError> {
        let mut child = self.child.take().expect("a Warm runs once");
        let msg: [usize; 4] = [
            exe.as_ptr() as usize,
            argv.as_ptr() as usize,
            envp.as_ptr() as usize,
            cwd_rel.as_ptr() as usize,
        ];
        if self.lowered {
            // Before A wakes: it, B and everything B starts run at the caller's priority,
            // not the stager's. (A gone already: the send below fails and reports why.)
            if let Err(err) = sched::adopt(child.pid) {
                if err.raw_os_error() != Some(libc::ESRCH) {
                    kill_all(child.pid);
                    child.wait();
                    return Err(SandboxError::denied(
                        "sandbox_setup",
                        format!(
                            "the prepared process could not be given the caller's scheduling \
                             attributes ({err}); nothing was executed"
                        ),
                    ));
                }
            }
        }
        let go = self.go.take().expect("a Warm runs once");
        // SAFETY: send on our socket from a stack buffer; MSG_NOSIGNAL: no SIGPIPE if A
        // is gone.
        let sent =
            unsafe { libc::send(go.as_raw_fd(), msg.as_ptr().cast(), MSG, libc::MSG_NOSIGNAL) };
        drop(go);
        if sent != MSG as isize {
            // A is gone: most likely a restriction failed while it was prepared, which its
            // status pipe reports (then the usual `sandbox_setup` error names the stage).
            let err = std::io::Error::last_os_error();
            kill_all(child.pid);
            child.wait();
            let records = read_records(&self.status);
            if records.iter().any(|r| matches!(r, Record::Failed { .. })) {
                let io = pump(&self.out, &self.err, child.pid, deadline, 0, None);
                return Ok((io, records));
            }
            return Err(SandboxError::denied(
                "sandbox_setup",
                format!("the prepared process did not take its call ({err}); nothing was executed"),
            ));
        }
        let io = pump(
            &self.out,
            &self.err,
            child.pid,
            deadline,
            policy.max_output_bytes,
            cancel,
        );
        let records = read_records(&self.status);
        if io.killed.is_some() {
            child.wait();
        } else {
            // A reaped every process of the call before reporting (see `Policy::run`).
            child.detach();
        }
        Ok((io, records))
    }

    /// A's pid (tests).
    #[cfg(test)]
    pub(super) fn pid(&self) -> libc::pid_t {
        self.child.as_ref().map_or(0, |c| c.pid)
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if !self.in_host() {
            // A forked copy: A is not our child (and its memory is not ours).
            if let Some(mut child) = self.child.take() {
                child.reaped = true; // not ours to kill or wait for
            }
            return;
        }
        self.go.take();
        if let Some(mut child) = self.child.take() {
            kill_all(child.pid);
            child.wait();
        }
        // Only now may the plan and what it points to go.
        let _ = (&self.plan, &self.keep);
    }
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: socketpair into a two-int array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(SandboxError::io(
            "socketpair",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In A, once complete: waits for the call on fd 6, closes it and changes into the call's
/// working directory. `None` if the socket was closed unused.
///
/// # Safety
/// Only in A (raw syscalls only); the received pointers are valid while A runs.
pub(super) unsafe fn receive_call(plan: &Plan<'_>) -> Option<Launch> {
    let mut msg = [0usize; 4];
    // SAFETY: raw syscalls on our own fd and stack buffer.
    unsafe {
        loop {
            match sys(
                libc::SYS_read,
                &[6, msg.as_mut_ptr() as usize, std::mem::size_of_val(&msg)],
            ) {
                Ok(MSG) => break,
                Err(libc::EINTR) => {}
                _ => return None,
            }
        }
        let _ = sys(libc::SYS_close, &[6]);
        match open_beneath(plan.ws_path, msg[3] as *const u8) {
            Ok(dir) => {
                let r = sys(libc::SYS_fchdir, &[dir]);
                let _ = sys(libc::SYS_close, &[dir]);
                if let Err(e) = r {
                    fail(3, STAGE_CHDIR, e);
                }
            }
            Err(e) => fail(3, STAGE_CHDIR, e),
        }
    }
    Some(Launch {
        plan: (plan as *const Plan<'_>).cast(),
        exe: msg[0] as *const libc::c_char,
        argv: msg[1] as *const *const libc::c_char,
        envp: msg[2] as *const *const libc::c_char,
    })
}

/// Opens the directory `rel` (a NUL-terminated relative path) beneath `root`, one
/// component at a time with `O_NOFOLLOW | O_DIRECTORY`: a symlink anywhere fails
/// (`ENOTDIR`), `..` is
/// refused (`EPERM`). What `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does, which
/// seccomp refuses by then (`ENOSYS`). No mount can be crossed: beneath the overlay, in a
/// private mount namespace whose only mounts A made, there is none.
///
/// # Safety
/// Raw syscalls only; `rel` is a valid C string.
pub(super) unsafe fn open_beneath(root: &CStr, rel: *const u8) -> Result<usize, i32> {
    const DIR: usize = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as usize;
    // SAFETY: upheld by the caller.
    unsafe {
        let mut dir = sys(
            libc::SYS_openat,
            &[libc::AT_FDCWD as usize, root.as_ptr() as usize, DIR],
        )?;
        let mut p = rel;
        let mut name = [0u8; 256];
        loop {
            let mut len = 0;
            while *p != 0 && *p != b'/' {
                if len == name.len() - 1 {
                    let _ = sys(libc::SYS_close, &[dir]);
                    return Err(libc::ENAMETOOLONG);
                }
                name[len] = *p;
                len += 1;
                p = p.add(1);
            }
            let comp = &name[..len];
            if comp == b".." {
                let _ = sys(libc::SYS_close, &[dir]);
                return Err(libc::EPERM);
            }
            if !comp.is_empty() && comp != b"." {
                name[len] = 0;
                let next = sys(
                    libc::SYS_openat,
                    &[dir, name.as_ptr() as usize, DIR | libc::O_NOFOLLOW as usize],
                );
                let _ = sys(libc::SYS_close, &[dir]);
                dir = next?;
            }
            if *p == 0 {
                return Ok(dir);
            }
            p = p.add(1);
        }
    }
}

#[cfg(test)]
#[path = "warm_tests.rs"]
mod tests;
