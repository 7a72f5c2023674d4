"""The dashboard's HTTP server (aiohttp, on the runtime's own event loop).

Pages: one HTML file with its script and style sheet from ``static/`` (no build step).
API (GET, JSON, read-only): ``/api/overview`` (project, agents, topics, who talks to
whom), ``/api/bus`` (queues, drops, JetStream consumers), ``/api/processes`` (the project's
processes on ``[bus] nats``), ``/api/tools`` (registry,
sandbox, LLM usage), ``/api/durable`` (runs, approvals), ``/api/runs`` (trace files),
``/api/runs/{run}/traces``, ``/api/runs/{run}/jaeger``, ``/api/search``; the live
events as server-sent events on ``/api/events``; ``POST /api/emit`` only with
``[dashboard] allow_send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from loom.config import ProjectConfig
from loom.dashboard.live import EventStream, RateMeter
from loom.dashboard.security import Gate, add_security_headers, new_token
from loom.dashboard.settings import DashboardSettings, is_loopback
from loom.dashboard.traces import SpanBuffer, TraceLibrary
from loom.dashboard.views import (
    agents_view,
    bus_view,
    durable_view,
    edges_view,
    jetstream_view,
    llm_view,
    processes_view,
    project_view,
    tools_view,
    topics_view,
)
from loom.errors import ConfigError, InvalidTopicError, LoomError
from loom.runtime import Runtime
from loom.telemetry.trace_files import to_jaeger

log = logging.getLogger("loom.dashboard")

STATIC = Path(__file__).parent / "static"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Seconds between keep-alive comments on an idle event stream.
HEARTBEAT = 15.0
#: Seconds between checks whether an idle event stream's page is still there.
GONE_CHECK = 0.5
#: Largest body ``POST /api/emit`` takes.
MAX_EMIT_BYTES = 64 * 1024


class Dashboard:
    """A dashboard for ``runtime`` (None: only the trace files of ``trace_dir``, as
    ``loom dash`` shows them).

    Args:
        settings: ``[dashboard]``.
        runtime: The agents to show.
        trace_dir: Where the runs' trace files are.
        live_run: The run id of this process's own trace (its spans come from
            ``buffer`` until they reach the file).
        buffer: A :class:`SpanBuffer` installed on this run's tracer provider.
    """

    def __init__(
        self,
        settings: DashboardSettings,
        *,
        runtime: Runtime | None = None,
        project: ProjectConfig | None = None,
        trace_dir: Path,
        live_run: str | None = None,
        buffer: SpanBuffer | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.project = project if project is not None else (runtime.project if runtime else None)
        self.library = TraceLibrary(trace_dir, live_run, buffer)
        self._token = new_token()
        self._runner: web.AppRunner | None = None
        self._stream: EventStream | None = None
        if runtime is not None:
            self._stream = EventStream(
                runtime.bus, runtime.telemetry.capture_content, settings.stream_rate
            )
        self._rates = RateMeter()
        self._streams: set[asyncio.Task[Any]] = set()
        self.port: int | None = None
        self._closing = asyncio.Event()

    # -- life ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL to open (with the token; the page trades it for a cookie)."""
        return f"{self.base_url}/?token={self._token}"

    @property
    def base_url(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _allowed_hosts(self, port: int) -> frozenset[str] | None:
        if not self.settings.loopback:
            return None
        names = {"127.0.0.1", "localhost", "[::1]", self.settings.host}
        return frozenset(f"{n}:{port}" for n in names)

    async def start(self) -> str:
        """Listens; returns :attr:`url`.

        Raises:
            ConfigError: the address cannot be bound (names ``[dashboard]`` host/port).
        """
        if not self.settings.loopback:
            log.warning(
                "dashboard: listening on %s, reachable from the network (the token still "
                'guards it; use host = "127.0.0.1" to serve this machine only)',
                self.settings.host,
            )
        # No Host is accepted until the port is known (set just below).
        gate = Gate(self._token, "loom_dashboard", frozenset())
        app = web.Application(middlewares=[gate.middleware], client_max_size=MAX_EMIT_BYTES)
        app.on_response_prepare.append(add_security_headers)
        self._routes(app, gate)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            message = (
                f"dashboard: cannot listen on {self.settings.host}:{self.settings.port}: "
                f"{exc.strerror or exc}"
            )
            if self.project is not None and "dashboard" in self.project.raw:
                raise self.project.error(message, "dashboard", "port") from None
            raise ConfigError(message) from None
        self._runner = runner
        port = int(runner.addresses[0][1])
        self.port = port
        # One cookie per port: two dashboards on one machine do not share a cookie.
        gate.cookie = f"loom_dashboard_{port}"
        gate.hosts = self._allowed_hosts(port)
        return self.url

    async def stop(self) -> None:
        self._closing.set()
        for task in list(self._streams):
            task.cancel()
        if self._stream is not None:
            await self._stream.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- routes -------------------------------------------------------------------------

    def _routes(self, app: web.Application, gate: Gate) -> None:
        self._gate = gate
        r = app.router
        r.add_get("/", self._index)
        r.add_static("/static/", STATIC, follow_symlinks=False, show_index=False)
        r.add_get("/api/overview", self._overview)
        r.add_get("/api/bus", self._bus)
        r.add_get("/api/processes", self._processes)
        r.add_get("/api/tools", self._tools)
        r.add_get("/api/durable", self._durable)
        r.add_get("/api/runs", self._runs)
        r.add_get("/api/runs/{run}/traces", self._traces)
        r.add_get("/api/runs/{run}/jaeger", self._jaeger)
        r.add_get("/api/search", self._search)
        r.add_get("/api/events", self._events)
        r.add_post("/api/emit", self._emit)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime
        stream = self._stream
        data: dict[str, Any] = {
            "project": project_view(self.project),
            "live": rt is not None,
            "live_run": self.library.live_run,
            "allow_send": self.settings.allow_send and rt is not None,
            "capture": rt.telemetry.capture_content() if rt is not None else False,
            "agents": [],
            "topics": [],
            "edges": [],
        }
        if rt is not None and stream is not None:
            published = {t: s.published for t, s in rt.bus.stats().topics.items()}
            data["agents"] = agents_view(rt)
            data["topics"] = topics_view(rt, self._rates.rates(published))
            # Both see the same events: the larger count of the two, not their sum.
            data["edges"] = edges_view(stream.edges | self.library.live_edges())
            data["listening"] = stream.listening
        return _json(data)

    async def _bus(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime
        if rt is None:
            return _json({"subscriptions": [], "jetstream": None})
        observers = self._stream.observer_ids if self._stream is not None else set()
        return _json({**bus_view(rt, observers), "jetstream": await jetstream_view(rt)})

    async def _processes(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime
        return _json(await processes_view(rt) if rt is not None else None)

    async def _tools(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime
        if rt is None:
            return _json({"tools": [], "sandbox": None, "llm": None})
        return _json({**tools_view(rt), "llm": llm_view(rt)})

    async def _durable(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime
        if rt is None:
            return _json(None)
        try:
            return _json(await durable_view(rt))
        except LoomError as exc:
            return _json({"error": str(exc)})

    async def _runs(self, request: web.Request) -> web.StreamResponse:
        return _json(await asyncio.to_thread(self.library.runs))

    def _run_id(self, request: web.Request) -> str:
        run = request.match_info["run"]
        if not _RUN_ID.match(run):
            raise web.HTTPBadRequest(text="bad run id\n")
        return run

    async def _traces(self, request: web.Request) -> web.StreamResponse:
        run = self._run_id(request)
        query = request.query.get("q", "")[:500]
        return _json(await asyncio.to_thread(self.library.traces, run, query))

    async def _jaeger(self, request: web.Request) -> web.StreamResponse:
        run = self._run_id(request)
        spans = await asyncio.to_thread(self.library.spans, run)
        trace = request.query.get("trace")
        if trace:
            spans = [s for s in spans if s.trace_id == trace]
        body = json.dumps(to_jaeger(spans), ensure_ascii=False, default=str)
        name = f"{run}{'-' + trace[:16] if trace else ''}.jaeger.json"
        return web.Response(
            text=body,
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{_safe_name(name)}"'},
        )

    async def _search(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "")[:500]
        return _json(await asyncio.to_thread(self.library.search, query))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        stream = self._stream
        if stream is None:
            raise web.HTTPNotFound(text="no agents run here (loom dash shows traces only)\n")
        pattern = request.query.get("pattern", ">").strip() or ">"
        try:
            listener = stream.listen(pattern)
        except InvalidTopicError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            await response.prepare(request)
            await response.write(b": connected\n\n")
            idle = 0.0
            while not self._closing.is_set():
                try:
                    message = await asyncio.wait_for(listener.outbox.get(), GONE_CHECK)
                except asyncio.TimeoutError:
                    # aiohttp does not cancel a handler whose client left: look.
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    idle += GONE_CHECK
                    if idle >= HEARTBEAT:
                        idle = 0.0
                        await response.write(b": ping\n\n")
                    continue
                idle = 0.0
                if listener.skipped:
                    message["skipped"] = message.get("skipped", 0) + listener.skipped
                    listener.skipped = 0
                data = json.dumps(message, ensure_ascii=False, default=str)
                await response.write(f"data: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            stream.leave(listener)
            if task is not None:
                self._streams.discard(task)
        return response

    async def _emit(self, request: web.Request) -> web.StreamResponse:
        rt = self.runtime
        if rt is None or not self.settings.allow_send:
            raise web.HTTPForbidden(
                text="sending events is off: set [dashboard] allow_send = true\n"
            )
        if not self._gate.same_origin(request):
            raise web.HTTPForbidden(text="cross-origin request refused\n")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="the body must be JSON\n") from None
        if not isinstance(body, dict) or not isinstance(body.get("topic"), str):
            raise web.HTTPBadRequest(text='give {"topic": ..., "type": ..., "payload": ...}\n')
        kind = body.get("type", "event")
        if not isinstance(kind, str) or not kind:
            raise web.HTTPBadRequest(text="type must be a non-empty string\n")
        try:
            await rt.bus.publish(body["topic"], kind, body.get("payload"), source="dashboard")
        except LoomError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        return _json({"sent": True})


def _json(data: Any) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False, default=str), content_type="application/json"
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


async def serve_until(dashboard: Dashboard, stop: asyncio.Event) -> None:
    """Serves until ``stop`` is set (``loom dash``)."""
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await dashboard.stop()


__all__ = ["Dashboard", "is_loopback", "serve_until"]
