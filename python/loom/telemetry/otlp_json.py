# ruff: noqa: UP031
"""OTLP/JSON: the protobuf-JSON mapping of ``ExportTraceServiceRequest``, both ways.

Encoding follows the OTLP/JSON rules (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
lowerCamelCase field names, trace and span ids as lowercase hex (not base64), 64-bit
integers (``*UnixNano``, ``intValue``) as decimal strings, enums as numbers, fields at
their default value left out. One request per line is what the OpenTelemetry
Collector's ``otlpjsonfile`` receiver reads, and what Jaeger's ``/api/transform`` takes
(one line per call).

The encoder is hand-written rather than ``encode_spans`` + ``json_format.MessageToDict``:
it runs on the batch processor's thread for every span, and building plain dicts is
several times cheaper than building protobuf messages and walking them again. A test
checks it against the protobuf encoder and parses its output with ``json_format.Parse``.

Decoding (:func:`read_spans`) turns such files back into :class:`SpanData` for
``loom trace`` (list, tree, Jaeger JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

#: ``SpanFlags``: the exporter knows whether the parent is remote (bit 8), and it is (bit 9).
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200

#: OTLP ``Span.SpanKind`` by name (the SDK's ``SpanKind`` value is one less).
SPAN_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
#: OTLP ``Status.StatusCode``.
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


# -- encoding ---------------------------------------------------------------------------
# The JSON text is built directly (no intermediate dicts, no generic json.dumps walk):
# this runs on the batch processor's thread for every span, and under the GIL every
# microsecond there is taken from the event loop. ``encode_basestring`` is the C string
# escaper json.dumps itself uses (with ensure_ascii=False). %-formatting is used on
# purpose: it is the fastest way to splice ids and numbers (hence the file-wide UP031).

_q = json.encoder.encode_basestring
_key_cache: dict[str, str] = {}
_pair_cache: dict[tuple[str, str], str] = {}


def _key(k: str) -> str:
    head = _key_cache.get(k)
    if head is None:
        head = '{"key":' + _q(k) + ',"value":'
        if len(_key_cache) < 4096:  # attribute keys are few; guard against odd callers
            _key_cache[k] = head
    return head


def _double(v: float) -> str:
    if math.isfinite(v):
        return repr(v)
    if math.isnan(v):
        return '"NaN"'
    return '"Infinity"' if v > 0 else '"-Infinity"'


def _value_json(v: Any) -> str:
    t = type(v)
    if t is str:
        return '{"stringValue":' + _q(v) + "}"
    if t is bool:
        return '{"boolValue":true}' if v else '{"boolValue":false}'
    if t is int:
        return '{"intValue":"' + str(v) + '"}'
    if t is float:
        return '{"doubleValue":' + _double(v) + "}"
    if isinstance(v, (list, tuple)):
        if not v:
            return '{"arrayValue":{}}'
        return '{"arrayValue":{"values":[' + ",".join(_value_json(x) for x in v) + "]}}"
    if isinstance(v, (bytes, bytearray)):
        return '{"bytesValue":"' + base64.b64encode(bytes(v)).decode("ascii") + '"}'
    if isinstance(v, Mapping):
        if not v:
            return '{"kvlistValue":{}}'
        return '{"kvlistValue":{"values":' + _attrs_json(v) + "}}"
    if v is None:
        return "{}"
    if isinstance(v, bool):
        return _value_json(bool(v))
    if isinstance(v, int):
        return _value_json(int(v))
    if isinstance(v, float):
        return _value_json(float(v))
    return _value_json(str(v))


def _attrs_json(attrs: Mapping[str, Any]) -> str:
    # _value_json inlined for the common scalar types (one call less per attribute).
    # Short string values repeat (operation names, systems, topics, agent names): their
    # whole KeyValue text is cached.
    out = []
    keys = _key_cache
    pairs = _pair_cache
    q = _q
    for k, v in attrs.items():
        t = type(v)
        if t is str:
            if len(v) <= 48:
                text = pairs.get((k, v))
                if text is None:
                    text = (keys.get(k) or _key(k)) + '{"stringValue":' + q(v) + "}}"
                    if len(pairs) < 8192:
                        pairs[(k, v)] = text
                out.append(text)
            else:
                out.append((keys.get(k) or _key(k)) + '{"stringValue":' + q(v) + "}}")
            continue
        head = keys.get(k) or _key(k)
        if t is int:
            out.append(head + '{"intValue":"' + str(v) + '"}}')
        elif t is bool:
            out.append(head + ('{"boolValue":true}}' if v else '{"boolValue":false}}'))
        else:
            out.append(head + _value_json(v) + "}")
    return "[" + ",".join(out) + "]"


def any_value(v: Any) -> dict[str, Any]:
    """An attribute value as an OTLP/JSON ``AnyValue`` (parsed)."""
    result: dict[str, Any] = json.loads(_value_json(v))
    return result


def attributes(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Attributes as a list of OTLP/JSON ``KeyValue`` (parsed)."""
    if not attrs:
        return []
    result: list[dict[str, Any]] = json.loads(_attrs_json(attrs))
    return result


