"""``loom trace``: the runs' OTLP/JSON trace files, without a tracing backend.

    loom trace list                      runs, newest first
    loom trace show [RUN]                one run as a tree (default: the newest)
    loom trace export [RUN] [-o FILE]    Jaeger JSON (the Jaeger UI's "Upload JSON")
    loom trace send FILE --endpoint URL  POST to an OTLP/HTTP endpoint (JSON body)

RUN is a run id (or a unique prefix of one) or a path to a ``.jsonl`` file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from loom._text import escape_line
from loom.telemetry.otlp_json import SPAN_KINDS, SpanData, merge_requests, read_spans
from loom.telemetry.trace_files import (
    TRACE_SUFFIX,
    run_files,
    span_cost,
    summarize,
    to_jaeger,
)

_SUFFIX = TRACE_SUFFIX


def add_parser(sub: Any) -> None:
    p = sub.add_parser("trace", help="list, show, export and send the traces of runs")
    p.add_argument(
        "--dir",
        help="trace directory (default: [telemetry] trace_dir of ./loom.toml, else ./.loom/traces)",
    )
    tsub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)

    ls = tsub.add_parser("list", help="runs, newest first")
    ls.add_argument("-n", "--limit", type=int, default=20, help="at most N runs (default 20)")
    ls.set_defaults(func=cmd_list)

    show = tsub.add_parser("show", help="one run as a tree")
    show.add_argument("run", nargs="?", help="run id, unique prefix, or .jsonl path")
    show.add_argument("--attrs", action="store_true", help="print every span attribute")
    show.set_defaults(func=cmd_show)

    ex = tsub.add_parser("export", help="a run as Jaeger JSON (or merged OTLP/JSON)")
    ex.add_argument("run", nargs="?", help="run id, unique prefix, or .jsonl path")
    ex.add_argument(
        "--format",
        choices=("jaeger", "otlp"),
        default="jaeger",
        help="jaeger: for the Jaeger UI's upload; otlp: one ExportTraceServiceRequest "
        "(for Jaeger's /api/transform or any OTLP/JSON consumer)",
    )
    ex.add_argument("-o", "--output", help="write here instead of stdout")
    ex.set_defaults(func=cmd_export)

    send = tsub.add_parser("send", help="POST a trace file to an OTLP/HTTP endpoint")
    send.add_argument("file", help="run id, unique prefix, or .jsonl path")
    send.add_argument(
        "--endpoint",
        required=True,
        help="OTLP/HTTP base URL (http://localhost:4318) or full traces URL (.../v1/traces)",
    )
    send.add_argument(
        "--header", action="append", default=[], metavar="K=V", help="extra HTTP header"
    )
    send.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    send.set_defaults(func=cmd_send)


class TraceError(Exception):
    """A run cannot be found or read (the message is for the user)."""


# -- finding runs -----------------------------------------------------------------------


def trace_dir(explicit: str | None) -> Path:
    """``--dir``, else ``[telemetry] trace_dir`` of ./loom.toml, else ./.loom/traces."""
    if explicit:
        return Path(explicit)
    toml = Path("loom.toml")
    if toml.is_file():
        from loom.config import load_project_config
        from loom.errors import ConfigError
        from loom.telemetry.setup import resolve_settings

        try:
            return resolve_settings(load_project_config(toml)).trace_dir
        except ConfigError:
            pass
    return Path(".loom") / "traces"


def find_run(directory: Path, run: str | None) -> Path:
    """The file of ``run`` (id, prefix or path; None: the newest run)."""
    if run:
        p = Path(run)
        if p.suffix == ".jsonl" and p.is_file():
            return p
    files = run_files(directory)
    if not files:
        raise TraceError(f"no runs in {directory} (run `loom run` first)")
    if not run:
        return files[0]
    exact = [f for f in files if f.name[: -len(_SUFFIX)] == run]
    if exact:
        return exact[0]
    matches = [f for f in files if f.name.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise TraceError(f"no run {run!r} in {directory}")
    names = ", ".join(f.name[: -len(_SUFFIX)] for f in matches[:5])
    raise TraceError(f"{run!r} matches several runs: {names}")


def load(path: Path) -> list[SpanData]:
    try:
        return read_spans(path)
    except (OSError, ValueError) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None


# -- summaries --------------------------------------------------------------------------


def fmt_duration(ns: int) -> str:
    """``0.42 ms``, ``12.3 ms``, ``1.23 s``, ``2m05s``."""
    ms = ns / 1e6
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.2f} s"
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def fmt_time(ns: int) -> str:
    if not ns:
        return "-"
    t = _dt.datetime.fromtimestamp(ns / 1e9).astimezone()
    return t.strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args: argparse.Namespace) -> int:
    directory = trace_dir(args.dir)
    files = run_files(directory)
    if not files:
        print(f"no runs in {directory}")
        return 0
    rows = []
    for f in files[: max(1, args.limit)]:
        try:
            s = summarize(f, read_spans(f))
        except (OSError, ValueError) as exc:
            print(escape_line(f"loom trace: skipping {f.name}: {exc}"), file=sys.stderr)
            continue
        rows.append(
            (
                s.run_id,
                fmt_time(s.start_ns),
                str(s.spans),
                fmt_duration(s.duration_ns) if s.spans else "-",
                str(s.errors) if s.errors else "-",
                s.root,
            )
        )
    header = ("RUN", "STARTED", "SPANS", "DURATION", "ERRORS", "ROOT")
    _table(sys.stdout, header, rows)
    if len(files) > args.limit:
        print(f"({len(files) - args.limit} older runs not shown; -n to see more)")
    return 0


def _table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [[escape_line(c) for c in r] for r in rows]  # run ids and span names
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


# -- the tree ---------------------------------------------------------------------------


def _details(s: SpanData) -> list[str]:
    a = s.attributes
    out: list[str] = []
    tin, tout = a.get("gen_ai.usage.input_tokens"), a.get("gen_ai.usage.output_tokens")
    if tin is not None or tout is not None:
        out.append(
            f"tokens {tin if tin is not None else '?'} in / {tout if tout is not None else '?'} out"
        )
    cost = span_cost(a)
    if cost:
        out.append(f"${cost:.4f}")
    if a.get("loom.tool.outcome") not in (None, "ok"):
        out.append(f"outcome {a['loom.tool.outcome']}")
    if "loom.process.exit_code" in a:
        out.append(f"exit {a['loom.process.exit_code']}")
    if a.get("loom.process.killed"):
        out.append(f"killed {a['loom.process.killed']}")
    if s.events:
        retries = sum(1 for e in s.events if e.name == "retry")
        if retries:
            out.append(f"{retries} retr{'y' if retries == 1 else 'ies'}")
    return out


def _glyphs(out: TextIO) -> tuple[str, str, str, str, str]:
    enc = (getattr(out, "encoding", None) or "").lower()
    if "utf" in enc:
        return "├─ ", "└─ ", "│  ", "   ", "✗"
    return "|- ", "`- ", "|  ", "   ", "x"


def render_tree(spans: Sequence[SpanData], out: TextIO, *, attrs: bool = False) -> None:
    """Writes ``spans`` as one tree per trace: name, duration, offset from the trace
    start, kind, tokens, cost, errors."""
    by_trace: dict[str, list[SpanData]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    for group in sorted(by_trace.values(), key=lambda ss: min(s.start_ns for s in ss)):
        _render_trace(group, out, attrs)


def _render_trace(group: Sequence[SpanData], out: TextIO, attrs: bool) -> None:
    tee, elbow, pipe, blank, cross = _glyphs(out)
    ids = {s.span_id for s in group}
    children: dict[str, list[SpanData]] = {}
    roots = []
    for s in group:
        if s.parent_id and s.parent_id in ids:
            children.setdefault(s.parent_id, []).append(s)
        else:
            roots.append(s)
    t0 = min(s.start_ns for s in group)
    t1 = max(s.end_ns for s in group)
    out.write(
        escape_line(
            f"trace {group[0].trace_id}  service {group[0].service}  "
            f"{len(group)} spans  {fmt_duration(t1 - t0)}"
        )
        + "\n"
    )
    missing = [r for r in roots if r.parent_id]
    if missing:
        out.write(f"  ({len(missing)} span(s) whose parent is not in this file)\n")

    def walk(s: SpanData, prefix: str, last: bool, top: bool) -> None:
        mark = "" if top else (elbow if last else tee)
        kind = SPAN_KINDS.get(s.kind, "")
        bits = [s.name, fmt_duration(s.duration_ns), f"@+{fmt_duration(s.start_ns - t0)}"]
        if kind in ("client", "producer", "consumer", "server"):
            bits.append(kind)
        bits.extend(_details(s))
        if s.error:
            why = s.status_message or str(s.attributes.get("error.type", ""))
            bits.append(f"{cross} ERROR{': ' + why if why else ''}")
        # Span names, error messages and attributes carry model-chosen text.
        out.write(escape_line(f"{prefix}{mark}{'  '.join(bits)}") + "\n")
        inner = prefix + ("" if top else (blank if last else pipe))
        kids = sorted(children.get(s.span_id, []), key=lambda c: c.start_ns)
        if attrs:
            bar = pipe if kids else blank
            for k, v in sorted(s.attributes.items()):
                out.write(escape_line(f"{inner}{bar}  {k} = {v!r}") + "\n")
        for i, c in enumerate(kids):
            walk(c, inner, i == len(kids) - 1, False)

    for r in sorted(roots, key=lambda s: s.start_ns):
        walk(r, "", True, True)
    errors = sum(1 for s in group if s.error)
    tin = sum(_int(s.attributes.get("gen_ai.usage.input_tokens")) for s in group)
    tout = sum(_int(s.attributes.get("gen_ai.usage.output_tokens")) for s in group)
    cost = sum(span_cost(s.attributes) or 0.0 for s in group)
    total = [f"{errors} error(s)"]
    if tin or tout:
        total.append(f"tokens {tin} in / {tout} out")
    if cost:
        total.append(f"cost ${cost:.4f}")
    out.write("  ".join(total) + "\n\n")


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        path = find_run(trace_dir(args.dir), args.run)
        spans = load(path)
    except TraceError as exc:
        print(f"loom trace: {escape_line(str(exc))}", file=sys.stderr)
        return 1
    s = summarize(path, spans)
    print(escape_line(f"run {s.run_id}  started {fmt_time(s.start_ns)}  ({path})"))
    if not spans:
        print("no spans")
        return 0
    render_tree(spans, sys.stdout, attrs=args.attrs)
    return 0


# -- Jaeger JSON ------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    try:
        path = find_run(trace_dir(args.dir), args.run)
        if args.format == "jaeger":
            doc = to_jaeger(load(path))
        else:
            doc = merge_requests(path)
    except (TraceError, OSError) as exc:
        print(f"loom trace: {escape_line(str(exc))}", file=sys.stderr)
        return 1
    text = json.dumps(doc, ensure_ascii=False)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text + "\n")
    return 0


# -- sending ----------------------------------------------------------------------------


def traces_url(endpoint: str) -> str:
    """``http://host:4318`` → ``http://host:4318/v1/traces``; a URL with a path is kept."""
    from urllib.parse import urlsplit

    if urlsplit(endpoint).path.strip("/"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def cmd_send(args: argparse.Namespace) -> int:
    import httpx

    try:
        path = find_run(trace_dir(args.dir), args.file)
        # "\n" only: splitlines() would also cut at U+2028 inside a JSON string.
        lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
    except (TraceError, OSError) as exc:
        print(f"loom trace: {escape_line(str(exc))}", file=sys.stderr)
        return 1
    headers = {"Content-Type": "application/json"}
    for h in args.header:
        k, sep, v = h.partition("=")
        if not sep or not k.strip():
            print(f"loom trace: --header wants K=V, got {h!r}", file=sys.stderr)
            return 2
        headers[k.strip()] = v.strip()
    url = traces_url(args.endpoint)
    sent = rejected = 0
    with httpx.Client(timeout=args.timeout) as client:
        for i, line in enumerate(lines, 1):
            try:
                count = sum(
                    len(ss.get("spans") or [])
                    for rs in json.loads(line).get("resourceSpans") or []
                    for ss in rs.get("scopeSpans") or []
                )
            except json.JSONDecodeError:
                print(f"loom trace: {path}:{i}: not JSON, skipped", file=sys.stderr)
                continue
            try:
                r = client.post(url, content=line.encode("utf-8"), headers=headers)
            except httpx.HTTPError as exc:
                print(f"loom trace: POST {url}: {exc}", file=sys.stderr)
                return 1
            if r.status_code >= 300:
                print(
                    f"loom trace: POST {url}: HTTP {r.status_code}: {r.text[:300]}",
                    file=sys.stderr,
                )
                return 1
            sent += count
            rejected += _rejected(r)
    print(
        f"sent {sent} span(s) in {len(lines)} request(s) to {url}"
        + (f"; {rejected} rejected" if rejected else "")
    )
    return 0 if not rejected else 1


def _rejected(response: Any) -> int:
    """``partialSuccess.rejectedSpans`` of an OTLP/HTTP JSON response, if any."""
    try:
        body = response.json()
    except ValueError:
        return 0
    if isinstance(body, dict):
        partial = body.get("partialSuccess") or {}
        try:
            return int(partial.get("rejectedSpans") or 0)
        except (TypeError, ValueError):
            return 0
    return 0


__all__ = ["add_parser", "find_run", "render_tree", "run_files", "to_jaeger", "traces_url"]
