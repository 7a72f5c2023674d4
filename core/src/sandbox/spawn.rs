//! The caller's side of running a sandboxed process: the child's stacks, reaping,
//! killing, draining its output, and the fd/signal plumbing around `clone`.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::child::errno;
use super::SandboxError;

thread_local! {
    /// This thread's capability bounding set is empty ([`empty_bounding_set`]).
    static BOUNDING_SET_EMPTY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Empties the calling thread's capability bounding set, once, so the processes it
/// spawns inherit an empty one and need not drop ~40 capabilities each. For threads that
/// only run tool calls (the binding's workers): the bounding set limits what an
/// `execve` by this thread could gain, and the thread never execs; its own capabilities
/// are untouched (a process's init keeps them, see [`super::child`]). Returns whether the
/// set is empty (`false` without `CAP_SETPCAP`; then each process drops it itself).
pub fn empty_bounding_set() -> bool {
    if BOUNDING_SET_EMPTY.with(std::cell::Cell::get) {
        return true;
    }
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes integers only and affects this thread only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            if errno() == libc::EINVAL {
                break; // past CAP_LAST_CAP: all dropped
            }
            return false;
        }
    }
    BOUNDING_SET_EMPTY.with(|c| c.set(true));
    true
}

/// Whether [`empty_bounding_set`] emptied this thread's bounding set.
pub(super) fn bounding_set_empty() -> bool {
    BOUNDING_SET_EMPTY.with(std::cell::Cell::get)
}

/// How a run was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// The timeout expired; the whole namespace/group was SIGKILLed.
    Timeout,
    /// Output went far past the cap; killed rather than drained forever.
    OutputLimit,
    /// The caller cancelled the call.
    Cancelled,
}

impl Killed {
    /// The name reported in results and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Killed::Timeout => "timeout",
            Killed::OutputLimit => "output_limit",
            Killed::Cancelled => "cancelled",
        }
    }
}

/// The child A until it is reaped; owns the stacks it runs on (they must outlive it).
pub(super) struct Child {
    pub(super) pid: libc::pid_t,
    pub(super) reaped: bool,
    pub(super) stacks: Option<Stacks>,
}

impl Child {
    pub(super) fn wait(&mut self) {
        while !self.reaped {
            let mut st = 0;
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut st, libc::__WALL) };
            if r == self.pid || (r < 0 && errno() != libc::EINTR) {
                self.reaped = true;
            }
        }
        self.stacks.take();
    }

    /// Reaps now if A has exited, else hands it (and its stacks) to the reaper thread.
    pub(super) fn detach(mut self) {
        let mut st = 0;
        // SAFETY: non-blocking wait for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut st, libc::__WALL | libc::WNOHANG) };
        if r == self.pid || r < 0 {
            self.reaped = true;
            return;
        }
        let pid = self.pid;
        let stacks = self.stacks.take();
        self.reaped = true; // ownership moves to the reaper
        let job = Child {
            pid,
            reaped: false,
            stacks,
        };
        if let Err(std::sync::mpsc::SendError(mut job)) = reaper().lock().send(job) {
            job.wait(); // no reaper thread: wait here
        }
    }
}

/// One thread that reaps detached children (blocking `waitpid`, in order).
fn reaper() -> &'static crate::sync::Mutex<std::sync::mpsc::Sender<Child>> {
    // One per process: a forked child's processes are not the parent's reaper's to wait for.
    static REAPER: crate::owner::PerProcess<crate::sync::Mutex<std::sync::mpsc::Sender<Child>>> =
        crate::owner::PerProcess::new();
    REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Child>();
        // If the thread cannot start, the receiver is dropped and `send` fails: callers
        // then wait inline.
        let _ = std::thread::Builder::new()
            .name("loom-reaper".into())
            .spawn(move || {
                while let Ok(mut child) = rx.recv() {
                    child.wait();
                }
            });
        crate::sync::Mutex::new(tx)
    })
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            kill_all(self.pid);
            self.wait();
        }
    }
}

