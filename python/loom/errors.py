"""Loom's exception hierarchy.

Every error Loom raises is a :class:`LoomError`. Errors that have a natural builtin
counterpart also inherit from it (``InvalidTopicError`` is a ``ValueError``,
``RequestTimeout`` a ``TimeoutError``), so code that already catches the builtin keeps
working. Errors raised by the Rust core are mapped to these classes in one place
(``core/src/py/errors.rs``).
"""

from __future__ import annotations

from typing import Any


class LoomError(Exception):
    """Base class of every error raised by Loom."""


class ConfigError(LoomError, ValueError):
    """``loom.toml`` (or a value derived from it) is invalid.

    The message names the file and, where known, the line and key.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.key = key
        where = path or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        if key:
            where = f"{where} [{key}]" if where else f"[{key}]"
        super().__init__(f"{where}: {message}" if where else message)


# -- bus -------------------------------------------------------------------------------


class MissingEnvironmentVariable(ConfigError):
    """A variable ``loom.toml`` needs (``${VAR}``, ``api_key_env``) is not set."""

    def __init__(self, variable: str, message: str, **where: Any) -> None:
        self.variable = variable
        super().__init__(message, **where)


class PromptNotFound(LoomError, FileNotFoundError):
    """A prompt file does not exist (``loom.prompts``)."""

    def __init__(self, path: str, detail: str = "no such prompt file") -> None:
        self.message = f"prompt not found: {path} ({detail})"
        super().__init__(self.message)
        self.path = path
        self.filename = path

    def __str__(self) -> str:  # OSError's would print "[Errno None] None: ..."
        return self.message


class BusError(LoomError):
    """Base class for event bus errors."""


class InvalidTopicError(BusError, ValueError):
    """A topic or subscription pattern is malformed (says which token and why)."""


class BusFullError(BusError):
    """A ``reliable`` subscriber's queue stayed full past the publish timeout."""


class BusClosedError(BusError):
    """The bus (or the subscription) was closed."""


class RequestTimeout(BusError, TimeoutError):
    """``ctx.request`` got no reply within its timeout."""


# -- agents / runtime -----------------------------------------------------------------


class AgentError(LoomError):
    """An agent could not be loaded, started or stopped."""


# -- key-value store ------------------------------------------------------------------


class KVError(LoomError):
    """Base class of key-value store errors (``ctx.kv``); also an unusable database
    file (the message names it)."""


class InvalidKeyError(KVError, ValueError):
    """A key or bucket name breaks the NATS KV rules (says which character and why)."""


class InvalidValueError(KVError, TypeError):
    """A value is neither JSON-serialisable nor bytes (names the key and the type, never
    the value)."""


class ValueTooLargeError(KVError, ValueError):
    """An encoded value is larger than the store's ``max_value_size``."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        self.key = key
        self.size = size
        self.limit = limit
        super().__init__(
            f"value for key {key!r} is {size} bytes encoded; the limit is {limit} "
            "([kv] max_value_size)"
        )


class KVConflictError(KVError):
    """A conditional write found another revision than the one it expected: ``key``,
    ``expected`` (0: absent) and ``actual`` (None: absent)."""

    def __init__(self, key: str, expected: int, actual: int | None, message: str = "") -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        if not message:
            want = "absent" if expected == 0 else f"at revision {expected}"
            got = "absent" if actual is None else f"at revision {actual}"
            message = f"key {key!r}: expected it {want}, found it {got}"
        super().__init__(message)


class KeyExistsError(KVConflictError):
    """``create`` found the key already present (``actual`` is its revision)."""


class KVClosedError(KVError):
    """The store was closed (its runtime stopped)."""


# -- tools ----------------------------------------------------------------------------


class ToolError(LoomError):
    """Base class for tool errors; carries the tool name and a reason."""

    def __init__(self, tool: str, reason: str, **details: Any) -> None:
        self.tool = tool
        self.reason = reason
        self.details = details
        super().__init__(f"{tool}: {reason}")


class ToolNotFound(ToolError, LookupError):
    """No tool with that name is registered."""


class ToolArgumentsInvalid(ToolError, ValueError):
    """The arguments do not match the tool's schema; ``errors`` lists the problems."""

    def __init__(self, tool: str, reason: str, errors: list[Any] | None = None) -> None:
        super().__init__(tool, reason)
        self.errors = errors or []


class ToolDenied(ToolError, PermissionError):
    """The sandbox or an approval refused the call; ``rule`` names the rule."""

    def __init__(self, tool: str, reason: str, rule: str = "") -> None:
        super().__init__(tool, reason)
        self.rule = rule


class ToolTimeout(ToolError, TimeoutError):
    """The tool did not finish within its timeout (its processes were killed)."""


class ToolFailed(ToolError):
    """The tool ran and failed."""


class ToolInDoubt(ToolError):
    """A durable run was interrupted while this call ran: it may or may not have taken
    effect, and the tool is not declared idempotent, so it is not run again.
    ``call_id`` is the call's idempotency key (the same on every attempt)."""

    def __init__(self, tool: str, call_id: str, run_id: str) -> None:
        super().__init__(
            tool,
            f"may or may not have run: the process stopped while call {call_id} was "
            f"running (run {run_id}), and {tool} is not idempotent, so it is not run "
            "again; check its effect before retrying",
        )
        self.call_id = call_id
        self.run_id = run_id


# -- durable runs -------------------------------------------------------------------


class DurabilityError(LoomError):
    """Base class of the errors of durable runs (``[durability]``)."""


class JournalError(DurabilityError):
    """The journal cannot be used: unreadable, corrupt, or written by a newer Loom."""


class NonDeterminismError(DurabilityError):
    """A resumed run asked for a different effect than the journal recorded at that
    step; ``journaled`` and ``requested`` describe both."""

    def __init__(
        self, run_id: str, step: int, journaled: dict[str, Any], requested: dict[str, Any]
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.journaled = journaled
        self.requested = requested
        super().__init__(
            f"run {run_id} step {step}: the handler asked for {_brief(requested)} but the "
            f"journal recorded {_brief(journaled)}; a durable handler must make the same "
            "calls in the same order when replayed (use ctx.now()/ctx.random() instead "
            "of the clock or random module)"
        )


class RunCancelled(DurabilityError):
    """The durable run was cancelled (``loom runs cancel``)."""


def _brief(effect: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in effect.items())
    return text if len(text) <= 300 else text[:297] + "..."


__all__ = [
    "AgentError",
    "BusClosedError",
    "BusError",
    "BusFullError",
    "ConfigError",
    "DurabilityError",
    "InvalidKeyError",
    "InvalidTopicError",
    "InvalidValueError",
    "JournalError",
    "KVClosedError",
    "KVConflictError",
    "KVError",
    "KeyExistsError",
    "LoomError",
    "MissingEnvironmentVariable",
    "NonDeterminismError",
    "PromptNotFound",
    "RequestTimeout",
    "RunCancelled",
    "ToolArgumentsInvalid",
    "ToolDenied",
    "ToolError",
    "ToolFailed",
    "ToolInDoubt",
    "ToolNotFound",
    "ToolTimeout",
    "ValueTooLargeError",
]
