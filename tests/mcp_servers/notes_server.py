"""A small MCP server written with the official ``mcp`` SDK, for Loom's MCP client tests.

``MCPServer`` is what the SDK called ``FastMCP`` before mcp 2.0.

Run it over stdio (the default) or over streamable HTTP::

    python notes_server.py                  # stdio
    python notes_server.py --http [--json] [--port N]
        # HTTP on 127.0.0.1 (a free port unless given), printed as "PORT <n>" on stdout

Environment knobs (read at start-up):

- ``NOTES_PAGE_SIZE``: paginate ``tools/list`` with this many tools per page.
- ``NOTES_BOOT_STDERR``: bytes of noise to write to stderr before serving.
- ``NOTES_BOOT_STDOUT``: a line of non-JSON-RPC junk to write to stdout before serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    INVALID_PARAMS,
    EmptyResult,
    ListToolsResult,
    PingRequest,
    ToolListChangedNotification,
)

PAGE_SIZE = int(os.environ.get("NOTES_PAGE_SIZE", "0"))


class NotesServer(MCPServer):
    """MCPServer never paginates ``tools/list``; this one can, to exercise cursors."""

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await self.list_tools()
        if PAGE_SIZE <= 0:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + PAGE_SIZE
        return ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )


server = NotesServer("notes", instructions="A tiny in-memory notebook.")
NOTES: dict[int, dict[str, str]] = {}


@server.tool()
def add_note(title: str, body: str = "") -> dict[str, Any]:
    """Adds a note and returns it with its id.

    Args:
        title: The note's title.
        body: The note's text.
    """
    note_id = len(NOTES) + 1
    NOTES[note_id] = {"title": title, "body": body}
    return {"id": note_id, "title": title, "body": body}


@server.tool(structured_output=False)
def get_note(note_id: int) -> str:
    """Returns the body of a note as plain text."""
    if note_id not in NOTES:
        raise ToolError(f"no note with id {note_id}")
    return NOTES[note_id]["body"]


@server.tool(structured_output=False)
def stats() -> str:
    """Returns statistics as a JSON text block (no structured content)."""
    return json.dumps({"count": len(NOTES), "titles": [n["title"] for n in NOTES.values()]})


@server.tool(structured_output=False)
def echo(text: str) -> str:
    """Returns ``text`` unchanged, as plain text."""
    return text


@server.tool()
def fail(reason: str) -> str:
    """Always fails with ``reason`` (an ``isError`` result)."""
    raise ToolError(reason)


@server.tool()
def rate(stars: int) -> str:
    """Rates something; ``stars`` outside 1..5 is a JSON-RPC invalid-params error."""
    if not 1 <= stars <= 5:
        raise MCPError(INVALID_PARAMS, "stars must be between 1 and 5", {"stars": stars})
    return "*" * stars


CANCELLED: list[float] = []


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleeps, then says so."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CANCELLED.append(seconds)
        raise
    return f"slept {seconds}"


@server.tool()
def cancelled() -> list[float]:
    """The ``sleep`` calls the client cancelled (``notifications/cancelled``)."""
    return CANCELLED


@server.tool()
def spawn_sleeper() -> int:
    """Starts a ``sleep 300`` grandchild (in the server's process group); its pid."""
    return subprocess.Popen(["sleep", "300"]).pid


@server.tool()
def flood_stderr(kib: int) -> int:
    """Writes ``kib`` KiB to stderr (far more than a pipe buffer) and returns the count."""
    line = ("x" * 1023) + "\n"
    for _ in range(kib):
        sys.stderr.write(line)
    sys.stderr.flush()
    return kib


@server.tool()
def getenv(name: str) -> dict[str, str | None]:
    """Returns the value of an environment variable of the server process."""
    return {"value": os.environ.get(name)}


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
async def chatty(ctx: Context) -> str:
    """Sends a log notification and pings the client before answering (both on this
    request's stream, so they also work over HTTP with SSE responses)."""
    await ctx.info("chatty is working")
    await ctx.request_context.session.send_request(
        PingRequest(),
        EmptyResult,
        metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
    )
    return "done"


def bonus(x: int) -> int:
    """Doubles ``x`` (registered by ``grow``)."""
    return 2 * x


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the ``bonus`` tool and notifies the client that the tool list changed."""
    server.add_tool(bonus)
    await ctx.request_context.session.send_notification(
        ToolListChangedNotification(), related_request_id=ctx.request_id
    )
    return "grown"


@server.tool()
def whoami(ctx: Context) -> dict[str, str | None]:
    """The ``Authorization`` and ``User-Agent`` headers of this request (HTTP only)."""
    headers = ctx.headers or {}
    return {"authorization": headers.get("authorization"), "user_agent": headers.get("user-agent")}


def _serve_http(json_response: bool, port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    app = server.streamable_http_app(json_response=json_response)
    # Report the port before serving: the caller polls until it accepts connections.
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    if os.environ.get("NOTES_BOOT_STDOUT"):
        # Misbehaving servers log to stdout; the client must skip such lines.
        sys.stdout.write(os.environ["NOTES_BOOT_STDOUT"] + "\n")
        sys.stdout.flush()
    noise = int(os.environ.get("NOTES_BOOT_STDERR", "0"))
    if noise:
        sys.stderr.write("n" * noise + "\n")
        sys.stderr.flush()
    sys.stderr.write(f"notes server {os.getpid()} starting\n")
    sys.stderr.flush()
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
        _serve_http(json_response="--json" in sys.argv, port=port)
    else:
        server.run()
