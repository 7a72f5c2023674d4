//! Python binding of the native tools: `NativeTools(config_json)`.
//!
//! Calls run on a process-wide pool of Rust worker threads with no GIL held; the result
//! is handed back to asyncio through the loop's completion port ([`super::port`]: the
//! worker queues it and writes an eventfd the loop watches, without the GIL), or — for a
//! loop that cannot take one — `loop.call_soon_threadsafe`; the event loop never blocks. Each call resolves its future with a tuple `(result, error, spans_json)`:
//! the tool's JSON result (or `None`), a `loom.errors.ToolError` instance (or `None`) and
//! the sandbox's spans as a JSON list — spans come back on failures too, so a denial is
//! visible in the trace.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use serde_json::Value;

use super::aio;
use super::convert::{json_to_py, py_to_json};
use super::errors::{config_error, tool_error};
use super::port::{Port, Ports};
use crate::owner::PerProcess;
use crate::tools::{NativeTools, SandboxConfig, ToolError, ToolOutcome};

type Job = Box<dyn FnOnce() + Send>;

/// Most worker threads the process-wide pool grows to.
const MAX_WORKERS: usize = 64;

/// One process-wide pool of worker threads for every `NativeTools` (no threads per
/// instance), growing on demand so a few long `system:shell` calls never hold up quick
/// file reads.
///
/// Interpreter shutdown: a worker that takes the GIL while CPython finalizes is killed
/// with `pthread_exit`, which cannot unwind through Rust frames and aborts the process.
/// So an `atexit` hook ([`_shutdown_tool_workers`], run before finalization starts)
/// cancels every running call and waits — without the GIL — for in-flight deliveries to
/// finish; after it, workers no longer touch Python.
struct Pool {
    tx: mpsc::Sender<Job>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    threads: AtomicUsize,
    idle: AtomicUsize,
    /// Calls submitted and not yet delivered.
    inflight: AtomicUsize,
    shutting_down: AtomicBool,
    /// Cancel flags of the calls in flight (to stop them at shutdown).
    running: Mutex<Vec<Weak<AtomicBool>>>,
}

/// This process's pool: a forked child starts its own (the parent's workers do not exist
/// there, and an idle one may have held the job queue's lock at the fork).
fn pool() -> &'static Pool {
    static POOL: PerProcess<Pool> = PerProcess::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        Pool {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            threads: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            running: Mutex::new(Vec::new()),
        }
    })
}

impl Pool {
    fn submit(&'static self, job: Job) -> PyResult<()> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the interpreter is shutting down",
            ));
        }
        if self.idle.load(Ordering::SeqCst) == 0
            && self.threads.load(Ordering::SeqCst) < MAX_WORKERS
        {
            self.spawn_worker()?;
        }
        self.tx
            .send(job)
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("tool workers are gone"))
    }

    fn worker(&self, rx: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            self.idle.fetch_add(1, Ordering::SeqCst);
            let job = rx.lock().recv();
            self.idle.fetch_sub(1, Ordering::SeqCst);
            match job {
                Ok(job) => job(),
                Err(_) => break,
            }
        }
    }

    fn spawn_worker(&'static self) -> PyResult<()> {
        let n = self.threads.fetch_add(1, Ordering::SeqCst);
        let rx = self.rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("loom-tool-{n}"))
            .spawn(move || {
                // The processes this worker spawns inherit an empty bounding set.
                crate::sandbox::process::empty_bounding_set();
                self.worker(&rx);
            });
        if let Err(e) = spawned {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            if n == 0 {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "cannot start a tool worker: {e}"
                )));
            }
        }
        Ok(())
    }
}

