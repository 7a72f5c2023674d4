"""The stdio transport: the server is Loom's child process, one JSON-RPC message per
line on its stdin/stdout; its stderr is drained continuously into the debug log."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
from contextlib import suppress
from typing import Any

from loom.tools.mcp import protocol
from loom.tools.mcp.config import StdioServer
from loom.tools.mcp.protocol import ConnectionLost
from loom.tools.mcp.transport import MAX_MESSAGE_BYTES, NotificationHandler, Transport

log = logging.getLogger("loom.tools.mcp")

#: Seconds a server gets to exit after its stdin is closed, then after SIGTERM.
EXIT_GRACE = 1.0
#: Lines (and characters per line) of stderr kept for error messages.
STDERR_TAIL_LINES = 20
STDERR_LINE_CHARS = 400


class StdioTransport(Transport):
    """A server started as a child process in its own process group."""

    def __init__(self, config: StdioServer, on_notification: NotificationHandler) -> None:
        super().__init__(config.name, on_notification)
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._write_lock = asyncio.Lock()
        self._lost: ConnectionLost | None = None
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr_done = asyncio.Event()
        self._lost_event = asyncio.Event()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    @property
    def pid(self) -> int | None:
        """The child's process id (also its process group id)."""
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self._lost is None and not self._closed

    def diagnostics(self) -> str:
        if not self._stderr_tail:
            return ""
        return "; stderr tail:\n  " + "\n  ".join(self._stderr_tail)

    async def open(self) -> None:
        cfg = self.config
        if not cfg.cwd.is_dir():
            raise ConnectionLost(f"cannot start {cfg.command!r}: no directory {cfg.cwd} (cwd)")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                cfg.command,
                *cfg.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(cfg.env),
                cwd=cfg.cwd,
                # Own process group: shutdown kills the server's children too, and a
                # Ctrl-C in Loom's terminal is not delivered to it directly.
                start_new_session=True,
                limit=MAX_MESSAGE_BYTES,
            )
        except FileNotFoundError:
            raise ConnectionLost(
                f"cannot start {cfg.command!r}: command not found (PATH={cfg.env.get('PATH', '')})"
            ) from None
        except OSError as exc:
            raise ConnectionLost(f"cannot start {cfg.command!r}: {exc}") from None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_stdout(), name=f"loom:mcp:{self.server}:stdout"),
            loop.create_task(self._drain_stderr(), name=f"loom:mcp:{self.server}:stderr"),
        ]
        log.debug("mcp %s: started %s (pid %d)", self.server, cfg.command, self.proc.pid)

    # -- sending -------------------------------------------------------------------

    async def _roundtrip(self, msg_id: int, method: str, params: dict[str, Any] | None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            await self._send(protocol.request(msg_id, method, params))
            return await fut
        finally:
            self._pending.pop(msg_id, None)

    async def _send(self, msg: dict[str, Any]) -> None:
        data = protocol.encode(msg)
        failure: ConnectionLost
        async with self._write_lock:
            if self._lost is not None or self._closed or self.proc is None:
                raise self._lost or ConnectionLost("the connection is closed", retry_safe=True)
            if _exited(self.proc.pid):
                # Died while idle and the reader has not seen EOF yet. Let it say how the
                # process ended; nothing was sent, so the call can safely go to a fresh
                # server (and this transport is dead from now on).
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._lost_event.wait(), EXIT_GRACE + 1.0)
                detail = self._lost.detail if self._lost else "the server process has exited"
                self._lost = ConnectionLost(detail, retry_safe=True)
                raise self._lost
            stdin = self.proc.stdin
            assert stdin is not None
            try:
                stdin.write(data)
                await stdin.drain()
                return
            except (BrokenPipeError, ConnectionResetError) as exc:
                failure = ConnectionLost(f"cannot write to the server's stdin: {exc}")
        # The process is probably gone: report how it ended, as the reader will.
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._lost_event.wait(), EXIT_GRACE + 1.0)
        raise self._lost or failure

    # -- receiving -----------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        reason: str
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                # Over the StreamReader limit: we can no longer find message boundaries.
                reason = f"sent a message larger than {MAX_MESSAGE_BYTES} bytes"
                self._signal(signal.SIGKILL)
                break
            if not line:
                reason = await self._exit_reason()
                break
            self._on_line(line)
        with suppress(asyncio.TimeoutError):
            # Let the stderr drain catch the last words before composing the error.
            await asyncio.wait_for(self._stderr_done.wait(), 0.5)
        self._lose(ConnectionLost(f"the server process {reason}{self.diagnostics()}"))

    async def _exit_reason(self) -> str:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), EXIT_GRACE)
        except asyncio.TimeoutError:
            self._signal(signal.SIGKILL)
            await self.proc.wait()
            return "closed its stdout (killed)"
        if code < 0:
            with suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def _on_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to decode
            log.warning(
                "mcp %s: ignoring a line on stdout that is not JSON-RPC: %.200r", self.server, line
            )
            return
        for m in msg if isinstance(msg, list) else [msg]:
            self._on_message(m)

    def _on_message(self, msg: Any) -> None:
        if isinstance(msg, dict) and protocol.is_response(msg):
            msg_id = msg.get("id")
            fut = self._pending.get(msg_id) if isinstance(msg_id, int) else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            else:
                log.debug(
                    "mcp %s: reply to an unknown or abandoned request %r", self.server, msg_id
                )
            return
        reply = self._incoming(msg)
        if reply is not None:
            self._spawn(self._send_quietly(reply))

    async def _send_quietly(self, msg: dict[str, Any]) -> None:
        with suppress(ConnectionLost):
            await self._send(msg)

    async def _drain_stderr(self) -> None:
        # Read in chunks, not lines: a server writing megabytes without a newline must
        # not stall us, and a full stderr pipe must never block the server.
        assert self.proc is not None and self.proc.stderr is not None
        stderr = self.proc.stderr
        debug = log.isEnabledFor(logging.DEBUG)
        pending = b""
        try:
            while chunk := await stderr.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > 65536:
                    lines.append(pending)
                    pending = b""
                for raw in lines:
                    self._stderr_line(raw, debug)
            if pending:
                self._stderr_line(pending, debug)
        finally:
            self._stderr_done.set()

    def _stderr_line(self, raw: bytes, debug: bool) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        if debug:
            log.debug("mcp %s stderr: %s", self.server, text)
        if len(text) > STDERR_LINE_CHARS:
            text = text[:STDERR_LINE_CHARS] + "…"
        self._stderr_tail.append(text)

    def _lose(self, exc: ConnectionLost) -> None:
        if self._lost is None and not self._closed:
            self._lost = exc
            self._lost_event.set()
            log.warning("mcp %s: %s", self.server, exc.detail)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # -- shutdown ------------------------------------------------------------------

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def close(self) -> None:
        """Closes stdin, waits, then SIGTERM, then SIGKILL (the whole process group)."""
        if self._closed:
            return
        self._closed = True
        proc = self.proc
        if proc is not None:
            if proc.returncode is None:
                if proc.stdin is not None:
                    with suppress(OSError):
                        proc.stdin.close()
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        await asyncio.wait_for(proc.wait(), EXIT_GRACE)
                        break
                    except asyncio.TimeoutError:
                        self._signal(sig)
                await proc.wait()
            # The group may outlive its leader (grandchildren): take it down too.
            self._signal(signal.SIGKILL)
            log.debug("mcp %s: stopped (pid %d)", self.server, proc.pid)
        lost = ConnectionLost("the connection was closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(lost)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_background()


def _exited(pid: int) -> bool:
    """Whether ``pid`` is gone or a zombie (Linux ``/proc``; False where unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # The state follows the parenthesised command name, which may contain spaces.
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")
