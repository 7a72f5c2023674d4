"""The dashboard's server, from outside: who gets in (token, cookie, Host), what every
response forbids (CSP, framing, CORS), what the API shows and never shows (secrets,
payloads with capture off), the live stream's sampling and counts, sending events only
when allowed, the traces of past runs, and ``[dashboard]`` errors.

Real parts: the server listens on 127.0.0.1 and is reached over HTTP with aiohttp's
client; runs are real ``run_project`` runs writing real trace files; ``loom dash`` is a
real process stopped with SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loom import Agent, Runtime
from loom.app import run_project
from loom.config import load_project_config
from loom.dashboard.server import Dashboard
from loom.dashboard.settings import DashboardSettings
from loom.errors import ConfigError
from loom.telemetry.state import Telemetry

pytestmark = pytest.mark.timeout(120)


def session() -> aiohttp.ClientSession:
    # aiohttp's client keeps no cookies for IP hosts unless told to (browsers do).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def bearer(board: Dashboard) -> dict[str, str]:
    return {"Authorization": f"Bearer {board.url.split('token=', 1)[1]}"}


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Dashboard, Agent]]:
    rt = Runtime()
    got: list[Any] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        got.append(event)

    worker = Agent("worker", topics=["work.>"], on_event=on_event, runtime=rt, group="pool")
    pub = Agent("pub", runtime=rt)
    await worker.start()
    await pub.start()
    pub.ctx.config = {"got": got}  # type: ignore[misc]
    board = Dashboard(DashboardSettings(), runtime=rt, trace_dir=tmp_path / "traces")
    await board.start()
    try:
        yield rt, board, pub
    finally:
        await board.stop()
        await rt.stop(timeout=2)


# -- who gets in ---------------------------------------------------------------------------


async def test_every_path_needs_the_token(live: tuple[Runtime, Dashboard, Agent]) -> None:
    _, board, _ = live
    async with session() as s:
        for path in (
            "/",
            "/static/app.js",
            "/static/style.css",
            "/api/overview",
            "/api/bus",
            "/api/tools",
            "/api/runs",
            "/api/events",
            "/api/search?q=x",
            "/nope",
        ):
            r = await s.get(board.base_url + path)
            assert r.status == 401, path
            body = await r.text()
            assert "worker" not in body
        r = await s.post(board.base_url + "/api/emit", json={"topic": "work.x"})
        assert r.status == 401
        r = await s.get(board.base_url + "/?token=not-the-token", allow_redirects=False)
        assert r.status == 401 and "Set-Cookie" not in r.headers
        r = await s.get(board.base_url + "/api/overview", headers={"Authorization": "Bearer x"})
        assert r.status == 401


async def test_the_token_in_the_url_becomes_a_strict_cookie(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, _ = live
    async with session() as s:
        r = await s.get(board.url, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/"
        cookie = r.headers["Set-Cookie"]
        assert cookie.startswith(f"loom_dashboard_{board.port}=")
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
            assert attr in cookie
        r = await s.get(board.base_url + "/api/overview")
        assert r.status == 200
        agents = [a["id"] for a in (await r.json())["agents"]]
        assert agents == ["pub", "worker"]
    # Another dashboard's token does not open this one.
    other = Dashboard(DashboardSettings(), runtime=None, trace_dir=Path("/nonexistent"))
    await other.start()
    try:
        async with session() as s:
            r = await s.get(board.base_url + "/api/overview", headers=bearer(other))
            assert r.status == 401
    finally:
        await other.stop()


async def test_a_foreign_host_header_is_refused(live: tuple[Runtime, Dashboard, Agent]) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 reaches the port, but
    # its requests carry its own name in Host.
    _, board, _ = live
    async with session() as s:
        for host in ("evil.example", f"evil.example:{board.port}", f"127.0.0.1:{board.port + 1}"):
            r = await s.get(
                board.base_url + "/api/overview", headers={**bearer(board), "Host": host}
            )
            assert r.status == 403, host
        for host in (f"127.0.0.1:{board.port}", f"localhost:{board.port}"):
            r = await s.get(
                board.base_url + "/api/overview", headers={**bearer(board), "Host": host}
            )
            assert r.status == 200, host


async def test_responses_forbid_scripts_framing_and_other_origins(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, _ = live
    async with session() as s:
        origin = {"Origin": "https://evil.example"}
        responses = [
            await s.get(board.base_url + "/api/overview", headers=origin),  # 401
            await s.get(board.base_url + "/", headers={**bearer(board), **origin}),
            await s.get(board.base_url + "/api/overview", headers={**bearer(board), **origin}),
            await s.options(
                board.base_url + "/api/emit",
                headers={**origin, "Access-Control-Request-Method": "POST"},
            ),
        ]
        for r in responses:
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert not any(k.lower().startswith("access-control-") for k in r.headers)
        page = await responses[1].text()
        # No inline script or style the CSP would have to allow.
        assert "<script>" not in page and "<style" not in page and " style=" not in page
        assert re.search(r"<script src=\"/static/app.js\"", page)


async def test_static_files_cannot_escape_their_folder(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, _ = live
    async with session() as s:
        for path in (
            "/static/../server.py",
            "/static/%2e%2e/server.py",
            "/static/..%2f..%2f__init__.py",
            "/api/runs/..%2f..%2fetc%2fpasswd/traces",
            "/api/runs/../../etc/passwd/jaeger",
        ):
            r = await s.get(board.base_url + path, headers=bearer(board))
            assert r.status in (400, 403, 404), (path, r.status)
            assert "import" not in await r.text()


# -- the live stream -----------------------------------------------------------------------


async def read_events(
    s: aiohttp.ClientSession, board: Dashboard, pattern: str, want: int, timeout: float = 5
) -> list[dict[str, Any]]:
    """Messages of the event stream until ``want`` events arrived (or ``timeout``)."""
    messages: list[dict[str, Any]] = []
    seen = 0

    async def run() -> None:
        nonlocal seen
        url = f"{board.base_url}/api/events?pattern={pattern}"
        async with s.get(url, headers=bearer(board)) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            async for line in r.content:
                if line.startswith(b"data: "):
                    m = json.loads(line[6:])
                    messages.append(m)
                    seen += len(m["events"])
                    if seen >= want:
                        return

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        pass
    return messages


async def test_an_event_reaches_the_stream_with_ids_and_no_payload(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, pub = live
    async with session() as s:
        reader = asyncio.ensure_future(read_events(s, board, "work.%3E", want=1))
        await _until(lambda: board._stream is not None and board._stream.listening == 1)
        sent = time.time()
        await pub.ctx.emit("other.topic", "x", {"n": 0})
        await pub.ctx.emit("work.a", "job", {"api_key": "sk-live-secret", "n": 1})
        messages = await reader
    events = [e for m in messages for e in m["events"]]
    assert [e["topic"] for e in events] == ["work.a"]  # the filter holds
    e = events[0]
    assert e["type"] == "job" and e["source"] == "pub" and e["size"] > 0
    assert e["ts"] - sent < 1.0
    assert "preview" not in e  # content capture is off by default
    assert "sk-live-secret" not in json.dumps(messages)


async def test_with_capture_on_a_preview_is_shown_with_secrets_masked(tmp_path: Path) -> None:
    rt = Runtime()
    rt.telemetry = Telemetry(capture=True)
    pub = Agent("pub", runtime=rt)
    await pub.start()
    board = Dashboard(DashboardSettings(), runtime=rt, trace_dir=tmp_path)
    await board.start()
    try:
        async with session() as s:
            reader = asyncio.ensure_future(read_events(s, board, "%3E", want=1))
            await _until(lambda: board._stream is not None and board._stream.listening == 1)
            await pub.ctx.emit("work.a", "job", {"api_key": "sk-live-secret", "text": "hello"})
            messages = await reader
    finally:
        await board.stop()
        await rt.stop()
    preview = messages[-1]["events"][0]["preview"]
    assert "hello" in preview and "sk-live-secret" not in preview and "***" in preview


async def test_the_stream_exists_only_while_a_page_listens(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    rt, board, pub = live
    before = len(rt.bus.stats().subscriptions)
    async with session() as s:
        reader = asyncio.ensure_future(read_events(s, board, "%3E", want=1))
        await _until(lambda: len(rt.bus.stats().subscriptions) == before + 1)
        await pub.ctx.emit("work.a", "job", 1)
        await reader
    await _until(lambda: len(rt.bus.stats().subscriptions) == before)
    assert board._stream is not None and board._stream.observer_ids == set()


async def test_at_high_rates_the_page_gets_a_sample_and_honest_counts(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, pub = live
    total = 20_000
    async with session() as s:
        messages: list[dict[str, Any]] = []

        async def run() -> None:
            url = f"{board.base_url}/api/events?pattern=flood.%3E"
            async with s.get(url, headers=bearer(board)) as r:
                async for line in r.content:
                    if line.startswith(b"data: "):
                        messages.append(json.loads(line[6:]))

        reader = asyncio.ensure_future(run())
        await _until(lambda: board._stream is not None and board._stream.listening == 1)
        start = time.monotonic()
        for i in range(total):
            pub.ctx.runtime.bus.publish_nowait("flood.x", "tick", i)
            if i % 1000 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(1.0)  # the stream drains what it kept
        elapsed = time.monotonic() - start
        reader.cancel()
    shown = sum(len(m["events"]) for m in messages)
    skipped = sum(m.get("skipped", 0) for m in messages)
    missed = sum(m.get("missed", 0) for m in messages)
    # Every event is accounted for: shown, over the page's rate, or dropped at the stream.
    assert shown + skipped + missed == total, (shown, skipped, missed)
    assert 0 < shown <= board.settings.stream_rate * (elapsed + 1)
    assert missed > 0  # the stream's queue overflowed; the publisher never waited
    # Watching changed none of the bus's own figures: no subscriber, nothing dropped.
    flood = pub.ctx.runtime.bus.stats().topics["flood.x"]
    assert (flood.published, flood.delivered, flood.dropped, flood.subscribers) == (
        total,
        0,
        0,
        0,
    )


async def test_the_worker_pool_and_queue_show_on_bus_health(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, pub = live
    for i in range(3):
        await pub.ctx.emit("work.a", "job", i)
    async with session() as s:
        await _until(lambda: len(pub.ctx.config["got"]) == 3)
        bus = await (await s.get(board.base_url + "/api/bus", headers=bearer(board))).json()
        overview = await (
            await s.get(board.base_url + "/api/overview", headers=bearer(board))
        ).json()
    sub = next(x for x in bus["subscriptions"] if x["pattern"] == "work.>")
    assert sub["agent"] == "worker" and sub["group"] == "pool" and sub["qos"] == "reliable"
    assert sub["delivered"] == 3 and sub["depth"] == 0
    assert set(sub["dropped"]) == {"overflow_oldest", "overflow_newest", "timeout", "closed"}
    assert bus["jetstream"] is None
    topic = next(t for t in overview["topics"] if t["topic"] == "work.a")
    assert topic["published"] == 3 and topic["agents"] == ["worker"]


# -- sending events --------------------------------------------------------------------------


async def test_sending_is_off_unless_allowed(live: tuple[Runtime, Dashboard, Agent]) -> None:
    _, board, pub = live
    async with session() as s:
        r = await s.post(
            board.base_url + "/api/emit", json={"topic": "work.a"}, headers=bearer(board)
        )
        assert r.status == 403 and "allow_send" in await r.text()
    assert pub.ctx.config["got"] == []


async def test_with_allow_send_the_page_sends_but_other_origins_cannot(tmp_path: Path) -> None:
    rt = Runtime()
    got: list[Any] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        got.append(event)

    agent = Agent("worker", topics=["work.>"], on_event=on_event, runtime=rt)
    await agent.start()
    board = Dashboard(DashboardSettings(allow_send=True), runtime=rt, trace_dir=tmp_path)
    await board.start()
    try:
        async with session() as s:
            await s.get(board.url)  # the cookie, as a browser gets it
            own = {"Origin": board.base_url}
            r = await s.post(
                board.base_url + "/api/emit",
                json={"topic": "work.a", "type": "job", "payload": {"n": 1}},
                headers={"Origin": "https://evil.example"},
            )
            assert r.status == 403 and "cross-origin" in await r.text()
            r = await s.post(board.base_url + "/api/emit", json={"topic": "work.>"}, headers=own)
            assert r.status == 400  # a pattern is not a topic
            r = await s.post(board.base_url + "/api/emit", data=b"{nope", headers=own)
            assert r.status == 400
            r = await s.post(
                board.base_url + "/api/emit",
                json={"topic": "work.a", "type": "job", "payload": {"n": 1}},
                headers=own,
            )
            assert r.status == 200
        await _until(lambda: len(got) == 1)
        assert got[0].source == "dashboard" and got[0].payload == {"n": 1}
    finally:
        await board.stop()
        await rt.stop()


# -- traces of past runs ---------------------------------------------------------------------


def write_project(root: Path, extra: str = "") -> Path:
    (root / "agents").mkdir(parents=True)
    (root / "agents" / "echo.py").write_text(
        "async def on_event(ctx, topic, event):\n"
        "    if event.payload.get('fail'):\n"
        "        raise RuntimeError('asked to fail')\n"
        "    await ctx.reply(event, 'answer', {'summary': 'echo'})\n"
    )
    (root / "loom.toml").write_text(
        f"""
