//! The OTLP/JSON text of an `ExportTraceServiceRequest`, byte for byte what
//! `loom/telemetry/otlp_json.py::request_json` writes (then written through Python's
//! `backslashreplace`): spans grouped by resource, then scope, in first-seen order;
//! fields in the same order; defaults left out the same way.

use std::io::Write as _;
use std::sync::Arc;

use super::span::{AnyValue, KeyValue, Resource, Scope, SpanRecord};

/// `SpanFlags`: the exporter knows whether the parent is remote (bit 8), and it is (bit 9).
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

const HEX: &[u8; 16] = b"0123456789abcdef";

fn flags(is_remote: bool) -> u32 {
    if is_remote {
        FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
    } else {
        FLAG_HAS_IS_REMOTE
    }
}

/// `s` as a JSON string the way `json.encoder.encode_basestring` escapes it (`"`, `\`,
/// `\b \f \n \r \t`, other controls as `\u00XX`; everything else raw), with a lone
/// surrogate (see [`super::Text`]) as `\udXXX`.
pub fn write_json_str(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b >= 0x20 && b != b'"' && b != b'\\' && b != 0xED {
            i += 1;
            continue;
        }
        if b == 0xED && !(i + 2 < s.len() && s[i + 1] >= 0xA0) {
            i += 1; // an ordinary 3-byte character (U+D000..U+D7FF)
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0xED => {
                let cp = 0xD000 | (u32::from(s[i + 1] & 0x3F) << 6) | u32::from(s[i + 2] & 0x3F);
                write_u_escape(cp, out);
                i += 3;
                start = i;
                continue;
            }
            _ => write_u_escape(u32::from(b), out),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

fn push_hex(v: u128, digits: u32, out: &mut Vec<u8>) {
    for k in (0..digits).rev() {
        out.push(HEX[((v >> (k * 4)) & 0xF) as usize]);
    }
}

/// Decimal digits of `v` (what `write!` would give, without the formatting machinery:
/// this runs several times per span).
fn push_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_i64(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(v.unsigned_abs(), out);
}

/// `"traceId":"<32 hex>","spanId":"<16 hex>"` (without the leading brace).
fn push_ids(trace_id: u128, span_id: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"traceId\":\"");
    push_hex(trace_id, 32, out);
    out.extend_from_slice(b"\",\"spanId\":\"");
    push_hex(u128::from(span_id), 16, out);
    out.push(b'"');
}

fn write_u_escape(cp: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((cp >> shift) & 0xF) as usize]);
    }
}

