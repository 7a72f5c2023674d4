//! A seccomp-BPF deny filter for the shell tool's processes, assembled by hand.
//!
//! Built in the parent (it allocates); the child installs it with one `seccomp()` call.
//! Default action: allow. Refused with `EPERM` (so tools print an ordinary error):
//!
//! * `socket()` for any family but `AF_UNIX`, unless network is enabled;
//! * debugging/foreign-memory: `ptrace`, `process_vm_readv/writev`, `pidfd_getfd`, `kcmp`;
//! * `io_uring_*` (a second syscall surface that seccomp cannot see into);
//! * a mode with `S_ISUID`/`S_ISGID` in `chmod`, `fchmod`, `fchmodat(2)`, `mkdir(at)`,
//!   `mknod(at)`, `creat`, and `open(at)` with `O_CREAT`/`O_TMPFILE`; `openat2` fails
//!   with `ENOSYS` (its mode is in memory; libc falls back to `openat`);
//! * leaving the process group (`setsid`, `setpgid`) — the timeout kills the group;
//! * namespaces and mounts: `unshare`, `setns`, `mount*`, `umount2`, `pivot_root`,
//!   `chroot`, `open_tree`, `move_mount`, `fs*`, and `clone` with any `CLONE_NEW*` flag;
//!   `clone3` fails with `ENOSYS` (its flags live in memory BPF cannot read; libc falls
//!   back to `clone`);
//! * kernel/system state: `bpf`, `perf_event_open`, `userfaultfd`, `kexec_*`, modules,
//!   `keyctl`/`add_key`/`request_key`, `reboot`, `swapon/off`, clock setting, `acct`,
//!   `quotactl`, `syslog`, `open_by_handle_at`/`name_to_handle_at`, `iopl/ioperm`.
//!
//! A foreign architecture (e.g. 32-bit `int 0x80` on x86-64) kills the process, and x32
//! syscall numbers are refused, so nothing reaches the kernel under another number.
//!
//! The listed numbers are found by a binary search (`JGE` splits, then a few `JEQ`), so
//! an allowed syscall runs 13 instructions instead of one comparison per listed
//! syscall (70); a unit test runs the program in a BPF interpreter against every syscall
//! number and the argument values that matter, and compares with the lists above.

use libc::sock_filter;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

// offsetof(struct seccomp_data, ...)
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16; // little-endian: low word of args[0]

/// Offset of the low word of `args[i]` (each argument is 8 bytes, little-endian).
const fn arg_lo(i: u32) -> u32 {
    OFF_ARG0_LO + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u32;

/// Syscalls refused with `EPERM` whatever the network setting.
fn denied_syscalls() -> Vec<(&'static str, libc::c_long)> {
    let mut v: Vec<(&'static str, libc::c_long)> = vec![
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("kcmp", libc::SYS_kcmp),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("setsid", libc::SYS_setsid),
        ("setpgid", libc::SYS_setpgid),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("syslog", libc::SYS_syslog),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("vhangup", libc::SYS_vhangup),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
    ]);
    v
}

/// Syscalls that take a file mode, with the index of the mode argument and, for the
/// opens, of the flags argument (the mode only counts with `O_CREAT`/`O_TMPFILE`). A
/// mode with `S_ISUID`/`S_ISGID` is refused: no process may make a set-id file.
fn mode_syscalls() -> Vec<(libc::c_long, u32, Option<u32>)> {
    let mut v: Vec<(libc::c_long, u32, Option<u32>)> = vec![
        (libc::SYS_fchmod, 1, None),
        (libc::SYS_fchmodat, 2, None),
        (SYS_FCHMODAT2, 2, None),
        (libc::SYS_mkdirat, 2, None),
        (libc::SYS_mknodat, 2, None),
        (libc::SYS_openat, 3, Some(2)),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_chmod, 1, None),
        (libc::SYS_mkdir, 1, None),
        (libc::SYS_mknod, 1, None),
        (libc::SYS_creat, 1, None),
        (libc::SYS_open, 2, Some(1)),
    ]);
    v
}

