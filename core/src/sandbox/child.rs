//! The child side of [`super::process`]: what runs between `clone` and `execve`, and
//! the status-pipe protocol it reports through.
//!
//! The child shares the caller's address space (`CLONE_VM`, like `posix_spawn`), so only
//! raw syscalls that never touch `errno` run here ([`super::sys`]) — no allocation, no
//! locks, no panics, no writes outside its own stack — on data the parent prepared
//! before `clone` ([`Plan`]).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::staging::{MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use super::sys::{self, sys};

pub(super) const REC_STATUS: i32 = 1;
pub(super) const REC_FAILED: i32 = 2;

pub(super) const STAGE_SIGNALS: i32 = 1;
pub(super) const STAGE_SETSID: i32 = 2;
pub(super) const STAGE_PDEATHSIG: i32 = 3;
pub(super) const STAGE_PID_MAX: i32 = 4;
pub(super) const STAGE_RLIMIT: i32 = 5;
pub(super) const STAGE_FDS: i32 = 6;
pub(super) const STAGE_NO_NEW_PRIVS: i32 = 7;
pub(super) const STAGE_CAPS: i32 = 8;
pub(super) const STAGE_LANDLOCK: i32 = 9;
pub(super) const STAGE_SECCOMP: i32 = 10;
pub(super) const STAGE_FORK: i32 = 11;
pub(super) const STAGE_CHDIR: i32 = 12;
pub(super) const STAGE_EXEC: i32 = 13;
pub(super) const STAGE_MOUNT: i32 = 14;

pub(super) fn stage_name(stage: i32) -> &'static str {
    match stage {
        STAGE_SIGNALS => "signal reset",
        STAGE_SETSID => "a process group of its own, without a terminal",
        STAGE_PDEATHSIG => "parent-death signal",
        STAGE_PID_MAX => "the pid namespace's pid_max",
        STAGE_RLIMIT => "rlimits",
        STAGE_FDS => "stdio/fd set-up",
        STAGE_NO_NEW_PRIVS => "no_new_privs",
        STAGE_CAPS => "capability drop",
        STAGE_LANDLOCK => "the Landlock ruleset",
        STAGE_SECCOMP => "the seccomp filter",
        STAGE_FORK => "fork",
        STAGE_CHDIR => "chdir into the workspace",
        STAGE_EXEC => "execve",
        STAGE_MOUNT => "the staged, read-only file system view",
        _ => "unknown stage",
    }
}

/// Everything the child reads; raw pointers into memory owned by [`Policy::run`].
pub(super) struct Plan<'a> {
    pub(super) exe: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    /// Sources for fds 0 (stdin), 1, 2, 3 (status), 4 (Landlock ruleset), 5 (cwd),
    /// 6 (a prepared process's "go" socket, [`super::warm`]; `-1` otherwise).
    pub(super) fds: [RawFd; 7],
    pub(super) rlimits: [(libc::c_int, u64, u64); 6],
    pub(super) pid_max: Option<(&'a [u8; 24], &'a [u8; 24])>,
    pub(super) seccomp: Option<*const libc::sock_fprog>,
    pub(super) drop_caps: bool,
    /// The bounding set was emptied already (inherited from the spawning thread).
    pub(super) bounding_set_empty: bool,
    pub(super) in_pidns: bool,
    /// In a private mount namespace: everything read-only and `nosuid`, the staging
    /// overlay (this fd, a detached mount) moved onto `ws_path`.
    pub(super) mount_ns: bool,
    pub(super) overlay: RawFd,
    /// Absolute path of the workspace root.
    pub(super) ws_path: &'a CStr,
    /// The working directory relative to the workspace root (`.` for the root); fd 5 is
    /// the same directory in the parent's view.
    pub(super) cwd_rel: &'a CStr,
    /// Top of the stack B starts on (inside a mapping the parent owns).
    pub(super) b_stack: *mut libc::c_void,
}

const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;
const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// `struct mount_attr` (mount_setattr(2)).
#[repr(C)]
pub(super) struct MountAttr {
    set: u64,
    clear: u64,
    propagation: u64,
    userns_fd: u64,
}

