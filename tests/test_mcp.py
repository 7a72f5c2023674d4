"""The MCP client against a real MCP server (``tests/mcp_servers/notes_server.py``,
written with the ``mcp`` SDK), over stdio and over streamable HTTP (SSE and JSON
responses): discovery, calls, error mapping, timeouts, stderr, restarts, environment,
shutdown and start-up failures. No mocks: real processes, real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loom import (
    Agent,
    ConfigError,
    Runtime,
    ToolArgumentsInvalid,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)
from loom.config import parse_project_config
from loom.tools import PythonTool

pytest.importorskip("mcp", reason="the MCP tests need the mcp SDK (pip install -e '.[dev]')")

SERVER = Path(__file__).parent / "mcp_servers" / "notes_server.py"
NOTES_TOOLS = {
    "add_note",
    "cancelled",
    "chatty",
    "echo",
    "fail",
    "flood_stderr",
    "get_note",
    "getenv",
    "grow",
    "pid",
    "rate",
    "sleep",
    "spawn_sleeper",
    "stats",
    "whoami",
}

# -- helpers ---------------------------------------------------------------------------


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def stdio_table(name: str = "notes", env: dict[str, str] | None = None, **extra: Any) -> str:
    lines = [
        f"[mcp.{name}]",
        f"command = {toml_str(sys.executable)}",
        f"args = [{toml_str(str(SERVER))}]",
    ]
    if env:
        lines.append("env = { " + ", ".join(f"{k} = {toml_str(v)}" for k, v in env.items()) + " }")
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


class HttpServerProc:
    """notes_server.py over streamable HTTP in a child process."""

    def __init__(self, json_response: bool, port: int = 0) -> None:
        args = [sys.executable, str(SERVER), "--http", "--port", str(port)]
        if json_response:
            args.append("--json")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), f"server did not start: {line!r}"
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "HTTP MCP server never listened"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(params=["stdio", "http-sse", "http-json"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ``[mcp.notes]`` table for each transport."""
    if request.param == "stdio":
        yield stdio_table()
        return
    server = HttpServerProc(json_response=request.param == "http-json")
    try:
        yield f"[mcp.notes]\nurl = {toml_str(server.url)}\n"
    finally:
        server.stop()


RuntimeFactory = Callable[[str], Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[RuntimeFactory]:
    """Builds runtimes from loom.toml text (in ``tmp_path``); stops them afterwards."""
    made: list[Runtime] = []

    async def make(source: str) -> Runtime:
        rt = Runtime(parse_project_config(source, tmp_path / "loom.toml"))
        made.append(rt)
        Runtime.set_default(rt)
        return rt

    yield make
    for rt in made:
        await rt.stop(timeout=10)
    Runtime.set_default(None)


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):  # gone meanwhile: ENOENT, or ESRCH while it exits
        return True


async def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- discovery and calls ----------------------------------------------------------------


async def test_tools_register_as_server_colon_tool_with_schemas(
    transport: str, make_runtime: RuntimeFactory
) -> None:
    rt = await make_runtime(transport)
    async with Agent("a") as a:
        specs = {s.name: s for s in await a.ctx.tools() if s.source == "mcp"}
    assert set(specs) == {f"notes:{t}" for t in NOTES_TOOLS}
    add = specs["notes:add_note"]
    assert add.server == "notes"
    assert add.description.startswith("Adds a note and returns it with its id.")
    assert add.parameters["properties"]["title"]["type"] == "string"
    assert add.parameters["properties"]["body"]["default"] == ""
    assert add.parameters["required"] == ["title"]
    fn = add.to_openai()["function"]
    assert fn["name"] == "notes__add_note" and fn["parameters"] == add.parameters
    assert (await rt.get_tools()).get("notes__add_note").spec.name == "notes:add_note"


async def test_tools_list_pagination_is_followed(make_runtime: RuntimeFactory) -> None:
    rt = await make_runtime(stdio_table(env={"NOTES_PAGE_SIZE": "2"}))
    names = {s.name for s in (await rt.get_tools()).specs() if s.source == "mcp"}
    assert names == {f"notes:{t}" for t in NOTES_TOOLS}  # 6 pages of 2