/// `fchmodat2` (Linux 6.6), not in every libc crate yet; same number on every arch.
const SYS_FCHMODAT2: libc::c_long = 452;
const SETID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;
/// `O_CREAT | __O_TMPFILE`: the flags with which `open` uses its mode.
const OPEN_WITH_MODE: u32 = (libc::O_CREAT | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u32;

/// The names of the syscalls the filter refuses (for reports and docs).
pub fn denied_names(network: bool) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = denied_syscalls().into_iter().map(|(n, _)| n).collect();
    v.push("clone(CLONE_NEW*)");
    v.push("clone3 (ENOSYS)");
    v.push("openat2 (ENOSYS)");
    v.push("chmod/mkdir/mknod/open with S_ISUID or S_ISGID");
    if !network {
        v.push("socket(non-AF_UNIX)");
    }
    v
}

/// An assembled filter.
#[derive(Clone)]
pub struct Filter {
    prog: Vec<sock_filter>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({} instructions)", self.prog.len())
    }
}

#[derive(Clone, Copy)]
enum Target {
    Next,
    Allow,
    Eperm,
    Enosys,
    Label(usize),
}

struct Asm {
    code: Vec<(u16, Target, Target, u32)>,
}

impl Asm {
    fn op(&mut self, code: u16, jt: Target, jf: Target, k: u32) -> usize {
        self.code.push((code, jt, jf, k));
        self.code.len() - 1
    }
}

/// What the filter does with one syscall number that is not simply allowed.
#[derive(Clone, Copy)]
enum Action {
    Eperm,
    Enosys,
    /// Jump to check block `i` (the arguments decide).
    Check(usize),
}

impl Filter {
    /// Assembles the filter: the architecture check, then a binary search over the
    /// syscall numbers that are not simply allowed (a few comparisons per syscall
    /// instead of one per listed syscall; the kernel also runs the program for every
    /// syscall number when it installs it, to cache the always-allowed ones), then the
    /// argument checks.
    pub fn build(network: bool) -> Filter {
        let mut a = Asm { code: Vec::new() };
        a.op(BPF_LD_W_ABS, Target::Next, Target::Next, OFF_ARCH);
        // jt skips the kill.
        a.op(
            BPF_JEQ_K,
            Target::Label(usize::MAX - 1),
            Target::Next,
            AUDIT_ARCH,
        );
        a.op(BPF_RET_K, Target::Next, Target::Next, RET_KILL_PROCESS);
        let load_nr = a.op(BPF_LD_W_ABS, Target::Next, Target::Next, OFF_NR);
        // Patch the arch jump to land on load_nr.
        a.code[1].1 = Target::Label(load_nr);
        #[cfg(target_arch = "x86_64")]
        a.op(BPF_JGE_K, Target::Eperm, Target::Next, 0x4000_0000); // x32 ABI

        let mut table: Vec<(u32, Action)> = denied_syscalls()
            .into_iter()
            .map(|(_, nr)| (nr as u32, Action::Eperm))
            .collect();
        // clone3's flags and openat2's mode are in memory BPF cannot read; callers fall
        // back to clone / openat.
        table.push((libc::SYS_clone3 as u32, Action::Enosys));
        table.push((libc::SYS_openat2 as u32, Action::Enosys));
        // One check block per (mode argument, flags argument) pair, shared by every
        // syscall that has it.
        let mut modes: Vec<(u32, Option<u32>)> = Vec::new();
        for (nr, mode_arg, flags_arg) in mode_syscalls() {
            let kind = (mode_arg, flags_arg);
            let i = match modes.iter().position(|&k| k == kind) {
                Some(i) => i,
                None => {
                    modes.push(kind);
                    modes.len() - 1
                }
            };
            table.push((nr as u32, Action::Check(i)));
        }
        let clone_check = modes.len();
        table.push((libc::SYS_clone as u32, Action::Check(clone_check)));
        let socket_check = modes.len() + 1;
        if !network {
            table.push((libc::SYS_socket as u32, Action::Check(socket_check)));
        }
        table.sort_by_key(|&(nr, _)| nr);
        table.dedup_by_key(|&mut (nr, _)| nr);
        // (instruction, check block) of every jump into a check block, patched below.
        let mut to_checks: Vec<(usize, usize)> = Vec::new();
        search(&mut a, &table, &mut to_checks);

        let mut check_at = vec![0usize; modes.len() + 2];
        // clone: refuse any namespace flag.
        check_at[clone_check] = a.op(BPF_LD_W_ABS, Target::Next, Target::Next, OFF_ARG0_LO);
        a.op(BPF_JSET_K, Target::Eperm, Target::Allow, CLONE_NS_FLAGS);
        if !network {
            check_at[socket_check] = a.op(BPF_LD_W_ABS, Target::Next, Target::Next, OFF_ARG0_LO);
            a.op(
                BPF_JEQ_K,
                Target::Allow,
                Target::Eperm,
                libc::AF_UNIX as u32,
            );
        }
        for (i, &(mode_arg, flags_arg)) in modes.iter().enumerate() {
            check_at[i] = match flags_arg {
                Some(f) => {
                    let at = a.op(BPF_LD_W_ABS, Target::Next, Target::Next, arg_lo(f));
                    a.op(BPF_JSET_K, Target::Next, Target::Allow, OPEN_WITH_MODE);
                    at
                }
                None => a.code.len(),
            };
            a.op(BPF_LD_W_ABS, Target::Next, Target::Next, arg_lo(mode_arg));
            a.op(BPF_JSET_K, Target::Eperm, Target::Allow, SETID_BITS);
        }
        for (at, check) in to_checks {
            a.code[at].1 = Target::Label(check_at[check]);
        }
        let allow = a.op(BPF_RET_K, Target::Next, Target::Next, RET_ALLOW);
        let eperm = a.op(
            BPF_RET_K,
            Target::Next,
            Target::Next,
            RET_ERRNO | libc::EPERM as u32,
        );
        let enosys = a.op(
            BPF_RET_K,
            Target::Next,
            Target::Next,
            RET_ERRNO | libc::ENOSYS as u32,
        );

        let resolve = |at: usize, t: Target| -> u8 {
            let dest = match t {
                Target::Next => at + 1,
                Target::Allow => allow,
                Target::Eperm => eperm,
                Target::Enosys => enosys,
                Target::Label(l) => l,
            };
            let off = dest - (at + 1);
            u8::try_from(off).expect("seccomp filter jump out of range")
        };
        let prog = a
            .code
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| {
                let is_jump = code & 0x07 == 0x05;
                sock_filter {
                    code,
                    jt: if is_jump { resolve(i, jt) } else { 0 },
                    jf: if is_jump { resolve(i, jf) } else { 0 },
                    k,
                }
            })
            .collect();
        Filter { prog }
    }

    /// The program, for `seccomp(SECCOMP_SET_MODE_FILTER, 0, &sock_fprog)`.
    pub fn instructions(&self) -> &[sock_filter] {
        &self.prog
    }
}

