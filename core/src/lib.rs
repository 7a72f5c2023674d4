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
/// glibc's heap, which gives the top of the heap back after a burst and page-faults it in
/// again (docs/performance.md, "## Event bus"). Python's own objects are not affected.
/// v2 (the `v2` feature): mimalloc installs no fork handlers, and v2's allocation paths
/// take no lock but for segments outside its arenas abandoned by an exiting thread (v3
/// locks on every thread's start and exit), so a child forked while another thread
/// allocates can still allocate (tests/test_alloc_fork.py).
/// The sandbox's clone children never allocate (`sandbox/child.rs`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
