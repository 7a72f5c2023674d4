"""Running a whole project: what ``loom run`` does, usable from code and tests."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from loom._aio import stop_on_signals
from loom._core import Envelope
from loom._text import escape_block
from loom.agent import Agent
from loom.config import ProjectConfig
from loom.errors import ConfigError, LoomError, RequestTimeout
from loom.loader import build_agents
from loom.runtime import Runtime

if TYPE_CHECKING:
    from loom.dashboard.server import Dashboard
    from loom.dashboard.settings import DashboardSettings
    from loom.dashboard.traces import SpanBuffer
    from loom.telemetry import TelemetryHandle

log = logging.getLogger("loom.run")

#: Reply types that mean the job failed.
FAILURE_TYPES = frozenset({"error", "failed", "failure"})

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


@dataclass
class RunResult:
    """How a project run ended."""

    exit_code: int
    reply: Envelope | None = None
    message: str = ""
    #: The run's OTLP/JSON trace file (``loom trace show <run>``), when one was written.
    trace_file: Path | None = None


def _render(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("summary"), str):
        # A job that explains itself: print its summary, not the raw JSON.
        return str(payload["summary"])
    try:
        return json.dumps(payload, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(payload)


async def run_project(
    project: ProjectConfig,
    *,
    runtime: Runtime | None = None,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
    install_signal_handlers: bool = True,
    telemetry: bool | None = None,
    llm_provider: str | None = None,
    agents: Sequence[str] | None = None,
    send_job: bool | None = None,
    dashboard: bool | None = None,
) -> RunResult:
    """Starts every agent of ``project`` on one runtime. With a ``[job]``, sends it
    and returns when the reply arrives; otherwise runs until ``stop`` is set or
    SIGINT/SIGTERM arrives. Always stops the runtime cleanly.

    Telemetry: unless the caller already installed a tracer provider (or passes
    ``telemetry=False``), installs the one ``[telemetry]`` describes — by default the
    OTLP/JSON file ``.loom/traces/<run-id>.jsonl`` — and flushes it at the end. The
    whole run is one trace under an ``invoke_workflow {project}`` span.

    ``dashboard``: serve the dashboard (default: ``[dashboard] enabled``); its URL, with
    the token, is written to ``out`` (without ``out``, the address is logged); with a
    ``[job]`` the run then goes on until stopped, so the page can still be read.

    ``agents``: start only these (a project split over processes, ``loom run --agents
    a,b``). The ``[job]`` is sent when ``send_job`` is true, or by default when all
    agents run here; a process running some agents without the job runs until
    stopped.

    Raises:
        ConfigError: an invalid project (:meth:`Runtime.prepare`), tool or
            ``[telemetry]`` setting, or an unknown name in ``agents`` — before any
            agent starts.
    """
    from loom.dashboard.settings import dashboard_settings

    dash_settings = dashboard_settings(project)  # a bad [dashboard]: ConfigError now
    if dashboard is None:
        dashboard = dash_settings.enabled
    if send_job is None:
        send_job = agents is None and project.job is not None
    elif send_job and project.job is None:
        raise ConfigError("--job: the project has no [job] table", path=_path(project))
    from loom.telemetry import refresh_tracing_active
    from loom.telemetry.workflow_spans import end_project_run_span, project_run_span

    handle: TelemetryHandle | None = None
    if telemetry is None:
        telemetry = not refresh_tracing_active()
    if telemetry:
        from loom.telemetry import setup

        handle = setup(project)
    runtime = runtime or Runtime(project)
    if llm_provider:
        from loom.llm.config import resolve_config

        resolve_config(llm_provider, project)  # unknown name / unset key: ConfigError now
        runtime.llm_provider = llm_provider
    if handle is not None:
        handle.observe_bus(runtime)
    spans = _span_buffer(handle) if dashboard else None
    Runtime.set_default(runtime)
    stop = stop or asyncio.Event()
    runtime.stop_requested = stop
    signals = ExitStack()
    if install_signal_handlers:
        signals.enter_context(stop_on_signals(stop))
    result = RunResult(EXIT_INTERRUPTED, message="interrupted")
    resumes = await _resumed_job_trace(project) if send_job else None
    board: Dashboard | None = None
    try:
        with project_run_span(
            runtime.telemetry, project, handle.run_id if handle is not None else None, resumes
        ) as root:
            try:
                started = build_agents(project, runtime, agents)
                # Tools built (a mistake is exit 2 now, not at the first call), [bus]
                # joined — before any agent runs.
                await runtime.prepare()
                if dashboard:
                    board = await _start_dashboard(
                        dash_settings, project, runtime, handle, spans, out
                    )
                for agent in started:
                    await agent.start()
                log.info(
                    "project %s: %d agent(s) running%s",
                    project.project.name,
                    len(started),
                    "" if send_job else "; press Ctrl-C to stop",
                )
                if not send_job:
                    await stop.wait()
                    result = RunResult(EXIT_OK, message="stopped")
                else:
                    result = await _run_job(project, runtime, stop, out)
                    if board is not None and result.exit_code != EXIT_INTERRUPTED:
                        log.info("%s; the dashboard stays open until Ctrl-C", result.message)
                        await stop.wait()
            finally:
                signals.close()
                if board is not None:
                    await board.stop()
                # Inside the span: handlers still in flight finish as its descendants.
                await runtime.stop()
            end_project_run_span(
                root,
                exit_code=result.exit_code,
                failed=result.exit_code == EXIT_JOB_FAILED,
                interrupted=result.exit_code == EXIT_INTERRUPTED,
                message=result.message,
            )
    finally:
        if handle is not None:
            # Off the loop: a slow OTLP endpoint must not freeze it while flushing.
            await asyncio.to_thread(handle.shutdown)
            result.trace_file = handle.trace_file
            if handle.trace_file is not None and handle.trace_file.exists():
                log.info("trace: %s (loom trace show %s)", handle.trace_file, handle.run_id)
    return result


def _span_buffer(handle: TelemetryHandle | None) -> SpanBuffer | None:
    """Hands the run's spans to the dashboard as they end (the file gets them later)."""
    if handle is None or handle.tracer_provider is None:
        return None
    from loom.dashboard.traces import SpanBuffer

    buffer = SpanBuffer()
    handle.tracer_provider.add_span_processor(buffer)
    return buffer