async def test_calls_round_trip_and_result_rule(
    transport: str, make_runtime: RuntimeFactory
) -> None:
    await make_runtime(transport)
    async with Agent("a") as a:
        # structuredContent wins
        note = await a.ctx.tool("notes:add_note", {"title": "groceries", "body": "eggs"})
        assert note == {"id": 1, "title": "groceries", "body": "eggs"}
        assert await a.ctx.tool("notes:pid") == {"result": pytest.approx(0, abs=1 << 30)}
        # text content: JSON when it is JSON, the string otherwise
        assert await a.ctx.tool("notes:get_note", {"note_id": 1}) == "eggs"
        assert await a.ctx.tool("notes:stats") == {"count": 1, "titles": ["groceries"]}
        assert await a.ctx.tool("notes:echo", {"text": "[1, 2, 3]"}) == [1, 2, 3]
        assert await a.ctx.tool("notes:echo", {"text": "héllo\nworld"}) == "héllo\nworld"
        # concurrent calls are matched to their own replies
        texts = [f"msg-{i}" for i in range(25)]
        got = await asyncio.gather(*(a.ctx.tool("notes:echo", {"text": t}) for t in texts))
        assert got == texts


async def test_a_deeply_nested_text_result_is_returned_as_text(
    transport: str, make_runtime: RuntimeFactory
) -> None:
    """Text content is parsed as JSON when it is JSON — but not past the nesting limit
    (``json.loads`` would raise RecursionError out of the call)."""
    await make_runtime(transport)
    async with Agent("a") as a:
        for text in ("[" * 3000 + "]" * 3000, '{"a": ' * 2000 + "1" + "}" * 2000, "[" * 5000):
            assert await a.ctx.tool("notes:echo", {"text": text}, timeout=20) == text
        assert await a.ctx.tool("notes:echo", {"text": "[[1]]"}) == [[1]]


DEEP_SERVER = """
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "deep", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "deep", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        # a message nested far past any sane depth, then the real reply
        sys.stdout.write("[" * 5000 + "]" * 5000 + "\\n")
        sys.stdout.write('{"jsonrpc": "2.0", "method": "x", "params": ' + "[" * 5000 + "}\\n")
        result = {"content": [{"type": "text", "text": "survived"}]}
    else:
        continue
    if mid is not None:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}) + "\\n")
        sys.stdout.flush()
"""