/// Registered with `atexit`: stop delivering into Python before it finalizes.
#[pyfunction]
fn _shutdown_tool_workers(py: Python<'_>) {
    let p = pool();
    p.shutting_down.store(true, Ordering::SeqCst);
    for flag in p.running.lock().iter().filter_map(Weak::upgrade) {
        flag.store(true, Ordering::SeqCst);
    }
    // Cancelled calls stop within ~50 ms; their deliveries need the GIL, so wait
    // without it (bounded: past this, workers see `shutting_down` and skip Python).
    py.detach(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while p.inflight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// Runs a call, turning a panic into `ToolFailed` so a future is always completed.
fn run_call(
    tools: &NativeTools,
    name: &str,
    args: Value,
    timeout: Option<Duration>,
    cancel: &AtomicBool,
) -> ToolOutcome {
    catch_unwind(AssertUnwindSafe(|| {
        tools.call_cancellable(name, args, timeout, Some(cancel))
    }))
    .unwrap_or_else(|_| ToolOutcome {
        result: Err(ToolError::Failed {
            tool: name.to_string(),
            reason: "internal error (panic) in the tool runtime".into(),
        }),
        spans: Vec::new(),
    })
}

/// `(result | None, error | None, spans_json)`. The result is built as Python objects
/// directly (no JSON text in between: a 64 KiB file would be escaped and parsed again).
/// A result that cannot be converted (nested too deep) is a `ToolFailed`, so the
/// caller's future is always resolved.
fn outcome_tuple<'py>(
    py: Python<'py>,
    name: &str,
    outcome: &ToolOutcome,
    spans: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let error = |e: &ToolError| Some(tool_error(py, e).value(py).clone().into_any());
    let (result, error): (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>) =
        match &outcome.result {
            Ok(v) => match json_to_py(py, v) {
                Ok(obj) => (Some(obj), None),
                Err(e) => (
                    None,
                    error(&ToolError::Failed {
                        tool: name.to_string(),
                        reason: format!("its result cannot be handed to Python: {e}"),
                    }),
                ),
            },
            Err(e) => (None, error(e)),
        };
    (result, error, spans).into_pyobject(py)
}

/// The sandbox's spans as a JSON list (`"[]"` for none).
fn spans_json(outcome: &ToolOutcome) -> String {
    if outcome.spans.is_empty() {
        return "[]".to_string();
    }
    Value::Array(outcome.spans.iter().map(|s| s.to_json()).collect()).to_string()
}

fn parse_args(name: &str, args: &Bound<'_, PyAny>) -> Result<Value, ToolError> {
    let invalid = |msg: String| ToolError::InvalidArguments {
        tool: name.to_string(),
        errors: vec![msg],
    };
    if let Ok(s) = args.cast::<PyString>() {
        let text = s.to_str().map_err(|e| invalid(format!("/: {e}")))?;
        return serde_json::from_str(text).map_err(|e| invalid(format!("/: not valid JSON: {e}")));
    }
    py_to_json(args).map_err(|e| invalid(format!("/: {}", e.value(args.py()))))
}

fn parse_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a positive number of seconds, not {t}"
        ))),
    }
}

/// Where a call's outcome goes.
enum Sink {
    /// The loop's completion port (resolved on the loop thread).
    Port(Arc<Port>, Py<PyAny>),
    /// `loop.call_soon_threadsafe` (the worker takes the GIL).
    Loop(Py<PyAny>, Py<PyAny>),
}

impl Sink {
    fn deliver(self, name: String, outcome: ToolOutcome) {
        match self {
            Sink::Port(port, fut) => {
                // Text built here, on the worker, not on the loop thread.
                let spans = spans_json(&outcome);
                port.push(Box::new(move |py| {
                    resolve(py, &fut, &name, &outcome, &spans);
                }));
            }
            Sink::Loop(loop_, fut) => deliver(&loop_, &fut, &name, &outcome),
        }
    }
}

/// On the loop thread: resolves `fut` with the outcome unless it is already done
/// (cancelled: then the result is not even converted).
fn resolve(py: Python<'_>, fut: &Py<PyAny>, name: &str, outcome: &ToolOutcome, spans: &str) {
    let r = (|| -> PyResult<()> {
        let fut = fut.bind(py);
        if fut.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        let value = outcome_tuple(py, name, outcome, spans)?;
        fut.call_method1("set_result", (value,))?;
        Ok(())
    })();
    if let Err(e) = r {
        aio::log_debug(py, "loom.tools", "tool result could not be delivered", &e);
    }
}

/// Hands the outcome to the loop thread; a closed loop means nobody is waiting.
fn deliver(loop_: &Py<PyAny>, fut: &Py<PyAny>, name: &str, outcome: &ToolOutcome) {
    let spans = spans_json(outcome);
    Python::attach(|py| {
        let r = (|| -> PyResult<()> {
            let set = aio::resolver(py)?;
            let value = outcome_tuple(py, name, outcome, &spans)?;
            loop_
                .bind(py)
                .call_method1("call_soon_threadsafe", (set, fut.bind(py), value))?;
            Ok(())
        })();
        if let Err(e) = r {
            aio::log_debug(py, "loom.tools", "tool result could not be delivered", &e);
        }
    });
}

/// The native tools (fs, shell), confined to one workspace.
#[pyclass(name = "NativeTools", module = "loom._core", frozen)]
pub(crate) struct PyNativeTools {
    inner: Arc<NativeTools>,
    closed: AtomicBool,
    /// One completion port per loop the tools were called from.
    ports: Ports,
}

