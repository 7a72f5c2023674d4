//! The child side of [`super::process`]: what runs between `clone` and `execve`, and
//! the status-pipe protocol it reports through.
//!
//! Only raw, async-signal-safe syscalls run here — no allocation, no locks, no panics —
//! on data the parent prepared before `clone` ([`Plan`]).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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
        STAGE_SETSID => "setsid",
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
        STAGE_MOUNT => "the read-only protected paths",
        _ => "unknown stage",
    }
}

/// Everything the child reads; raw pointers into memory owned by [`Policy::run`].
pub(super) struct Plan<'a> {
    pub(super) exe: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    /// Sources for fds 0 (stdin), 1, 2, 3 (status), 4 (Landlock ruleset), 5 (cwd).
    pub(super) fds: [RawFd; 6],
    pub(super) rlimits: [(libc::c_int, u64, u64); 6],
    pub(super) pid_max: Option<(&'a [u8; 24], &'a [u8; 24])>,
    pub(super) seccomp: Option<*const libc::sock_fprog>,
    pub(super) drop_caps: bool,
    pub(super) in_pidns: bool,
    /// In a private mount namespace: bind these (absolute) paths read-only.
    pub(super) mount_ns: bool,
    pub(super) protect: &'a [std::ffi::CString],
    /// Absolute path of the working directory (fd 5 is the same directory).
    pub(super) cwd_path: &'a CStr,
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
    // SAFETY: writing a stack buffer to an fd; result deliberately ignored (nothing else
    // can be done from here).
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
    }
}

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reports a failed stage and exits without running anything.
fn fail(status_fd: RawFd, stage: i32) -> ! {
    put(status_fd, REC_FAILED, stage, errno());
    // SAFETY: _exit is async-signal-safe and ends this process.
    unsafe { libc::_exit(127) }
}

fn write_file(path: &CStr, text: &[u8; 24]) -> bool {
    let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    // SAFETY: valid C string and buffer; raw open/write/close.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, text.as_ptr().cast(), len) == len as isize;
        libc::close(fd);
        ok
    }
}

