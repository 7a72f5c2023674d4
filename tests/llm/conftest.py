"""Fixtures for loom.llm tests: a fault-injecting HTTP server on 127.0.0.1 (real sockets),
the real llama.cpp server with SmolLM2, and an in-memory span exporter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from loom.llm.local_server import LocalModelServer, unavailable_reason

# -- canned bodies ----------------------------------------------------------------------


def completion(
    content: str | None = "hello",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
    model: str = "fake-model",
    reasoning: str | None = None,
) -> dict[str, Any]:
    """A chat.completion body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """A chat.completion.chunk."""
    return {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }


def text_chunks(pieces: list[str], *, usage: bool = True) -> list[Any]:
    """Chunks streaming ``pieces``, a finish chunk, a usage chunk and [DONE]."""
    out: list[Any] = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in pieces]
    out.append(chunk({}, "stop"))
    if usage:
        out.append(
            {
                "id": "chatcmpl-stream",
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(pieces),
                    "total_tokens": 5 + len(pieces),
                },
            }
        )
    out.append("[DONE]")
    return out


# -- the fault-injecting server ------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Action = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Request], Awaitable[bool]]
"""Handles one request; returns whether the connection may be kept alive."""


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        408: "Request Timeout",
        409: "Conflict",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def respond(
    status: int = 200,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    delay: float = 0.0,
) -> Action:
    """A complete response (body: dict → JSON, str/bytes → as is)."""
    if body is None:
        body = completion()
    raw = (
        body
        if isinstance(body, bytes)
        else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    )

    async def act(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: Request) -> bool:
        if delay:
            await asyncio.sleep(delay)
        h = {"content-type": content_type, "content-length": str(len(raw))}
        h.update(headers or {})
        w.write(_head(status, h) + raw)
        await w.drain()
        return True

    return act


def sse(
    events: list[Any],
    *,
    content_type: str = "text/event-stream",
    delay: float = 0.0,
    crlf: bool = False,
    close_after: int | None = None,
) -> Action:
    """A chunked SSE response; ``close_after=n`` drops the connection after n events
    without ending the chunked body (a broken connection)."""
    nl = "\r\n" if crlf else "\n"

    async def act(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: Request) -> bool:
        w.write(_head(200, {"content-type": content_type, "transfer-encoding": "chunked"}))
        for i, ev in enumerate(events):
            if close_after is not None and i >= close_after:
                await w.drain()
                w.transport.abort()
                return False
            data = ev if isinstance(ev, str) else json.dumps(ev)
            payload = f"data: {data}{nl}{nl}".encode()
            w.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await w.drain()
            if delay:
                await asyncio.sleep(delay)
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    return act


def reset_mid_body() -> Action:
    """Headers promising 1000 bytes, 20 bytes, then a TCP reset."""

    async def act(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: Request) -> bool:
        w.write(_head(200, {"content-type": "application/json", "content-length": "1000"}))
        w.write(b'{"id": "chatcmpl-x",')
        await w.drain()
        await asyncio.sleep(0.01)
        w.transport.abort()
        return False

    return act


def stall(seconds: float = 30.0, *, after_headers: bool = False) -> Action:
    """Say nothing for ``seconds`` (optionally after sending the headers)."""

    async def act(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: Request) -> bool:
        if after_headers:
            w.write(
                _head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"})
            )
            await w.drain()
        await asyncio.sleep(seconds)
        w.transport.abort()
        return False

    return act


def huge(size: int) -> Action:
    """A body of ``size`` bytes (declared; streamed in 64 KiB pieces)."""

    async def act(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: Request) -> bool:
        w.write(_head(200, {"content-type": "application/json", "content-length": str(size)}))
        piece = b" " * 65536
        sent = 0
        try:
            while sent < size:
                n = min(len(piece), size - sent)
                w.write(piece[:n])
                await w.drain()
                sent += n
        except (ConnectionError, OSError):
            return False
        return True

    return act


def huge_undeclared(size: int) -> Action:
    """A chunked body of ``size`` bytes with no Content-Length."""

    async def act(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: Request) -> bool:
        w.write(_head(200, {"content-type": "application/json", "transfer-encoding": "chunked"}))
        piece = b" " * 65536
        sent = 0
        try:
            while sent < size:
                w.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await w.drain()
                sent += len(piece)
            w.write(b"0\r\n\r\n")
            await w.drain()
        except (ConnectionError, OSError):
            return False
        return True

    return act


@dataclass
class FaultServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers from a script of actions."""

    script: list[Action] = field(default_factory=list)
    default: Action = field(default_factory=respond)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _server: asyncio.base_events.Server | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *actions: Action) -> None:
        self.script.extend(actions)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.transport.abort()
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._conns.add(w)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                line = await r.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await r.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await r.readexactly(int(headers["content-length"]))
                req = Request(method, path, headers, body)
                self.requests.append(req)
                action = self.script.pop(0) if self.script else self.default
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    keep = await action(r, w, req)
                finally:
                    self.in_flight -= 1
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            return
        finally:
            self._conns.discard(w)
            if task is not None:
                self._tasks.discard(task)
            w.transport.abort()


@pytest_asyncio.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    server = FaultServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def free_port() -> int:
    from loom.llm.local_server import free_port as fp

    return fp()


# -- spans ---------------------------------------------------------------------------------


@pytest.fixture
def spans(span_exporter: Any) -> Any:
    """The in-memory exporter of the shared ``span_exporter`` fixture (tests/conftest.py),
    which installs a tracer provider for one test and removes it afterwards."""
    return span_exporter


# -- the real local model ---------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def smollm2() -> AsyncIterator[LocalModelServer]:
    """SmolLM2-135M-Instruct served by llama-cpp-python on a free loopback port."""
    reason = unavailable_reason()
    if reason:
        print(f"\nSKIP real-model tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    server = LocalModelServer(
        "smollm2", startup_timeout=float(os.environ.get("LOOM_LLAMA_STARTUP_TIMEOUT", "120"))
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def make_provider(fault_server: FaultServer) -> AsyncIterator[Callable[..., Any]]:
    """Factory for providers pointed at the fault server (closed after the test)."""
    from loom.llm import LLMConfig, LLMProvider

    made: list[LLMProvider] = []

    def factory(**kwargs: Any) -> LLMProvider:
        kwargs.setdefault("name", "fault")
        kwargs.setdefault("base_url", fault_server.base_url)
        kwargs.setdefault("model", "fake-model")
        kwargs.setdefault("max_retries", 2)
        ctx = kwargs.pop("ctx", None)
        state = kwargs.pop("state", None)
        p = LLMProvider(ctx, LLMConfig(**kwargs), state=state)
        made.append(p)
        return p

    yield factory
    for p in made:
        await p.aclose()
