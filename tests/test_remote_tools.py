"""Tool hosts: tools exported by another process (`loom run` with `[tools] export`),
reached over a real nats-server through `ctx.tool` — the host's sandbox, approvals and
errors, load sharing, host choice, a host killed mid-call, one trace across both."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import (
    Agent,
    Runtime,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolError,
    ToolFailed,
    ToolNotFound,
)
from loom.config import parse_project_config
from loom.errors import ConfigError
from loom.nats import connect
from loom.nats import tool_wire as wire
from nats_servers import NatsServer

HOST_TOOLS = '''
import asyncio
import os
from pathlib import Path

from loom.tools import current_call, tool


def _me(ctx):
    call = current_call()
    return {
        "host": os.environ["HOST_LABEL"],
        "pid": os.getpid(),
        "agent_id": ctx.agent_id,
        "call_id": call.call_id if call else None,
        "headers": dict(call.headers) if call else None,
    }


@tool(name="host:whoami")
async def whoami(ctx) -> dict:
    """Who served this call."""
    return _me(ctx)


@tool(name="trace:whoami")
async def trace_whoami(ctx) -> dict:
    """Who served this call (the tracing test's host only)."""
    return _me(ctx)


@tool(name="host:add")
def add(a: int, b: int) -> int:
    """Adds (a sync tool: it runs in the host's worker thread)."""
    return a + b


@tool(name="slow:sleep")
async def sleep(seconds: float, marker: str) -> str:
    """Writes `marker`, then sleeps."""
    Path(marker).write_text("started")
    await asyncio.sleep(seconds)
    return "woke up"


async def on_event(ctx, topic, event):
    pass
'''


class Host:
    """A `loom run` process exporting tools: project ``name`` under ``root``."""

    def __init__(self, root: Path, name: str, url: str, export: list[str], extra: str = "") -> None:
        self.name = name
        self.dir = root / name
        (self.dir / "agents").mkdir(parents=True)
        (self.dir / "ws").mkdir()
        (self.dir / "agents" / "hosttools.py").write_text(HOST_TOOLS)
        (self.dir / "loom.toml").write_text(
            textwrap.dedent(
                f"""
                [project]
                name = "{name}"
                [workspace]
                root = "ws"
                [tools]
                export = {json.dumps(export)}
                {extra}
                [bus]
                nats = "{url}"
                [agents.tools]
                code = "agents/hosttools.py"
                topics = ["{name}.noop"]
                """
            )
        )
        self.log = self.dir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws(self) -> Path:
        return self.dir / "ws"

    def start(self) -> Host:
        env = {**os.environ, "HOST_LABEL": self.name}
        env.pop("LOOM_PROJECT", None)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loom.cli", "run"],
                cwd=self.dir,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        deadline = time.monotonic() + 60
        while "agent(s) running" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                pytest.fail(f"tool host {self.name} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # JetStream: the hosts' agents keep the default reliable subscriptions.
    server = NatsServer(jetstream=True, store=tmp_path_factory.mktemp("js")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hosts(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Host]]:
    """``alpha`` exports fs:* and host:* from a workspace with files (fs:delete needs an
    approval it has no callback for); ``beta`` exports host:* only."""
    root = tmp_path_factory.mktemp("hosts")
    alpha = Host(root, "alpha", nats_url, ["fs:*", "host:*"], 'require_approval = ["fs:delete"]')
    (alpha.ws / "hello.txt").write_text("hello from alpha\n")
    (alpha.ws / "big.txt").write_text("a" * (1 << 20))
    (root / "secret.txt").write_text("outside every workspace\n")
    os.symlink(root / "secret.txt", alpha.ws / "escape")
    beta = Host(root, "beta", nats_url, ["host:*"])
    started = [alpha.start(), beta.start()]
    try:
        yield {h.name: h for h in started}
    finally:
        for h in started:
            h.stop()


async def caller_agent(url: str, project_dir: Path | None = None) -> Agent:
    """An agent of a fresh runtime joined to NATS (``project_dir``: with a project of
    its own, whose workspace is empty; else without native tools)."""
    project = None
    if project_dir is not None:
        project_dir.mkdir(parents=True, exist_ok=True)
        (project_dir / "loom.toml").write_text('[workspace]\nroot = "ws"\n[tools]\nremote = true\n')
        project = parse_project_config(
            (project_dir / "loom.toml").read_text(), project_dir / "loom.toml"
        )
    rt = Runtime(project)
    if project is None:
        (await rt.get_tools()).use_remote = True  # what [tools] remote = true sets
    await connect(rt, url, name="caller")
    agent = Agent("caller", runtime=rt)
    await agent.start()
    return agent


@pytest.fixture
async def caller(nats_url: str, hosts: dict[str, Host]) -> AsyncIterator[Agent]:
    agent = await caller_agent(nats_url)
    yield agent
    await agent.runtime.stop(timeout=5)


# -- calls ---------------------------------------------------------------------------


async def test_read_a_file_on_another_host(caller: Agent) -> None:
    got = await caller.ctx.tool("fs:read_file", {"path": "hello.txt"}, timeout=10)
    assert got["content"] == "hello from alpha\n"
    # This runtime has no native tools at all: the call can only have gone to alpha.
    registry = await caller.runtime.get_tools()
    assert registry.local("fs:read_file") is None


async def test_a_runtime_with_its_own_workspace_picks_the_host(
    nats_url: str, hosts: dict[str, Host], tmp_path: Path
) -> None:
    agent = await caller_agent(nats_url, tmp_path / "mine")
    try:
        # Its own fs:read_file wins for the plain name: its workspace has no such file.
        with pytest.raises(ToolError) as local:
            await agent.ctx.tool("fs:read_file", {"path": "hello.txt"})
        assert "host" not in local.value.details
        got = await agent.ctx.tool("fs:read_file@alpha", {"path": "hello.txt"})
        assert got["content"] == "hello from alpha\n"
    finally:
        await agent.runtime.stop(timeout=5)


async def test_without_remote_only_a_picked_host_is_asked(
    nats_url: str, hosts: dict[str, Host]
) -> None:
    """Without ``[tools] remote`` nothing goes to ``_loom.tool.`` unasked: a name the
    registry lacks is a local ToolNotFound at once, listings are local; ``tool@host``
    still reaches the host."""
    rt = Runtime()
    await connect(rt, nats_url, name="plain")
    agent = Agent("plain", runtime=rt)
    await agent.start()
    try:
        registry = await rt.get_tools()
        with pytest.raises(ToolNotFound, match="is registered") as info:
            await agent.ctx.tool("host:whoami", {})
        assert "exports" not in str(info.value)
        assert not [s for s in await agent.ctx.tools() if s.source == "remote"]
        assert (await agent.ctx.tool("host:whoami@beta", {}))["host"] == "beta"
        assert registry.remote is not None
        assert await registry.remote.discover() == 2  # alpha and beta answer
        assert (await agent.ctx.tool("host:whoami", {}))["host"] in {"alpha", "beta"}
        assert {s.name for s in await agent.ctx.tools() if s.source == "remote"} >= {
            "fs:read_file",
            "host:whoami",
        }
    finally:
        await rt.stop(timeout=5)


async def test_remote_tools_are_listed_with_their_hosts(caller: Agent) -> None:
    specs = {s.name: s for s in await caller.ctx.tools()}
    assert specs["fs:read_file"].source == "remote"
    assert specs["fs:read_file"].hosts == ("alpha",)
    assert "path" in specs["fs:read_file"].parameters["properties"]
    assert specs["host:whoami"].hosts == ("alpha", "beta")
    assert specs["fs:delete"].requires_approval, "the host's approval rule shows"
    assert "system:shell" not in specs, "alpha has it but does not export it"
    assert "trace:whoami" not in specs
    # The OpenAI-style name an LLM calls back reaches the remote tool too.
    got = await caller.ctx.tool("fs__read_file", {"path": "hello.txt"})
    assert got["content"] == "hello from alpha\n"


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("../../etc/passwd", "parent_escape"),
        ("/etc/shadow", "absolute_path"),
        ("escape", "symlink"),  # a symlink in alpha's workspace to a file outside it
    ],
)
async def test_the_hosts_sandbox_still_denies(caller: Agent, path: str, rule: str) -> None:
    with pytest.raises(ToolDenied) as info:
        await caller.ctx.tool("fs:read_file", {"path": path})
    assert info.value.rule == rule
    assert info.value.tool == "fs:read_file"
    assert info.value.details["host"] == "alpha"
    assert "outside every workspace" not in str(info.value)


async def test_approval_on_the_host_without_an_approver_denies(
    caller: Agent, hosts: dict[str, Host]
) -> None:
    (hosts["alpha"].ws / "keep.txt").write_text("keep")
    # The caller's own approver says yes: it is the owner's rule that decides.
    (await caller.runtime.get_tools()).approver = lambda req: True
    with pytest.raises(ToolDenied) as info:
        await caller.ctx.tool("fs:delete", {"path": "keep.txt"})
    assert info.value.rule == "approval"
    assert (hosts["alpha"].ws / "keep.txt").exists()


async def test_errors_come_back_typed(caller: Agent) -> None:
    with pytest.raises(ToolArgumentsInvalid) as bad:
        await caller.ctx.tool("fs:read_file", {"path": "hello.txt", "limit": 0})
    assert bad.value.errors == ["/limit: must be >= 1, got 0"]  # as a local call has them
    with pytest.raises(ToolArgumentsInvalid) as py_bad:
        await caller.ctx.tool("host:add", {"a": 1, "b": "two"})
    assert [(e["loc"], e["type"]) for e in py_bad.value.errors] == [("b", "int_parsing")]
    assert await caller.ctx.tool("host:add", {"a": 1, "b": 2}) == 3
    with pytest.raises(ToolFailed) as missing:
        await caller.ctx.tool("fs:read_file", {"path": "nope.txt"})
    assert missing.value.details["host"] == "alpha"


async def test_a_non_exported_tool_is_not_reachable(caller: Agent, nats_url: str) -> None:
    for name in ("system:shell", "system:shell@alpha"):
        with pytest.raises(ToolNotFound, match="exports"):
            await caller.ctx.tool(name, {"argv": ["cat", "hello.txt"]})
    # Even a hand-made request: nobody listens on the subject.
    import nats
    from nats.errors import NoRespondersError

    nc = await nats.connect(nats_url)
    try:
        body = json.dumps({"v": 1, "args": {"argv": ["id"]}}).encode()
        with pytest.raises(NoRespondersError):
            await nc.request(wire.call_subject("system:shell"), body, timeout=5)
        with pytest.raises(NoRespondersError):
            await nc.request(wire.call_subject("system:shell", "alpha"), body, timeout=5)
    finally:
        await nc.close()


async def test_a_forged_request_is_refused(nats_url: str, hosts: dict[str, Host]) -> None:
    """The host trusts nothing of the body beyond the arguments: fields the protocol
    does not define (a rule, a sandbox setting, another tool's name) are refused."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        for extra in ({"rule": "none"}, {"sandbox": {"enabled": False}}, {"tool": "system:shell"}):
            body = {"v": 1, "args": {"path": "hello.txt"}, **extra}
            msg = await nc.request(
                wire.call_subject("fs:read_file"), json.dumps(body).encode(), timeout=5
            )
            reply = json.loads(msg.data)
            assert reply["error"]["type"] == "ToolArgumentsInvalid", reply
            assert repr(next(iter(extra))) in reply["error"]["reason"]
        ok = {"v": 1, "args": {"path": "hello.txt"}}
        msg = await nc.request(wire.call_subject("fs:read_file"), json.dumps(ok).encode(), 5)
        assert json.loads(msg.data)["result"]["content"] == "hello from alpha\n"
    finally:
        await nc.close()


async def test_call_id_headers_and_caller_reach_the_host(caller: Agent) -> None:
    got = await caller.ctx.tool(
        "host:whoami@beta", {}, call_id="job-42", headers={"x-tenant": "acme"}
    )
    assert got["host"] == "beta"
    assert got["call_id"] == "job-42"
    assert got["headers"] == {"x-tenant": "acme"}
    assert got["agent_id"] == "caller@caller"


async def test_two_hosts_share_the_load_and_one_can_be_picked(caller: Agent) -> None:
    served = await asyncio.gather(*(caller.ctx.tool("host:whoami", {}) for _ in range(40)))
    by = {r["host"] for r in served}
    # NATS picks a queue member at random: with 40 calls both get some (p of not ~ 1e-12).
    assert by == {"alpha", "beta"}, by
    for name in ("alpha", "beta"):
        picked = await asyncio.gather(
            *(caller.ctx.tool(f"host:whoami@{name}", {}) for _ in range(10))
        )
        assert {r["host"] for r in picked} == {name}
    with pytest.raises(ToolNotFound, match=r"hosts exporting it: alpha, beta"):
        await caller.ctx.tool("host:whoami@gamma", {})


async def test_message_size_is_bounded_with_a_clear_error(caller: Agent) -> None:
    with pytest.raises(ToolArgumentsInvalid, match="max_payload"):
        await caller.ctx.tool("fs:write_file", {"path": "x.txt", "content": "x" * (2 << 20)})
    # A result too large for one message: the host says so instead of going silent.
    with pytest.raises(ToolFailed, match="max_payload") as info:
        await caller.ctx.tool("fs:read_file", {"path": "big.txt"})
    assert info.value.details["host"] == "alpha"
    got = await caller.ctx.tool("fs:read_file", {"path": "big.txt", "limit": 1000})
    assert got["content"] == "a" * 1000


def test_loom_tools_lists_remote_tools(
    hosts: dict[str, Host], nats_url: str, tmp_path: Path
) -> None:
    (tmp_path / "loom.toml").write_text(f'[tools]\nremote = true\n[bus]\nnats = "{nats_url}"\n')
    env = {k: v for k, v in os.environ.items() if k != "LOOM_PROJECT"}
    r = subprocess.run(
        [sys.executable, "-m", "loom.cli", "tools"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line[:1].strip()}
    assert "remote@alpha,beta" in lines["host:whoami"]
    # This project has native tools of its own: they are the ones its agents call.
    assert "native" in lines["fs:read_file"]
    assert "[exported]" not in lines["fs:read_file"]
    # The host's own listing flags what it exports, and listing does not serve.
    r = subprocess.run(
        [sys.executable, "-m", "loom.cli", "tools", "--local"],
        cwd=hosts["alpha"].dir,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line[:1].strip()}
    assert "[exported]" in lines["fs:read_file"] and "[exported]" in lines["fs:delete"]
    assert "[exported]" not in lines["system:shell"]
    r = subprocess.run(
        [sys.executable, "-m", "loom.cli", "tools", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    specs = {s["name"]: s for s in json.loads(r.stdout)}
    assert specs["host:whoami"]["hosts"] == ["alpha", "beta"]


# -- a host that goes away -----------------------------------------------------------


async def test_a_host_killed_mid_call_is_a_typed_error_within_the_timeout(
    nats_url: str, tmp_path: Path
) -> None:
    gamma = Host(tmp_path, "gamma", nats_url, ["slow:*"]).start()
    agent = await caller_agent(nats_url)
    try:
        marker = tmp_path / "started"
        call = asyncio.ensure_future(
            agent.ctx.tool("slow:sleep", {"seconds": 60, "marker": str(marker)}, timeout=20)
        )
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline and not call.done(), "the call never started"
            await asyncio.sleep(0.05)
        # Long enough for the host to have sent heartbeats: a slow tool is not a dead host.
        await asyncio.sleep(wire.SILENCE + 0.5)
        assert not call.done()
        gamma.stop(signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(ToolFailed, match="stopped answering"):
            await call
        elapsed = time.monotonic() - killed
        assert elapsed < wire.SILENCE + 1.5, elapsed
        # Gone: the next call finds nobody (and says so at once).
        t0 = time.monotonic()
        with pytest.raises(ToolNotFound):
            await agent.ctx.tool("slow:sleep", {"seconds": 0, "marker": str(marker)})
        assert time.monotonic() - t0 < 2
    finally:
        gamma.stop(signal.SIGKILL)
        await agent.runtime.stop(timeout=5)


async def test_a_host_that_stops_says_goodbye(nats_url: str, tmp_path: Path) -> None:
    agent = await caller_agent(nats_url)
    try:
        delta = Host(tmp_path, "delta", nats_url, ["slow:*"]).start()
        deadline = time.monotonic() + 10
        while "slow:sleep" not in {s.name for s in await agent.ctx.tools()}:
            assert time.monotonic() < deadline, "the announcement never arrived"
            await asyncio.sleep(0.05)
        assert delta.stop() == 0
        deadline = time.monotonic() + 10
        while "slow:sleep" in {s.name for s in await agent.ctx.tools()}:
            assert time.monotonic() < deadline, "the goodbye never arrived"
            await asyncio.sleep(0.05)
    finally:
        await agent.runtime.stop(timeout=5)


# -- tracing -------------------------------------------------------------------------


async def test_one_trace_across_caller_and_host(
    nats_url: str, tmp_path: Path, span_exporter: InMemorySpanExporter
) -> None:
    host = Host(tmp_path, "tracer", nats_url, ["trace:*"]).start()
    agent = await caller_agent(nats_url)
    try:
        with trace.get_tracer("test").start_as_current_span("root") as root:
            got = await agent.ctx.tool("trace:whoami", {})
        assert got["host"] == "tracer"
    finally:
        await agent.runtime.stop(timeout=5)
        assert host.stop() == 0
    mine = [s for s in span_exporter.get_finished_spans() if s.name == "execute_tool trace:whoami"]
    assert len(mine) == 1
    call_span = mine[0]
    assert call_span.attributes is not None
    assert call_span.attributes["loom.tool.source"] == "remote"
    assert call_span.attributes["loom.tool.host"] == "tracer"
    assert call_span.context.trace_id == root.get_span_context().trace_id

    from loom.telemetry.otlp_json import read_spans

    files = list((host.dir / ".loom" / "traces").glob("*.jsonl"))
    assert files, "the host wrote no trace file"
    theirs = [s for f in files for s in read_spans(f) if s.name == "execute_tool trace:whoami"]
    assert len(theirs) == 1, theirs
    served = theirs[0]
    assert served.trace_id == f"{call_span.context.trace_id:032x}"
    assert served.parent_id == f"{call_span.context.span_id:016x}"
    assert served.attributes["loom.tool.source"] == "python"


# -- in one process: configuration and the wire ----------------------------------------


def test_subject_tokens_round_trip() -> None:
    for name in ("fs:read_file", "system:shell", "hello.echo", "my.server:get.thing"):
        tokens = wire.tool_tokens(name)
        assert "~" in tokens or ":" not in tokens
        assert wire.tool_name(tokens) == name
    assert wire.call_subject("fs:read_file") == "_loom.tool.call.fs.read_file"
    assert wire.call_subject("fs:read_file", "alpha") == "_loom.tool.on.alpha.fs.read_file"
    assert wire.host_token("my laptop.local") == "my-laptop-local"
    assert wire.split_pinned("fs:read_file@alpha") == ("fs:read_file", "alpha")
    assert wire.split_pinned("fs:read_file@a.b") is None
    assert wire.split_pinned("not a name") is None


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ('"fs:*"', "must be a list"),
        ('["fs:read_fille"]', "did you mean 'fs:read_file'"),
        ("[1]", "must be a list"),
        ('["fs:*"]\nremote = "yes"', "must be true or false"),
    ],
)
async def test_export_is_checked(tmp_path: Path, export: str, message: str) -> None:
    (tmp_path / "loom.toml").write_text(f'[workspace]\nroot = "ws"\n[tools]\nexport = {export}\n')
    project = parse_project_config((tmp_path / "loom.toml").read_text(), tmp_path / "loom.toml")
    rt = Runtime(project)
    try:
        with pytest.raises(ConfigError, match=message) as info:
            await rt.get_tools()
        assert "[tools.export]" in str(info.value) or "[tools.remote]" in str(info.value)
    finally:
        await rt.stop(timeout=5)


async def test_the_exported_set_follows_the_registry(nats_url: str, tmp_path: Path) -> None:
    """A tool registered after the host started (an agent's own) is served once it
    matches ``[tools] export``; an unregistered one stops being served."""
    from loom.tools import tool

    (tmp_path / "loom.toml").write_text('[workspace]\nroot = "ws"\n[tools]\nexport = ["late:*"]\n')
    project = parse_project_config((tmp_path / "loom.toml").read_text(), tmp_path / "loom.toml")
    host_rt = Runtime(project)
    await connect(host_rt, nats_url, name="late-host")
    agent = await caller_agent(nats_url)
    try:

        @tool(name="late:echo", register=False)
        def echo(text: str) -> str:
            """Echoes."""
            return text

        registry = await host_rt.get_tools()
        registry.register(echo)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert await agent.ctx.tool("late:echo@late-host", {"text": "hi"}) == "hi"
                break
            except ToolNotFound:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        registry.unregister("late:echo")
        deadline = time.monotonic() + 10
        while True:
            try:
                await agent.ctx.tool("late:echo", {"text": "hi"})
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            except ToolNotFound:
                break
    finally:
        await agent.runtime.stop(timeout=5)
        await host_rt.stop(timeout=5)


async def test_a_small_max_payload_bounds_calls_and_catalogs(tmp_path: Path) -> None:
    """On a server with a 2 KiB max_payload: the catalog loses its schemas but still
    names every tool, a large request is refused before it is sent, a large result is
    refused by the host."""
    server = NatsServer(config="max_payload: 2048\n", workdir=tmp_path).start()
    (tmp_path / "loom.toml").write_text('[workspace]\nroot = "ws"\n[tools]\nexport = ["fs:*"]\n')
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "big.txt").write_text("b" * 4096)
    project = parse_project_config((tmp_path / "loom.toml").read_text(), tmp_path / "loom.toml")
    host_rt = Runtime(project)
    try:
        await connect(host_rt, server.url, name="small")
        agent = await caller_agent(server.url)
        try:
            specs = {s.name: s for s in await agent.ctx.tools()}
            assert {"fs:read_file", "fs:write_file", "fs:list_dir"} <= set(specs)
            assert "properties" not in specs["fs:read_file"].parameters
            with pytest.raises(ToolArgumentsInvalid, match="2048 bytes NATS carries"):
                await agent.ctx.tool("fs:write_file", {"path": "x", "content": "x" * 3000})
            with pytest.raises(ToolFailed, match="max_payload"):
                await agent.ctx.tool("fs:read_file", {"path": "big.txt"})
            got = await agent.ctx.tool("fs:read_file", {"path": "big.txt", "limit": 100})
            assert got["content"] == "b" * 100
        finally:
            await agent.runtime.stop(timeout=5)
    finally:
        await host_rt.stop(timeout=5)
        server.stop()
