"""The run's trace file written by Rust (``NativeFileSpanProcessor``): the same bytes as
the Python encoder on the same spans, every attribute type included; flush, shutdown,
drops and write errors; what a killed process leaves; ``setup()`` installing it."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from loom._core import SpanExporter
from loom.telemetry import setup
from loom.telemetry.exporters import OtlpJsonFileExporter
from loom.telemetry.fast_spans import LoomSpan, fast_tracer
from loom.telemetry.native_export import NativeFileSpanProcessor
from loom.telemetry.otlp_json import read_spans, request_json

#: One batch for everything, and no write before the flush.
ONE_BATCH = {
    "max_queue_size": 100_000,
    "max_export_batch_size": 100_000,
    "schedule_delay_millis": 10_000_000,
}


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def python_line(spans: list[ReadableSpan]) -> bytes:
    """What ``OtlpJsonFileExporter`` writes for one batch (its file's error handler)."""
    return (request_json(spans) + "\n").encode("utf-8", "backslashreplace")


def native_bytes(tmp_path: Path, spans: list[ReadableSpan], name: str = "n.jsonl") -> bytes:
    proc = NativeFileSpanProcessor(tmp_path / name, **ONE_BATCH)  # type: ignore[arg-type]
    for span in spans:
        proc.on_end(span)
    assert proc.force_flush()
    proc.shutdown()
    return (tmp_path / name).read_bytes()


RESOURCE = Resource.create({"service.name": "enc", "n": 3, "ok": True})
SCOPE = InstrumentationScope("loom", "1.2.3", "https://schema/s", {"scope.attr": "x"})
OTHER_SCOPE = InstrumentationScope("loom.llm")
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
LOCAL = SpanContext(1, 2, False, TraceFlags(1), TraceState([("k", "v"), ("a", "b")]))

ODD_VALUES: dict[str, Any] = {
    "s": "text ✓ 😀 ünï",
    "quotes": 'a "b" \\ c\n\r\t\b\f\x00\x1f\x7f',
    "surrogate": "cut \udc80 here \ud83d",
    "pair as two": "\ud83d\ude00",
    "empty": "",
    "t": True,
    "f": False,
    "i": 2**40,
    "neg": -7,
    "big": 2**70,
    "zero": 0,
    "float": 0.25,
    "negzero": -0.0,
    "e16": 1e16,
    "e-5": 1e-5,
    "tiny": 5e-324,
    "max": 1.7976931348623157e308,
    "third": 1 / 3,
    "inf": math.inf,
    "-inf": -math.inf,
    "nan": math.nan,
    "strs": ("a", "b\udc80"),
    "ints": (1, 2, 3),
    "floats": [0.5, 1e100],
    "bools": (True, False),
    "no items": (),
    "bytes": b"\x00\xffab",
    "kv": {"inner": 1, "deeper": {"x": [1, "y"]}},
    "no kv": {},
    "none": None,
    "a long string value over forty-eight characters, cached or not": "x" * 200,
    "key \udc81 with a surrogate": "v",
}


def handmade_spans() -> list[ReadableSpan]:
    """ReadableSpans built directly: any attribute value, both scopes, no scope,
    remote and local parents, events, links, every status, dropped counts."""
    other_resource = Resource({"service.name": "other"}, "https://schema/r")
    spans = []
    for i, (parent, scope, status, res) in enumerate(
        [
            (None, SCOPE, Status(StatusCode.UNSET), RESOURCE),
            (REMOTE, SCOPE, Status(StatusCode.ERROR, "boom \udc80"), RESOURCE),
            (LOCAL, OTHER_SCOPE, Status(StatusCode.OK), RESOURCE),
            (LOCAL, None, Status(StatusCode.ERROR), other_resource),
            (None, SCOPE, Status(StatusCode.ERROR, ""), RESOURCE),
        ]
    ):
        ctx = SpanContext(
            0xFFFF0000 + i, 0xABC0 + i, False, TraceFlags(1), LOCAL.trace_state if i else None
        )
        spans.append(
            ReadableSpan(
                name=f"span {i} ✓",
                context=ctx,
                parent=parent,
                resource=res,
                attributes=dict(ODD_VALUES) if i != 3 else {},
                events=[
                    Event("retry", {"retry.attempt": 1, "delay": 0.5}, timestamp=123 + i),
                    Event("bare", None, timestamp=5),
                ]
                if i % 2 == 0
                else (),
                links=[Link(REMOTE, {"why": "link"}), Link(LOCAL)] if i in (0, 3) else (),
                kind=list(SpanKind)[i % 5],
                status=status,
                start_time=1_700_000_000_000_000_000 + i,
                end_time=1_700_000_000_000_000_500 + i,
                instrumentation_scope=scope,
            )
        )
    return spans


def test_handmade_spans_are_written_as_the_python_encoder_writes_them(tmp_path: Path) -> None:
    spans = handmade_spans()
    assert native_bytes(tmp_path, spans) == python_line(spans)
    # And it is a file `loom trace` reads back: the surrogates survive.
    back = {s.name: s for s in read_spans(tmp_path / "n.jsonl")}
    assert back["span 0 ✓"].attributes["surrogate"] == "cut \udc80 here \ud83d"
    assert back["span 0 ✓"].attributes["pair as two"] == "😀"
    assert back["span 1 ✓"].status_message == "boom \udc80"


def test_sdk_spans_with_bounded_attributes_and_dropped_counts(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import SpanLimits

    keep = Keep()
    provider = TracerProvider(
        resource=RESOURCE, span_limits=SpanLimits(max_attributes=3, max_events=1, max_links=1)
    )
    provider.add_span_processor(keep)
    tracer = provider.get_tracer("sdk", "9")
    with tracer.start_as_current_span(
        "root",
        attributes={"a": 1, "b": "x", "c": 2.5, "d": [1, 2]},
        links=[Link(REMOTE), Link(LOCAL)],
    ) as root:
        root.add_event("one", {"k": "v", "k2": 1, "k3": 2, "k4": 3})
        root.add_event("two")
        try:
            with tracer.start_as_current_span("child", kind=SpanKind.CLIENT):
                raise ValueError("bad \udc80")
        except ValueError:
            pass
    provider.shutdown()
    spans = keep.spans
    assert spans[1].dropped_attributes and spans[1].dropped_events and spans[1].dropped_links
    assert native_bytes(tmp_path, spans) == python_line(spans)


def test_loom_spans_take_the_direct_path_with_the_same_result(tmp_path: Path) -> None:
    keep = Keep()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(keep)
    tracer = fast_tracer(provider.get_tracer("loom", "0.1"))
    assert tracer is not None
    root = tracer.start_span("invoke_workflow w", SpanKind.INTERNAL, dict(ODD_VALUES))
    root.add_event("retry", {"n": 1})
    root.add_link(REMOTE, {"why": "x"})
    root.set_status(Status(StatusCode.ERROR, "failed"))
    root.end()
    for i in range(50):
        span = tracer.start_span(
            f"execute_tool t{i}", SpanKind.INTERNAL, {"gen_ai.tool.name": f"t{i}", "n": i}
        )
        span.end()
    provider.shutdown()
    spans = keep.spans
    assert all(type(s) is LoomSpan for s in spans)
    assert native_bytes(tmp_path, spans) == python_line(spans)


def test_random_floats_and_ints_match(tmp_path: Path) -> None:
    rng = random.Random(14)
    attrs: dict[str, Any] = {}
    for i in range(3000):
        bits = rng.getrandbits(64)
        (f,) = struct.unpack("<d", bits.to_bytes(8, "little"))
        attrs[f"f{i}"] = f
        attrs[f"g{i}"] = rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30)
        attrs[f"i{i}"] = rng.randint(-(2**63), 2**63 - 1)
    span = ReadableSpan(
        name="floats",
        context=SpanContext(1, 1, False, TraceFlags(1)),
        resource=RESOURCE,
        attributes=attrs,
        start_time=1,
        end_time=2,
    )
    assert native_bytes(tmp_path, [span]) == python_line([span])


def test_unsampled_spans_are_skipped(tmp_path: Path) -> None:
    span = ReadableSpan(
        name="x", context=SpanContext(1, 1, False, TraceFlags(0)), resource=RESOURCE
    )
    proc = NativeFileSpanProcessor(tmp_path / "n.jsonl", **ONE_BATCH)  # type: ignore[arg-type]
    proc.on_end(span)
    proc.shutdown()
    assert proc.stats()["accepted"] == 0
    assert not (tmp_path / "n.jsonl").exists()


def test_flush_writes_what_ended_before_it_and_shutdown_closes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.jsonl"
    proc = NativeFileSpanProcessor(path, **ONE_BATCH)  # type: ignore[arg-type]
    spans = handmade_spans()
    proc.on_end(spans[0])
    assert not path.exists(), "nothing is written before the delay or a flush"
    assert proc.force_flush()
    assert [s.name for s in read_spans(path)] == [spans[0].name]
    proc.on_end(spans[1])
    proc.on_end(spans[2])
    proc.shutdown()  # writes what is queued
    assert [s.name for s in read_spans(path)] == [s.name for s in spans[:3]]
    assert len(path.read_text().splitlines()) == 2  # one line per batch
    proc.on_end(spans[3])  # refused after shutdown, and counted
    assert proc.dropped == 1
    assert proc.force_flush() is False
    proc.shutdown()  # idempotent
    assert proc.stats()["exported"] == 3 == proc.exported


def test_the_schedule_delay_writes_without_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    proc = NativeFileSpanProcessor(path, schedule_delay_millis=20)
    proc.on_end(handmade_spans()[0])
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(read_spans(path)) == 1
    proc.shutdown()


def test_a_full_queue_drops_counts_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The file is a FIFO nobody reads yet: the writer blocks opening it with its first
    # batch, so the queue fills up and the rest is dropped.
    path = tmp_path / "run.jsonl"
    os.mkfifo(path)
    proc = NativeFileSpanProcessor(
        path, max_queue_size=10, max_export_batch_size=10, schedule_delay_millis=10_000_000
    )
    span = handmade_spans()[3]
    with caplog.at_level(logging.WARNING, logger="loom.telemetry"):
        for _ in range(100):
            proc.on_end(span)
    assert proc.dropped >= 80
    warnings = [r for r in caplog.records if "Queue full" in r.getMessage()]
    assert len(warnings) == 1
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(path.read_bytes()))
    reader.start()
    assert proc.force_flush()
    proc.shutdown()
    reader.join(10)
    written = sum(
        len(ss["spans"])
        for line in b"".join(chunks).decode().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
    )
    stats = proc.stats()
    assert stats["dropped"] == proc.dropped == 100 - written
    assert stats["accepted"] == 100 and stats["exported"] == written


