"""Spans of workflows: a pattern's run and steps (``loom.patterns``) and a whole
project's run (``loom run``), both ``invoke_workflow {name}`` at the top."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from loom.telemetry.content import content_text
from loom.telemetry.state import DEFAULT, Telemetry

if TYPE_CHECKING:
    from loom.config import ProjectConfig

AttrValue = str | int | float | bool | None


def content_attr(span: Span, key: str, value: Any, telemetry: Telemetry | None = None) -> None:
    """Puts ``value`` on the span as ``key``, only when content capture is on."""
    if span.is_recording() and (telemetry or DEFAULT).capture_content():
        span.set_attribute(key, content_text(value))


@contextmanager
def pattern_span(
    name: str, kind: str, /, telemetry: Telemetry | None = None, **attributes: AttrValue
) -> Iterator[Span]:
    """A span named ``name`` with ``loom.pattern.kind`` and ``loom.pattern.*`` attributes
    (``None`` values are left out; a key with a dot is used as is). Exceptions set
    ``error.type`` and an error status; a cancellation sets the outcome ``cancelled``."""
    attrs: dict[str, str | int | float | bool] = {"loom.pattern.kind": kind}
    for key, value in attributes.items():
        if value is not None:
            attrs[key if "." in key else f"loom.pattern.{key}"] = value
    with (
        (telemetry or DEFAULT)
        .tracer()
        .start_as_current_span(
            name,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as s
    ):
        try:
            yield s
        except asyncio.CancelledError:
            s.set_attribute("loom.pattern.outcome", "cancelled")
            raise
        except BaseException as exc:
            s.set_attribute("error.type", type(exc).__name__)
            s.set_status(Status(StatusCode.ERROR, str(exc)[:512]))
            raise


def workflow_span(
    kind: str, name: str, telemetry: Telemetry | None = None
) -> AbstractContextManager[Span]:
    """The ``invoke_workflow {name}`` span around one run of a pattern."""
    return pattern_span(
        f"invoke_workflow {name}",
        kind,
        telemetry,
        **{"gen_ai.operation.name": "invoke_workflow", "name": name},
    )


# -- a project's run ---------------------------------------------------------------------


@contextmanager
def project_run_span(
    telemetry: Telemetry,
    project: ProjectConfig,
    run_id: str | None = None,
    resumes: str | None = None,
) -> Iterator[Span | None]:
    """``invoke_workflow {project}``: the GenAI conventions' span for a run that
    coordinates several agents; everything the run does is under it (one trace).
    ``resumes``: the traceparent of an interrupted run this one continues (a durable
    ``[job]``): the span joins that trace, with a ``loom.run.resumed`` event.
    Yields None when nothing records."""
    if not telemetry.active:
        yield None
        return
    name = project.project.name
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": name,
        "loom.project.agents": len([a for a in project.agents.values() if a.enabled]),
    }
    if run_id is not None:
        attrs["loom.run.id"] = run_id
    if project.job is not None:
        attrs["loom.job.topic"] = project.job.topic
        attrs["loom.job.type"] = project.job.type
    parent = extract({"traceparent": resumes}) if resumes else None
    with telemetry.tracer().start_as_current_span(
        f"invoke_workflow {name}", context=parent, kind=SpanKind.INTERNAL, attributes=attrs
    ) as span:
        if resumes:
            span.add_event("loom.run.resumed", {"loom.run.resumes": resumes})
        yield span


def end_project_run_span(
    span: Span | None, *, exit_code: int, failed: bool, interrupted: bool, message: str
) -> None:
    """Records how the run ended: its exit code; an error status if the job failed."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("loom.run.exit_code", exit_code)
    if failed:
        span.set_attribute("error.type", "job_failed")
        span.set_status(Status(StatusCode.ERROR, message[:512]))
    elif interrupted:
        span.set_attribute("loom.run.interrupted", True)


__all__ = [
    "content_attr",
    "end_project_run_span",
    "pattern_span",
    "project_run_span",
    "workflow_span",
]
