"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests that run ``loom run``
in other processes: it answers ``POST /v1/chat/completions`` (plain or streamed) from a
function of the request body, and counts and keeps every request.

It runs on its own thread with its own event loop, so a test's subprocesses can talk to
it while the test itself blocks (waiting for a file, killing a process).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

Script = Callable[[dict[str, Any]], dict[str, Any]]


def tool_call_reply(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An assistant message calling one tool (``name`` in the wire form, ``fs__x``)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }


def text_reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


class ScriptedOpenAI:
    """``script(body) -> assistant message``; every body is kept in :attr:`requests`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> ScriptedOpenAI:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()

            async def main() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    await self._server.serve_forever()

            try:
                loop.run_until_complete(main())
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="scripted-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the scripted OpenAI server did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            loop.call_soon_threadsafe(server.close)
            for task in asyncio.all_tasks(loop):
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(10)

    def _sse(self, body: dict[str, Any], message: dict[str, Any], finish: str) -> bytes:
        """The answer as a stream: the text in two pieces (or the tool calls), the
        finish reason, usage, ``[DONE]``; chunked transfer encoding."""
        base = {"id": f"chatcmpl-{self.count}", "object": "chat.completion.chunk",
                "model": body.get("model", "scripted")}  # fmt: skip
        text = message.get("content") or ""
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": text[: len(text) // 2]}]
        deltas.append({"content": text[len(text) // 2 :]})
        if message.get("tool_calls"):
            deltas.append(
                {"tool_calls": [dict(c, index=i) for i, c in enumerate(message["tool_calls"])]}
            )
        events = [{**base, "choices": [{"index": 0, "delta": d}]} for d in deltas]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 10,
                       "completion_tokens": 5, "total_tokens": 15}})  # fmt: skip
        data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
        data += b"data: [DONE]\n\n"
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = json.loads(await reader.readexactly(length)) if length else {}
                with self._lock:
                    self.requests.append(body)
                message = self.script(body)
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                if body.get("stream"):
                    writer.write(self._sse(body, message, finish))
                    await writer.drain()
                    continue
                payload = json.dumps(
                    {
                        "id": f"chatcmpl-{len(self.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "scripted"),
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
