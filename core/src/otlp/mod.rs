//! Span export without Python: OTLP/JSON encoding and the trace file's writer thread.
//!
//! What: finished spans ([`SpanRecord`]) go into a bounded queue ([`Exporter::push`]);
//! a writer thread takes them in batches and appends each batch to a `.jsonl` file as
//! one OTLP/JSON `ExportTraceServiceRequest` line ([`encode_request`]), written with
//! one `write` call per line so a killed process leaves complete lines (and at most a
//! torn last one, which `loom trace` skips).
//!
//! Why: the same work in Python (`loom/telemetry/otlp_json.py` behind the SDK's
//! `BatchSpanProcessor`) costs ~11 µs of CPU per span on the export thread while it
//! holds the GIL; on two cores that time is taken from the event loop. Here the
//! binding converts a span's fields into a [`SpanRecord`] (owned Rust values) with the
//! GIL held, and everything after that runs without it.
//!
//! The encoder's output is the Python encoder's, byte for byte (tests in
//! `tests/telemetry/` compare them on the same spans): same field order, ids in hex,
//! 64-bit integers as strings, floats as Python's `repr`, strings escaped as
//! `json.encoder.encode_basestring` does and lone surrogates written as `\udXXX` (what
//! the Python file writer's `backslashreplace` produces).

mod encode;
mod queue;
mod span;

pub use encode::{encode_request, write_double, write_json_str};
pub use queue::{Config, ErrorHook, Exporter, Pushed, Stats};
pub use span::{AnyValue, Event, KeyValue, Link, Resource, Scope, SpanRecord, Status, Text};