def _flags(parent: Any) -> int:
    # Same as the protobuf exporters: say whether the parent was remote.
    if parent is not None and parent.is_remote:
        return FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
    return FLAG_HAS_IS_REMOTE


def span_json(span: ReadableSpan) -> str:
    """One SDK span as OTLP/JSON ``Span`` text."""
    ctx = span.get_span_context()
    assert ctx is not None
    parts = ['{"traceId":"%032x","spanId":"%016x"' % (ctx.trace_id, ctx.span_id)]
    state = ctx.trace_state
    if state:
        parts.append(',"traceState":' + _q(state.to_header()))
    parent = span.parent
    if parent is not None:
        parts.append(',"parentSpanId":"%016x"' % parent.span_id)
    parts.append(
        ',"flags":%d,"name":%s,"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d"'
        % (
            FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
            if parent is not None and parent.is_remote
            else FLAG_HAS_IS_REMOTE,
            _q(span.name),
            span.kind._value_ + 1,  # _value_: .value is a slow enum property
            span.start_time or 0,
            span.end_time or 0,
        )
    )
    attrs = span.attributes
    if attrs:
        parts.append(',"attributes":' + _attrs_json(attrs))
    dropped = span.dropped_attributes
    if dropped:
        parts.append(',"droppedAttributesCount":%d' % dropped)
    span_events = span.events
    if span_events:
        events = []
        for e in span_events:
            ev = '{"timeUnixNano":"%d","name":%s' % (e.timestamp, _q(e.name))
            if e.attributes:
                ev += ',"attributes":' + _attrs_json(e.attributes)
            if e.dropped_attributes:
                ev += ',"droppedAttributesCount":%d' % e.dropped_attributes
            events.append(ev + "}")
        parts.append(',"events":[' + ",".join(events) + "]")
    if span.dropped_events:
        parts.append(',"droppedEventsCount":%d' % span.dropped_events)
    span_links = span.links
    if span_links:
        links = []
        for link in span_links:
            lk = '{"traceId":"%032x","spanId":"%016x"' % (
                link.context.trace_id,
                link.context.span_id,
            )
            if link.context.trace_state:
                lk += ',"traceState":' + _q(link.context.trace_state.to_header())
            if link.attributes:
                lk += ',"attributes":' + _attrs_json(link.attributes)
            if link.dropped_attributes:
                lk += ',"droppedAttributesCount":%d' % link.dropped_attributes
            links.append(lk + ',"flags":%d}' % _flags(link.context))
        parts.append(',"links":[' + ",".join(links) + "]")
    if span.dropped_links:
        parts.append(',"droppedLinksCount":%d' % span.dropped_links)
    status = span.status
    code = status.status_code._value_
    if code and status.description:
        parts.append(',"status":{"code":%d,"message":%s}}' % (code, _q(status.description)))
    elif code:
        parts.append(',"status":{"code":%d}}' % code)
    else:
        parts.append(',"status":{}}')
    return "".join(parts)


def _resource_json(resource: Resource) -> str:
    if resource.attributes:
        return '{"attributes":' + _attrs_json(resource.attributes) + "}"
    return "{}"


def _scope_json(scope: InstrumentationScope | None) -> str:
    if scope is None:
        return "{}"
    out = '{"name":' + _q(scope.name)
    if scope.version:
        out += ',"version":' + _q(scope.version)
    attrs = getattr(scope, "attributes", None)
    if attrs:
        out += ',"attributes":' + _attrs_json(attrs)
    return out + "}"


def request_json(spans: Sequence[ReadableSpan]) -> str:
    """SDK spans as one OTLP/JSON ``ExportTraceServiceRequest``, one line of text
    (grouped by resource, then instrumentation scope, like the protobuf encoder)."""
    by_resource: dict[int, tuple[Any, dict[int, tuple[Any, list[str]]]]] = {}
    for span in spans:
        res = span.resource
        scopes = by_resource.setdefault(id(res), (res, {}))[1]
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(span_json(span))
    resource_spans = []
    for res, scopes in by_resource.values():
        scope_spans = []
        for scope, encoded in scopes.values():
            entry = '{"scope":' + _scope_json(scope) + ',"spans":[' + ",".join(encoded) + "]"
            if scope is not None and scope.schema_url:
                entry += ',"schemaUrl":' + _q(scope.schema_url)
            scope_spans.append(entry + "}")
        rs = '{"resource":' + _resource_json(res) + ',"scopeSpans":[' + ",".join(scope_spans) + "]"
        if res.schema_url:
            rs += ',"schemaUrl":' + _q(res.schema_url)
        resource_spans.append(rs + "}")
    return '{"resourceSpans":[' + ",".join(resource_spans) + "]}"


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One SDK span as a parsed OTLP/JSON ``Span``."""
    result: dict[str, Any] = json.loads(span_json(span))
    return result


def encode_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """SDK spans as a parsed OTLP/JSON ``ExportTraceServiceRequest``."""
    result: dict[str, Any] = json.loads(request_json(spans))
    return result


def dumps(request: Mapping[str, Any]) -> str:
    """Compact JSON of a parsed request (one line, UTF-8 characters kept)."""
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# -- decoding ---------------------------------------------------------------------------


def _id(value: Any, size: int) -> str:
    """A trace/span id as lowercase hex; accepts hex (OTLP/JSON) and base64 (what
    generic protobuf-JSON tools write)."""
    if not value:
        return ""
    text = str(value)
    if len(text) == size * 2:
        try:
            bytes.fromhex(text)
            return text.lower()
        except ValueError:
            pass
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text.lower()


def decode_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [decode_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return decode_attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def decode_attributes(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` list as a dict."""
    return {str(kv.get("key")): decode_value(kv.get("value") or {}) for kv in items or ()}