def test_write_errors_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "run.jsonl"
    path.mkdir()  # a directory where the file should be
    proc = NativeFileSpanProcessor(path, **ONE_BATCH)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="loom.telemetry"):
        proc.on_end(handmade_spans()[0])
        assert proc.force_flush()
    proc.shutdown()
    assert any("cannot write spans to" in r.getMessage() for r in caplog.records)
    assert proc.stats()["failed"] == 1


def test_a_value_that_cannot_be_converted_drops_only_that_span(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nested: list[Any] = []
    nested.append(nested)  # a list holding itself
    bad = ReadableSpan(
        name="bad", context=SpanContext(1, 1, False, TraceFlags(1)), attributes={"x": nested}
    )
    good = handmade_spans()[0]
    proc = NativeFileSpanProcessor(tmp_path / "run.jsonl", **ONE_BATCH)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="loom.telemetry"):
        proc.on_end(bad)
        proc.on_end(good)
    proc.shutdown()
    assert proc.dropped == 1 and "cannot export span 'bad'" in caplog.text
    assert [s.name for s in read_spans(tmp_path / "run.jsonl")] == [good.name]


def test_the_python_exporter_still_writes_the_same_file(tmp_path: Path) -> None:
    spans = handmade_spans()
    exporter = OtlpJsonFileExporter(tmp_path / "py.jsonl")
    bsp = BatchSpanProcessor(exporter, max_export_batch_size=100, schedule_delay_millis=10_000_000)
    for span in spans:
        bsp.on_end(span)
    bsp.shutdown()
    assert (tmp_path / "py.jsonl").read_bytes() == native_bytes(tmp_path, spans)


