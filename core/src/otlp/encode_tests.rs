use std::sync::Arc;

use super::*;
use crate::otlp::{Event, Link, Status, Text};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn json_str(s: &[u8]) -> String {
    let mut out = Vec::new();
    write_json_str(s, &mut out);
    text(&out)
}

fn double(v: f64) -> String {
    let mut out = Vec::new();
    write_double(v, &mut out);
    text(&out)
}

#[test]
fn strings_are_escaped_like_encode_basestring() {
    assert_eq!(json_str(b"plain"), "\"plain\"");
    assert_eq!(json_str(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(json_str(b"\n\r\t\x08\x0c"), "\"\\n\\r\\t\\b\\f\"");
    assert_eq!(json_str(b"\x00\x1f\x7f"), "\"\\u0000\\u001f\x7f\"");
    assert_eq!(
        json_str("✓ é 😀 \u{d7ff}".as_bytes()),
        "\"✓ é 😀 \u{d7ff}\""
    );
}

#[test]
fn lone_surrogates_become_backslash_escapes() {
    // "a\udc80b" and "\ud83d" as Python's surrogatepass writes them.
    assert_eq!(json_str(b"a\xed\xb2\x80b"), "\"a\\udc80b\"");
    assert_eq!(json_str(b"\xed\xa0\xbd"), "\"\\ud83d\"");
}

#[test]
// The tie cases are exact binary fractions; every digit is meant.
#[allow(clippy::excessive_precision)]
fn floats_are_written_as_python_repr() {
    let cases = [
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (0.25, "0.25"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (9999999999999998.0, "9999999999999998.0"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.2345e-7, "1.2345e-07"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (123456.789, "123456.789"),
        (f64::MAX, "1.7976931348623157e+308"),
        // Ties between two shortest strings: the even digit, as Python's repr.
        (1266326818022325.25, "1266326818022325.2"),
        (80820593171924.625, "80820593171924.62"),
    ];
    for (v, want) in cases {
        assert_eq!(double(v), want, "{v:e}");
    }
    assert_eq!(double(f64::NAN), "\"NaN\"");
    assert_eq!(double(f64::INFINITY), "\"Infinity\"");
    assert_eq!(double(f64::NEG_INFINITY), "\"-Infinity\"");
}

fn span(resource: &Arc<Resource>, scope: Option<&Arc<Scope>>, id: u64) -> SpanRecord {
    SpanRecord {
        trace_id: 0x0af7651916cd43dd8448eb211c80319c,
        span_id: id,
        trace_state: None,
        parent: None,
        name: Text::new("root"),
        kind: 1,
        start_time_unix_nano: 10,
        end_time_unix_nano: 20,
        attributes: vec![],
        dropped_attributes: 0,
        events: vec![],
        dropped_events: 0,
        links: vec![],
        dropped_links: 0,
        status: Status::default(),
        resource: Arc::clone(resource),
        scope: scope.cloned(),
    }
}

fn request(spans: &[SpanRecord]) -> String {
    let mut out = Vec::new();
    encode_request(spans, &mut out);
    text(&out)
}

#[test]
fn a_bare_span() {
    let res = Arc::new(Resource::default());
    let got = request(&[span(&res, None, 1)]);
    assert_eq!(
        got,
        "{\"resourceSpans\":[{\"resource\":{},\"scopeSpans\":[{\"scope\":{},\"spans\":[\
         {\"traceId\":\"0af7651916cd43dd8448eb211c80319c\",\"spanId\":\"0000000000000001\",\
         \"flags\":256,\"name\":\"root\",\"kind\":1,\"startTimeUnixNano\":\"10\",\
         \"endTimeUnixNano\":\"20\",\"status\":{}}]}]}]}"
    );
}

#[test]
fn every_field() {
    let res = Arc::new(Resource {
        attributes: vec![KeyValue::new("service.name", AnyValue::Str("svc".into()))],
        schema_url: Some("https://r".into()),
    });
    let scope = Arc::new(Scope {
        name: "loom".into(),
        version: Some("1.2".into()),
        attributes: vec![KeyValue::new("k", AnyValue::Bool(false))],
        schema_url: Some("https://s".into()),
    });
    let mut s = span(&res, Some(&scope), 2);
    s.trace_state = Some("a=b".into());
    s.parent = Some((0xff, true));
    s.attributes = vec![
        KeyValue::new("i", AnyValue::Int(-3)),
        KeyValue::new(
            "big",
            AnyValue::BigInt("123456789012345678901234567890".into()),
        ),
        KeyValue::new("f", AnyValue::Double(0.5)),
        KeyValue::new(
            "a",
            AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Str("x".into())]),
        ),
        KeyValue::new("e", AnyValue::Array(vec![])),
        KeyValue::new("bytes", AnyValue::Bytes(b"ab".to_vec().into())),
        KeyValue::new(
            "kv",
            AnyValue::KvList(vec![KeyValue::new("n", AnyValue::Empty)]),
        ),
        KeyValue::new("ekv", AnyValue::KvList(vec![])),
    ];
    s.dropped_attributes = 4;
    s.events = vec![Event {
        time_unix_nano: 15,
        name: "exception".into(),
        attributes: vec![KeyValue::new("m", AnyValue::Str("boom".into()))],
        dropped_attributes: 1,
    }];
    s.dropped_events = 2;
    s.links = vec![Link {
        trace_id: 1,
        span_id: 2,
        trace_state: Some("x=y".into()),
        attributes: vec![KeyValue::new("why", AnyValue::Str("l".into()))],
        dropped_attributes: 0,
        is_remote: false,
    }];
    s.dropped_links = 3;
    s.status = Status {
        code: 2,
        message: Some("bad".into()),
    };
    let got = request(&[s]);
    let want = concat!(
        "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",",
        "\"value\":{\"stringValue\":\"svc\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"loom\",",
        "\"version\":\"1.2\",\"attributes\":[{\"key\":\"k\",\"value\":{\"boolValue\":false}}]},",
        "\"spans\":[{\"traceId\":\"0af7651916cd43dd8448eb211c80319c\",",
        "\"spanId\":\"0000000000000002\",\"traceState\":\"a=b\",",
        "\"parentSpanId\":\"00000000000000ff\",\"flags\":768,\"name\":\"root\",\"kind\":1,",
        "\"startTimeUnixNano\":\"10\",\"endTimeUnixNano\":\"20\",\"attributes\":[",
        "{\"key\":\"i\",\"value\":{\"intValue\":\"-3\"}},",
        "{\"key\":\"big\",\"value\":{\"intValue\":\"123456789012345678901234567890\"}},",
        "{\"key\":\"f\",\"value\":{\"doubleValue\":0.5}},",
        "{\"key\":\"a\",\"value\":{\"arrayValue\":{\"values\":[{\"intValue\":\"1\"},",
        "{\"stringValue\":\"x\"}]}}},",
        "{\"key\":\"e\",\"value\":{\"arrayValue\":{}}},",
        "{\"key\":\"bytes\",\"value\":{\"bytesValue\":\"YWI=\"}},",
        "{\"key\":\"kv\",\"value\":{\"kvlistValue\":{\"values\":[{\"key\":\"n\",\"value\":{}}]}}},",
        "{\"key\":\"ekv\",\"value\":{\"kvlistValue\":{}}}],",
        "\"droppedAttributesCount\":4,",
        "\"events\":[{\"timeUnixNano\":\"15\",\"name\":\"exception\",\"attributes\":[",
        "{\"key\":\"m\",\"value\":{\"stringValue\":\"boom\"}}],\"droppedAttributesCount\":1}],",
        "\"droppedEventsCount\":2,",
        "\"links\":[{\"traceId\":\"00000000000000000000000000000001\",",
        "\"spanId\":\"0000000000000002\",\"traceState\":\"x=y\",\"attributes\":[",
        "{\"key\":\"why\",\"value\":{\"stringValue\":\"l\"}}],\"flags\":256}],",
        "\"droppedLinksCount\":3,\"status\":{\"code\":2,\"message\":\"bad\"}}],",
        "\"schemaUrl\":\"https://s\"}],\"schemaUrl\":\"https://r\"}]}"
    );
    assert_eq!(got, want);
}

#[test]
fn spans_are_grouped_by_resource_then_scope_in_first_seen_order() {
    let r1 = Arc::new(Resource::default());
    let r2 = Arc::new(Resource::default()); // equal, but another resource
    let a = Arc::new(Scope {
        name: "a".into(),
        version: None,
        attributes: vec![],
        schema_url: None,
    });
    let b = Arc::new(Scope {
        name: "b".into(),
        ..(*a).clone()
    });
    let spans = [
        span(&r1, Some(&a), 1),
        span(&r2, Some(&a), 2),
        span(&r1, Some(&b), 3),
        span(&r1, Some(&a), 4),
        span(&r1, None, 5),
    ];
    let got: serde_json::Value = serde_json::from_str(&request(&spans)).unwrap();
    let ids = |rs: &serde_json::Value| -> Vec<Vec<String>> {
        rs["scopeSpans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ss| {
                ss["spans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["spanId"].as_str().unwrap()[15..].to_string())
                    .collect()
            })
            .collect()
    };
    let rs = got["resourceSpans"].as_array().unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(ids(&rs[0]), [vec!["1", "4"], vec!["3"], vec!["5"]]);
    assert_eq!(ids(&rs[1]), [vec!["2"]]);
    assert_eq!(rs[0]["scopeSpans"][2]["scope"], serde_json::json!({}));
}

#[test]
fn status_ok_and_error_without_message() {
    let res = Arc::new(Resource::default());
    let mut s = span(&res, None, 1);
    s.status = Status {
        code: 1,
        message: Some("".into()),
    };
    assert!(request(&[s.clone()]).ends_with(",\"status\":{\"code\":1}}]}]}]}"));
    s.status = Status {
        code: 2,
        message: None,
    };
    assert!(request(&[s]).ends_with(",\"status\":{\"code\":2}}]}]}]}"));
}