/// What a staged call makes of every mount: read-only and `nosuid`.
pub(super) const READ_ONLY_VIEW: MountAttr = MountAttr {
    set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
    clear: 0,
    propagation: 0,
    userns_fd: 0,
};

/// `struct open_how` (openat2(2)).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub(super) fn decimal(mut n: u64) -> [u8; 24] {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut out = [0u8; 24];
    out[..digits.len() - i].copy_from_slice(&digits[i..]);
    out
}

/// Writes a record to the status pipe (12 bytes < PIPE_BUF: atomic).
fn put(fd: RawFd, kind: i32, a: i32, b: i32) {
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..8].copy_from_slice(&a.to_ne_bytes());
    buf[8..].copy_from_slice(&b.to_ne_bytes());
    // SAFETY: writing a stack buffer to an fd; nothing else can be done on failure.
    let _ = unsafe {
        sys(
            libc::SYS_write,
            &[fd as usize, buf.as_ptr() as usize, buf.len()],
        )
    };
}

/// `errno` of the last libc call on this thread (parent side only).
pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reports a failed stage and exits without running anything.
pub(super) fn fail(status_fd: RawFd, stage: i32, err: i32) -> ! {
    put(status_fd, REC_FAILED, stage, err);
    sys::exit(127)
}

/// `r`'s value, or report `stage` and exit.
fn check(r: Result<usize, i32>, status_fd: RawFd, stage: i32) -> usize {
    match r {
        Ok(v) => v,
        Err(e) => fail(status_fd, stage, e),
    }
}

fn write_file(path: &CStr, text: &[u8; 24]) -> Result<(), i32> {
    let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    // SAFETY: a valid C string and buffer; the fd is ours and closed here.
    unsafe {
        let fd = sys(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
            ],
        )?;
        let n = sys(libc::SYS_write, &[fd, text.as_ptr() as usize, len]);
        let _ = sys(libc::SYS_close, &[fd]);
        if n? != len {
            return Err(libc::EIO);
        }
    }
    Ok(())
}

fn prctl(a: &[usize]) -> Result<usize, i32> {
    // SAFETY: every prctl used here takes integers only.
    unsafe { sys(libc::SYS_prctl, a) }
}