/// Emits a binary search over `table` (sorted by number): `JGE` splits down to runs of
/// at most four numbers, each compared with `JEQ`; a number in none of them is allowed.
fn search(a: &mut Asm, table: &[(u32, Action)], to_checks: &mut Vec<(usize, usize)>) {
    if table.len() <= 4 {
        for (i, &(nr, action)) in table.iter().enumerate() {
            let target = match action {
                Action::Eperm => Target::Eperm,
                Action::Enosys => Target::Enosys,
                Action::Check(_) => Target::Next, // patched
            };
            // The last comparison of a run falls through to "allow".
            let miss = if i + 1 == table.len() {
                Target::Allow
            } else {
                Target::Next
            };
            let at = a.op(BPF_JEQ_K, target, miss, nr);
            if let Action::Check(c) = action {
                to_checks.push((at, c));
            }
        }
        return;
    }
    let (low, high) = table.split_at(table.len() / 2);
    let split = a.op(BPF_JGE_K, Target::Next, Target::Next, high[0].0);
    search(a, low, to_checks);
    a.code[split].1 = Target::Label(a.code.len());
    search(a, high, to_checks);
}

/// True if the kernel supports seccomp filters (`PR_GET_SECCOMP` answers).
pub fn supported() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct seccomp_data` as the kernel lays it out (little-endian).
    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        d
    }

    /// A classic-BPF interpreter for the instructions the filter uses (anything else
    /// fails the test), as the kernel runs them: forward jumps only, the program must
    /// end in a return.
    fn run(prog: &[sock_filter], d: &[u8; 64]) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        for _ in 0..prog.len() {
            let ins = prog[pc];
            let jump = |taken: bool| pc + 1 + usize::from(if taken { ins.jt } else { ins.jf });
            pc = match ins.code {
                BPF_LD_W_ABS => {
                    let o = ins.k as usize;
                    acc = u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
                    pc + 1
                }
                BPF_JEQ_K => jump(acc == ins.k),
                BPF_JGE_K => jump(acc >= ins.k),
                BPF_JSET_K => jump(acc & ins.k != 0),
                BPF_RET_K => return ins.k,
                other => panic!("instruction {other:#x} at {pc} is not interpreted"),
            };
            assert!(pc < prog.len(), "jump past the end");
        }
        panic!("the program did not return");
    }

    /// What the filter must answer, from the lists above (independent of the BPF).
    fn expected(network: bool, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let lo = |i: u32| args[i as usize] as u32;
        if arch != AUDIT_ARCH {
            return RET_KILL_PROCESS;
        }
        let eperm = RET_ERRNO | libc::EPERM as u32;
        if cfg!(target_arch = "x86_64") && nr >= 0x4000_0000 {
            return eperm;
        }
        if denied_syscalls().iter().any(|&(_, n)| n as u32 == nr) {
            return eperm;
        }
        if nr == libc::SYS_clone3 as u32 || nr == libc::SYS_openat2 as u32 {
            return RET_ERRNO | libc::ENOSYS as u32;
        }
        if let Some(&(_, mode, flags)) = mode_syscalls().iter().find(|m| m.0 as u32 == nr) {
            let uses_mode = flags.is_none_or(|f| lo(f) & OPEN_WITH_MODE != 0);
            return if uses_mode && lo(mode) & SETID_BITS != 0 {
                eperm
            } else {
                RET_ALLOW
            };
        }
        if nr == libc::SYS_clone as u32 && lo(0) & CLONE_NS_FLAGS != 0 {
            return eperm;
        }
        if !network && nr == libc::SYS_socket as u32 && lo(0) != libc::AF_UNIX as u32 {
            return eperm;
        }
        RET_ALLOW
    }

    #[test]
    fn the_filter_answers_exactly_what_the_lists_say() {
        // Argument values that flip each check (set-id bits, O_CREAT/O_TMPFILE, the
        // namespace flags, socket families) and some that must not; high words too (the
        // filter reads low words only, and so does the kernel's ABI for these).
        let values: [u64; 8] = [
            0,
            0o755,
            u64::from(libc::S_ISUID) | 0o755,
            u64::from(libc::S_ISGID),
            libc::O_CREAT as u64 | u64::from(libc::S_ISUID),
            (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64,
            libc::CLONE_NEWUSER as u64 | libc::AF_INET as u64,
            libc::AF_UNIX as u64 | (1 << 40),
        ];
        let special: Vec<u32> = mode_syscalls()
            .iter()
            .map(|m| m.0 as u32)
            .chain([libc::SYS_clone as u32, libc::SYS_socket as u32])
            .collect();
        let mut nrs: Vec<u32> = (0..1100).collect();
        nrs.extend([0x4000_0000, 0x4000_0001, 0x7fff_ffff, u32::MAX]);
        let mut checked = 0u64;
        for network in [false, true] {
            let prog = Filter::build(network);
            let prog = prog.instructions();
            for &nr in &nrs {
                for arch in [AUDIT_ARCH, 0x4000_0003] {
                    let mut one = |args: [u64; 6]| {
                        let got = run(prog, &data(arch, nr, args));
                        assert_eq!(
                            got,
                            expected(network, arch, nr, args),
                            "network {network}, arch {arch:#x}, nr {nr}, args {args:?}"
                        );
                        checked += 1;
                    };
                    if special.contains(&nr) && arch == AUDIT_ARCH {
                        // Every combination over the first four arguments.
                        for i in 0..values.len().pow(4) {
                            let pick = |k: u32| values[i / values.len().pow(k) % values.len()];
                            one([pick(0), pick(1), pick(2), pick(3), 0, 0]);
                        }
                    } else {
                        for &v in &values {
                            one([v; 6]);
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn assembles_with_jumps_in_range() {
        for network in [false, true] {
            let f = Filter::build(network);
            let n = f.instructions().len();
            assert!(n > 50 && n < 255, "{n}");
            // The last three are the return stubs.
            let tail: Vec<u32> = f.instructions()[n - 3..].iter().map(|i| i.k).collect();
            assert_eq!(
                tail,
                vec![
                    RET_ALLOW,
                    RET_ERRNO | libc::EPERM as u32,
                    RET_ERRNO | libc::ENOSYS as u32
                ]
            );
            // Every jump lands inside the program.
            for (i, ins) in f.instructions().iter().enumerate() {
                if ins.code & 0x07 == 0x05 {
                    assert!(i + 1 + (ins.jt as usize) < n);
                    assert!(i + 1 + (ins.jf as usize) < n);
                }
            }
        }
    }
}
