"""The dashboard's traces: the runs in ``.loom/traces/`` and the spans of the run in
progress, grouped into traces, searchable, as JSON for the waterfall and Jaeger."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from loom._secrets import redacted
from loom.telemetry.otlp_json import SPAN_KINDS, SpanData, decode_request, encode_request
from loom.telemetry.otlp_json import read_spans as _read_spans
from loom.telemetry.trace_files import TRACE_SUFFIX, run_files, span_cost

if TYPE_CHECKING:
    from opentelemetry.context import Context

#: Spans of the run in progress kept in memory (older ones are in its trace file).
LIVE_SPANS = 50_000
#: Runs listed (newest first).
MAX_RUNS = 200


class SpanBuffer(SpanProcessor):
    """A span processor that hands the spans of this process's run to the dashboard
    as they end (the trace file's exporter writes them in batches, seconds later)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ended: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._ended.append(span)
            if len(self._ended) > LIVE_SPANS:
                del self._ended[: len(self._ended) - LIVE_SPANS]

    def take(self) -> list[ReadableSpan]:
        """The spans ended since the last call."""
        with self._lock:
            out, self._ended = self._ended, []
        return out

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class _Cached:
    key: tuple[int, int]
    spans: list[SpanData]


class TraceLibrary:
    """The runs of one trace directory; ``live_run`` (with ``buffer``) is this
    process's own, whose newest spans are not in its file yet.

    Reading files blocks: call from a thread (the server does).
    """

    def __init__(
        self, directory: Path, live_run: str | None = None, buffer: SpanBuffer | None = None
    ) -> None:
        self.directory = directory
        self.live_run = live_run
        self._buffer = buffer
        self._live: deque[SpanData] = deque(maxlen=LIVE_SPANS)
        # Ended spans not converted yet (conversion waits until a page wants traces).
        self._raw: deque[ReadableSpan] = deque(maxlen=LIVE_SPANS)
        #: (sender, topic) -> events handled, from the live run's ``invoke_agent`` spans.
        self.edges: Counter[tuple[str, str]] = Counter()
        self._cache: dict[Path, _Cached] = {}
        self._lock = threading.Lock()

    def _file_spans(self, path: Path) -> list[SpanData]:
        try:
            st = path.stat()
        except OSError:
            return []
        key = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached.key == key:
            return cached.spans
        try:
            spans = _read_spans(path)
        except (OSError, ValueError):
            spans = []
        self._cache[path] = _Cached(key, spans)
        return spans

    def _take(self) -> None:
        if self._buffer is None:
            return
        fresh = self._buffer.take()
        for span in fresh:
            if span.name.startswith("invoke_agent ") and span.attributes:
                source = span.attributes.get("loom.event.source")
                topic = span.attributes.get("messaging.destination.name")
                if isinstance(source, str) and isinstance(topic, str):
                    self.edges[(source, topic)] += 1
        self._raw.extend(fresh)

    def live_edges(self) -> Counter[tuple[str, str]]:
        """Who sent to which topic in the live run (from its handlers' spans)."""
        with self._lock:
            self._take()
            return Counter(self.edges)

    def _live_spans(self) -> list[SpanData]:
        self._take()
        if self._raw:
            self._live.extend(decode_request(encode_request(list(self._raw))))
            self._raw.clear()
        return list(self._live)

    def spans(self, run_id: str) -> list[SpanData]:
        """Every span of ``run_id`` (file and, for the live run, memory), deduplicated."""
        with self._lock:
            path = self.directory / f"{run_id}{TRACE_SUFFIX}"
            found = self._file_spans(path) if path.parent == self.directory else []
            if run_id != self.live_run:
                return found
            seen = {s.span_id for s in found}
            return found + [s for s in self._live_spans() if s.span_id not in seen]

    def runs(self) -> list[dict[str, Any]]:
        """The runs, newest first, with counts and the live one marked."""
        names = [p.name[: -len(TRACE_SUFFIX)] for p in run_files(self.directory)[:MAX_RUNS]]
        if self.live_run and self.live_run not in names:
            names.insert(0, self.live_run)
        out = []
        for run_id in names:
            spans = self.spans(run_id)
            out.append(run_summary(run_id, spans, live=run_id == self.live_run))
        return out

    def traces(self, run_id: str, query: str = "") -> list[dict[str, Any]]:
        """The traces of a run matching ``query`` (see :func:`matches`), newest first,
        each with its spans as the waterfall draws them."""
        groups: dict[str, list[SpanData]] = {}
        for s in self.spans(run_id):
            groups.setdefault(s.trace_id, []).append(s)
        terms = parse_query(query)
        out = []
        for trace_id, spans in groups.items():
            if terms and not any(matches(s, terms) for s in spans):
                continue
            out.append(trace_json(trace_id, spans, terms))
        out.sort(key=lambda t: t["start"], reverse=True)
        return out

    def search(self, query: str, limit: int = 100) -> list[dict[str, Any]]:
        """Traces of any run with a span matching ``query``, newest first."""
        terms = parse_query(query)
        if not terms:
            return []
        found: list[dict[str, Any]] = []
        for run in self.runs():
            for t in self.traces(run["run_id"], query):
                summary = {k: v for k, v in t.items() if k != "spans"}
                found.append({"run_id": run["run_id"], **summary})
                if len(found) >= limit:
                    return found
        return found


def run_summary(run_id: str, spans: Sequence[SpanData], *, live: bool) -> dict[str, Any]:
    ids = {s.span_id for s in spans}
    roots = sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns)
    start = min((s.start_ns for s in spans), default=0)
    end = max((s.end_ns for s in spans), default=0)
    return {
        "run_id": run_id,
        "live": live,
        "spans": len(spans),
        "traces": len({s.trace_id for s in spans}),
        "errors": sum(1 for s in spans if s.error),
        "start": start,
        "duration": max(0, end - start),
        "root": roots[0].name if roots else "",
        "service": roots[0].service if roots else "",
    }


