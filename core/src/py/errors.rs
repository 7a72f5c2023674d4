//! Maps core errors to the Python classes of `loom.errors`, in one place.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::error::BusError;
use crate::tools::{ConfigError, ToolError};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Instantiates `loom.errors.<class>(*args)` as a `PyErr`.
pub(crate) fn raise<'py, A>(py: Python<'py>, class: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let build = || -> PyResult<PyErr> {
        let module = ERRORS
            .get_or_try_init(py, || {
                PyModule::import(py, "loom.errors").map(Bound::unbind)
            })?
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

/// `ToolError` -> `loom.errors.Tool*`, each carrying the tool name and the reason (plus
/// `errors` for invalid arguments and `rule` for denials).
pub(crate) fn tool_error(py: Python<'_>, err: &ToolError) -> PyErr {
    let tool = err.tool().to_string();
    let reason = err.reason();
    match err {
        ToolError::NotFound { .. } => raise(py, "ToolNotFound", (tool, reason)),
        ToolError::InvalidArguments { errors, .. } => {
            raise(py, "ToolArgumentsInvalid", (tool, reason, errors.clone()))
        }
        ToolError::Denied { rule, .. } => raise(py, "ToolDenied", (tool, reason, rule.clone())),
        ToolError::Timeout { .. } => raise(py, "ToolTimeout", (tool, reason)),
        ToolError::Failed { .. } => raise(py, "ToolFailed", (tool, reason)),
    }
}

/// A native-tools `ConfigError` -> `loom.errors.ConfigError(message, key=...)`.
pub(crate) fn config_error(py: Python<'_>, err: &ConfigError) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = ERRORS
            .get_or_try_init(py, || {
                PyModule::import(py, "loom.errors").map(Bound::unbind)
            })?
            .bind(py);
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("key", &err.key)?;
        let exc = module
            .getattr("ConfigError")?
            .call((err.message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}
