//! Errors of the pure-Rust core. The PyO3 layer maps each variant to a Python class
//! of the `loom.errors` hierarchy in one place (`py/errors.rs`).

use std::time::Duration;

/// An error raised by the event bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// A topic or pattern is malformed; the message says which token and why.
    #[error("invalid {what} {topic:?}: {reason}")]
    InvalidTopic {
        what: &'static str,
        topic: String,
        reason: String,
    },
    /// A `reliable` subscriber stayed full for the whole publish timeout.
    #[error("subscriber {subscription} ({pattern:?}) stayed full for {timeout:?}; event {event_id} not delivered to it")]
    Full {
        subscription: u64,
        pattern: String,
        timeout: Duration,
        event_id: String,
    },
    /// The bus or subscription is closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// The event's hop limit was exhausted.
    #[error("event {event_id} on {topic:?} exceeded its hop limit")]
    HopLimit { event_id: String, topic: String },
}
