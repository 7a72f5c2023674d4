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

/// mimalloc gives freed pages back to the kernel 10 ms after they are freed by default;
/// with that, a bus's first burst after a quiet spell of a second or two ran as slow as
/// 0.8× the plain asyncio bus (docs/performance.md, "mimalloc's purge delay"). 1 s
/// instead, unless `MIMALLOC_PURGE_DELAY` is set. Called once, when the extension is
/// imported.
#[cfg(feature = "mimalloc")]
pub fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option; any value is valid for this one.
        unsafe { libmimalloc_sys::mi_option_set(alloc_options::PURGE_DELAY, 1000) };
    }
}

#[cfg(feature = "mimalloc")]
mod alloc_options {
    use libmimalloc_sys as ffi;

    /// `mi_option_purge_delay` of the bundled v2 header: the sys crate names the options
    /// on either side of it, not this one, so its index is checked against theirs.
    pub const PURGE_DELAY: ffi::mi_option_t = 15;
    const _: () = assert!(
        ffi::mi_option_eager_commit_delay + 1 == PURGE_DELAY
            && PURGE_DELAY + 1 == ffi::mi_option_use_numa_nodes
    );

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_purge_delay_is_set_unless_the_environment_sets_it() {
            super::super::configure_allocator();
            // SAFETY: reads an option.
            let got = unsafe { super::ffi::mi_option_get(super::PURGE_DELAY) };
            match std::env::var("MIMALLOC_PURGE_DELAY") {
                Ok(v) => assert_eq!(got.to_string(), v),
                Err(_) => assert_eq!(got, 1000),
            }
        }
    }
}
