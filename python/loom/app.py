"""Running a whole project: what ``loom run`` does, usable from code and tests."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import dataclass
from typing import Any, TextIO

from loom._core import Envelope
from loom.agent import Agent
from loom.config import ProjectConfig
from loom.errors import LoomError, RequestTimeout
from loom.loader import build_agents
from loom.runtime import Runtime

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


def _render(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
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
) -> RunResult:
    """Starts every agent of ``project`` on one runtime. With a ``[job]``, sends it
    and returns when the reply arrives; otherwise runs until ``stop`` is set or
    SIGINT/SIGTERM arrives. Always stops the runtime cleanly."""
    runtime = runtime or Runtime(project)
    Runtime.set_default(runtime)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if install_signal_handlers:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
    try:
        agents = build_agents(project, runtime)
        for agent in agents:
            await agent.start()
        log.info(
            "project %s: %d agent(s) running%s",
            project.project.name,
            len(agents),
            "" if project.job else "; press Ctrl-C to stop",
        )
        if project.job is None:
            await stop.wait()
            return RunResult(EXIT_OK, message="stopped")
        return await _run_job(project, runtime, stop, out)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runtime.stop()


async def _run_job(
    project: ProjectConfig, runtime: Runtime, stop: asyncio.Event, out: TextIO | None
) -> RunResult:
    job = project.job
    assert job is not None
    client = Agent("loom.run", runtime=runtime)
    await client.start()
    log.info("job: %r on %s (timeout %ss)", job.type, job.topic, job.timeout)
    request = asyncio.ensure_future(
        client.ctx.request(job.topic, job.type, job.payload, timeout=job.timeout)
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
            return RunResult(EXIT_JOB_FAILED, message=f"job timed out: {exc}")
        except LoomError as exc:
            return RunResult(EXIT_JOB_FAILED, message=f"job failed: {exc}")
        failed = reply.type in FAILURE_TYPES
        if out is not None:
            out.write(_render(reply.payload) + "\n")
            out.flush()
        if failed:
            return RunResult(
                EXIT_JOB_FAILED, reply, f"job failed ({reply.type} from {reply.source})"
            )
        return RunResult(EXIT_OK, reply, f"job done ({reply.type} from {reply.source})")
    finally:
        stopped.cancel()
        await client.stop()