/// Entry point of the child ("A") for `clone(CLONE_VM, stack)`: `arg` is the `Plan`.
///
/// # Safety
/// Only as the entry function of that clone; `arg` points to a `Plan` that the parent
/// keeps alive until this process has closed its status pipe.
pub(super) extern "C" fn a_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: upheld by the caller (see above).
    unsafe { child_main(&*(arg as *const Plan<'_>)) }
}

/// The child ("A"). Shares the caller's memory (`CLONE_VM`) and TLS: only raw syscalls
/// (no `errno`), no allocation, no locks, no panics, no writes outside its own stack.
///
/// # Safety
/// Must run only as the `CLONE_VM` child, with `plan` alive for its whole run.
unsafe fn child_main(plan: &Plan<'_>) -> ! {
    let mut status_fd = plan.fds[3];

    // Default dispositions (on our own copy of the handler table: no CLONE_SIGHAND) and
    // an empty mask: no handler of the host process runs here, and ignored signals
    // (Rust and Python ignore SIGPIPE) are not inherited by the exec.
    let dfl = [0u64; 4]; // struct sigaction { SIG_DFL, 0, NULL, 0 }
    for sig in 1..65usize {
        if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
            // SAFETY: rt_sigaction with a valid, zeroed kernel sigaction.
            let _ = unsafe { sys(libc::SYS_rt_sigaction, &[sig, dfl.as_ptr() as usize, 0, 8]) };
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask(SIG_SETMASK, &empty, NULL, 8).
    let r = unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[
                libc::SIG_SETMASK as usize,
                &empty as *const u64 as usize,
                0,
                8,
            ],
        )
    };
    check(r, status_fd, STAGE_SIGNALS);
    // SAFETY: raw syscalls on a static C string and our own fd.
    check(
        unsafe { leave_group_and_terminal() },
        status_fd,
        STAGE_SETSID,
    );
    check(
        prctl(&[libc::PR_SET_PDEATHSIG as usize, libc::SIGKILL as usize]),
        status_fd,
        STAGE_PDEATHSIG,
    );
    // Before the mounts: they make /proc/sys read-only.
    if let Some((pid_max, last_pid)) = plan.pid_max {
        if let Err(e) = write_file(c"/proc/sys/kernel/pid_max", pid_max)
            .and_then(|()| write_file(c"/proc/sys/kernel/ns_last_pid", last_pid))
        {
            fail(status_fd, STAGE_PID_MAX, e);
        }
    }
    if plan.mount_ns {
        let mount = |src: usize, target: usize, flags: libc::c_ulong| {
            // SAFETY: mount(2) with valid C strings or NULL where it ignores them.
            unsafe { sys(libc::SYS_mount, &[src, target, 0, flags as usize, 0]) }
        };
        // Nothing done here may propagate back to the host's mounts.
        check(
            mount(0, c"/".as_ptr() as usize, libc::MS_REC | libc::MS_PRIVATE),
            status_fd,
            STAGE_MOUNT,
        );
        // Every mount read-only and nosuid: outside the workspace nothing can be
        // written — not even metadata (chmod, utimes, chown, xattrs) of files the
        // process owns, which Landlock does not cover.
        let attr = READ_ONLY_VIEW;
        // SAFETY: mount_setattr with a valid path and a struct on our stack.
        let r = unsafe {
            sys(
                libc::SYS_mount_setattr,
                &[
                    libc::AT_FDCWD as usize,
                    c"/".as_ptr() as usize,
                    libc::AT_RECURSIVE as usize,
                    &attr as *const MountAttr as usize,
                    std::mem::size_of::<MountAttr>(),
                ],
            )
        };
        check(r, status_fd, STAGE_MOUNT);
        // The workspace: the call's writable overlay (detached, made by the parent).
        // SAFETY: move_mount of our fd onto a valid path.
        let r = unsafe {
            sys(
                libc::SYS_move_mount,
                &[
                    plan.overlay as usize,
                    c"".as_ptr() as usize,
                    libc::AT_FDCWD as usize,
                    plan.ws_path.as_ptr() as usize,
                    MOVE_MOUNT_F_EMPTY_PATH,
                ],
            )
        };
        check(r, status_fd, STAGE_MOUNT);
        // B inherits the working directory (it could not resolve it itself: seccomp
        // refuses openat2). A prepared process learns it with its call (below).
        if plan.fds[6] < 0 {
            // SAFETY: raw syscalls on the plan's C strings, a stack struct and our own fds.
            check(unsafe { enter_cwd(plan) }, status_fd, STAGE_CHDIR);
        }
    }
    for &(res, soft, hard) in &plan.rlimits {
        if res < 0 {
            continue; // left as inherited
        }
        let lim = [soft, hard];
        // SAFETY: prlimit64(0 = self, resource, &new, NULL).
        let r = unsafe {
            sys(
                libc::SYS_prlimit64,
                &[0, res as usize, lim.as_ptr() as usize, 0],
            )
        };
        check(r, status_fd, STAGE_RLIMIT);
    }
    // fds: every source is >= 10, so these never clobber one another (dup3 needs
    // src != dst, which that also guarantees).
    for (target, &src) in plan.fds.iter().enumerate() {
        // SAFETY: dup3/close on fd numbers of our own (copied) fd table.
        let r = unsafe {
            if src >= 0 {
                sys(libc::SYS_dup3, &[src as usize, target, 0])
            } else {
                let _ = sys(libc::SYS_close, &[target]);
                Ok(0)
            }
        };
        check(r, status_fd, STAGE_FDS);
    }
    status_fd = 3;
    // Close everything else the host had open (close_range: 5.9+; else a loop).
    // SAFETY: closing fds of our own fd table.
    unsafe {
        if sys(libc::SYS_close_range, &[7, u32::MAX as usize, 0]).is_err() {
            for fd in 7..65536usize {
                let _ = sys(libc::SYS_close, &[fd]);
            }
        }
    }
    check(
        prctl(&[libc::PR_SET_NO_NEW_PRIVS as usize, 1]),
        status_fd,
        STAGE_NO_NEW_PRIVS,
    );
    if let Some(prog) = plan.seccomp {
        // SAFETY: `prog` points to a sock_fprog whose filter outlives this call.
        let r = unsafe {
            sys(
                libc::SYS_seccomp,
                &[libc::SECCOMP_SET_MODE_FILTER as usize, 0, prog as usize],
            )
        };
        check(r, status_fd, STAGE_SECCOMP);
    }
    // A prepared process ([`super::warm`]) is complete here: it waits for its one call.
    let launch = if plan.fds[6] >= 0 {
        // SAFETY: raw syscalls on our own fds and stack; the pointers received point to
        // memory the parent keeps alive until we have closed the status pipe.
        match unsafe { super::warm::receive_call(plan) } {
            Some(launch) => launch,
            None => sys::exit(0), // dropped unused: nothing to run, nothing to report
        }
    } else {
        Launch {
            plan: (plan as *const Plan<'_>).cast(),
            exe: plan.exe,
            argv: plan.argv,
            envp: plan.envp,
        }
    };
    // B: shares memory (no page tables copied) and runs on its own stack. Not
    // CLONE_VFORK: we do not need to wait for its exec (neither writes what the other
    // reads), and one wake-up less matters on a busy machine. glibc's clone wrapper does
    // the stack switch; it only touches errno if the clone fails.
    // SAFETY: b_entry only makes raw syscalls on its own stack and the plan.
    let b = unsafe {
        libc::clone(
            b_entry,
            plan.b_stack,
            libc::CLONE_VM | libc::SIGCHLD,
            &launch as *const Launch as *mut libc::c_void,
        )
    };
    if b < 0 {
        fail(status_fd, STAGE_FORK, libc::EAGAIN);
    }
    // A: reap until B is gone (orphans re-parent to us in the namespace).
    // SAFETY: raw syscalls on our own fds and stack.
    unsafe {
        let _ = sys(libc::SYS_close, &[4]);
        let _ = sys(libc::SYS_close, &[5]);
        let mut status: Option<i32> = None;
        loop {
            let mut st: i32 = 0;
            match sys(
                libc::SYS_wait4,
                &[usize::MAX, &mut st as *mut i32 as usize, 0, 0],
            ) {
                Ok(pid) if pid as i32 == b => {
                    status = Some(st);
                    break;
                }
                Ok(_) | Err(libc::EINTR) => {}
                Err(_) => break,
            }
        }
        // Every process of the namespace descends from us, and an orphan is re-parented
        // to us (or to a subreaper, itself one of our descendants) before its parent can
        // be reaped: so with no child left (ECHILD, live or zombie, any exit signal) we
        // are alone in the namespace and nothing is left to kill. Skipping the sweep then
        // matters: kill(-1) walks every process of the host.
        let alone = plan.in_pidns
            && matches!(
                sys(
                    libc::SYS_wait4,
                    &[
                        usize::MAX,
                        &mut 0i32 as *mut i32 as usize,
                        (libc::WNOHANG | libc::__WALL) as usize,
                        0,
                    ],
                ),
                Err(libc::ECHILD)
            );
        if plan.in_pidns && !alone {
            // Kill everything left in the namespace (kill(-1) from its init spares only
            // init) and reap it all, so that when the parent sees our report nothing of
            // this call is alive any more.
            let _ = sys(libc::SYS_kill, &[usize::MAX, libc::SIGKILL as usize]);
            loop {
                let mut st: i32 = 0;
                let r = sys(
                    libc::SYS_wait4,
                    &[
                        usize::MAX,
                        &mut st as *mut i32 as usize,
                        libc::__WALL as usize,
                        0,
                    ],
                );
                if matches!(r, Err(e) if e != libc::EINTR) {
                    break; // ECHILD: the namespace is empty
                }
            }
        }
        if let Some(st) = status {
            put(status_fd, REC_STATUS, st, 0);
        }
        if !plan.in_pidns {
            // No namespace to tear down: kill what is left of our process group (which
            // seccomp stops anything from leaving), ourselves included.
            let _ = sys(libc::SYS_kill, &[0, libc::SIGKILL as usize]);
        }
        // Close the pipes now: the parent sees EOF without waiting for the kernel to
        // tear down our namespaces, which happens after this process exits.
        for fd in 0..7usize {
            let _ = sys(libc::SYS_close, &[fd]);
        }
    }
    sys::exit(0)
}

/// A process group of our own and no controlling terminal — what `setsid` gives, without
/// a new session: `setsid` also makes a new scheduler autogroup per call, which costs CPU
/// and, under load, a preemption of A right there. With a controlling terminal,
/// `TIOCNOTTY` on `/dev/tty` drops it (for a process that is not a session leader it
/// clears only its own); `ENXIO` means there is none. If neither can be established
/// (no `/dev/tty`, a hung-up terminal, ...), `setsid` as before.
///
/// # Safety
/// Raw syscalls only.
unsafe fn leave_group_and_terminal() -> Result<usize, i32> {
    // SAFETY: upheld by the caller.
    unsafe {
        match sys(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                c"/dev/tty".as_ptr() as usize,
                (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as usize,
            ],
        ) {
            Err(libc::ENXIO) => {} // no controlling terminal
            Ok(fd) => {
                let r = sys(libc::SYS_ioctl, &[fd, libc::TIOCNOTTY as usize]);
                let _ = sys(libc::SYS_close, &[fd]);
                if r.is_err() {
                    return sys(libc::SYS_setsid, &[]);
                }
            }
            Err(_) => return sys(libc::SYS_setsid, &[]),
        }
        sys(libc::SYS_setpgid, &[0, 0])
    }
}

/// B's own restrictions, applied before exec: every capability dropped, then the
/// Landlock ruleset. They are applied in B rather than in A on purpose: A shares the host
/// process's memory (`CLONE_VM`), so it must stay *less* restricted than anything that
/// runs untrusted code — with full capabilities and outside the Landlock domain, A (and
/// through it the host's memory, `/proc/<A>/mem`, `/proc/<A>/environ`) is out of ptrace
/// reach for B and its descendants on two counts (commoncap: the target has capabilities
/// the tracer lacks; Landlock: the target is outside the tracer's domain), besides
/// seccomp refusing `ptrace` and `process_vm_*` and `/proc` being unreadable by default.
fn restrict_b(plan: &Plan<'_>) {
    if plan.drop_caps {
        for cap in 0..64usize {
            if plan.bounding_set_empty {
                break; // inherited empty from the spawning thread
            }
            match prctl(&[libc::PR_CAPBSET_DROP as usize, cap]) {
                Ok(_) => {}
                Err(libc::EINVAL) => break, // past CAP_LAST_CAP
                Err(e) => fail(3, STAGE_CAPS, e),
            }
        }
        let bits = libc::SECBIT_NOROOT
            | libc::SECBIT_NOROOT_LOCKED
            | libc::SECBIT_NO_SETUID_FIXUP
            | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
            | libc::SECBIT_KEEP_CAPS_LOCKED
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        check(
            prctl(&[libc::PR_SET_SECUREBITS as usize, bits as usize]),
            3,
            STAGE_CAPS,
        );
        // The ambient set: EINVAL before Linux 4.3, where it does not exist.
        match prctl(&[
            libc::PR_CAP_AMBIENT as usize,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as usize,
        ]) {
            Ok(_) | Err(libc::EINVAL) => {}
            Err(e) => fail(3, STAGE_CAPS, e),
        }
    }
    // Empty effective/permitted/inheritable sets (always allowed: it only drops).
    let header: [u32; 2] = [0x2008_0522, 0]; // _LINUX_CAPABILITY_VERSION_3, this process
    let data = [0u32; 6]; // two { effective, permitted, inheritable }
                          // SAFETY: capset with a v3 header and two data structs.
    let r = unsafe {
        sys(
            libc::SYS_capset,
            &[header.as_ptr() as usize, data.as_ptr() as usize],
        )
    };
    check(r, 3, STAGE_CAPS);
    if plan.fds[4] >= 0 {
        // SAFETY: fd 4 is the Landlock ruleset.
        let r = unsafe { sys(libc::SYS_landlock_restrict_self, &[4, 0]) };
        check(r, 3, STAGE_LANDLOCK);
        // SAFETY: closing our copy of the ruleset fd.
        let _ = unsafe { sys(libc::SYS_close, &[4]) };
    }
}

/// Changes into the working directory beneath the overlay now mounted on the workspace
/// path (fd 5 is beneath the overlay, in the parent's view), never following a symlink
/// or crossing a mount.
///
/// # Safety
/// Raw syscalls only; `plan`'s strings are valid C strings.
unsafe fn enter_cwd(plan: &Plan<'_>) -> Result<usize, i32> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    // SAFETY: upheld by the caller.
    unsafe {
        let root = sys(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                plan.ws_path.as_ptr() as usize,
                (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as usize,
            ],
        )?;
        let dir = sys(
            libc::SYS_openat2,
            &[
                root,
                plan.cwd_rel.as_ptr() as usize,
                &how as *const OpenHow as usize,
                std::mem::size_of::<OpenHow>(),
            ],
        );
        let _ = sys(libc::SYS_close, &[root]);
        let dir = dir?;
        let r = sys(libc::SYS_fchdir, &[dir]);
        let _ = sys(libc::SYS_close, &[dir]);
        r
    }
}

/// What B executes: the plan's, or a prepared process's call ([`super::warm`]).
pub(super) struct Launch {
    pub(super) plan: *const Plan<'static>,
    pub(super) exe: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
}

/// Entry point of B: into the working directory, then exec. fd 3 (status) closes on a
/// successful exec.
///
/// # Safety
/// Only as the entry function of A's `CLONE_VM` clone.
extern "C" fn b_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is A's launch (on A's stack), its plan alive while A waits for us.
    let launch = unsafe { &*(arg as *const Launch) };
    // SAFETY: as above.
    let plan = unsafe { &*launch.plan };
    restrict_b(plan);
    // SAFETY: raw syscalls on fds we own and pointers prepared by the parent.
    unsafe {
        let _ = sys(
            libc::SYS_fcntl,
            &[3, libc::F_SETFD as usize, libc::FD_CLOEXEC as usize],
        );
        if !plan.mount_ns {
            check(sys(libc::SYS_fchdir, &[5]), 3, STAGE_CHDIR);
        }
        let _ = sys(libc::SYS_close, &[5]);
        let e = sys(
            libc::SYS_execve,
            &[
                launch.exe as usize,
                launch.argv as usize,
                launch.envp as usize,
            ],
        );
        fail(3, STAGE_EXEC, e.err().unwrap_or(libc::ENOEXEC))
    }
}

