//! Loom's Hands: the event bus, the tool registry and the sandbox.
//!
//! Everything outside `py` is plain Rust with its own `cargo test`s; `py` is the only
//! module that touches PyO3 and is compiled only with the `python` feature.

pub mod bus;
pub mod error;
pub mod json;
pub mod otlp;
pub mod owner;
pub mod sandbox;
pub mod sync;
pub mod tools;

#[cfg(feature = "python")]
mod py;

/// The extension's Rust allocations (envelopes, queues, strings) come from mimalloc, not
/// glibc's heap (see docs/performance.md, "## Event bus"); Python's own objects are not
/// affected.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