def test_setup_uses_it_for_the_file_exporter_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
    handle = setup({"exporters": ["file", "console"], "trace_dir": str(tmp_path), "metrics": False})
    try:
        assert handle.tracer_provider is not None
        processors = handle.tracer_provider._active_span_processor._span_processors
        assert [type(p).__name__ for p in processors] == [
            "NativeFileSpanProcessor",
            "BatchSpanProcessor",
        ]
        native = processors[0]
        assert isinstance(native, NativeFileSpanProcessor)
        assert native._config["max_queue_size"] == 64
        assert native._config["max_export_batch_size"] == 8
        assert native.path == handle.trace_file
    finally:
        handle.shutdown()


def test_setup_keeps_the_deep_queue_without_the_variable(tmp_path: Path) -> None:
    from loom.telemetry.setup import FILE_QUEUE_SIZE

    handle = setup({"exporters": ["file"], "trace_dir": str(tmp_path), "metrics": False})
    try:
        assert handle.tracer_provider is not None
        (native,) = handle.tracer_provider._active_span_processor._span_processors
        assert native._config["max_queue_size"] == FILE_QUEUE_SIZE  # type: ignore[attr-defined]
    finally:
        handle.shutdown()


def test_invalid_batch_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        NativeFileSpanProcessor(tmp_path / "x", max_queue_size=4, max_export_batch_size=8)
    with pytest.raises(ValueError):
        NativeFileSpanProcessor(tmp_path / "x", schedule_delay_millis=0)


