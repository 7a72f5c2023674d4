"""The wire format of remote tool calls (docs/tool-hosts.md): subjects, the request and
reply bodies, typed errors as data.

Subjects (``<tool>`` is the tool name as subject tokens, :func:`tool_tokens`):

* ``_loom.tool.call.<tool>`` — any host exporting the tool; every host subscribes in
  the queue group :data:`QUEUE`, so NATS hands each call to one of them;
* ``_loom.tool.on.<host>.<tool>`` — the hosts named ``<host>`` only (same queue group);
* ``_loom.tool.discover`` — a request every host answers with its catalog;
* ``_loom.tool.announce`` — hosts publish their catalog when it changes, every
  :data:`ANNOUNCE_EVERY` seconds, and a ``bye`` when they stop.

A request is JSON ``{"v": 1, "args", "timeout", "call_id", "agent", "caller",
"headers"}`` with the W3C ``traceparent`` in the NATS headers; the reply is JSON
``{"host", "result"}`` or ``{"host", "error": {"type", "tool", "reason", "rule"?,
"errors"?}}``. While a call runs the host sends an empty message with the header
``Loom-Tool-Status: working`` every :data:`HEARTBEAT` seconds, so a caller tells a slow
tool from a host that is gone.
"""

from __future__ import annotations

import re
from typing import Any

from loom.errors import (
    ToolArgumentsInvalid,
    ToolDenied,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)
from loom.tools.spec import NAME_RE

CALL = "_loom.tool.call"
ON = "_loom.tool.on"
DISCOVER = "_loom.tool.discover"
ANNOUNCE = "_loom.tool.announce"
#: The queue group of every tool subscription (a group is per subject in NATS, so
#: this is a group per tool).
QUEUE = "loom-tools"
#: Header of a heartbeat (value ``working``) and of the host answering.
STATUS = "Loom-Tool-Status"
HOST = "Loom-Tool-Host"
#: Protocol version of the request body.
VERSION = 1

#: Seconds between a host's heartbeats for a call still running.
HEARTBEAT = 1.0
#: Seconds of silence after which a caller gives a call up (the host is gone).
SILENCE = 3.5
#: Seconds between a host's catalog announcements; a catalog not renewed within three
#: of them is forgotten (a host killed without its ``bye``).
ANNOUNCE_EVERY = 20.0

#: A host name: one subject token.
HOST_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_HOST = re.compile(r"[^A-Za-z0-9_-]+")

#: Body keys of a request; any other is refused (a typo or a forged field is an error).
REQUEST_KEYS = frozenset({"v", "args", "timeout", "call_id", "agent", "caller", "headers"})


def tool_tokens(name: str) -> str:
    """``fs:read_file`` → ``fs.read_file``: namespace and verb as two subject tokens;
    a ``.`` inside a part (``hello.echo``, ``my.server:x``) becomes ``~``, which no tool
    name contains, so the mapping reverses (:func:`tool_name`)."""
    ns, sep, verb = name.partition(":")
    if sep:
        return f"{ns.replace('.', '~')}.{verb.replace('.', '~')}"
    return name.replace(".", "~")


def tool_name(tokens: str) -> str:
    """The tool name back from :func:`tool_tokens`."""
    parts = tokens.split(".")
    if len(parts) == 2:
        return f"{parts[0].replace('~', '.')}:{parts[1].replace('~', '.')}"
    return tokens.replace("~", ".")


def call_subject(tool: str, host: str | None = None) -> str:
    """Where a call of ``tool`` goes: any host, or the hosts named ``host``."""
    if host is None:
        return f"{CALL}.{tool_tokens(tool)}"
    return f"{ON}.{host}.{tool_tokens(tool)}"


def host_token(name: str) -> str:
    """A process name (``[bus] name``, the project's name) as a host name: characters
    other than letters, digits, ``_`` and ``-`` become ``-``."""
    token = _NOT_HOST.sub("-", name).strip("-")[:64]
    return token or "loom"


def split_pinned(name: str) -> tuple[str, str | None] | None:
    """``fs:read_file@alpha`` → ``("fs:read_file", "alpha")``; ``fs:read_file`` →
    ``("fs:read_file", None)``; None for a name that no host could serve."""
    tool, at, host = name.rpartition("@")
    if not at:
        tool, host = name, ""
    elif not HOST_RE.match(host):
        return None
    if not NAME_RE.match(tool):
        return None
    return tool, host or None


# -- errors as data ----------------------------------------------------------------------


def error_data(exc: ToolError) -> dict[str, Any]:
    """A tool error as JSON: its class name and fields."""
    data: dict[str, Any] = {"type": type(exc).__name__, "tool": exc.tool, "reason": exc.reason}
    if isinstance(exc, ToolDenied):
        data["rule"] = exc.rule
    if isinstance(exc, ToolArgumentsInvalid):
        data["errors"] = exc.errors
    return data


def error_from(tool: str, data: Any, host: str | None) -> ToolError:
    """The :class:`ToolError` a reply's ``error`` describes (``tool``: the name the
    caller used; an unknown type is :class:`ToolFailed`). ``details["host"]`` names the
    host that answered."""
    if not isinstance(data, dict):
        return ToolFailed(tool, f"host {host or '?'} sent a malformed error")
    kind = data.get("type")
    reason = str(data.get("reason") or kind or "failed")
    exc: ToolError
    if kind == "ToolDenied":
        exc = ToolDenied(tool, reason, rule=str(data.get("rule") or ""))
    elif kind == "ToolArgumentsInvalid":
        errors = data.get("errors")
        exc = ToolArgumentsInvalid(tool, reason, errors if isinstance(errors, list) else [])
    elif kind == "ToolTimeout":
        exc = ToolTimeout(tool, reason)
    elif kind == "ToolNotFound":
        exc = ToolNotFound(tool, reason)
    else:
        exc = ToolFailed(tool, reason)
    exc.details["host"] = host
    return exc


def headers_size(headers: dict[str, str] | None) -> int:
    """Bytes the NATS header block takes (it counts against ``max_payload``)."""
    if not headers:
        return 0
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())