@dataclass
class SpanEvent:
    """An event of a decoded span."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpanData:
    """A span read back from an OTLP/JSON file."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int = STATUS_UNSET
    status_message: str = ""
    events: list[SpanEvent] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    scope_version: str = ""

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def error(self) -> bool:
        return self.status_code == STATUS_ERROR

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name") or "unknown_service")


def decode_request(request: Mapping[str, Any]) -> Iterator[SpanData]:
    """The spans of one ``ExportTraceServiceRequest`` (as parsed JSON)."""
    for rs in request.get("resourceSpans") or ():
        resource = decode_attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or ():
            scope = ss.get("scope") or {}
            for s in ss.get("spans") or ():
                status = s.get("status") or {}
                yield SpanData(
                    trace_id=_id(s.get("traceId"), 16),
                    span_id=_id(s.get("spanId"), 8),
                    parent_id=_id(s.get("parentSpanId"), 8),
                    name=str(s.get("name", "")),
                    kind=_enum(s.get("kind"), _KIND_NAMES),
                    start_ns=int(s.get("startTimeUnixNano") or 0),
                    end_ns=int(s.get("endTimeUnixNano") or 0),
                    attributes=decode_attributes(s.get("attributes")),
                    status_code=_enum(status.get("code"), _STATUS_NAMES),
                    status_message=str(status.get("message") or ""),
                    events=[
                        SpanEvent(
                            str(e.get("name", "")),
                            int(e.get("timeUnixNano") or 0),
                            decode_attributes(e.get("attributes")),
                        )
                        for e in s.get("events") or ()
                    ],
                    links=[
                        (_id(lk.get("traceId"), 16), _id(lk.get("spanId"), 8))
                        for lk in s.get("links") or ()
                    ],
                    resource=resource,
                    scope=str(scope.get("name") or ""),
                    scope_version=str(scope.get("version") or ""),
                )


_KIND_NAMES = {f"SPAN_KIND_{v.upper()}": k for k, v in SPAN_KINDS.items()}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _enum(value: Any, names: Mapping[str, int]) -> int:
    # Numbers per the OTLP/JSON spec; enum names are accepted too (protobuf-JSON allows both).
    if value is None:
        return 0
    if isinstance(value, str) and not value.isdigit():
        return names.get(value, 0)
    return int(value)


def _lines(path: str | Path) -> list[str]:
    # Split on "\n" only: str.splitlines() also splits on U+2028, U+0085 and other
    # characters that JSON strings may hold raw (span attributes with model text).
    return Path(path).read_text(encoding="utf-8").split("\n")


def read_spans(path: str | Path) -> list[SpanData]:
    """Every span in an OTLP/JSON lines file (one request per line; blank lines and a
    torn last line, from a killed process, are skipped).

    Raises:
        OSError: the file cannot be read.
        ValueError: a line other than the last is not valid JSON.
    """
    lines = _lines(path)
    spans: list[SpanData] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break  # a write cut short by a crash: keep what is complete
            raise ValueError(f"{path}:{i + 1}: not JSON: {exc}") from None
        spans.extend(decode_request(request))
    return spans


def merge_requests(path: str | Path) -> dict[str, Any]:
    """All lines of a file as one ``ExportTraceServiceRequest`` (what Jaeger's
    ``/api/transform`` takes in one call)."""
    merged: list[Any] = []
    for line in _lines(path):
        if line.strip():
            try:
                merged.extend(json.loads(line).get("resourceSpans") or [])
            except json.JSONDecodeError:
                continue
    return {"resourceSpans": merged}


__all__ = [
    "SPAN_KINDS",
    "SpanData",
    "SpanEvent",
    "any_value",
    "attributes",
    "decode_attributes",
    "decode_request",
    "dumps",
    "encode_request",
    "encode_span",
    "merge_requests",
    "read_spans",
    "request_json",
    "span_json",
]