CHILD = textwrap.dedent(
    """
    import sys, time
    from loom.telemetry import setup
    handle = setup({"exporters": ["file"], "trace_dir": sys.argv[1], "metrics": False},
                   run_id="killed")
    tracer = handle.tracer_provider.get_tracer("loom")
    for i in range(200):
        with tracer.start_as_current_span(f"before {i}", attributes={"pad": "x" * 500}):
            pass
    handle.force_flush()
    print("flushed", flush=True)
    i = 0
    while True:  # spans until killed, written every few ms
        with tracer.start_as_current_span(f"after {i}", attributes={"pad": "x" * 500}):
            pass
        i += 1
    """
)


def test_a_killed_process_leaves_a_readable_file(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "2", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"flushed"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    path = tmp_path / "killed.jsonl"
    spans = read_spans(path)  # a torn last line is skipped, every other line parses
    names = [s.name for s in spans]
    assert names[:200] == [f"before {i}" for i in range(200)]
    assert any(n.startswith("after ") for n in names), "batches were written until the kill"
    for line in path.read_text().split("\n")[:-2]:
        json.loads(line)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_writer(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    proc = NativeFileSpanProcessor(path, **ONE_BATCH)  # type: ignore[arg-type]
    spans = handmade_spans()
    proc.on_end(spans[0])
    pid = os.fork()
    if pid == 0:  # the child: its spans go to the same file through a fresh thread
        try:
            proc.on_end(spans[1])
            proc.shutdown()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    proc.shutdown()
    assert sorted(s.name for s in read_spans(path)) == sorted([spans[0].name, spans[1].name])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_drop_its_parents_writers_and_start_its_own(tmp_path: Path) -> None:
    # In the child the parent's writer threads do not exist: glibc hands their
    # descriptors and stacks to the child's new threads, so a parent-era handle joined
    # or detached there acted on a new writer (its join failed with EINVAL, the heap was
    # corrupted), and a process-wide table of parked threads (parking_lot's) still
    # listed them (a new writer crashed in a condition variable's notify). The child
    # drops every parent-era exporter while starting and stopping new ones.
    parents = [SpanExporter(tmp_path / f"parent-{i}.jsonl") for i in range(4)]
    spans = handmade_spans()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = True
            for i in range(8):
                proc = NativeFileSpanProcessor(tmp_path / f"child-{i}.jsonl", **ONE_BATCH)  # type: ignore[arg-type]
                if parents:
                    # A forked copy: refused at once (its thread is the parent's).
                    t0 = time.monotonic()
                    refused = not parents.pop().shutdown(30_000.0)
                    ok = ok and refused and time.monotonic() - t0 < 5
                    gc.collect()
                proc.on_end(spans[i % len(spans)])
                proc.shutdown()
                ok = ok and proc.dropped == 0
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(8):
        (line,) = (tmp_path / f"child-{i}.jsonl").read_bytes().splitlines()
        assert [s.name for s in read_spans(tmp_path / f"child-{i}.jsonl")] == [
            spans[i % len(spans)].name
        ], line
    for p in parents:  # the parent's own are untouched
        assert p.shutdown(30_000.0)