/// A running call: `cancel()` stops it and kills its processes.
#[pyclass(name = "ToolCall", module = "loom._core", frozen)]
pub(crate) struct PyToolCall {
    cancel: Arc<AtomicBool>,
}

#[pymethods]
impl PyToolCall {
    /// Asks the call to stop; its processes are killed within ~50 ms.
    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// True once `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

#[pymethods]
impl PyNativeTools {
    #[new]
    #[pyo3(signature = (config_json))]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        let cfg = SandboxConfig::from_json(config_json).map_err(|e| config_error(py, &e))?;
        // Start-up opens the workspace, resolves the allowlist and probes the kernel
        // (it forks once): not with the GIL held.
        let tools = py
            .detach(|| NativeTools::new(cfg))
            .map_err(|e| config_error(py, &e))?;
        Ok(Self {
            inner: Arc::new(tools),
            closed: AtomicBool::new(false),
            ports: Ports::new(py)?,
        })
    }

    /// The tools: `[{"name", "description", "parameters"}]`, sorted by name.
    fn specs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for s in self.inner.specs() {
            let v = serde_json::json!({"name": s.name, "description": s.description, "parameters": s.parameters});
            list.append(json_to_py(py, &v)?)?;
        }
        Ok(list)
    }

    /// What the sandbox enforces here (Landlock level, seccomp, pid namespace, the
    /// resolved allowlist, the deny lists).
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.status())
    }

    /// The canonical workspace root.
    #[getter]
    fn workspace(&self) -> String {
        self.inner.workspace().root_path().display().to_string()
    }

    /// Runs a tool on the calling thread with the GIL released; returns
    /// `(result | None, error | None, spans_json)`.
    #[pyo3(signature = (name, args, timeout = None))]
    fn call_sync<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        args: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let timeout = parse_timeout(timeout)?;
        let outcome = match parse_args(name, args) {
            Ok(args) => {
                let tools = self.inner.clone();
                let cancel = AtomicBool::new(false);
                py.detach(|| run_call(&tools, name, args, timeout, &cancel))
            }
            Err(e) => ToolOutcome {
                result: Err(e),
                spans: Vec::new(),
            },
        };
        outcome_tuple(py, name, &outcome, &spans_json(&outcome))
    }

    /// Runs a tool on a worker thread and resolves `future` (of `loop`) with
    /// `(result | None, error | None, spans_json)`. Never blocks the caller.
    #[pyo3(signature = (name, args, timeout, r#loop, future))]
    fn call(
        &self,
        name: String,
        args: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        r#loop: &Bound<'_, PyAny>,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<PyToolCall> {
        let timeout = parse_timeout(timeout)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let parsed = parse_args(&name, args);
        if self.closed.load(Ordering::SeqCst) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "NativeTools is closed",
            ));
        }
        let fut = future.clone().unbind();
        let sink = match self.ports.get(r#loop) {
            Some(port) => Sink::Port(port, fut),
            None => Sink::Loop(r#loop.clone().unbind(), fut),
        };
        let tools = self.inner.clone();
        let flag = cancel.clone();
        let p = pool();
        {
            let mut running = p.running.lock();
            running.retain(|w| w.strong_count() > 0);
            running.push(Arc::downgrade(&cancel));
        }
        p.inflight.fetch_add(1, Ordering::SeqCst);
        let job: Job = Box::new(move || {
            let outcome = match parsed {
                Ok(args) => run_call(&tools, &name, args, timeout, &flag),
                Err(e) => ToolOutcome {
                    result: Err(e),
                    spans: Vec::new(),
                },
            };
            if !p.shutting_down.load(Ordering::SeqCst) {
                sink.deliver(name, outcome);
            } else {
                // Past the atexit hook: Python must not be touched. The futures are
                // dropped without the GIL, which PyO3 defers safely.
            }
            p.inflight.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = p.submit(job) {
            p.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(PyToolCall { cancel })
    }

    /// Stops accepting calls; running calls finish (or time out) on their own.
    /// Also stops the shell's stager: the staged calls made ahead (overlays, prepared
    /// processes) are dropped — their processes killed and reaped — before it returns.
    fn close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::SeqCst);
        let inner = self.inner.clone();
        py.detach(move || inner.close());
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNativeTools>()?;
    m.add_class::<PyToolCall>()?;
    let shutdown = wrap_pyfunction!(_shutdown_tool_workers, m)?;
    PyModule::import(m.py(), "atexit")?.call_method1("register", (shutdown,))?;
    Ok(())
}
