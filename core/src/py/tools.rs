//! Python binding of the native tools: `NativeTools(config_json)`.
//!
//! Calls run on a small pool of Rust worker threads with no GIL held; the result is
//! handed back to asyncio through `loop.call_soon_threadsafe`, so the event loop never
//! blocks. Each call resolves its future with a tuple `(result_json, error, spans_json)`:
//! the tool's JSON result (or `None`), a `loom.errors.ToolError` instance (or `None`) and
//! the sandbox's spans as a JSON list — spans come back on failures too, so a denial is
//! visible in the trace.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyTuple};
use serde_json::Value;

use super::convert::{json_to_py, py_to_json};
use super::errors::{config_error, tool_error};
use crate::tools::{NativeTools, SandboxConfig, ToolError, ToolOutcome};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of named worker threads fed through a channel; dropping it lets the
/// threads finish what is queued and exit (they are not joined: a running `system:shell`
/// may take until its timeout).
struct Pool {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Pool {
    fn new(workers: usize) -> PyResult<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("loom-tool-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                })
                .map_err(|e| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "cannot start tool worker: {e}"
                    ))
                })?;
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
        })
    }

    fn submit(&self, job: Job) -> bool {
        self.tx
            .lock()
            .as_ref()
            .is_some_and(|tx| tx.send(job).is_ok())
    }

    fn close(&self) {
        self.tx.lock().take();
    }
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

/// `(result_json | None, error | None, spans_json)`.
fn outcome_tuple<'py>(py: Python<'py>, outcome: &ToolOutcome) -> PyResult<Bound<'py, PyTuple>> {
    let spans = Value::Array(outcome.spans.iter().map(|s| s.to_json()).collect()).to_string();
    let (result, error): (Option<String>, Option<Bound<'py, PyAny>>) = match &outcome.result {
        Ok(v) => (Some(v.to_string()), None),
        Err(e) => (None, Some(tool_error(py, e).value(py).clone().into_any())),
    };
    (result, error, spans).into_pyobject(py)
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
    py_to_json(args).map_err(|e| invalid(format!("/: {e}")))
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

/// Resolves an asyncio future with `value` unless it is already done (cancelled).
#[pyfunction]
fn _tool_set_result(fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if !fut.call_method0("done")?.is_truthy()? {
        fut.call_method1("set_result", (value,))?;
    }
    Ok(())
}

static SET_RESULT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Hands the outcome to the loop thread; a closed loop means nobody is waiting.
fn deliver(loop_: &Py<PyAny>, fut: &Py<PyAny>, outcome: &ToolOutcome) {
    Python::attach(|py| {
        let r = (|| -> PyResult<()> {
            let set = SET_RESULT
                .get_or_try_init(py, || {
                    wrap_pyfunction!(_tool_set_result, py).map(|f| f.into_any().unbind())
                })?
                .bind(py);
            let value = outcome_tuple(py, outcome)?;
            loop_
                .bind(py)
                .call_method1("call_soon_threadsafe", (set, fut.bind(py), value))?;
            Ok(())
        })();
        if let Err(e) = r {
            let _ = (|| -> PyResult<()> {
                let logger =
                    PyModule::import(py, "logging")?.call_method1("getLogger", ("loom.tools",))?;
                logger.call_method1(
                    "debug",
                    ("tool result could not be delivered: %s", e.value(py)),
                )?;
                Ok(())
            })();
        }
    });
}

/// The native tools (fs, shell), confined to one workspace.
#[pyclass(name = "NativeTools", module = "loom._core", frozen)]
pub(crate) struct PyNativeTools {
    inner: Arc<NativeTools>,
    pool: Pool,
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
    #[pyo3(signature = (config_json, *, workers = 16))]
    fn new(py: Python<'_>, config_json: &str, workers: usize) -> PyResult<Self> {
        if workers == 0 || workers > 1024 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "workers must be between 1 and 1024",
            ));
        }
        let cfg = SandboxConfig::from_json(config_json).map_err(|e| config_error(py, &e))?;
        // Start-up opens the workspace, resolves the allowlist and probes the kernel
        // (it forks once): not with the GIL held.
        let tools = py
            .detach(|| NativeTools::new(cfg))
            .map_err(|e| config_error(py, &e))?;
        Ok(Self {
            inner: Arc::new(tools),
            pool: Pool::new(workers)?,
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
    /// `(result_json | None, error | None, spans_json)`.
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
        outcome_tuple(py, &outcome)
    }

    /// Runs a tool on a worker thread and resolves `future` (of `loop`) with
    /// `(result_json | None, error | None, spans_json)`. Never blocks the caller.
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
        let loop_ = r#loop.clone().unbind();
        let fut = future.clone().unbind();
        let parsed = parse_args(&name, args);
        let tools = self.inner.clone();
        let flag = cancel.clone();
        let job: Job = Box::new(move || {
            let outcome = match parsed {
                Ok(args) => run_call(&tools, &name, args, timeout, &flag),
                Err(e) => ToolOutcome {
                    result: Err(e),
                    spans: Vec::new(),
                },
            };
            deliver(&loop_, &fut, &outcome);
        });
        if !self.pool.submit(job) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "NativeTools is closed",
            ));
        }
        Ok(PyToolCall { cancel })
    }

    /// Stops accepting calls; running calls finish (or time out) on their own.
    fn close(&self) {
        self.pool.close();
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNativeTools>()?;
    m.add_class::<PyToolCall>()?;
    Ok(())
}
