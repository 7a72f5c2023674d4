//! `loom._core.Done`: the finished awaitable `ctx.emit` returns on its fast path.

use pyo3::prelude::*;

/// An awaitable that is already finished: `await` gives `None` at once. What
/// `ctx.emit` returns when the event was published and nobody has to wait. Awaiting
/// it runs two C slots (`__await__` gives itself, `__next__` is exhausted) where an
/// `async def` builds, runs and frees a coroutine. `loom.bus` registers the class as
/// a `collections.abc.Coroutine` (`send` and `throw` finish it), so `create_task`
/// and `asyncio.run` take it too. Stateless: one instance can be awaited any number
/// of times, by anyone.
#[pyclass(name = "Done", module = "loom._core", frozen)]
pub(crate) struct PyDone;

#[pymethods]
impl PyDone {
    #[new]
    fn new() -> Self {
        PyDone
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<()> {
        None
    }

    /// Finishes at once (`StopIteration`), whatever is sent.
    #[pyo3(signature = (_value = None))]
    fn send(&self, _value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        Err(pyo3::exceptions::PyStopIteration::new_err(()))
    }

    /// Raises what is thrown in (there is nothing to catch it).
    #[pyo3(signature = (typ, val = None, _tb = None))]
    fn throw(
        &self,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let exc = match val {
            Some(v) if !v.is_none() => v.clone(),
            _ => typ.clone(),
        };
        Err(PyErr::from_value(exc))
    }

    /// Nothing to close: it is finished.
    fn close(&self) {}

    fn __repr__(&self) -> &'static str {
        "<loom._core.Done>"
    }
}
