"""What the journal holds: runs, their steps, pending approvals — and how events,
results and errors become JSON and back.

Every record is plain JSON, so a journal written by one process is read by any other
(the SQLite file, or JetStream with the nats store). ``version`` says which layout a
record has; a record of a newer layout is reported, never guessed at.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from loom._core import Envelope
from loom.errors import DurabilityError, JournalError, LoomError

#: The record layout this module reads and writes.
RECORD_VERSION = 1

RunStatus = Literal["running", "waiting", "finished", "failed", "cancelled"]
#: Statuses of runs that are resumed when their owner is gone.
UNFINISHED: tuple[RunStatus, ...] = ("running", "waiting")
StepState = Literal["intent", "done", "error"]
ApprovalStatus = Literal["pending", "approved", "denied"]


R = TypeVar("R", bound="_Record")


class _Record:
    """A journal record: plain JSON with a ``version`` field."""

    #: What the record is, for errors ("run", "step", "approval").
    what: ClassVar[str] = "record"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls: type[R], data: Any, where: str) -> R:
        """The record ``data`` holds.

        Raises:
            JournalError: not an object of this record's fields, or written by a newer
                Loom (a higher ``version``).
        """
        if not isinstance(data, dict):
            raise JournalError(f"{where}: a {cls.what} record must be an object")
        version = data.get("version", 0)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise JournalError(
                f"{where}: written by a newer Loom (record version {version!r}; this one "
                f"reads version {RECORD_VERSION})"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise JournalError(f"{where}: not a {cls.what} record ({exc})") from None


@dataclass
class RunRecord(_Record):
    """One handling of one event by one agent."""

    what: ClassVar[str] = "run"

    run_id: str
    agent: str
    #: Which handler: the subscription pattern, ``"inbox"`` or ``"job"``.
    entry: str
    event: dict[str, Any]
    status: RunStatus = "running"
    created: float = 0.0
    updated: float = 0.0
    owner: str = ""
    lease_until: float = 0.0
    steps: int = 0
    error: str = ""
    #: The W3C traceparent of the run's first attempt: resumed spans join that trace.
    traceparent: str = ""
    version: int = RECORD_VERSION


@dataclass
class StepRecord(_Record):
    """One effect of a run: its kind, what was asked, and what came of it."""

    what: ClassVar[str] = "step"

    seq: int
    kind: str
    digest: str
    request: dict[str, Any]
    state: StepState = "intent"
    result: Any = None
    error: dict[str, Any] | None = None
    ts: float = 0.0
    version: int = RECORD_VERSION


@dataclass
class Approval(_Record):
    """A tool call of a durable run waiting for a person (``loom approvals``)."""

    what: ClassVar[str] = "approval"

    approval_id: str
    run_id: str
    agent: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    status: ApprovalStatus = "pending"
    requested: float = 0.0
    decided: float = 0.0
    decided_by: str = ""
    reason: str = ""
    version: int = RECORD_VERSION


# -- values ------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON (what digests and the stores use).

    Raises:
        DurabilityError: the value is not JSON (a durable run's payloads, tool results
            and arguments must be).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise DurabilityError(
            f"a durable run can only journal JSON values: {exc} (send JSON payloads, or "
            "turn [durability] off for this project)"
        ) from None


def loads(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise JournalError(f"{where}: corrupt record ({exc})") from None


def digest(kind: str, request: Any) -> str:
    """A short fingerprint of one effect, compared on replay."""
    return hashlib.sha256(f"{kind}\0{dumps(request)}".encode()).hexdigest()[:32]


def event_to_json(event: Envelope) -> dict[str, Any]:
    """Everything needed to rebuild ``event`` as it was delivered (same id)."""
    return {
        "id": event.id,
        "topic": event.topic,
        "type": event.type,
        "payload": _payload_json(event.payload),
        "source": event.source,
        "correlation_id": event.correlation_id,
        "reply_to": event.reply_to,
        "thread_id": event.thread_id,
        "ttl": event.ttl,
        "headers": event.headers,
        "timestamp_ns": event.timestamp_ns,
    }


def message_json(
    topic: str,
    type: str,
    payload: Any,
    correlation_id: str | None,
    reply_to: str | None,
    thread_id: str | None,
) -> dict[str, Any]:
    """An outgoing message as a step's request (what replay compares, and what a
    finished run's replies are sent again from)."""
    out: dict[str, Any] = {"topic": topic, "type": type, "payload": _payload_json(payload)}
    for key, value in (("correlation_id", correlation_id), ("reply_to", reply_to),
                       ("thread_id", thread_id)):  # fmt: skip
        if value is not None:
            out[key] = value
    return out


def event_from_json(data: dict[str, Any]) -> Envelope:
    payload = data.get("payload")
    if isinstance(payload, dict) and len(payload) == 1 and "$bytes" in payload:
        payload = bytes.fromhex(payload["$bytes"])
    return Envelope(
        data["topic"],
        data.get("type", "event"),
        payload,
        source=data.get("source"),
        correlation_id=data.get("correlation_id"),
        reply_to=data.get("reply_to"),
        thread_id=data.get("thread_id"),
        ttl=int(data.get("ttl", 32)),
        headers=data.get("headers") or None,
        id=data.get("id"),
        timestamp_ns=data.get("timestamp_ns"),
    )


def _payload_json(payload: Any) -> Any:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(payload).hex()}
    dumps(payload)  # a clear error now, not a half-written journal later
    return payload


# -- errors ------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def error_to_json(exc: BaseException) -> dict[str, Any]:
    """An exception as JSON: its class, message and plain attributes."""
    attrs = {
        k: v
        for k, v in vars(exc).items()
        if not k.startswith("_") and isinstance(v, (*_SCALARS, list, dict)) and _jsonable(v)
    }
    cls = type(exc)
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc), "attrs": attrs}


def error_from_json(data: dict[str, Any]) -> BaseException:
    """The journaled exception again: the same Loom (or builtin) class, message and
    attributes; another class comes back as a :class:`DurabilityError` naming it."""
    name = str(data.get("type", ""))
    message = str(data.get("message", ""))
    module, _, qualname = name.rpartition(".")
    cls: Any = None
    if module == "builtins":
        cls = getattr(builtins, qualname, None)
    elif module == "loom" or module.startswith("loom."):
        try:
            cls = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return DurabilityError(f"{name}: {message}")
    exc: BaseException = cls.__new__(cls)
    Exception.__init__(exc, message)
    if isinstance(exc, LoomError) or module == "builtins":
        for k, v in (data.get("attrs") or {}).items():
            try:
                setattr(exc, k, v)
            except (AttributeError, TypeError):
                pass
    return exc


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
