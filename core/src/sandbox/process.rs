//! Running one allowlisted binary, contained.
//!
//! ```text
//! caller thread ──clone(CLONE_NEWPID)──▶ A: pid 1 of a new pid namespace ("init")
//!                                          own group, no tty, PDEATHSIG=KILL, pid_max,
//!                                          rlimits, stdio, close fds, no_new_privs,
//!                                          drop every capability, Landlock, seccomp
//!                                          └─clone──▶ B: fchdir(cwd), execve(binary)
//! ```
//!
//! * A is restricted *before* it forks B, so every descendant inherits all of it.
//! * When A exits — because B exited, or because the caller SIGKILLs it at the timeout —
//!   the kernel kills every process left in the namespace: no grandchild survives, even
//!   one that double-forked. Without pid namespaces (not root, or a kernel that refuses)
//!   A leads its own process group instead, seccomp stops descendants from leaving it,
//!   and A kills the group (and the caller kills it at the timeout).
//! * Fork bombs: on kernels with a per-namespace `pid_max` (6.14+), A sets the namespace's
//!   `pid_max` to `300 + processes` and `ns_last_pid` to 299, so at most `processes` pids
//!   exist in the namespace at once — enforced by the kernel, for root too (root ignores
//!   `RLIMIT_NPROC`).
//! * Everything the child needs is prepared before `clone` (argv, envp, fds, the
//!   Landlock ruleset, the BPF program); between `clone` and `execve` only raw,
//!   async-signal-safe syscalls run — no allocation, no locks, no panics.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child::{self, a_entry, decimal, read_records, stage_name, Plan, Record};
use super::landlock::{self, Ruleset, Status};
use super::path::Workspace;
use super::probe::{has_any_capability, probe, Probe};
pub use super::probe::{kernel_at_least, probe_pid_namespace};
use super::seccomp::Filter;
use super::spawn::{dup_high, open_devnull, pipe, pump, BlockSignals, Child, Pumped, Stacks};
pub use super::spawn::{empty_bounding_set, Killed};
pub use super::spec::{Enforcement, Limits, PolicyConfig, NETWORK_READ_PATHS, SYSTEM_READ_PATHS};
use super::staging;
pub use super::stock::Staged;
use super::SandboxError;

/// The process sandbox, built once; `Send + Sync`, used concurrently by many calls.
#[derive(Debug)]
pub struct Policy {
    pub(super) ruleset: Option<Ruleset>,
    pub(super) seccomp: Option<Filter>,
    pub(super) workspace: PathBuf,
    env: Vec<CString>,
    pub(super) limits: Limits,
    pub(super) max_output_bytes: usize,
    pub(super) pidns: bool,
    pub(super) mountns: bool,
    pub(super) pid_max_per_ns: bool,
    pub(super) drop_caps: bool,
    is_root: bool,
    require: bool,
    enforcement: Enforcement,
    /// Identifies the policy a [`Staged`] was made for (it holds a clone, so the address
    /// is never reused while one exists).
    pub(super) token: Arc<()>,
}

