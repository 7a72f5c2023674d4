//! Maps core errors to the Python classes of `loom.errors`, in one place.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::error::BusError;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Instantiates `loom.errors.<class>(*args)` as a `PyErr`.
pub(crate) fn raise<'py, A>(py: Python<'py>, class: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let build = || -> PyResult<PyErr> {
        let module = ERRORS
            .get_or_try_init(py, || PyModule::import(py, "loom.errors").map(Bound::unbind))?
            .bind(py);
        let exc = module.getattr(class)?.call1(args)?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

pub(crate) fn bus_error(py: Python<'_>, err: BusError) -> PyErr {
    let class = match &err {
        BusError::InvalidTopic { .. } => "InvalidTopicError",
        BusError::Full { .. } => "BusFullError",
        BusError::Closed(_) => "BusClosedError",
        BusError::HopLimit { .. } => "BusError",
    };
    raise(py, class, (err.to_string(),))
}
