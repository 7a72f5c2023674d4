//! What this kernel and process allow, asked once when a [`super::process::Policy`] is
//! built: namespaces, a per-namespace `pid_max`, the mounts a staged call needs, the
//! kernel version, capabilities. Each probe runs in a throw-away child.

use std::ffi::CStr;

use super::child::{self, fork_probe};
use super::spawn::BlockSignals;

/// Can this process create pid namespaces? (Root can, unless a container forbids it.)
pub fn probe_pid_namespace() -> bool {
    probe(libc::CLONE_NEWPID, Probe::Nothing)
}

/// What a probe child tries before reporting success.
#[derive(Clone, Copy)]
pub(super) enum Probe {
    Nothing,
    /// Write its pid namespace's `pid_max` and `ns_last_pid` (read-only `/proc/sys` in a
    /// container would make every call fail at that stage otherwise).
    PidMax,
    /// Make its mount namespace private and every mount read-only, as a staged call does
    /// (a container's seccomp or LSM may refuse either).
    Mount,
}

/// Can this process create the namespaces in `flags` and do `what` in them? Runs a
/// throw-away child (a fork: it only makes async-signal-safe calls and exits).
pub(super) fn probe(flags: libc::c_int, what: Probe) -> bool {
    let _mask = BlockSignals::new();
    // SAFETY: the child only makes raw syscalls on static data and exits.
    let pid = unsafe { fork_probe(flags as libc::c_ulong) };
    if pid == 0 {
        // SAFETY: open/write/close/mount/_exit in the forked probe child.
        unsafe {
            let ok = match what {
                Probe::Nothing => true,
                Probe::PidMax => {
                    let write = |path: &CStr, text: &[u8]| {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        let ok = fd >= 0
                            && libc::write(fd, text.as_ptr().cast(), text.len())
                                == text.len() as isize;
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        ok
                    };
                    write(c"/proc/sys/kernel/pid_max", b"400")
                        && write(c"/proc/sys/kernel/ns_last_pid", b"299")
                }
                Probe::Mount => {
                    let null = std::ptr::null::<libc::c_char>();
                    // What the staged view needs: a private tree, then every mount made
                    // read-only (a container's seccomp may refuse mount_setattr).
                    let attr = child::READ_ONLY_VIEW;
                    libc::mount(
                        null,
                        c"/".as_ptr(),
                        null,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                        && libc::syscall(
                            libc::SYS_mount_setattr,
                            libc::AT_FDCWD,
                            c"/".as_ptr(),
                            libc::AT_RECURSIVE,
                            &attr as *const child::MountAttr,
                            std::mem::size_of::<child::MountAttr>(),
                        ) == 0
                }
            };
            libc::_exit(if ok { 0 } else { 1 })
        }
    }
    if pid < 0 {
        return false;
    }
    let mut st = 0;
    loop {
        // SAFETY: waiting for our own probe child.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut st, libc::__WALL) };
        if r >= 0 || child::errno() != libc::EINTR {
            return r == pid as libc::pid_t && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
        }
    }
}

/// The running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: uname fills a zeroed struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates `release`.
    let release = unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let maj: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let min: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (maj, min) >= (major, minor)
}

pub(super) fn has_any_capability() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().chars().any(|c| c != '0'))
        })
        .unwrap_or(false)
}