/// A float as `otlp_json._double` writes it: Python's `repr` when finite (shortest
/// round-trip digits; exponent form below 1e-4 and from 1e16), else the string
/// `"NaN"`, `"Infinity"` or `"-Infinity"`.
pub fn write_double(v: f64, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
        return;
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, like Python's repr; when
    // two such strings are equally near (a tie), Python's takes the even last digit.
    // Correctly rounded formatting at that many digits (half to even) gives its choice.
    let shortest = format!("{:e}", v.abs());
    let n = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    let sci = format!("{:.*e}", n.saturating_sub(1), v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(|b| *b != b'.').collect();
    if v.is_sign_negative() {
        out.push(b'-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            for k in 0..int_len {
                out.push(*digits.get(k).unwrap_or(&b'0'));
            }
            out.push(b'.');
            if digits.len() > int_len {
                out.extend_from_slice(&digits[int_len..]);
            } else {
                out.push(b'0');
            }
        } else {
            out.extend_from_slice(b"0.");
            for _ in 0..(-exp - 1) {
                out.push(b'0');
            }
            out.extend_from_slice(&digits);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

fn write_base64(bytes: &[u8], out: &mut Vec<u8>) {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(TABLE[(n >> 18) as usize & 63]);
        out.push(TABLE[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63]
        } else {
            b'='
        });
    }
}

fn write_value(v: &AnyValue, out: &mut Vec<u8>) {
    match v {
        AnyValue::Str(s) => {
            out.extend_from_slice(b"{\"stringValue\":");
            write_json_str(s.as_bytes(), out);
            out.push(b'}');
        }
        AnyValue::Bool(true) => out.extend_from_slice(b"{\"boolValue\":true}"),
        AnyValue::Bool(false) => out.extend_from_slice(b"{\"boolValue\":false}"),
        AnyValue::Int(i) => {
            out.extend_from_slice(b"{\"intValue\":\"");
            push_i64(*i, out);
            out.extend_from_slice(b"\"}");
        }
        AnyValue::BigInt(digits) => {
            out.extend_from_slice(b"{\"intValue\":\"");
            out.extend_from_slice(digits.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        AnyValue::Double(f) => {
            out.extend_from_slice(b"{\"doubleValue\":");
            write_double(*f, out);
            out.push(b'}');
        }
        AnyValue::Bytes(b) => {
            out.extend_from_slice(b"{\"bytesValue\":\"");
            write_base64(b, out);
            out.extend_from_slice(b"\"}");
        }
        AnyValue::Array(items) if items.is_empty() => out.extend_from_slice(b"{\"arrayValue\":{}}"),
        AnyValue::Array(items) => {
            out.extend_from_slice(b"{\"arrayValue\":{\"values\":[");
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.extend_from_slice(b"]}}");
        }
        AnyValue::KvList(items) if items.is_empty() => {
            out.extend_from_slice(b"{\"kvlistValue\":{}}")
        }
        AnyValue::KvList(items) => {
            out.extend_from_slice(b"{\"kvlistValue\":{\"values\":");
            write_attrs(items, out);
            out.extend_from_slice(b"}}");
        }
        AnyValue::Empty => out.extend_from_slice(b"{}"),
    }
}

fn write_attrs(attrs: &[KeyValue], out: &mut Vec<u8>) {
    out.push(b'[');
    for (n, kv) in attrs.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"key\":");
        write_json_str(kv.key.as_bytes(), out);
        out.extend_from_slice(b",\"value\":");
        write_value(&kv.value, out);
        out.push(b'}');
    }
    out.push(b']');
}

/// `,"attributes":[...]` when there are any, `,"droppedAttributesCount":N` when non-zero.
fn write_attrs_field(attrs: &[KeyValue], dropped: u32, out: &mut Vec<u8>) {
    if !attrs.is_empty() {
        out.extend_from_slice(b",\"attributes\":");
        write_attrs(attrs, out);
    }
    if dropped != 0 {
        out.extend_from_slice(b",\"droppedAttributesCount\":");
        push_u64(u64::from(dropped), out);
    }
}

fn write_span(span: &SpanRecord, out: &mut Vec<u8>) {
    out.push(b'{');
    push_ids(span.trace_id, span.span_id, out);
    if let Some(state) = &span.trace_state {
        out.extend_from_slice(b",\"traceState\":");
        write_json_str(state.as_bytes(), out);
    }
    if let Some((parent, _)) = span.parent {
        out.extend_from_slice(b",\"parentSpanId\":\"");
        push_hex(u128::from(parent), 16, out);
        out.push(b'"');
    }
    let remote = matches!(span.parent, Some((_, true)));
    out.extend_from_slice(b",\"flags\":");
    push_u64(u64::from(flags(remote)), out);
    out.extend_from_slice(b",\"name\":");
    write_json_str(span.name.as_bytes(), out);
    out.extend_from_slice(b",\"kind\":");
    push_u64(u64::from(span.kind), out);
    out.extend_from_slice(b",\"startTimeUnixNano\":\"");
    push_u64(span.start_time_unix_nano, out);
    out.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    push_u64(span.end_time_unix_nano, out);
    out.push(b'"');
    write_attrs_field(&span.attributes, span.dropped_attributes, out);
    if !span.events.is_empty() {
        out.extend_from_slice(b",\"events\":[");
        for (n, e) in span.events.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"timeUnixNano\":\"");
            push_u64(e.time_unix_nano, out);
            out.extend_from_slice(b"\",\"name\":");
            write_json_str(e.name.as_bytes(), out);
            write_attrs_field(&e.attributes, e.dropped_attributes, out);
            out.push(b'}');
        }
        out.push(b']');
    }
    if span.dropped_events != 0 {
        out.extend_from_slice(b",\"droppedEventsCount\":");
        push_u64(u64::from(span.dropped_events), out);
    }
    if !span.links.is_empty() {
        out.extend_from_slice(b",\"links\":[");
        for (n, link) in span.links.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'{');
            push_ids(link.trace_id, link.span_id, out);
            if let Some(state) = &link.trace_state {
                out.extend_from_slice(b",\"traceState\":");
                write_json_str(state.as_bytes(), out);
            }
            write_attrs_field(&link.attributes, link.dropped_attributes, out);
            out.extend_from_slice(b",\"flags\":");
            push_u64(u64::from(flags(link.is_remote)), out);
            out.push(b'}');
        }
        out.push(b']');
    }
    if span.dropped_links != 0 {
        out.extend_from_slice(b",\"droppedLinksCount\":");
        push_u64(u64::from(span.dropped_links), out);
    }
    match (&span.status.code, &span.status.message) {
        (0, _) => out.extend_from_slice(b",\"status\":{}}"),
        (code, Some(message)) if !message.is_empty() => {
            out.extend_from_slice(b",\"status\":{\"code\":");
            push_u64(u64::from(*code), out);
            out.extend_from_slice(b",\"message\":");
            write_json_str(message.as_bytes(), out);
            out.extend_from_slice(b"}}");
        }
        (code, _) => {
            out.extend_from_slice(b",\"status\":{\"code\":");
            push_u64(u64::from(*code), out);
            out.extend_from_slice(b"}}");
        }
    }
}