async def test_a_deeply_nested_message_from_a_stdio_server_is_skipped(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    server = tmp_path / "deep_server.py"
    server.write_text(DEEP_SERVER)
    await make_runtime(
        f"[mcp.deep]\ncommand = {toml_str(sys.executable)}\nargs = [{toml_str(str(server))}]\n"
    )
    async with Agent("a") as a:
        assert await a.ctx.tool("deep:deep", timeout=5) == "survived"
        assert await a.ctx.tool("deep:deep", timeout=5) == "survived"


class DeepHttpHandler(BaseHTTPRequestHandler):
    """A streamable-HTTP MCP server (JSON replies) whose first ``tools/call`` reply, or
    500 error body, is nested 5000 deep."""

    protocol_version = "HTTP/1.1"
    calls = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method, mid = msg.get("method"), msg.get("id")
        status, body = 200, b""
        if method == "initialize":
            result: Any = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "deep", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": [{"name": "deep", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call":
            type(self).calls += 1
            result = {"content": [{"type": "text", "text": "fine"}]}
            if self.calls == 1:
                body = b"[" * 5000 + b"]" * 5000
            elif self.calls == 2:
                status, body = 500, b'{"error": ' + b"[" * 5000
        else:
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = body or json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def test_a_deeply_nested_http_reply_is_a_tool_error(make_runtime: RuntimeFactory) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DeepHttpHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/mcp"
        await make_runtime(f"[mcp.deep]\nurl = {toml_str(url)}\n")
        async with Agent("a") as a:
            with pytest.raises(ToolFailed, match="invalid JSON"):
                await a.ctx.tool("deep:deep", timeout=5)
            with pytest.raises(ToolFailed, match="HTTP 500"):
                await a.ctx.tool("deep:deep", timeout=5)
            assert await a.ctx.tool("deep:deep", timeout=5) == "fine"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_is_error_result_is_tool_failed_with_its_text(
    transport: str, make_runtime: RuntimeFactory
) -> None:
    await make_runtime(transport)
    async with Agent("a") as a:
        with pytest.raises(ToolFailed, match="the disk is on fire") as info:
            await a.ctx.tool("notes:fail", {"reason": "the disk is on fire"})
        assert info.value.tool == "notes:fail"
        assert info.value.details["content"][0]["type"] == "text"
        with pytest.raises(ToolFailed, match="no note with id 999"):
            await a.ctx.tool("notes:get_note", {"note_id": 999})
        # server-side validation failures come back as isError too
        with pytest.raises(ToolFailed, match="validation error"):
            await a.ctx.tool("notes:add_note", {"title": 42})


async def test_invalid_params_error_is_arguments_invalid(
    transport: str, make_runtime: RuntimeFactory
) -> None:
    await make_runtime(transport)
    async with Agent("a") as a:
        with pytest.raises(ToolArgumentsInvalid, match="between 1 and 5") as info:
            await a.ctx.tool("notes:rate", {"stars": 9})
        assert info.value.tool == "notes:rate" and info.value.errors == [{"stars": 9}]
        assert await a.ctx.tool("notes:rate", {"stars": 3}) == {"result": "***"}


async def test_timeout_cancels_the_request_and_the_server_keeps_working(
    transport: str, make_runtime: RuntimeFactory
) -> None:
    await make_runtime(transport)
    async with Agent("a") as a:
        pid = await a.ctx.tool("notes:pid")
        start = time.monotonic()
        with pytest.raises(ToolTimeout) as info:
            await a.ctx.tool("notes:sleep", {"seconds": 30}, timeout=0.3)
        assert time.monotonic() - start < 2.5
        assert info.value.tool == "notes:sleep"
        # the server got notifications/cancelled and stopped the handler
        deadline = time.monotonic() + 5
        while await a.ctx.tool("notes:cancelled") != {"result": [30.0]}:
            assert time.monotonic() < deadline, "the server never saw the cancellation"
            await asyncio.sleep(0.05)
        assert await a.ctx.tool("notes:echo", {"text": "still here"}) == "still here"
        assert await a.ctx.tool("notes:pid") == pid  # same process / session


# -- stdio robustness -------------------------------------------------------------------


async def test_stderr_flood_never_blocks(make_runtime: RuntimeFactory) -> None:
    # 1 MiB of noise before the handshake, 80 MiB during a call: beyond the pipe buffer
    # and beyond what asyncio would buffer for us (2 x the 32 MiB line limit), so an
    # undrained stderr would stall the server and the call would time out.
    await make_runtime(stdio_table(env={"NOTES_BOOT_STDERR": str(1 << 20)}))
    async with Agent("a") as a:
        result = await a.ctx.tool("notes:flood_stderr", {"kib": 80 * 1024}, timeout=60)
        assert result == {"result": 80 * 1024}
        assert await a.ctx.tool("notes:echo", {"text": "ok"}) == "ok"


async def test_stderr_is_logged_at_debug_with_the_server_name(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="loom.tools.mcp")
    await make_runtime(stdio_table())
    async with Agent("a") as a:
        assert await a.ctx.tool("notes:flood_stderr", {"kib": 2}) == {"result": 2}
        await asyncio.sleep(0.1)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "loom.tools.mcp" and r.levelno == logging.DEBUG
    ]
    assert sum(m == "mcp notes stderr: " + "x" * 1023 for m in lines) == 2
    assert any(m.startswith("mcp notes stderr: notes server") for m in lines)


