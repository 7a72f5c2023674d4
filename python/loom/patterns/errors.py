"""Errors raised by :mod:`loom.patterns`, all under :class:`PatternError`."""

from __future__ import annotations

from typing import Any

from loom.errors import LoomError


class PatternError(LoomError):
    """Base class of every error raised by a workflow pattern."""


class PatternConfigError(PatternError, ValueError):
    """A pattern was built with invalid settings (the message says which and why)."""


class RemoteError(PatternError):
    """An agent answered a pattern's request with an ``error`` reply.

    Attributes:
        topic: The topic the request went to.
        payload: The error reply's payload.
    """

    def __init__(self, topic: str, payload: Any) -> None:
        self.topic = topic
        self.payload = payload
        super().__init__(f"{topic}: agent replied with an error: {payload!r}"[:1000])


class OrchestratorError(PatternError):
    """The orchestrator could not plan, or a worker failed (the cause is chained).

    Attributes:
        stage: ``"plan"`` or ``"work"``.
        task: The task whose worker failed (``None`` for the plan).
    """

    def __init__(self, message: str, *, stage: str, task: str | None = None) -> None:
        self.stage = stage
        self.task = task
        super().__init__(message)


__all__ = ["OrchestratorError", "PatternConfigError", "PatternError", "RemoteError"]