fn write_resource(res: &Resource, out: &mut Vec<u8>) {
    if res.attributes.is_empty() {
        out.extend_from_slice(b"{}");
    } else {
        out.extend_from_slice(b"{\"attributes\":");
        write_attrs(&res.attributes, out);
        out.push(b'}');
    }
}

fn write_scope(scope: Option<&Scope>, out: &mut Vec<u8>) {
    let Some(scope) = scope else {
        out.extend_from_slice(b"{}");
        return;
    };
    out.extend_from_slice(b"{\"name\":");
    write_json_str(scope.name.as_bytes(), out);
    if let Some(version) = scope.version.as_ref().filter(|v| !v.is_empty()) {
        out.extend_from_slice(b",\"version\":");
        write_json_str(version.as_bytes(), out);
    }
    if !scope.attributes.is_empty() {
        out.extend_from_slice(b",\"attributes\":");
        write_attrs(&scope.attributes, out);
    }
    out.push(b'}');
}

fn write_schema_url(url: Option<&super::Text>, out: &mut Vec<u8>) {
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        out.extend_from_slice(b",\"schemaUrl\":");
        write_json_str(url.as_bytes(), out);
    }
}

type ScopeGroup<'a> = (Option<&'a Arc<Scope>>, Vec<&'a SpanRecord>);

/// `spans` as one `ExportTraceServiceRequest` (one line, no newline), appended to `out`.
pub fn encode_request(spans: &[SpanRecord], out: &mut Vec<u8>) {
    // Grouped by identity (the same `Arc`), like the Python encoder's `id()`: a run has
    // one resource and a few scopes, so a linear search is the cheapest map.
    let mut groups: Vec<(&Arc<Resource>, Vec<ScopeGroup<'_>>)> = Vec::new();
    for span in spans {
        let gi = match groups
            .iter()
            .position(|(r, _)| Arc::ptr_eq(r, &span.resource))
        {
            Some(i) => i,
            None => {
                groups.push((&span.resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].1;
        let same = |s: &Option<&Arc<Scope>>| match (s, &span.scope) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        match scopes.iter().position(|(s, _)| same(s)) {
            Some(i) => scopes[i].1.push(span),
            None => scopes.push((span.scope.as_ref(), vec![span])),
        }
    }
    out.extend_from_slice(b"{\"resourceSpans\":[");
    for (ri, (res, scopes)) in groups.iter().enumerate() {
        if ri > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"resource\":");
        write_resource(res, out);
        out.extend_from_slice(b",\"scopeSpans\":[");
        for (si, (scope, spans)) in scopes.iter().enumerate() {
            if si > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"scope\":");
            write_scope(scope.map(|s| &**s), out);
            out.extend_from_slice(b",\"spans\":[");
            for (n, span) in spans.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_span(span, out);
            }
            out.push(b']');
            write_schema_url(scope.and_then(|s| s.schema_url.as_ref()), out);
            out.push(b'}');
        }
        out.push(b']');
        write_schema_url(res.schema_url.as_ref(), out);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
