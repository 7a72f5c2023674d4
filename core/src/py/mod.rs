//! The only PyO3 code in Loom: the `loom._core` extension module.
//!
//! It maps types (envelopes, stats, wakers onto asyncio futures) and errors
//! ([`errors`]); the logic lives in the pure-Rust modules.

mod aio;
mod bus;
mod convert;
mod done;
mod errors;
mod intern;
mod otlp;
mod port;
mod tools;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    #[cfg(feature = "mimalloc")]
    crate::configure_allocator();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_JSON_DEPTH", crate::json::MAX_DEPTH)?;
    bus::register(m)?;
    tools::register(m)?;
    otlp::register(m)?;
    Ok(())
}