async def test_junk_on_stdout_is_skipped(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_runtime(stdio_table(env={"NOTES_BOOT_STDOUT": "Starting notes... done!"}))
    async with Agent("a") as a:
        assert await a.ctx.tool("notes:echo", {"text": "fine"}) == "fine"
    assert any("not JSON-RPC" in r.getMessage() for r in caplog.records)


async def test_killed_server_fails_inflight_call_and_restarts_on_next(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_runtime(stdio_table())
    async with Agent("a") as a:
        await a.ctx.tool("notes:add_note", {"title": "before"})
        pid = (await a.ctx.tool("notes:pid"))["result"]
        inflight = asyncio.create_task(a.ctx.tool("notes:sleep", {"seconds": 30}, timeout=20))
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ToolFailed, match="killed by SIGKILL"):
            await inflight
        assert await wait_gone(pid)
        # the next call starts a fresh server
        assert await a.ctx.tool("notes:echo", {"text": "back"}) == "back"
        new_pid = (await a.ctx.tool("notes:pid"))["result"]
        assert new_pid != pid
        assert await a.ctx.tool("notes:stats") == {"count": 0, "titles": []}  # new process
        # killed while idle: also restarted
        os.kill(new_pid, signal.SIGKILL)
        assert await wait_gone(new_pid)
        assert (await a.ctx.tool("notes:pid"))["result"] not in (pid, new_pid)
    assert any("restarting" in r.getMessage() for r in caplog.records)


async def test_a_server_that_cannot_restart_backs_off(
    make_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    # Starts the notes server unless the marker file exists.
    marker = tmp_path / "broken"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        "import os, sys\n"
        f"if os.path.exists({str(marker)!r}):\n"
        "    sys.stderr.write('refusing to start: marker present\\n'); sys.exit(7)\n"
        f"os.execv(sys.executable, [sys.executable, {str(SERVER)!r}])\n"
    )
    await make_runtime(
        f"[mcp.notes]\ncommand = {toml_str(sys.executable)}\nargs = [{toml_str(str(wrapper))}]\n"
    )
    async with Agent("a") as a:
        pid = (await a.ctx.tool("notes:pid"))["result"]
        marker.touch()
        os.kill(pid, signal.SIGKILL)
        assert await wait_gone(pid)
        await asyncio.sleep(0.2)  # let the reader notice
        with pytest.raises(ToolFailed, match=r"could not be restarted.*exited with code 7"):
            await a.ctx.tool("notes:echo", {"text": "x"})
        with pytest.raises(ToolFailed, match="refusing to start: marker present"):
            await a.ctx.tool("notes:echo", {"text": "x"})
        # two failures in a row: the next attempt waits, and a short call won't
        start = time.monotonic()
        with pytest.raises(ToolFailed, match=r"is down .* next restart attempt in"):
            await a.ctx.tool("notes:echo", {"text": "x"}, timeout=0.2)
        assert time.monotonic() - start < 1.0
        marker.unlink()
        assert await a.ctx.tool("notes:echo", {"text": "recovered"}, timeout=10) == "recovered"


async def test_child_environment_holds_no_parent_secrets(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret-1")
    monkeypatch.setenv("LOOM_TEST_SECRET", "parent-secret-2")
    monkeypatch.setenv("NOTES_TOKEN_SOURCE", "passed-on-purpose")
    await make_runtime(
        stdio_table(env={"NOTES_TOKEN": "${NOTES_TOKEN_SOURCE}", "MODE": "x-${NOTES_TOKEN_SOURCE}"})
    )
    async with Agent("a") as a:
        getenv = "notes:getenv"
        assert await a.ctx.tool(getenv, {"name": "OPENAI_API_KEY"}) == {"value": None}
        assert await a.ctx.tool(getenv, {"name": "LOOM_TEST_SECRET"}) == {"value": None}
        assert await a.ctx.tool(getenv, {"name": "NOTES_TOKEN"}) == {"value": "passed-on-purpose"}
        assert await a.ctx.tool(getenv, {"name": "MODE"}) == {"value": "x-passed-on-purpose"}
        assert await a.ctx.tool(getenv, {"name": "PATH"}) == {"value": os.environ["PATH"]}
        pid = (await a.ctx.tool("notes:pid"))["result"]
    # the kernel's copy of the child's environment, not just what Python reports
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"parent-secret" not in environ and b"OPENAI_API_KEY" not in environ
    assert b"NOTES_TOKEN=passed-on-purpose" in environ


async def test_unset_variable_in_env_of_a_required_server_is_a_config_error(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOM_NO_SUCH_VAR", raising=False)
    rt = await make_runtime(
        "[project]\nname = 'x'\n\n"
        + stdio_table(env={"TOKEN": "Bearer ${LOOM_NO_SUCH_VAR}"}, required=True)
    )
    with pytest.raises(ConfigError, match=r"LOOM_NO_SUCH_VAR is not set") as info:
        await rt.get_tools()
    assert info.value.key == "mcp.notes.env.TOKEN"
    assert info.value.line == 7  # the `env = {...}` line


async def test_unset_variable_leaves_only_that_server_down(
    make_runtime: RuntimeFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # Like a server that failed to start: warned about, its tools missing, every other
    # tool (here the native ones and a second server) still works.
    monkeypatch.delenv("LOOM_NO_SUCH_VAR", raising=False)
    rt = await make_runtime(
        "[project]\nname = 'x'\n\n[workspace]\nroot = 'ws'\n\n"
        + stdio_table("broken", env={"TOKEN": "Bearer ${LOOM_NO_SUCH_VAR}"})
        + stdio_table("notes")
    )
    with caplog.at_level(logging.ERROR, logger="loom.tools.mcp"):
        registry = await rt.get_tools()
    assert "'broken' is not started" in caplog.text and "LOOM_NO_SUCH_VAR" in caplog.text
    assert not any(s.name.startswith("broken:") for s in registry.specs())
    async with Agent("a") as a:
        assert (await a.ctx.tool("notes:pid"))["result"] > 0
        listing = await a.ctx.tool("fs:list_dir", {"path": "."})
        assert "entries" in listing
        with pytest.raises(ToolNotFound):
            await a.ctx.tool("broken:pid")


async def test_shutdown_kills_the_server_and_its_process_group(
    make_runtime: RuntimeFactory,
) -> None:
    rt = await make_runtime(stdio_table())
    async with Agent("a") as a:
        pid = (await a.ctx.tool("notes:pid"))["result"]
        grandchild = (await a.ctx.tool("notes:spawn_sleeper"))["result"]
    assert not gone(pid) and not gone(grandchild)
    await rt.stop(timeout=10)
    assert gone(pid), "the MCP server outlived the runtime"
    assert await wait_gone(grandchild, 5), "the server's child outlived the runtime"


# -- start-up failures ------------------------------------------------------------------


@PythonTool
def local_ping() -> str:
    return "pong"


async def test_server_that_fails_to_start_is_logged_and_the_rest_works(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    crash = "import sys; sys.stderr.write('boom: NOTES_TOKEN missing\\n'); sys.exit(3)"
    source = (
        "[mcp.missing]\ncommand = '/nonexistent/bin/loom-mcp-server'\n\n"
        f"[mcp.crashy]\ncommand = {toml_str(sys.executable)}\nargs = ['-c', {toml_str(crash)}]\n\n"
        + stdio_table()
    )
    await make_runtime(source)
    async with Agent("a", tools=[local_ping]) as a:
        names = {s.name for s in await a.ctx.tools()}
        assert {f"notes:{t}" for t in NOTES_TOOLS} <= names
        assert not any(n.startswith(("missing:", "crashy:")) for n in names)
        assert await a.ctx.tool("notes:echo", {"text": "works"}) == "works"
        assert await a.ctx.tool("local:local_ping") == "pong"
        with pytest.raises(ToolNotFound):
            await a.ctx.tool("crashy:anything")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "MCP server 'missing' failed to start" in m and "command not found" in m for m in errors
    ), errors
    assert any(
        "MCP server 'crashy' failed to start" in m
        and "exited with code 3" in m
        and "boom: NOTES_TOKEN missing" in m
        for m in errors
    ), errors


async def test_required_server_that_fails_is_a_config_error(make_runtime: RuntimeFactory) -> None:
    rt = await make_runtime(
        stdio_table() + "\n[mcp.needed]\ncommand = '/nonexistent/x'\nrequired = true\n"
    )
    with pytest.raises(ConfigError, match="MCP server 'needed' failed to start") as info:
        await rt.get_tools()
    assert info.value.key == "mcp.needed" and info.value.line == 5


async def test_startup_timeout_and_wrong_protocol_version(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    silent = (
        "import time, sys; sys.stderr.write('thinking...\\n'); sys.stderr.flush(); time.sleep(60)"
    )
    wrong = (
        "import json, sys\n"
        "req = json.loads(sys.stdin.readline())\n"
        "print(json.dumps({'jsonrpc': '2.0', 'id': req['id'], 'result': {"
        "'protocolVersion': '1999-01-01', 'capabilities': {}, "
        "'serverInfo': {'name': 'old', 'version': '0'}}}), flush=True)\n"
        "sys.stdin.read()\n"
    )
    py = toml_str(sys.executable)
    start = time.monotonic()
    await make_runtime(
        f"[mcp.silent]\ncommand = {py}\nargs = ['-c', {toml_str(silent)}]\n"
        "startup_timeout = 0.5\n\n"
        f"[mcp.old]\ncommand = {py}\nargs = ['-c', {toml_str(wrong)}]\n"
    )
    registry = await Runtime.default().get_tools()
    assert time.monotonic() - start < 5
    assert not any(s.source == "mcp" for s in registry.specs())
    errors = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert "no answer to initialize within 0.5s" in errors and "thinking..." in errors
    assert "protocol version '1999-01-01'" in errors


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("command = 'x'\nurl = 'http://a/mcp'", "exactly one of 'command'"),
        ("args = ['x']", "exactly one of 'command'"),
        ("command = 'x'\narg = ['typo']", "unknown key 'arg'"),
        ("command = 'x'\nheaders = {a = 'b'}", "unknown key 'headers'"),
        ("url = 'ftp://a/b'", "http:// or https://"),
        ("command = 'x'\nargs = 'one string'", "list of strings"),
        ("command = 'x'\nenv = { N = 1 }", "must be a string"),
        ("command = 'x'\nstartup_timeout = 0", "positive number"),
    ],
)
async def test_invalid_tables_are_config_errors(
    make_runtime: RuntimeFactory, table: str, message: str
) -> None:
    rt = await make_runtime(f"[mcp.bad]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        await rt.get_tools()


async def test_disabled_server_is_not_started(make_runtime: RuntimeFactory) -> None:
    rt = await make_runtime(stdio_table(enabled=False))
    assert not any(s.source == "mcp" for s in (await rt.get_tools()).specs())


# -- HTTP specifics ---------------------------------------------------------------------


async def test_http_server_restart_reconnects_with_a_new_session(
    make_runtime: RuntimeFactory,
) -> None:
    server = HttpServerProc(json_response=False)
    try:
        await make_runtime(f"[mcp.web]\nurl = {toml_str(server.url)}\n")
        async with Agent("a") as a:
            await a.ctx.tool("web:add_note", {"title": "one"})
            first = (await a.ctx.tool("web:pid"))["result"]
            # replaced behind our back: the old session id is unknown to the new server
            # (HTTP 404), so the call re-initialises and goes through transparently
            server.stop()
            server = HttpServerProc(json_response=False, port=server.port)
            assert await a.ctx.tool("web:stats") == {"count": 0, "titles": []}
            assert (await a.ctx.tool("web:pid"))["result"] != first
            # down: a clear failure; back up: the next call reconnects
            server.stop()
            with pytest.raises(ToolFailed, match="cannot connect to"):
                await a.ctx.tool("web:echo", {"text": "x"})
            server = HttpServerProc(json_response=False, port=server.port)
            assert await a.ctx.tool("web:echo", {"text": "again"}, timeout=10) == "again"
    finally:
        server.stop()


async def test_http_headers_are_sent_with_expanded_variables(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_TEST_TOKEN", "t0ken")
    server = HttpServerProc(json_response=True)
    try:
        await make_runtime(
            f"[mcp.web]\nurl = {toml_str(server.url)}\n"
            "headers = { Authorization = 'Bearer ${LOOM_TEST_TOKEN}' }\n"
        )
        async with Agent("a") as a:
            who = await a.ctx.tool("web:whoami")
        assert who["authorization"] == "Bearer t0ken"
        assert who["user_agent"].startswith("loom/")
    finally:
        server.stop()


@pytest.mark.parametrize("transport", ["stdio", "http-sse"], indirect=True)
async def test_server_requests_and_notifications_during_a_call(
    transport: str, make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The server pings us and logs to us mid-call (we must answer the ping or the
    call never completes), and announces a new tool, which gets registered."""
    caplog.set_level(logging.INFO, logger="loom.tools.mcp")
    rt = await make_runtime(transport)
    async with Agent("a") as a:
        assert await a.ctx.tool("notes:chatty", timeout=10) == {"result": "done"}
        assert any("chatty is working" in r.getMessage() for r in caplog.records)
        assert await a.ctx.tool("notes:grow", timeout=10) == {"result": "grown"}
        registry = await rt.get_tools()
        deadline = time.monotonic() + 5
        while "notes:bonus" not in registry:
            assert time.monotonic() < deadline, "the new tool was never registered"
            await asyncio.sleep(0.05)
        assert await a.ctx.tool("notes:bonus", {"x": 21}) == {"result": 42}


def test_the_documented_tables_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/tools.md's ``[mcp.*]`` example is valid and its defaults are the real ones."""
    import re

    from loom.tools.mcp import DEFAULT_STARTUP_TIMEOUT, HttpServer, StdioServer, parse_server

    doc = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    section = doc[doc.index("## MCP servers") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    monkeypatch.setenv("NOTES_TOKEN", "n")
    monkeypatch.setenv("SEARCH_TOKEN", "s")
    project = parse_project_config(block.group(1), tmp_path / "loom.toml")
    notes = parse_server("notes", project.mcp["notes"], project)
    search = parse_server("search", project.mcp["search"], project)
    assert isinstance(notes, StdioServer) and isinstance(search, HttpServer)
    assert notes.env["NOTES_TOKEN"] == "n" and notes.cwd == tmp_path
    assert not notes.required and notes.startup_timeout == DEFAULT_STARTUP_TIMEOUT
    assert search.headers == {"Authorization": "Bearer s"}