impl Policy {
    /// Builds the Landlock ruleset and the seccomp filter and probes the kernel.
    pub fn new(cfg: &PolicyConfig) -> Result<Self, SandboxError> {
        let mut exec: Vec<PathBuf> = Vec::new();
        for exe in &cfg.executables {
            exec.push(exe.clone());
            // The ELF interpreter (and a script's `#!` interpreter, and its interpreter)
            // must be executable too; nothing else is.
            let mut cur = exe.clone();
            for _ in 0..3 {
                let Some(interp) = landlock::interpreter_of(&cur) else {
                    break;
                };
                let Ok(interp) = std::fs::canonicalize(&interp) else {
                    break;
                };
                if exec.contains(&interp) {
                    break;
                }
                exec.push(interp.clone());
                cur = interp;
            }
        }
        let mut read: Vec<PathBuf> = SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect();
        if cfg.network {
            read.extend(NETWORK_READ_PATHS.iter().map(PathBuf::from));
        }
        read.extend(cfg.read_paths.iter().cloned());
        let spec = landlock::Spec {
            read,
            exec,
            read_write_files: vec![PathBuf::from("/dev/null")],
            workspace: vec![cfg.workspace.clone()],
            network: cfg.network,
        };
        let ruleset = Ruleset::build(&spec)?;
        let seccomp = super::seccomp::supported().then(|| Filter::build(cfg.network));
        let pidns = probe_pid_namespace();
        let mountns = pidns
            && probe(libc::CLONE_NEWPID | libc::CLONE_NEWNS, Probe::Mount)
            && Workspace::open(&cfg.workspace).is_ok_and(|ws| staging::supported(&ws));
        // Before 6.14 `pid_max` is global: writing it from a namespace would change the
        // host's. Never probe it there.
        let pid_max_per_ns =
            pidns && kernel_at_least(6, 14) && probe(libc::CLONE_NEWPID, Probe::PidMax);
        // SAFETY: geteuid has no preconditions.
        let drop_caps = unsafe { libc::geteuid() } == 0 || has_any_capability();
        let env = cfg
            .env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                SandboxError::denied("nul_byte", "environment contains a NUL byte".into())
            })?;
        let enforcement = Enforcement {
            landlock: ruleset
                .as_ref()
                .map_or(Status::NotEnforced, Ruleset::status),
            landlock_abi: ruleset.as_ref().map(Ruleset::abi),
            seccomp: seccomp.is_some(),
            network: cfg.network,
            pid_namespace: pidns,
            process_limit: pid_max_per_ns.then_some(cfg.limits.processes),
            staged_writes: mountns,
            capabilities_dropped: drop_caps,
            no_new_privs: true,
        };
        Ok(Self {
            ruleset,
            seccomp,
            workspace: cfg.workspace.clone(),
            env,
            limits: cfg.limits,
            max_output_bytes: cfg.max_output_bytes,
            pidns,
            mountns,
            pid_max_per_ns,
            drop_caps,
            // SAFETY: geteuid has no preconditions.
            is_root: unsafe { libc::geteuid() } == 0,
            require: cfg.require,
            enforcement,
            token: Arc::new(()),
        })
    }

    /// What every process run under this policy gets.
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// With `require = true`: refuses (rule `sandbox_required`) unless Landlock is fully
    /// enforced and seccomp is on.
    pub fn check_required(&self) -> Result<(), SandboxError> {
        if !self.require {
            return Ok(());
        }
        let e = &self.enforcement;
        if e.landlock != Status::FullyEnforced {
            return Err(SandboxError::denied(
                "sandbox_required",
                format!(
                    "[sandbox] require = true but Landlock is {} (kernel ABI {:?}, need {})",
                    e.landlock.as_str(),
                    e.landlock_abi,
                    landlock::FULL_ABI
                ),
            ));
        }
        if !e.seccomp {
            return Err(SandboxError::denied(
                "sandbox_required",
                "[sandbox] require = true but the kernel has no seccomp filters".into(),
            ));
        }
        if !e.staged_writes {
            return Err(SandboxError::denied(
                "sandbox_required",
                "[sandbox] require = true but writes cannot be staged (needs root, a mount \
                 namespace, overlayfs and Linux 5.12+): files outside the workspace that the \
                 process owns could have their metadata changed"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Runs `req.exe` with `req.argv` in `req.cwd`, killing everything at the timeout.
    pub fn run(&self, req: &Request<'_>) -> Result<Output, SandboxError> {
        let Request {
            exe,
            argv,
            cwd,
            cwd_rel,
            timeout,
            cancel,
            staging,
        } = *req;
        self.check_required()?;
        let start = Instant::now();
        let plan_err =
            |what: &str| SandboxError::denied("nul_byte", format!("{what} contains a NUL byte"));
        let exe_c = CString::new(exe.as_os_str().as_bytes())
            .map_err(|_| plan_err("the executable path"))?;
        let argv_c = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| plan_err("an argument"))?;
        let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.env.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());

        let ws_c = CString::new(self.workspace.as_os_str().as_bytes())
            .map_err(|_| plan_err("the workspace path"))?;
        let cwd_c = CString::new(if cwd_rel.is_empty() { "." } else { cwd_rel })
            .map_err(|_| plan_err("the working directory"))?;
        let staging = staging.filter(|_| self.mountns);
        if let Some(s) = staging {
            if !Arc::ptr_eq(s.owner(), &self.token) {
                // Its overlay, ruleset and prepared process were made for another policy.
                return Err(SandboxError::denied(
                    "sandbox_setup",
                    "the call's staging was prepared for another sandbox policy; nothing \
                     was executed"
                        .into(),
                ));
            }
            if let Some(warm) = s.take_warm() {
                let done = warm.run(
                    self,
                    &exe_c,
                    &argv_p,
                    &envp,
                    &cwd_c,
                    start + timeout,
                    cancel,
                );
                let duration = start.elapsed();
                drop((exe_c, argv_c, argv_p, envp));
                let (io, records) = done?;
                return self.output(exe, io, records, duration);
            }
        }
        let scratch = staging.map(Staged::scratch);
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let devnull = open_devnull()?;
        // Child-side fds at >= 10 so the dup2s onto 0..=5 in the child never collide.
        let high = |fd: BorrowedFd<'_>| dup_high(fd);
        let c_in = high(devnull.as_fd())?;
        let c_out = high(out_w.as_fd())?;
        let c_err = high(err_w.as_fd())?;
        let c_st = high(st_w.as_fd())?;
        // With staging, the workspace rule sits on the overlay's root ([`Staged`]).
        let rules = match staging {
            Some(s) => s.rules(),
            None => self.ruleset.as_ref(),
        };
        let c_rules = match rules {
            Some(r) => Some(high(r.fd())?),
            None => None,
        };
        let c_cwd = high(cwd)?;
        drop((out_w, err_w, st_w, devnull));

        let limits = self.limits;
        let rlimits = self.rlimits();
        let pid_max = decimal(300 + limits.processes);
        let last_pid = decimal(299);
        let fprog = self.seccomp.as_ref().map(|f| libc::sock_fprog {
            len: f.instructions().len() as libc::c_ushort,
            filter: f.instructions().as_ptr().cast_mut(),
        });
        let stacks = Stacks::new()?;
        let plan = Plan {
            b_stack: stacks.b_top(),
            exe: exe_c.as_ptr(),
            argv: argv_p.as_ptr(),
            envp: envp.as_ptr(),
            fds: [
                c_in.as_raw_fd(),
                c_out.as_raw_fd(),
                c_err.as_raw_fd(),
                c_st.as_raw_fd(),
                c_rules.as_ref().map_or(-1, |f| f.as_raw_fd()),
                c_cwd.as_raw_fd(),
                -1,
            ],
            rlimits,
            pid_max: self.pid_max_per_ns.then_some((&pid_max, &last_pid)),
            seccomp: fprog.as_ref().map(|p| p as *const libc::sock_fprog),
            drop_caps: self.drop_caps,
            bounding_set_empty: super::spawn::bounding_set_empty(),
            in_pidns: self.pidns,
            mount_ns: scratch.is_some(),
            overlay: scratch.map_or(-1, |s| s.overlay_fd().as_raw_fd()),
            ws_path: &ws_c,
            cwd_rel: &cwd_c,
        };

        let flags = match (self.pidns, plan.mount_ns) {
            (true, true) => libc::CLONE_NEWPID | libc::CLONE_NEWNS,
            (true, false) => libc::CLONE_NEWPID,
            _ => 0,
        };
        let pid = {
            let _mask = BlockSignals::new();
            // SAFETY: clone(CLONE_VM) onto a stack of our own, like posix_spawn: no page
            // tables are copied, whatever the size of the host process. The child runs
            // `a_entry`, which makes only raw syscalls (no errno, no allocation) on its own
            // stack and on `plan`, which stays alive until the child has closed its status
            // pipe (read below) — or been killed. Signals are blocked around the clone so
            // no handler of the host process runs in the child; exit signal 0, so only
            // `__WALL` waits (ours) reap it.
            unsafe {
                libc::clone(
                    a_entry,
                    stacks.a_top(),
                    flags | libc::CLONE_VM,
                    &plan as *const Plan<'_> as *mut libc::c_void,
                )
            }
        };
        drop((c_in, c_out, c_err, c_st, c_rules, c_cwd));
        if pid < 0 {
            return Err(SandboxError::io("clone", std::io::Error::last_os_error()));
        }
        let pid = pid as libc::pid_t;
        let mut child = Child {
            pid,
            reaped: false,
            stacks: Some(stacks),
        };
        let io = pump(
            &out_r,
            &err_r,
            pid,
            start + timeout,
            self.max_output_bytes,
            cancel,
        );
        let records = read_records(&st_r);
        if io.killed.is_some() || !self.pidns {
            // Killed (or no namespace): A's reaping means the kernel has killed and
            // reaped everything in its namespace/group. Wait for it.
            child.wait();
        } else {
            // A reaped every process of the call before reporting; what is left is the
            // kernel tearing its namespaces down. Reap it off the caller's path.
            child.detach();
        }
        let duration = start.elapsed();
        drop((exe_c, argv_c, argv_p, envp, fprog));
        self.output(exe, io, records, duration)
    }

    /// The result of a run from what was read from its pipes.
    fn output(
        &self,
        exe: &Path,
        io: Pumped,
        records: Vec<Record>,
        duration: Duration,
    ) -> Result<Output, SandboxError> {
        let mut out = Output {
            exit_code: None,
            signal: None,
            stdout: io.out.buf,
            stderr: io.err.buf,
            stdout_total: io.out.total,
            stderr_total: io.err.total,
            stdout_truncated: io.out.total > io.out.kept,
            stderr_truncated: io.err.total > io.err.kept,
            timed_out: io.killed == Some(Killed::Timeout),
            killed: io.killed,
            duration,
            enforcement: self.enforcement.clone(),
        };
        for rec in records {
            match rec {
                Record::Status(status) => {
                    if libc::WIFEXITED(status) {
                        out.exit_code = Some(libc::WEXITSTATUS(status));
                    } else if libc::WIFSIGNALED(status) {
                        out.signal = Some(libc::WTERMSIG(status));
                    }
                }
                Record::Failed { stage, errno } => {
                    let what = stage_name(stage);
                    let err = std::io::Error::from_raw_os_error(errno);
                    return Err(if stage == child::STAGE_EXEC {
                        SandboxError::io(format!("execve {}", exe.display()), err)
                    } else {
                        // Fail closed: a restriction could not be applied, nothing ran.
                        SandboxError::denied(
                            "sandbox_setup",
                            format!(
                                "could not apply {what} in the child ({err}); nothing was executed"
                            ),
                        )
                    });
                }
            }
        }
        if out.exit_code.is_none() && out.signal.is_none() {
            // A was killed before B's status was reported (timeout / output limit).
            out.signal = Some(libc::SIGKILL);
        }
        Ok(out)
    }
}

/// One process to run under a [`Policy`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Canonical path of an allowlisted binary (what is executed).
    pub exe: &'a Path,
    /// argv, argv[0] first.
    pub argv: &'a [String],
    /// The working directory, resolved beneath the workspace.
    pub cwd: BorrowedFd<'a>,
    /// The same directory relative to the workspace root (`""` for the root). With
    /// staging the child resolves it again beneath the overlay (`cwd` is beneath it).
    pub cwd_rel: &'a str,
    /// Everything is killed after this long.
    pub timeout: Duration,
    /// Set to stop the run early.
    pub cancel: Option<&'a AtomicBool>,
    /// The call's staging overlay and ruleset ([`Policy::prepare`]); used when the
    /// policy reports `staged_writes`. The caller commits it after the run.
    pub staging: Option<&'a Staged>,
}

