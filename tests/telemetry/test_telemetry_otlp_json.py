"""The OTLP/JSON lines file: the encoder matches the protobuf encoder, every line
parses with opentelemetry-proto's JSON parser, and files read back."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from loom.telemetry.exporters import OtlpJsonFileExporter
from loom.telemetry.otlp_json import dumps, encode_request, read_spans


def make_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "enc", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("loom", "1.2.3")
    other = provider.get_tracer("loom.llm")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1)
    )
    with tracer.start_as_current_span(
        "root",
        attributes={
            "s": "text ✓",
            "i": 2**40,
            "f": 0.25,
            "b": True,
            "strs": ["a", "b"],
            "ints": [1, 2],
            "empty": [],
            "inf": math.inf,
        },
    ) as root:
        root.add_event("retry", {"retry.attempt": 1, "retry.delay_s": 0.5})
        with other.start_as_current_span(
            "chat m", kind=SpanKind.CLIENT, links=[Link(remote, {"why": "link"})]
        ) as chat:
            chat.set_status(Status(StatusCode.ERROR, "boom"))
    with tracer.start_span(
        "from remote",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=SpanKind.CONSUMER,
    ) as s:
        s.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_encoder_matches_the_protobuf_encoder() -> None:
    spans = make_spans()
    ours = json.loads(dumps(encode_request(spans)))
    reference = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)

    def hexify(node: object) -> None:  # protobuf-JSON writes ids in base64
        if isinstance(node, dict):
            for k in ("traceId", "spanId", "parentSpanId"):
                if k in node:
                    node[k] = base64.b64decode(node[k]).hex()
            for v in node.values():
                hexify(v)
        elif isinstance(node, list):
            for v in node:
                hexify(v)

    hexify(reference)
    assert ours == reference


def hex_ids_to_base64(node: object) -> object:
    """OTLP/JSON writes ids in hex; protobuf's canonical JSON wants base64 for bytes.
    OTLP-aware readers (the Collector, Jaeger) do this themselves; json_format does
    not, so the test does it before comparing ids."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else hex_ids_to_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [hex_ids_to_base64(v) for v in node]
    return node


def test_lines_parse_with_the_proto_json_parser(tmp_path: Path) -> None:
    spans = make_spans()
    exporter = OtlpJsonFileExporter(tmp_path / "sub" / "run.jsonl")
    exporter.export(spans[:1])
    exporter.export(spans[1:])
    exporter.shutdown()
    lines = (tmp_path / "sub" / "run.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one request per batch
    # Every line is a valid ExportTraceServiceRequest for the strict proto parser
    # (unknown fields, wrong types or enum names would raise ParseError).
    for line in lines:
        json_format.Parse(line, ExportTraceServiceRequest())
    # And it round-trips exactly: ids, times, attributes, status, links.
    parsed = ExportTraceServiceRequest()
    for line in lines:
        one = json_format.ParseDict(
            hex_ids_to_base64(json.loads(line)), ExportTraceServiceRequest()
        )
        parsed.resource_spans.extend(one.resource_spans)
    assert parsed == encode_spans(spans[:1]).__class__(
        resource_spans=[
            *encode_spans(spans[:1]).resource_spans,
            *encode_spans(spans[1:]).resource_spans,
        ]
    )
    raw = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    ctx = spans[0].get_span_context()
    assert raw["traceId"] == f"{ctx.trace_id:032x}"  # hex, not base64
    assert isinstance(raw["startTimeUnixNano"], str) and raw["startTimeUnixNano"].isdigit()
    assert isinstance(raw["kind"], int)


def test_read_back_and_torn_last_line(tmp_path: Path) -> None:
    spans = make_spans()
    path = tmp_path / "run.jsonl"
    path.write_text(dumps(encode_request(spans)) + "\n" + '{"resourceSpans": [{"res')
    back = {s.name: s for s in read_spans(path)}
    assert set(back) == {"root", "chat m", "from remote"}
    root, chat = back["root"], back["chat m"]
    assert chat.parent_id == root.span_id and chat.kind == 3 and chat.error
    assert chat.status_message == "boom" and chat.scope == "loom.llm"
    assert chat.links == [("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")]
    assert root.attributes["i"] == 2**40 and root.attributes["strs"] == ["a", "b"]
    assert root.attributes["inf"] == math.inf
    assert root.events[0].name == "retry" and root.events[0].attributes["retry.attempt"] == 1
    assert root.resource["service.name"] == "enc" and root.scope_version == "1.2.3"
    assert back["from remote"].parent_id == "b7ad6b7169203331"
    # A broken line in the middle is an error, not silently skipped.
    path.write_text("{oops\n" + dumps(encode_request(spans)) + "\n")
    with pytest.raises(ValueError, match="not JSON"):
        read_spans(path)
