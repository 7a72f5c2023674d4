//! Raw Linux system calls that never touch `errno`.
//!
//! The sandboxed child is created with `CLONE_VM` (it shares the caller's address space,
//! so spawning costs the same whatever the size of the host process — a fork would copy
//! the page tables of, say, a Python process holding a model). Such a child runs with
//! the *caller thread's* TLS, so it must not call libc wrappers that write `errno` there.
//! These wrappers return `Err(errno)` instead.

/// A raw syscall with up to six arguments; `Err(errno)` on failure.
///
/// # Safety
/// The caller upholds the syscall's own contract (valid pointers, owned fds, ...).
#[inline(always)]
pub(super) unsafe fn syscall(nr: libc::c_long, args: [usize; 6]) -> Result<usize, i32> {
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the x86-64 syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10, r8,
    // r9; rcx and r11 are clobbered; the caller vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the arm64 syscall ABI: number in x8, arguments in x0..x5, result in x0;
    // the caller vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr as isize,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) {
        Err((-ret) as i32)
    } else {
        Ok(ret as usize)
    }
}

/// `syscall` with fewer arguments (the rest are zero).
///
/// # Safety
/// As for [`syscall`].
#[inline(always)]
pub(super) unsafe fn sys(nr: libc::c_long, a: &[usize]) -> Result<usize, i32> {
    let mut args = [0usize; 6];
    for (slot, v) in args.iter_mut().zip(a) {
        *slot = *v;
    }
    // SAFETY: forwarded to the caller.
    unsafe { syscall(nr, args) }
}

/// `exit_group`: ends the calling process, never returns.
pub(super) fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an int and does not return.
        let _ = unsafe { sys(libc::SYS_exit_group, &[code as usize]) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_calls_return_values_and_errnos() {
        // SAFETY: getpid takes nothing; close(-1) fails with EBADF.
        let pid = unsafe { sys(libc::SYS_getpid, &[]) }.unwrap();
        assert_eq!(pid as u32, std::process::id());
        assert_eq!(
            unsafe { sys(libc::SYS_close, &[usize::MAX >> 1]) },
            Err(libc::EBADF)
        );
    }
}