/// `clone(flags)` like `fork()` (no new stack, no `CLONE_VM`); used only to probe which
/// namespaces can be created. The child must only call `_exit`.
///
/// # Safety
/// The child must make no call but `_exit`.
pub(super) unsafe fn fork_probe(flags: libc::c_ulong) -> libc::c_long {
    // SAFETY: upheld by the caller; with a NULL stack the child continues on a copy of
    // the caller's stack, exactly like fork().
    unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) }
}

pub(super) enum Record {
    Status(i32),
    Failed { stage: i32, errno: i32 },
}

pub(super) fn read_records(fd: &OwnedFd) -> Vec<Record> {
    let mut data = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: reading into a stack buffer from our pipe (A is reaped: EOF follows).
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r > 0 {
            data.extend_from_slice(&buf[..r as usize]);
        } else if r < 0 && errno() == libc::EINTR {
            continue;
        } else {
            break;
        }
    }
    data.chunks_exact(12)
        .filter_map(|c| {
            let word = |i: usize| i32::from_ne_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            match word(0) {
                REC_STATUS => Some(Record::Status(word(4))),
                REC_FAILED => Some(Record::Failed {
                    stage: word(4),
                    errno: word(8),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text() {
        assert_eq!(&decimal(364)[..4], b"364\0");
        assert_eq!(&decimal(0)[..2], b"0\0");
        assert_eq!(&decimal(299)[..3], b"299");
    }
}
