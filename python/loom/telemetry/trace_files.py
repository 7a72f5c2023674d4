"""The runs' trace files (``.loom/traces/<run-id>.jsonl``): finding them, summing them
up, and turning their spans into Jaeger JSON — for ``loom trace`` and the dashboard."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.telemetry.otlp_json import SPAN_KINDS, SpanData

#: A run's trace file is ``<run-id>`` + this.
TRACE_SUFFIX = ".jsonl"
#: Its metrics file (not a trace file).
METRICS_SUFFIX = ".metrics.jsonl"


def run_files(directory: Path) -> list[Path]:
    """Trace files in ``directory`` (metrics files excluded), newest first."""
    if not directory.is_dir():
        return []
    files = [
        p
        for p in directory.iterdir()
        if p.name.endswith(TRACE_SUFFIX) and not p.name.endswith(METRICS_SUFFIX) and p.is_file()
    ]
    # Run ids start with a UTC timestamp (to the second), so it orders runs; within a
    # second the file written last is the newer run (the suffix is random).
    return sorted(
        files, key=lambda p: (p.name.split("-", 1)[0], p.stat().st_mtime_ns), reverse=True
    )


@dataclass
class RunSummary:
    """One line of ``loom trace list``."""

    run_id: str
    path: Path
    spans: int
    traces: int
    start_ns: int
    end_ns: int
    errors: int
    root: str

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


def summarize(path: Path, spans: Sequence[SpanData]) -> RunSummary:
    """Counts, time span and root of a run."""
    ids = {s.span_id for s in spans}
    roots = sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns)
    return RunSummary(
        run_id=path.name[: -len(TRACE_SUFFIX)] if path.name.endswith(TRACE_SUFFIX) else path.stem,
        path=path,
        spans=len(spans),
        traces=len({s.trace_id for s in spans}),
        start_ns=min((s.start_ns for s in spans), default=0),
        end_ns=max((s.end_ns for s in spans), default=0),
        errors=sum(1 for s in spans if s.error),
        root=roots[0].name if roots else "",
    )


def span_cost(attrs: Mapping[str, Any]) -> float | None:
    """The cost in USD an LLM span records, if any."""
    for key in ("llm.cost.usd", "loom.cost.usd", "gen_ai.usage.cost"):
        v = attrs.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _jaeger_tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    return {"key": key, "type": "string", "value": json.dumps(value, default=str)}


def to_jaeger(spans: Sequence[SpanData]) -> dict[str, Any]:
    """Spans as the JSON the Jaeger UI's "Upload JSON" (and its ``/api/traces``)
    uses: ``{"data": [{"traceID", "spans", "processes"}]}``; times in microseconds."""
    data = []
    by_trace: dict[str, list[SpanData]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    for trace_id, group in by_trace.items():
        processes: dict[str, dict[str, Any]] = {}
        proc_of: dict[str, str] = {}
        out_spans = []
        for s in sorted(group, key=lambda x: x.start_ns):
            key = json.dumps(s.resource, sort_keys=True, default=str)
            if key not in proc_of:
                pid = f"p{len(proc_of) + 1}"
                proc_of[key] = pid
                processes[pid] = {
                    "serviceName": s.service,
                    "tags": [
                        _jaeger_tag(k, v) for k, v in s.resource.items() if k != "service.name"
                    ],
                }
            tags = [_jaeger_tag(k, v) for k, v in s.attributes.items()]
            kind = SPAN_KINDS.get(s.kind, "")
            if kind and kind not in ("unspecified", "internal"):
                tags.append(_jaeger_tag("span.kind", kind))
            if s.scope:
                tags.append(_jaeger_tag("otel.scope.name", s.scope))
            if s.status_code == 1:
                tags.append(_jaeger_tag("otel.status_code", "OK"))
            elif s.error:
                tags.append(_jaeger_tag("otel.status_code", "ERROR"))
                tags.append(_jaeger_tag("error", True))
                if s.status_message:
                    tags.append(_jaeger_tag("otel.status_description", s.status_message))
            refs = []
            if s.parent_id:
                refs.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": s.parent_id})
            for link_trace, link_span in s.links:
                refs.append({"refType": "FOLLOWS_FROM", "traceID": link_trace, "spanID": link_span})
            out_spans.append(
                {
                    "traceID": trace_id,
                    "spanID": s.span_id,
                    "operationName": s.name,
                    "references": refs,
                    "startTime": s.start_ns // 1000,
                    "duration": s.duration_ns // 1000,
                    "tags": tags,
                    "logs": [
                        {
                            "timestamp": e.time_ns // 1000,
                            "fields": [
                                _jaeger_tag("event", e.name),
                                *(_jaeger_tag(k, v) for k, v in e.attributes.items()),
                            ],
                        }
                        for e in s.events
                    ],
                    "processID": proc_of[key],
                    "warnings": None,
                    "flags": 1,
                }
            )
        data.append(
            {"traceID": trace_id, "spans": out_spans, "processes": processes, "warnings": None}
        )
    return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}


__all__ = [
    "METRICS_SUFFIX",
    "TRACE_SUFFIX",
    "RunSummary",
    "run_files",
    "span_cost",
    "summarize",
    "to_jaeger",
]
