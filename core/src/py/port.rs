//! A completion port: how Rust worker threads hand results to an asyncio loop without
//! ever taking the GIL.
//!
//! One per (owner, loop): an `eventfd` registered with `loop.add_reader`, and a queue. A
//! worker pushes a completion (a closure that resolves a future) and, if the queue was
//! empty, writes the eventfd; the loop thread wakes up in its selector, reads the
//! eventfd and runs every queued completion. Compared with `loop.call_soon_threadsafe`
//! per result, a worker neither waits for the GIL (which a busy loop thread holds for up
//! to the switch interval) nor builds Python objects, and results that arrive together
//! are delivered in one wake-up.
//!
//! Lifetime: the reader registered with the loop holds the port (and so the eventfd)
//! until the loop removes it or closes, so the fd number can never be reused while the
//! selector still watches it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use crate::sync::Mutex;
use pyo3::prelude::*;

use super::aio;

/// Run on the loop thread, with the GIL.
pub(super) type Completion = Box<dyn FnOnce(Python<'_>) + Send>;

/// The queue and the eventfd of one loop.
pub(super) struct Port {
    efd: OwnedFd,
    queue: Mutex<Vec<Completion>>,
}

impl Port {
    /// Queues `c` for the loop thread (any thread, no GIL).
    pub(super) fn push(&self, c: Completion) {
        let first = {
            let mut q = self.queue.lock();
            q.push(c);
            q.len() == 1
        };
        if first {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a stack value to our eventfd. It cannot fail
            // short of the counter overflowing (2^64 - 1 wake-ups unread).
            unsafe {
                libc::write(
                    self.efd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }

    /// On the loop thread: clear the eventfd, then run what is queued (in order).
    fn drain(&self, py: Python<'_>) {
        let mut count: u64 = 0;
        // SAFETY: an 8-byte read into a stack value from our non-blocking eventfd
        // (EAGAIN when nothing is pending; then the queue is simply empty or will be
        // signalled again). Cleared *before* the queue is taken, so a push after the take
        // always leaves the fd readable.
        unsafe {
            libc::read(
                self.efd.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        let batch = std::mem::take(&mut *self.queue.lock());
        for c in batch {
            c(py);
        }
    }
}

/// What the loop calls when the eventfd is readable.
#[pyclass(name = "_CompletionPort", module = "loom._core", frozen)]
struct Reader {
    port: Arc<Port>,
}

#[pymethods]
impl Reader {
    fn __call__(&self, py: Python<'_>) {
        self.port.drain(py);
    }
}

/// The ports of one owner (a `NativeTools`), one per loop it has been called from: a
/// `weakref.WeakKeyDictionary` from the loop to its reader (which holds the port), so a
/// loop that is gone is forgotten and no Rust lock is held across Python calls (which can
/// switch threads).
pub(super) struct Ports {
    map: Py<PyAny>,
}

impl Ports {
    pub(super) fn new(py: Python<'_>) -> PyResult<Self> {
        let map = PyModule::import(py, "weakref")?
            .getattr("WeakKeyDictionary")?
            .call0()?
            .unbind();
        Ok(Self { map })
    }

    /// The port of `loop_`, made and registered on first use. `None` when this loop
    /// cannot take one (not the running loop of this thread — `add_reader` is not
    /// thread-safe —, or a loop without `add_reader`): then the caller delivers with
    /// `call_soon_threadsafe`.
    pub(super) fn get(&self, loop_: &Bound<'_, PyAny>) -> Option<Arc<Port>> {
        let py = loop_.py();
        let map = self.map.bind(py);
        if let Ok(found) = map.call_method1("get", (loop_,)) {
            if let Ok(reader) = found.cast::<Reader>() {
                return Some(reader.get().port.clone());
            }
        }
        let made = make(loop_).and_then(|m| match m {
            Some((reader, port)) => map.set_item(loop_, reader).map(|()| Some(port)),
            None => Ok(None),
        });
        match made {
            Ok(port) => port,
            Err(e) => {
                aio::log_debug(py, "loom.tools", "no completion port for this loop", &e);
                None
            }
        }
    }
}

fn make<'py>(loop_: &Bound<'py, PyAny>) -> PyResult<Option<(Bound<'py, Reader>, Arc<Port>)>> {
    let py = loop_.py();
    let asyncio = PyModule::import(py, "asyncio")?;
    if !asyncio.call_method0("_get_running_loop")?.is(loop_) {
        return Ok(None);
    }
    // SAFETY: eventfd returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd owned by nobody else.
    let efd = unsafe { OwnedFd::from_raw_fd(fd) };
    let port = Arc::new(Port {
        efd,
        queue: Mutex::new(Vec::new()),
    });
    let reader = Bound::new(py, Reader { port: port.clone() })?;
    if let Err(e) = loop_.call_method1("add_reader", (fd, &reader)) {
        if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some((reader, port)))
}
