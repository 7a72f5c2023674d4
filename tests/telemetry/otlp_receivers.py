"""Real OTLP receivers on 127.0.0.1 for the telemetry tests, and a small
OpenAI-compatible server answering from a ``loom.testing.ScriptedModel``.

- :class:`HttpReceiver`: OTLP/HTTP (``/v1/traces``, ``/v1/metrics``), protobuf or JSON
  bodies, decoded with ``opentelemetry-proto``.
- :class:`GrpcReceiver`: OTLP/gRPC, a ``grpc.aio`` server implementing the
  ``TraceService`` and ``MetricsService`` of ``opentelemetry-proto``, on its own thread
  and event loop (so a test blocking its own loop in a flush cannot deadlock it).

Both keep every request's raw bytes, for "no secret anywhere in what was exported".
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from loom.testing import ScriptedModel


@dataclass
class Received:
    """One export request as it arrived."""

    signal: str  # "traces" or "metrics"
    raw: bytes
    message: Any
    content_type: str = ""


@dataclass
class ProtoSpan:
    """A received span, flattened for assertions."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    resource: dict[str, Any]
    events: list[str] = field(default_factory=list)


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class _Store:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()

    def add(self, r: Received) -> None:
        with self._lock:
            self.received.append(r)

    @property
    def raw(self) -> bytes:
        with self._lock:
            return b"".join(r.raw for r in self.received)

    def spans(self) -> list[ProtoSpan]:
        out = []
        with self._lock:
            reqs = [r.message for r in self.received if r.signal == "traces"]
        for req in reqs:
            for rs in req.resource_spans:
                res = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            ProtoSpan(
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_id=s.parent_span_id.hex(),
                                kind=s.kind,
                                attributes=_attrs(s.attributes),
                                status_code=s.status.code,
                                resource=res,
                                events=[e.name for e in s.events],
                            )
                        )
        return out

    def metric_names(self) -> set[str]:
        names = set()
        with self._lock:
            reqs = [r.message for r in self.received if r.signal == "metrics"]
        for req in reqs:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    names.update(m.name for m in sm.metrics)
        return names

    def metrics(self, name: str) -> list[Any]:
        with self._lock:
            reqs = [r.message for r in self.received if r.signal == "metrics"]
        return [
            m
            for req in reqs
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
        ]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


# -- OTLP/HTTP ------------------------------------------------------------------------

_MESSAGES = {
    "/v1/traces": ("traces", trace_service_pb2.ExportTraceServiceRequest),
    "/v1/metrics": ("metrics", metrics_service_pb2.ExportMetricsServiceRequest),
}


class HttpReceiver(_Store):
    """OTLP/HTTP on 127.0.0.1 (a random port)."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                enc = (self.headers.get("Content-Encoding") or "").lower()
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                ctype = self.headers.get("Content-Type") or ""
                target = _MESSAGES.get(self.path)
                if target is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                signal, cls = target
                try:
                    if "json" in ctype:
                        msg = json_format.Parse(body.decode("utf-8"), cls())
                    else:
                        msg = cls.FromString(body)
                except Exception as exc:  # a malformed body is the test's failure
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(str(exc).encode())
                    return
                store.add(Received(signal, body, msg, ctype))
                reply = b"{}" if "json" in ctype else b""
                self.send_response(200)
                self.send_header(
                    "Content-Type",
                    "application/json" if "json" in ctype else "application/x-protobuf",
                )
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- OTLP/gRPC ------------------------------------------------------------------------


class GrpcReceiver(_Store):
    """OTLP/gRPC (``grpc.aio``) on 127.0.0.1, on its own thread and loop."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("gRPC receiver did not start")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        import grpc

        store = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                store.add(Received("traces", request.SerializeToString(), request))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                store.add(Received("metrics", request.SerializeToString(), request))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=1)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


# -- an OpenAI-compatible model server answering from a script --------------------------


class ScriptedOpenAIServer:
    """``POST /v1/chat/completions`` answered by a :class:`ScriptedModel`, in the OpenAI
    wire format, so a real ``LLMProvider`` (with its ``chat`` spans) talks to it. Keeps
    the ``Authorization`` headers it saw."""

    def __init__(self, script: list[Any], model: str = "scripted-model") -> None:
        self.model = ScriptedModel(script, model=model)
        self.authorizations: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.authorizations.append(self.headers.get("Authorization") or "")
                outer.bodies.append(body)
                resp = asyncio.run(outer.model.call(body["messages"]))
                message: dict[str, Any] = {"role": "assistant", "content": resp.content or None}
                if resp.tool_calls:
                    message["tool_calls"] = [tc.to_wire() for tc in resp.tool_calls]
                data = json.dumps(
                    {
                        "id": resp.id,
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": resp.model,
                        "choices": [
                            {"index": 0, "message": message, "finish_reason": resp.finish_reason}
                        ],
                        "usage": {
                            "prompt_tokens": resp.usage.prompt_tokens,
                            "completion_tokens": resp.usage.completion_tokens,
                            "total_tokens": resp.usage.total_tokens,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