/// The child ("A"). Only raw syscalls from here on; never returns.
///
/// # Safety
/// Must be called only in the child right after `raw_clone`, with `plan` pointing into
/// the copied address space.
pub(super) unsafe fn child_main(plan: &Plan<'_>) -> ! {
    let mut status_fd = plan.fds[3];

    // Default dispositions and an empty mask: no handler of the host process runs here,
    // and ignored signals (Rust and Python ignore SIGPIPE) are not inherited by exec.
    // SAFETY: plain syscalls on stack data.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // EINVAL for numbers libc reserves: nothing to reset there.
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            fail(status_fd, STAGE_SIGNALS);
        }
    }
    // SAFETY: setsid/prctl take no pointers.
    unsafe {
        if libc::setsid() < 0 {
            fail(status_fd, STAGE_SETSID);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(status_fd, STAGE_PDEATHSIG);
        }
    }
    if plan.mount_ns {
        // SAFETY: mount(2) with valid C strings (or NULL where the call ignores them).
        unsafe {
            // Nothing done here may propagate back to the host's mounts.
            let null = std::ptr::null::<libc::c_char>();
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(null, c"/".as_ptr(), null, flags, std::ptr::null()) != 0 {
                fail(status_fd, STAGE_MOUNT);
            }
            for p in plan.protect {
                let p = p.as_ptr();
                if libc::mount(p, p, null, libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
                    if errno() == libc::ENOENT {
                        continue; // gone since the parent looked: nothing to protect
                    }
                    fail(status_fd, STAGE_MOUNT);
                }
                let ro = libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC;
                if libc::mount(null, p, null, ro, std::ptr::null()) != 0 {
                    fail(status_fd, STAGE_MOUNT);
                }
            }
        }
    }
    if let Some((pid_max, last_pid)) = plan.pid_max {
        if !write_file(c"/proc/sys/kernel/pid_max", pid_max)
            || !write_file(c"/proc/sys/kernel/ns_last_pid", last_pid)
        {
            fail(status_fd, STAGE_PID_MAX);
        }
    }
    for &(res, soft, hard) in &plan.rlimits {
        let lim = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: prlimit64(0 = self, resource, &new, NULL).
        let r = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                res,
                &lim as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if r != 0 {
            fail(status_fd, STAGE_RLIMIT);
        }
    }
    // fds: every source is >= 10, so these dup2s never clobber one another.
    for (target, &src) in plan.fds.iter().enumerate() {
        if src >= 0 {
            // SAFETY: dup2 on fds we own.
            if unsafe { libc::dup2(src, target as RawFd) } < 0 {
                fail(status_fd, STAGE_FDS);
            }
        } else {
            // SAFETY: closing a possibly-unused fd number.
            unsafe { libc::close(target as RawFd) };
        }
    }
    status_fd = 3;
    // SAFETY: close everything else the host had open (close_range, 5.9+; else a loop).
    unsafe {
        if libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32) != 0 {
            for fd in 6..65536 {
                libc::close(fd);
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(status_fd, STAGE_NO_NEW_PRIVS);
        }
    }
    if plan.drop_caps {
        // SAFETY: prctl/capset with valid arguments.
        unsafe {
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    if errno() == libc::EINVAL {
                        break; // past CAP_LAST_CAP
                    }
                    fail(status_fd, STAGE_CAPS);
                }
            }
            let bits = libc::SECBIT_NOROOT
                | libc::SECBIT_NOROOT_LOCKED
                | libc::SECBIT_NO_SETUID_FIXUP
                | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
                | libc::SECBIT_KEEP_CAPS_LOCKED
                | libc::SECBIT_NO_CAP_AMBIENT_RAISE
                | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
            if libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) != 0 {
                fail(status_fd, STAGE_CAPS);
            }
            // Ambient set: EINVAL on kernels before 4.3, where it does not exist.
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) != 0
                && errno() != libc::EINVAL
            {
                fail(status_fd, STAGE_CAPS);
            }
        }
    }
    // Empty effective/permitted/inheritable sets (always allowed: it only drops).
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        fail(status_fd, STAGE_CAPS);
    }
    if plan.fds[4] >= 0 {
        // SAFETY: fd 4 is the Landlock ruleset.
        unsafe {
            if libc::syscall(libc::SYS_landlock_restrict_self, 4, 0u32) != 0 {
                fail(status_fd, STAGE_LANDLOCK);
            }
            libc::close(4);
        }
    }
    if let Some(prog) = plan.seccomp {
        // SAFETY: `prog` points to a sock_fprog whose filter outlives this call.
        if unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0u32, prog) }
            != 0
        {
            fail(status_fd, STAGE_SECCOMP);
        }
    }
    // SAFETY: a plain fork of this single-threaded process.
    let b = unsafe { raw_clone(libc::SIGCHLD as libc::c_ulong) };
    if b < 0 {
        fail(status_fd, STAGE_FORK);
    }
    if b == 0 {
        // B: into the workspace and exec. fd 3 closes on a successful exec.
        // SAFETY: raw syscalls on fds we own and pointers prepared by the parent.
        unsafe {
            libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
            if plan.mount_ns {
                // fd 5 belongs to the parent's mount namespace, where the read-only binds
                // do not exist: change directory by path, in ours, and check it is the
                // directory the parent resolved.
                let mut want: libc::stat = std::mem::zeroed();
                let mut got: libc::stat = std::mem::zeroed();
                if libc::chdir(plan.cwd_path.as_ptr()) != 0
                    || libc::fstat(5, &mut want) != 0
                    || libc::stat(c".".as_ptr(), &mut got) != 0
                {
                    fail(3, STAGE_CHDIR);
                }
                if want.st_dev != got.st_dev || want.st_ino != got.st_ino {
                    put(3, REC_FAILED, STAGE_CHDIR, libc::ESTALE);
                    libc::_exit(127);
                }
            } else if libc::fchdir(5) != 0 {
                fail(3, STAGE_CHDIR);
            }
            libc::close(5);
            libc::execve(plan.exe, plan.argv, plan.envp);
        }
        fail(3, STAGE_EXEC);
    }
    // A: reap until B is gone (orphans re-parent to us in the namespace).
    // SAFETY: closing fds, waitpid into a stack int, kill, _exit.
    unsafe {
        libc::close(5);
        let mut status: Option<libc::c_int> = None;
        loop {
            let mut st: libc::c_int = 0;
            let r = libc::waitpid(-1, &mut st, 0);
            if r == b as libc::pid_t {
                status = Some(st);
                break;
            }
            if r < 0 && errno() != libc::EINTR {
                break;
            }
        }
        if plan.in_pidns {
            // Kill everything left in the namespace (kill(-1) from its init spares only
            // init) and reap it all, so that when the parent sees our report nothing of
            // this call is alive any more.
            libc::kill(-1, libc::SIGKILL);
            loop {
                let mut st: libc::c_int = 0;
                let r = libc::waitpid(-1, &mut st, libc::__WALL);
                if r < 0 && errno() != libc::EINTR {
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
            libc::kill(0, libc::SIGKILL);
        }
        // Close the pipes now: the parent sees EOF without waiting for the kernel to
        // tear down our namespaces, which happens after this process exits.
        for fd in 0..6 {
            libc::close(fd);
        }
        libc::_exit(0)
    }
}

/// `clone(flags)` like `fork()`: no new stack, no CLONE_VM. The exit signal is in the
/// low byte of `flags` (0: the caller reaps with `__WALL`, and a host `SIGCHLD` handler
/// that reaps with `waitpid(-1)` does not steal it).
///
/// # Safety
/// The child must only make async-signal-safe calls before exec/_exit.
pub(super) unsafe fn raw_clone(flags: libc::c_ulong) -> libc::c_long {
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
