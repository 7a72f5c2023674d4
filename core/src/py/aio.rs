//! asyncio from Rust threads: resolving a future on its loop, and logging what could not
//! be delivered (a closed loop means nobody is waiting any more).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Resolves an asyncio future with `value` unless it is already done (cancelled).
pub(super) fn resolve(fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = fut.py();
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

/// Resolves an asyncio future with `value` unless it is already done (cancelled).
#[pyfunction]
fn _resolve_future(fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    resolve(fut, value)
}

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `_resolve_future(fut, value)`, made once per interpreter; schedule it with
/// `loop.call_soon_threadsafe(resolver, fut, value)` from another thread.
pub(super) fn resolver(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    Ok(RESOLVE
        .get_or_try_init(py, || {
            wrap_pyfunction!(_resolve_future, py).map(|f| f.into_any().unbind())
        })?
        .bind(py))
}

/// Logs `err` at debug level on the Python logger `logger` (errors while logging are
/// dropped: this runs where nothing could report them).
pub(super) fn log_debug(py: Python<'_>, logger: &str, what: &str, err: &PyErr) {
    let _ = (|| -> PyResult<()> {
        let logger = PyModule::import(py, "logging")?.call_method1("getLogger", (logger,))?;
        logger.call_method1("debug", ("%s: %s", what, err.value(py)))?;
        Ok(())
    })();
}