async def _start_dashboard(
    settings: DashboardSettings,
    project: ProjectConfig,
    runtime: Runtime,
    handle: TelemetryHandle | None,
    spans: SpanBuffer | None,
    out: TextIO | None,
) -> Dashboard:
    from loom.dashboard.server import Dashboard
    from loom.telemetry.setup import resolve_settings

    trace_dir = handle.settings.trace_dir if handle is not None else None
    board = Dashboard(
        settings,
        runtime=runtime,
        trace_dir=trace_dir or resolve_settings(project).trace_dir,
        live_run=handle.run_id if handle is not None else None,
        buffer=spans,
    )
    url = await board.start()
    # The URL holds the token: it goes to the terminal, not to the log.
    if out is not None:
        out.write(f"dashboard: {url}\n")
        out.flush()
    else:
        log.info("dashboard listening on %s (its token: Dashboard.url)", board.base_url)
    return board


async def _resumed_job_trace(project: ProjectConfig) -> str | None:
    """With ``[durability]``: the trace of this ``[job]``'s interrupted run, if any."""
    if project.job is None or not (project.durability or "durability" in project.raw):
        return None
    from loom.durable import message_json, unfinished_job_trace

    job = project.job
    try:
        return await unfinished_job_trace(
            project, message_json(job.topic, job.type, job.payload, None, None, None)
        )
    except LoomError as exc:
        log.warning("journal: %s", exc)
        return None


def _path(project: ProjectConfig) -> str | None:
    return str(project.path) if project.path else None


async def _run_job(
    project: ProjectConfig, runtime: Runtime, stop: asyncio.Event, out: TextIO | None
) -> RunResult:
    job = project.job
    assert job is not None
    client = Agent("loom.run", runtime=runtime)
    await client.start()
    log.info("job: %r on %s (timeout %ss)", job.type, job.topic, job.timeout)
    durability = runtime.durability
    journaled: str | None = None
    headers: dict[str, str] | None = None
    if durability is not None:
        from loom.durable import EFFECT_HEADER, message_json

        traceparent: dict[str, str] = {}
        if runtime.telemetry.active:
            from loom.telemetry.agent_spans import inject_context

            inject_context(traceparent)
        journaled, _ = await durability.job_run(
            message_json(job.topic, job.type, job.payload, None, None, None),
            traceparent.get("traceparent", ""),
        )
        # The same key when a resumed run sends it again: the agents' runs know it.
        headers = {EFFECT_HEADER: f"job:{journaled}"}
    request = asyncio.ensure_future(
        client.ctx.request(
            job.topic,
            job.type,
            job.payload,
            timeout=job.timeout,
            headers=headers,
            correlation_id=journaled,
        )
    )
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({request, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if request not in done:
            request.cancel()
            return RunResult(EXIT_INTERRUPTED, message="interrupted before the job finished")
        try:
            reply = request.result()
        except RequestTimeout as exc:
            if durability is not None and journaled is not None:
                await durability.end_job(journaled, "failed", str(exc))
            return RunResult(EXIT_JOB_FAILED, message=f"job timed out: {exc}")
        except LoomError as exc:
            if durability is not None and journaled is not None:
                await durability.end_job(journaled, "failed", str(exc))
            return RunResult(EXIT_JOB_FAILED, message=f"job failed: {exc}")
        if durability is not None and journaled is not None:
            await durability.end_job(journaled, "finished")
        failed = reply.type in FAILURE_TYPES
        if out is not None:
            # The reply is the agents' (often a model's) text: shown, not obeyed.
            out.write(escape_block(_render(reply.payload)) + "\n")
            out.flush()
        if failed:
            return RunResult(
                EXIT_JOB_FAILED, reply, f"job failed ({reply.type} from {reply.source})"
            )
        return RunResult(EXIT_OK, reply, f"job done ({reply.type} from {reply.source})")
    finally:
        stopped.cancel()
        await client.stop()