# -- search ------------------------------------------------------------------------------

#: ``key:value`` terms of a query and the span attributes they look at.
FIELDS: dict[str, tuple[str, ...]] = {
    "agent": ("gen_ai.agent.name", "loom.agent.id", "loom.agent"),
    "tool": ("gen_ai.tool.name",),
    "model": ("gen_ai.request.model", "gen_ai.response.model"),
    "topic": ("messaging.destination.name",),
}


def parse_query(query: str) -> list[tuple[str, str]]:
    """``agent:lead tool:fs:read error timeout`` → [(field, value), ...]; a bare word
    matches span names and attribute values; ``error`` (alone) failed spans."""
    terms = []
    for word in query.split():
        field, sep, value = word.partition(":")
        if sep and field.lower() in FIELDS and value:
            terms.append((field.lower(), value.lower()))
        elif word.lower() == "error":
            terms.append(("error", ""))
        else:
            terms.append(("", word.lower()))
    return terms


def matches(span: SpanData, terms: Sequence[tuple[str, str]]) -> bool:
    """Whether ``span`` satisfies every term."""
    for field, value in terms:
        if field == "error":
            if not span.error:
                return False
        elif field:
            values = [str(span.attributes.get(k, "")).lower() for k in FIELDS[field]]
            if not any(value in v for v in values):
                return False
        elif value not in span.name.lower() and not any(
            value in str(v).lower() for v in span.attributes.values()
        ):
            return False
    return True


# -- JSON for the page -------------------------------------------------------------------


def span_json(s: SpanData, terms: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    attrs = redacted(s.attributes)
    a = s.attributes
    return {
        "id": s.span_id,
        "parent": s.parent_id,
        "name": s.name,
        "kind": SPAN_KINDS.get(s.kind, ""),
        "start": s.start_ns,
        "end": s.end_ns,
        "error": s.error,
        "status": s.status_message,
        "service": s.service,
        "tokens_in": a.get("gen_ai.usage.input_tokens"),
        "tokens_out": a.get("gen_ai.usage.output_tokens"),
        "cost": span_cost(a),
        "match": bool(terms) and matches(s, terms),
        "attrs": attrs,
        "events": [
            {"name": e.name, "time": e.time_ns, "attrs": redacted(e.attributes)} for e in s.events
        ],
        "links": [{"trace": t, "span": sp} for t, sp in s.links],
    }


def trace_json(
    trace_id: str, spans: Sequence[SpanData], terms: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    ordered = sorted(spans, key=lambda s: s.start_ns)
    ids = {s.span_id for s in ordered}
    roots = [s for s in ordered if s.parent_id not in ids]
    start = ordered[0].start_ns if ordered else 0
    end = max((s.end_ns for s in ordered), default=0)
    return {
        "trace_id": trace_id,
        "root": roots[0].name if roots else "",
        "start": start,
        "duration": max(0, end - start),
        "errors": sum(1 for s in ordered if s.error),
        "tokens": sum(
            int(v)
            for s in ordered
            for k in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
            if isinstance(v := s.attributes.get(k), int) and not isinstance(v, bool)
        ),
        "cost": sum(span_cost(s.attributes) or 0.0 for s in ordered),
        "spans": [span_json(s, terms) for s in ordered],
    }


__all__ = ["LIVE_SPANS", "SpanBuffer", "TraceLibrary", "matches", "parse_query", "trace_json"]