/// The stacks A and B run on: one mapping, each stack with a guard page below it.
pub(super) struct Stacks {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: an exclusively owned anonymous mapping; moving it between threads is fine.
unsafe impl Send for Stacks {}

const PAGE: usize = 4096;
const B_STACK: usize = 64 * 1024;
const A_STACK: usize = 256 * 1024;

impl Stacks {
    pub(super) fn new() -> Result<Self, SandboxError> {
        let len = PAGE + B_STACK + PAGE + A_STACK;
        // SAFETY: a fresh private anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(SandboxError::io(
                "mmap (child stacks)",
                std::io::Error::last_os_error(),
            ));
        }
        let stacks = Self { base, len };
        // Guard pages at the bottom of each stack.
        // SAFETY: both ranges lie inside the mapping.
        unsafe {
            libc::mprotect(base, PAGE, libc::PROT_NONE);
            libc::mprotect(
                base.cast::<u8>().add(PAGE + B_STACK).cast(),
                PAGE,
                libc::PROT_NONE,
            );
        }
        Ok(stacks)
    }

    pub(super) fn b_top(&self) -> *mut libc::c_void {
        // SAFETY: inside the mapping (the end of B's stack, 16-byte aligned).
        unsafe { self.base.cast::<u8>().add(PAGE + B_STACK).cast() }
    }

    pub(super) fn a_top(&self) -> *mut libc::c_void {
        // SAFETY: the end of the mapping (16-byte aligned).
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer used by any process (the child was reaped).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// SIGKILLs A (which tears the pid namespace down) and its process group.
pub(super) fn kill_all(pid: libc::pid_t) {
    // SAFETY: signalling our own unreaped child (its pid cannot be reused before we
    // reap it) and the group it leads.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

pub(super) struct Stream {
    pub(super) buf: Vec<u8>,
    pub(super) kept: u64,
    pub(super) total: u64,
    open: bool,
}

pub(super) struct Pumped {
    pub(super) out: Stream,
    pub(super) err: Stream,
    pub(super) killed: Option<Killed>,
}

/// Reads both pipes until EOF (every process holding them is gone), killing at the
/// deadline or when output runs far past the cap.
pub(super) fn pump(
    out: &OwnedFd,
    err: &OwnedFd,
    pid: libc::pid_t,
    deadline: Instant,
    cap: usize,
    cancel: Option<&AtomicBool>,
) -> Pumped {
    let mut s = [
        Stream {
            buf: Vec::new(),
            kept: 0,
            total: 0,
            open: true,
        },
        Stream {
            buf: Vec::new(),
            kept: 0,
            total: 0,
            open: true,
        },
    ];
    let fds = [out.as_raw_fd(), err.as_raw_fd()];
    let hard_cap = (cap as u64).saturating_mul(8).max(1 << 20);
    let mut killed: Option<Killed> = None;
    let mut grace: Option<Instant> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    while s[0].open || s[1].open {
        let now = Instant::now();
        if killed.is_none() && now >= deadline {
            kill_all(pid);
            killed = Some(Killed::Timeout);
        }
        if killed.is_none() && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            kill_all(pid);
            killed = Some(Killed::Cancelled);
        }
        if killed.is_some() && grace.is_none() {
            grace = Some(now + Duration::from_secs(2));
        }
        if grace.is_some_and(|g| now >= g) {
            break; // killed, but something still holds a pipe: give up on it
        }
        let until = grace.unwrap_or(deadline);
        let tick = if cancel.is_some() { 50 } else { 1000 };
        let wait_ms = until.saturating_duration_since(now).as_millis().min(tick) as libc::c_int;
        let mut pfds = [
            libc::pollfd {
                fd: if s[0].open { fds[0] } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if s[1].open { fds[1] } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on a stack array of two pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, wait_ms.max(1)) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break;
        }
        for i in 0..2 {
            if pfds[i].revents == 0 {
                continue;
            }
            // SAFETY: reading into our buffer from our pipe fd.
            let r = unsafe { libc::read(fds[i], chunk.as_mut_ptr().cast(), chunk.len()) };
            if r > 0 {
                let r = r as usize;
                let st = &mut s[i];
                st.total += r as u64;
                let room = cap.saturating_sub(st.buf.len());
                st.buf.extend_from_slice(&chunk[..r.min(room)]);
                st.kept = st.buf.len() as u64;
                if st.total > hard_cap && killed.is_none() {
                    kill_all(pid);
                    killed = Some(Killed::OutputLimit);
                }
            } else if r == 0 || errno() != libc::EAGAIN && errno() != libc::EINTR {
                s[i].open = false;
            }
        }
    }
    let [out, err] = s;
    Pumped { out, err, killed }
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(SandboxError::io("pipe2", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fds owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The child's ends must block (a child writing to a full pipe waits, it does not fail).
    // SAFETY: fcntl on our fd.
    unsafe {
        let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok((r, w))
}

pub(super) fn open_devnull() -> Result<OwnedFd, SandboxError> {
    // SAFETY: open with a static C string.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SandboxError::io(
            "/dev/null",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn dup_high(fd: BorrowedFd<'_>) -> Result<OwnedFd, SandboxError> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if r < 0 {
        return Err(SandboxError::io(
            "fcntl(F_DUPFD_CLOEXEC)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Blocks every signal in this thread for its lifetime (around `clone`).
pub(super) struct BlockSignals {
    old: libc::sigset_t,
}

impl BlockSignals {
    pub(super) fn new() -> Self {
        // SAFETY: sigset manipulation on stack values; pthread_sigmask on this thread.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            Self { old }
        }
    }
}

impl Drop for BlockSignals {
    fn drop(&mut self) {
        // SAFETY: restoring this thread's previous mask.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::path::PathBuf;

    use super::*;
    use crate::sandbox::process::{Limits, Policy, PolicyConfig, Request};

    /// A field of `/proc/thread-self/status`-like text.
    fn field(status: &str, key: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{key} missing from {status}"))
    }

    #[test]
    fn a_thread_with_an_empty_bounding_set_spawns_processes_with_no_capabilities() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: not root (the bounding set cannot be emptied)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cat = std::fs::canonicalize("/usr/bin/cat").unwrap();
        let p = Policy::new(&PolicyConfig {
            workspace: dir.path().to_path_buf(),
            executables: vec![cat.clone()],
            read_paths: vec![PathBuf::from("/proc")],
            network: false,
            limits: Limits::default(),
            env: vec![("PATH".into(), "/usr/bin".into())],
            max_output_bytes: 64 * 1024,
            require: false,
        })
        .unwrap();
        let status_of_child = |p: &Policy| {
            let cwd = std::fs::File::open(dir.path()).unwrap();
            let argv = ["cat".to_string(), "/proc/self/status".to_string()];
            let out = p
                .run(&Request {
                    exe: &cat,
                    argv: &argv,
                    cwd: cwd.as_fd(),
                    cwd_rel: "",
                    timeout: Duration::from_secs(5),
                    cancel: None,
                    staging: None,
                })
                .unwrap();
            assert_eq!(out.exit_code, Some(0), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(empty_bounding_set());
                assert!(empty_bounding_set(), "a second call is a no-op");
                let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
                assert_eq!(field(&own, "CapBnd:"), "0000000000000000");
                assert_ne!(
                    field(&own, "CapEff:"),
                    "0000000000000000",
                    "the thread keeps its own capabilities"
                );
                let child = status_of_child(&p);
                for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                    assert_eq!(field(&child, cap), "0000000000000000", "{cap}");
                }
            });
        });
        // A thread that did not empty its own: the child drops the bounding set itself.
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_ne!(field(&own, "CapBnd:"), "0000000000000000");
        assert_eq!(field(&status_of_child(&p), "CapBnd:"), "0000000000000000");
    }
}
