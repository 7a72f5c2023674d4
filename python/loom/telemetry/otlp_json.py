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


def _double(v: float) -> float | str:
    if math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def any_value(v: Any) -> dict[str, Any]:
    """An attribute value as an OTLP/JSON ``AnyValue``."""
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": _double(v)}
    if isinstance(v, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, Mapping):
        return {"kvlistValue": {"values": attributes(v)} if v else {}}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [any_value(x) for x in v]} if v else {}}
    if v is None:
        return {}
    return {"stringValue": str(v)}


def attributes(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Attributes as a list of OTLP/JSON ``KeyValue``."""
    if not attrs:
        return []
    return [{"key": k, "value": any_value(v)} for k, v in attrs.items()]


def _flags(parent: Any) -> int:
    # Same as the protobuf exporters: say whether the parent was remote.
    if parent is not None and parent.is_remote:
        return FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
    return FLAG_HAS_IS_REMOTE


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One SDK span as an OTLP/JSON ``Span``."""
    ctx = span.get_span_context()
    assert ctx is not None
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
    }
    state = ctx.trace_state
    if state:
        out["traceState"] = state.to_header()
    parent = span.parent
    if parent is not None:
        out["parentSpanId"] = f"{parent.span_id:016x}"
    out["flags"] = _flags(parent)
    out["name"] = span.name
    out["kind"] = span.kind.value + 1
    out["startTimeUnixNano"] = str(span.start_time or 0)
    out["endTimeUnixNano"] = str(span.end_time or 0)
    if span.attributes:
        out["attributes"] = attributes(span.attributes)
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        events = []
        for e in span.events:
            ev: dict[str, Any] = {"timeUnixNano": str(e.timestamp), "name": e.name}
            if e.attributes:
                ev["attributes"] = attributes(e.attributes)
            if e.dropped_attributes:
                ev["droppedAttributesCount"] = e.dropped_attributes
            events.append(ev)
        out["events"] = events
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        links = []
        for link in span.links:
            lk: dict[str, Any] = {
                "traceId": f"{link.context.trace_id:032x}",
                "spanId": f"{link.context.span_id:016x}",
            }
            if link.context.trace_state:
                lk["traceState"] = link.context.trace_state.to_header()
            if link.attributes:
                lk["attributes"] = attributes(link.attributes)
            if link.dropped_attributes:
                lk["droppedAttributesCount"] = link.dropped_attributes
            lk["flags"] = _flags(link.context)
            links.append(lk)
        out["links"] = links
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    code = span.status.status_code.value
    if code:
        status["code"] = code
    if span.status.description:
        status["message"] = span.status.description
    out["status"] = status
    return out


def _resource(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resource.attributes:
        out["attributes"] = attributes(resource.attributes)
    return out


def _scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    attrs = getattr(scope, "attributes", None)
    if attrs:
        out["attributes"] = attributes(attrs)
    return out


def encode_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """SDK spans as one OTLP/JSON ``ExportTraceServiceRequest`` (grouped by resource,
    then instrumentation scope, like the protobuf encoder)."""
    by_resource: dict[int, tuple[Any, dict[int, tuple[Any, list[dict[str, Any]]]]]] = {}
    for span in spans:
        res = span.resource
        scopes = by_resource.setdefault(id(res), (res, {}))[1]
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(encode_span(span))
    resource_spans = []
    for res, scopes in by_resource.values():
        scope_spans = []
        for scope, encoded in scopes.values():
            entry: dict[str, Any] = {"scope": _scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                entry["schemaUrl"] = scope.schema_url
            scope_spans.append(entry)
        rs: dict[str, Any] = {"resource": _resource(res), "scopeSpans": scope_spans}
        if res.schema_url:
            rs["schemaUrl"] = res.schema_url
        resource_spans.append(rs)
    return {"resourceSpans": resource_spans}


def dumps(request: Mapping[str, Any]) -> str:
    """Compact JSON of a request (one line, UTF-8 characters kept)."""
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


def read_spans(path: str | Path) -> list[SpanData]:
    """Every span in an OTLP/JSON lines file (one request per line; blank lines and a
    torn last line, from a killed process, are skipped).

    Raises:
        OSError: the file cannot be read.
        ValueError: a line other than the last is not valid JSON.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
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
    for line in Path(path).read_text(encoding="utf-8").splitlines():
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
]