impl Policy {
    /// The rlimits a process gets (`-1`: left as inherited).
    pub(super) fn rlimits(&self) -> [(libc::c_int, u64, u64); 6] {
        let limits = self.limits;
        [
            (
                libc::RLIMIT_CPU as libc::c_int,
                limits.cpu_seconds,
                limits.cpu_seconds.saturating_add(1),
            ),
            (
                libc::RLIMIT_AS as libc::c_int,
                limits.address_space_bytes,
                limits.address_space_bytes,
            ),
            // RLIMIT_NPROC counts every task of the user, not just this call's: for a
            // non-root caller (a desktop session has hundreds) a low value would make the
            // first fork fail, so it is left as inherited there. Root ignores it; the cap
            // that binds root is the namespace's pid_max.
            (
                if self.is_root {
                    libc::RLIMIT_NPROC as libc::c_int
                } else {
                    -1
                },
                limits.processes,
                limits.processes,
            ),
            (
                libc::RLIMIT_FSIZE as libc::c_int,
                limits.file_size_bytes,
                limits.file_size_bytes,
            ),
            (
                libc::RLIMIT_NOFILE as libc::c_int,
                limits.open_files,
                limits.open_files,
            ),
            (libc::RLIMIT_CORE as libc::c_int, 0, 0),
        ]
    }
}

