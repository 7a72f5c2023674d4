//! A finished span as owned Rust values: what the binding builds from Python's fields
//! and the encoder writes.

use std::sync::Arc;

/// A string as Python holds it: UTF-8, or (rarely: model text cut in the middle of a
/// pair) with lone surrogates, encoded as Python's `surrogatepass` error handler does
/// (three bytes `ED A0..BF xx`, never valid UTF-8). The encoder escapes those as
/// `\udXXX`. Shared (`Arc`): the binding reuses the text of strings that recur.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text(Arc<[u8]>);

impl Text {
    /// Text from ordinary UTF-8.
    pub fn new(s: &str) -> Self {
        Text(s.as_bytes().into())
    }

    /// Text from `str.encode("utf-8", "surrogatepass")` bytes.
    pub fn from_surrogatepass(bytes: &[u8]) -> Self {
        Text(bytes.into())
    }

    /// The bytes (UTF-8, plus surrogates as described on the type).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::new(s)
    }
}

/// An attribute value (OTLP `AnyValue`).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyValue {
    Str(Text),
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`, as its decimal digits (Python's ints are unbounded;
    /// the Python encoder writes them as they are).
    BigInt(Box<str>),
    Double(f64),
    Bytes(Box<[u8]>),
    Array(Vec<AnyValue>),
    KvList(Vec<KeyValue>),
    /// `None`: an `AnyValue` with no value set.
    Empty,
}

/// One attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: Text,
    pub value: AnyValue,
}

impl KeyValue {
    pub fn new(key: impl Into<Text>, value: AnyValue) -> Self {
        KeyValue {
            key: key.into(),
            value,
        }
    }
}

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: Text,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes: u32,
}

/// A span link.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub trace_id: u128,
    pub span_id: u64,
    /// The W3C `tracestate` header, None when empty.
    pub trace_state: Option<Text>,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes: u32,
    /// The linked context came from another process.
    pub is_remote: bool,
}

/// The span's status: code 0 unset, 1 ok, 2 error; the message only when non-empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub code: u8,
    pub message: Option<Text>,
}

/// A resource: spans with the same `Arc` are grouped under one `ResourceSpans`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
    pub schema_url: Option<Text>,
}

/// An instrumentation scope: spans with the same `Arc` share one `ScopeSpans`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    pub name: Text,
    pub version: Option<Text>,
    pub attributes: Vec<KeyValue>,
    pub schema_url: Option<Text>,
}

/// A finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    pub trace_id: u128,
    pub span_id: u64,
    pub trace_state: Option<Text>,
    /// The parent's span id and whether the parent came from another process.
    pub parent: Option<(u64, bool)>,
    pub name: Text,
    /// OTLP `SpanKind` (the SDK's value + 1).
    pub kind: u8,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes: u32,
    pub events: Vec<Event>,
    pub dropped_events: u32,
    pub links: Vec<Link>,
    pub dropped_links: u32,
    pub status: Status,
    pub resource: Arc<Resource>,
    /// None: the span has no instrumentation scope (`"scope":{}`).
    pub scope: Option<Arc<Scope>>,
}
