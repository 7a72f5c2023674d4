//! The event envelope: one schema for every transport and both languages.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default hop limit: how many times an event may be forwarded (replies, relays,
/// bridges) before the bus refuses it; stops agents ping-ponging forever.
pub const DEFAULT_TTL: u32 = 32;

/// A 128-bit event id: 48 bits of milliseconds, 48 random bits fixed per process and a
/// 32-bit counter, so ids sort roughly by time and never collide across processes
/// sharing a NATS bus. Rendered like a UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// A fresh id.
    pub fn new() -> Self {
        Self::at(now_unix_nanos())
    }

    /// A fresh id for an event stamped `unix_nanos` (one clock read for both).
    pub fn at(unix_nanos: u64) -> Self {
        static PROCESS: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let process = *PROCESS.get_or_init(|| {
            let mut h = RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish() & 0xFFFF_FFFF_FFFF
        });
        let ms = (unix_nanos / 1_000_000) as u128 & 0xFFFF_FFFF_FFFF;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u128;
        EventId((ms << 80) | ((process as u128) << 32) | n)
    }
}

impl EventId {
    /// Parses the rendered form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex), so an
    /// event keeps its id across a process boundary or a redelivery.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('-').collect();
        let widths = [8, 4, 4, 4, 12];
        if parts.len() != widths.len()
            || parts
                .iter()
                .zip(widths)
                .any(|(p, w)| p.len() != w || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        u128::from_str_radix(&parts.concat(), 16).ok().map(EventId)
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xFFFF_FFFF_FFFF
        )
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The header carrying [`Envelope::delivery_count`].
pub const DELIVERY_COUNT_HEADER: &str = "loom-delivery-count";

/// Nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What an event carries.
#[derive(Clone)]
pub enum Payload {
    /// No payload.
    None,
    /// A JSON value: what crosses process boundaries and what Rust producers emit.
    Json(serde_json::Value),
    /// Raw bytes.
    Bytes(Arc<[u8]>),
    /// A value owned by an in-process language binding (a Python object), passed by
    /// reference between subscribers of the same process and serialised only when the
    /// event leaves the process.
    Native(Arc<dyn Any + Send + Sync>),
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::None => f.write_str("None"),
            Payload::Json(v) => write!(f, "Json({v})"),
            Payload::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Payload::Native(_) => f.write_str("Native(..)"),
        }
    }
}

/// An event on the bus.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: EventId,
    pub topic: Arc<str>,
    /// The event type (`type` in Python and on the wire).
    pub kind: Arc<str>,
    pub payload: Payload,
    pub timestamp_unix_nanos: u64,
    /// Id of the agent that sent it.
    pub source: Option<Arc<str>>,
    pub correlation_id: Option<Arc<str>>,
    pub reply_to: Option<Arc<str>>,
    pub thread_id: Option<Arc<str>>,
    /// Remaining hops (see [`DEFAULT_TTL`]).
    pub ttl: u32,
    /// String headers; the W3C `traceparent` travels here.
    pub headers: Vec<(Arc<str>, Arc<str>)>,
}

impl Envelope {
    /// A new envelope with a fresh id and timestamp.
    pub fn new(topic: impl Into<Arc<str>>, kind: impl Into<Arc<str>>, payload: Payload) -> Self {
        let now = now_unix_nanos();
        Envelope {
            id: EventId::at(now),
            topic: topic.into(),
            kind: kind.into(),
            payload,
            timestamp_unix_nanos: now,
            source: None,
            correlation_id: None,
            reply_to: None,
            thread_id: None,
            ttl: DEFAULT_TTL,
            headers: Vec::new(),
        }
    }

    /// How many times this event has been delivered (1 the first time): the
    /// `loom-delivery-count` header set by a redelivering transport (JetStream).
    pub fn delivery_count(&self) -> u64 {
        self.header(DELIVERY_COUNT_HEADER)
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1)
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_uuid_shaped() {
        let a = EventId::new();
        let b = EventId::new();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s.matches('-').count(), 4);
    }

    #[test]
    fn ids_parse_back() {
        let a = EventId::new();
        assert_eq!(EventId::parse(&a.to_string()), Some(a));
        for bad in [
            "",
            "not-an-id",
            "0000000g-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-0000000000000",
            "00000000-0000-0000-0000",
            "+0000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn delivery_count_comes_from_its_header() {
        let mut e = Envelope::new("a", "t", Payload::None);
        assert_eq!(e.delivery_count(), 1);
        e.headers.push((DELIVERY_COUNT_HEADER.into(), "3".into()));
        assert_eq!(e.delivery_count(), 3);
        let mut bad = Envelope::new("a", "t", Payload::None);
        bad.headers
            .push((DELIVERY_COUNT_HEADER.into(), "zero".into()));
        assert_eq!(bad.delivery_count(), 1);
        let mut zero = Envelope::new("a", "t", Payload::None);
        zero.headers
            .push((DELIVERY_COUNT_HEADER.into(), "0".into()));
        assert_eq!(zero.delivery_count(), 1);
    }

    #[test]
    fn headers() {
        let mut e = Envelope::new("a.b", "t", Payload::None);
        e.headers.push(("traceparent".into(), "00-x".into()));
        assert_eq!(e.header("traceparent"), Some("00-x"));
        assert_eq!(e.header("nope"), None);
        assert_eq!(e.ttl, DEFAULT_TTL);
    }
}