/// The result of [`Policy::run`].
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, if the binary exited.
    pub exit_code: Option<i32>,
    /// Terminating signal, if it was killed.
    pub signal: Option<i32>,
    /// The first `max_output_bytes` of stdout.
    pub stdout: Vec<u8>,
    /// The first `max_output_bytes` of stderr.
    pub stderr: Vec<u8>,
    /// Bytes written to stdout in all.
    pub stdout_total: u64,
    /// Bytes written to stderr in all.
    pub stderr_total: u64,
    /// stdout was cut.
    pub stdout_truncated: bool,
    /// stderr was cut.
    pub stderr_truncated: bool,
    /// The timeout expired.
    pub timed_out: bool,
    /// Why the processes were killed, if they were.
    pub killed: Option<Killed>,
    /// Wall time from clone to reaping.
    pub duration: Duration,
    /// What was enforced.
    pub enforcement: Enforcement,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path, require: bool) -> Policy {
        Policy::new(&PolicyConfig {
            workspace: dir.to_path_buf(),
            executables: vec![std::fs::canonicalize("/usr/bin/touch").unwrap()],
            read_paths: Vec::new(),
            network: false,
            limits: Limits::default(),
            env: vec![("PATH".into(), "/usr/bin".into())],
            max_output_bytes: 1024,
            require,
        })
        .unwrap()
    }

    fn touch(p: &Policy, dir: &Path) -> Result<Output, SandboxError> {
        let cwd = std::fs::File::open(dir).unwrap();
        let argv = ["touch".to_string(), "ran".to_string()];
        let exe = std::fs::canonicalize("/usr/bin/touch").unwrap();
        p.run(&Request {
            exe: &exe,
            argv: &argv,
            cwd: cwd.as_fd(),
            cwd_rel: "",
            timeout: Duration::from_secs(5),
            cancel: None,
            staging: None,
        })
    }

    #[test]
    fn require_fails_closed_without_full_landlock() {
        let dir = tempfile::tempdir().unwrap();
        for level in [Status::NotEnforced, Status::PartiallyEnforced] {
            let mut p = policy(dir.path(), true);
            p.enforcement.landlock = level;
            match touch(&p, dir.path()) {
                Err(SandboxError::Denied { rule, .. }) => assert_eq!(rule, "sandbox_required"),
                other => panic!("{level:?}: {other:?}"),
            }
            assert!(!dir.path().join("ran").exists(), "nothing may run");
        }
        let mut p = policy(dir.path(), true);
        p.enforcement.seccomp = false;
        assert!(matches!(
            touch(&p, dir.path()),
            Err(SandboxError::Denied {
                rule: "sandbox_required",
                ..
            })
        ));
        let mut p = policy(dir.path(), true);
        p.enforcement.staged_writes = false;
        assert!(matches!(
            touch(&p, dir.path()),
            Err(SandboxError::Denied {
                rule: "sandbox_required",
                ..
            })
        ));
        // Without `require`, the same policy runs (and reports what it lacks).
        let mut p = policy(dir.path(), false);
        p.enforcement.landlock = Status::NotEnforced;
        assert_eq!(touch(&p, dir.path()).unwrap().exit_code, Some(0));
        assert!(dir.path().join("ran").exists());
    }

    #[test]
    fn a_restriction_that_fails_in_the_child_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = policy(dir.path(), false);
        p.ruleset = Some(Ruleset::bogus());
        match touch(&p, dir.path()) {
            Err(SandboxError::Denied { rule, reason }) => {
                assert_eq!(rule, "sandbox_setup");
                assert!(reason.contains("Landlock"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("ran").exists(), "nothing may run");
    }

    #[test]
    fn kernel_version_parses() {
        assert!(kernel_at_least(2, 6));
        assert!(!kernel_at_least(999, 0));
    }
}