[project]
name = "traced"

[agents.echo]
code = "agents/echo.py"
topics = ["echo.ask"]

[job]
topic = "echo.ask"
payload = {{ q = "hi" }}
timeout = 10
{extra}
"""
    )
    return root


async def test_past_runs_their_traces_search_and_jaeger_export(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    project = load_project_config(root)
    first = await run_project(project, install_signal_handlers=False)
    second = await run_project(project, install_signal_handlers=False)
    assert first.exit_code == second.exit_code == 0
    assert first.trace_file is not None and second.trace_file is not None
    board = Dashboard(DashboardSettings(), project=project, trace_dir=first.trace_file.parent)
    await board.start()
    try:
        async with session() as s:
            get = lambda p: s.get(board.base_url + p, headers=bearer(board))  # noqa: E731
            runs = await (await get("/api/runs")).json()
            ids = [r["run_id"] for r in runs]
            assert ids == [second.trace_file.stem, first.trace_file.stem]  # newest first
            assert all(not r["live"] and r["spans"] > 0 for r in runs)
            traces = await (await get(f"/api/runs/{ids[0]}/traces")).json()
            names = {sp["name"] for t in traces for sp in t["spans"]}
            assert "invoke_agent echo" in names
            assert any(n.startswith("invoke_workflow") for n in names)
            hit = await (await get(f"/api/runs/{ids[0]}/traces?q=agent:echo")).json()
            assert hit and any(sp["match"] for sp in hit[0]["spans"])
            assert await (await get(f"/api/runs/{ids[0]}/traces?q=agent:nobody")).json() == []
            found = await (await get("/api/search?q=agent:echo")).json()
            assert {f["run_id"] for f in found} == set(ids)
            r = await get(f"/api/runs/{ids[0]}/jaeger")
            assert r.status == 200
            disposition = r.headers["Content-Disposition"]
            assert disposition == f'attachment; filename="{ids[0]}.jaeger.json"'
            jaeger = json.loads(await r.text())
            assert {s["operationName"] for s in jaeger["data"][0]["spans"]} >= {"invoke_agent echo"}
            overview = await (await get("/api/overview")).json()
            assert overview["live"] is False and overview["project"]["name"] == "traced"
            r = await get("/api/events")
            assert r.status == 404  # no agents here: nothing to stream
    finally:
        await board.stop()


async def test_an_errored_run_is_found_by_error(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    (root / "loom.toml").write_text(
        (root / "loom.toml")
        .read_text()
        .replace('{ q = "hi" }', "{ fail = true }")
        .replace("timeout = 10", "timeout = 1")
    )
    project = load_project_config(root)
    result = await run_project(project, install_signal_handlers=False)
    assert result.exit_code == 1 and result.trace_file is not None
    board = Dashboard(DashboardSettings(), project=project, trace_dir=result.trace_file.parent)
    await board.start()
    try:
        async with session() as s:
            r = await s.get(board.base_url + "/api/search?q=error", headers=bearer(board))
            found = await r.json()
        assert found and found[0]["errors"] >= 1
    finally:
        await board.stop()


# -- [dashboard] settings --------------------------------------------------------------------


def test_a_misspelt_key_names_file_line_and_a_close_match(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", "\n[dashboard]\nenabled = true\nprot = 8080\n")
    project = load_project_config(root)
    from loom.dashboard.settings import dashboard_settings

    with pytest.raises(ConfigError) as err:
        dashboard_settings(project)
    text = str(err.value)
    assert "loom.toml" in text and "prot" in text and "did you mean 'port'" in text
    assert err.value.line == (root / "loom.toml").read_text().splitlines().index("prot = 8080") + 1


async def test_a_bad_dashboard_table_stops_loom_run_before_any_agent(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", "\n[dashboard]\nport = 70000\n")
    with pytest.raises(ConfigError, match="port"):
        await run_project(load_project_config(root), install_signal_handlers=False)
    assert not (root / ".loom" / "traces").exists()  # nothing ran


def test_the_original_keys_load_and_the_defaults_are_safe() -> None:
    s = DashboardSettings.model_validate({"enabled": True, "host": "127.0.0.1", "port": 3030})
    assert s.enabled and s.port == 3030 and s.loopback
    d = DashboardSettings()
    assert d.host == "127.0.0.1" and not d.allow_send and not d.enabled and d.loopback
    assert not DashboardSettings(host="0.0.0.0").loopback
    assert DashboardSettings(host="::1").loopback and DashboardSettings(host="localhost").loopback


async def test_a_port_in_use_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        root = write_project(tmp_path / "p", f"\n[dashboard]\nport = {port}\n")
        project = load_project_config(root)
        board = Dashboard(DashboardSettings(port=port), project=project, trace_dir=tmp_path)
        with pytest.raises(ConfigError) as err:
            await board.start()
    assert f"127.0.0.1:{port}" in str(err.value) and err.value.key == "dashboard.port"


async def test_a_non_loopback_host_warns_and_still_needs_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    board = Dashboard(DashboardSettings(host="0.0.0.0"), trace_dir=tmp_path)
    with caplog.at_level(logging.WARNING, "loom.dashboard"):
        await board.start()
    try:
        assert "reachable from the network" in caplog.text
        assert board.base_url.startswith("http://127.0.0.1:")  # the URL printed works here
        async with session() as s:
            assert (await s.get(board.base_url + "/api/runs")).status == 401
            assert (await s.get(board.base_url + "/api/runs", headers=bearer(board))).status == 200
    finally:
        await board.stop()


# -- loom dash ---------------------------------------------------------------------------


def test_loom_dash_serves_past_runs_until_sigint(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    result = asyncio.run(run_project(load_project_config(root), install_signal_handlers=False))
    assert result.trace_file is not None
    env = {**os.environ, "LOOM_PROJECT": "none"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", "dash", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.match(r"dashboard: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert m, line
        import urllib.request

        req = urllib.request.Request(
            m.group(1) + "/api/runs", headers={"Authorization": f"Bearer {m.group(2)}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            runs = json.loads(r.read())
        assert [r["run_id"] for r in runs] == [result.trace_file.stem]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()


def test_loom_dash_on_a_missing_path_says_so() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "loom", "dash", "/nonexistent/dir"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "/nonexistent/dir" in r.stderr


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_durable_runs_and_a_pending_approval_are_shown_redacted(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "workspace").mkdir(parents=True)
    (root / "loom.toml").write_text(
        '[project]\nname = "durable"\n\n[durability]\nlease = 1\n\n'
        '[tools]\nrequire_approval = ["fs:write_file"]\n'
    )
    rt = Runtime(load_project_config(root))

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        await ctx.tool(
            "fs:write_file", {"path": "x.txt", "content": "x", "password": "hunter2-secret"}
        )

    await Agent("worker", topics=["work"], on_event=on_event, runtime=rt).start()
    client = Agent("client", runtime=rt)
    await client.start()
    board = Dashboard(DashboardSettings(), runtime=rt, trace_dir=tmp_path)
    await board.start()
    try:
        await client.ctx.emit("work", payload={})
        async with session() as s:
            deadline = time.monotonic() + 10
            while True:
                r = await s.get(board.base_url + "/api/durable", headers=bearer(board))
                data = await r.json()
                if data["approvals"]:
                    break
                assert time.monotonic() < deadline, data
                await asyncio.sleep(0.1)
        (approval,) = data["approvals"]
        assert approval["tool"] == "fs:write_file" and approval["agent"] == "worker"
        assert approval["arguments"]["path"] == "x.txt"
        assert approval["arguments"]["password"] == "***"
        assert "hunter2-secret" not in json.dumps(data)
        (run,) = [r for r in data["runs"] if r["agent"] == "worker"]
        assert run["status"] == "waiting" and run["topic"] == "work"
        assert data["where"].endswith("journal.db")
    finally:
        await board.stop()
        await rt.stop(timeout=2)


async def test_without_durability_the_panel_says_none(
    live: tuple[Runtime, Dashboard, Agent],
) -> None:
    _, board, _ = live
    async with session() as s:
        r = await s.get(board.base_url + "/api/durable", headers=bearer(board))
        assert r.status == 200 and await r.json() is None
