"""JSON-RPC 2.0 and MCP message shapes shared by the transports and the client.

No ``mcp`` SDK here on purpose: the client side is small enough to speak the protocol
directly, and Loom's dependencies stay light.
"""

from __future__ import annotations

import json
from typing import Any

from loom._depth import text_too_deep
from loom._version import __version__
from loom.errors import LoomError, ToolArgumentsInvalid, ToolFailed

#: The revision Loom offers in ``initialize``.
PROTOCOL_VERSION = "2025-06-18"
#: Revisions a server may answer with (all use the ``initialize`` handshake and the
#: same ``tools/*`` messages). Anything else is refused.
SUPPORTED_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})

CLIENT_INFO = {"name": "loom", "version": __version__}

# JSON-RPC error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class McpError(LoomError):
    """Base class of the MCP client's internal errors (mapped to ``Tool*`` errors)."""


class RpcError(McpError):
    """The server answered a request with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"JSON-RPC error {code}: {message}")


class ConnectionLost(McpError):
    """The transport is gone (process exited, connection failed, session expired);
    ``retry_safe`` says whether the request certainly never reached the server."""

    def __init__(self, detail: str, *, retry_safe: bool = False) -> None:
        self.detail = detail
        self.retry_safe = retry_safe
        super().__init__(detail)


class ProtocolViolation(McpError):
    """The server sent something that is not valid MCP."""


def request(msg_id: int, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """A JSON-RPC request object."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC notification object (no id, no reply)."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def response(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def error_response(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def encode(msg: dict[str, Any]) -> bytes:
    """One message as a line of compact UTF-8 JSON (no embedded newlines)."""
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def is_response(msg: dict[str, Any]) -> bool:
    """A reply to one of our requests (``result`` or ``error``, no ``method``)."""
    return "method" not in msg and ("result" in msg or "error" in msg)


def unwrap(msg: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of a response, or raises :class:`RpcError` for an error response.

    Raises:
        RpcError: the response carries an error object.
        ProtocolViolation: neither a result object nor an error object.
    """
    if "error" in msg:
        err = msg["error"]
        if not isinstance(err, dict):
            raise ProtocolViolation(f"malformed error object: {err!r}")
        code = err.get("code")
        raise RpcError(
            code if isinstance(code, int) else INTERNAL_ERROR,
            str(err.get("message", "")),
            err.get("data"),
        )
    result = msg.get("result")
    if not isinstance(result, dict):
        raise ProtocolViolation(f"result is not an object: {result!r:.200}")
    return result


def answer_server_request(msg: dict[str, Any]) -> dict[str, Any]:
    """Our reply to a request the server sent us. Loom declares no client capabilities
    (roots, sampling, elicitation), so only ``ping`` is answered with success."""
    if msg.get("method") == "ping":
        return response(msg.get("id"), {})
    return error_response(
        msg.get("id"), METHOD_NOT_FOUND, f"loom does not support {msg.get('method')!r}"
    )


def tool_result(tool: str, result: dict[str, Any]) -> Any:
    """Maps a ``tools/call`` result to what ``ctx.tool`` returns.

    The rule:

    1. ``isError: true`` raises :class:`~loom.errors.ToolFailed` with the text content.
    2. ``structuredContent``, when present, is returned as is (servers written with
       the ``mcp`` SDK wrap non-object return values as ``{"result": value}``).
    3. Otherwise, if every content block is text, their texts (joined by newlines) are
       parsed as JSON when they are JSON (nested at most
       :data:`loom._depth.MAX_DEPTH` levels), and returned as a string when not. No
       content at all gives ``None``.
    4. Content with other blocks (images, audio, resources) is returned as the raw
       list of content blocks, so nothing is lost.

    Raises:
        ToolFailed: the server reported ``isError``.
    """
    content = result.get("content")
    blocks: list[Any] = content if isinstance(content, list) else []
    texts = [
        b["text"]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]
    if result.get("isError") is True:
        reason = "\n".join(texts) or "the MCP tool reported an error (no text content)"
        raise ToolFailed(tool, reason, content=blocks)
    structured = result.get("structuredContent")
    if structured is not None:
        return structured
    if not blocks:
        return None
    if len(texts) != len(blocks):
        return blocks
    text = "\n".join(texts)
    if text_too_deep(text):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_error(tool: str, exc: RpcError) -> ToolFailed | ToolArgumentsInvalid:
    """A JSON-RPC error from ``tools/call`` as a typed tool error: ``-32602`` (invalid
    params, e.g. an unknown tool or arguments the server rejects) is
    :class:`~loom.errors.ToolArgumentsInvalid`, anything else
    :class:`~loom.errors.ToolFailed`."""
    if exc.code == INVALID_PARAMS:
        errors = exc.data if isinstance(exc.data, list) else ([exc.data] if exc.data else [])
        return ToolArgumentsInvalid(
            tool, f"the MCP server rejected the arguments: {exc.message}", errors
        )
    return ToolFailed(tool, f"MCP error {exc.code}: {exc.message}", code=exc.code, data=exc.data)
