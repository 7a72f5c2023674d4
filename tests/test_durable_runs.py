"""Durable runs inside one process: what is replayed, what runs again, what is refused.

An "interruption" here is a runtime stopped while a handler waits (its run stays
unfinished in the journal); a second runtime on the same journal resumes it. The
kill -9 versions with real processes are in test_durable_crash.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from loom import (
    Agent,
    DurabilityError,
    NonDeterminismError,
    Runtime,
    ToolDenied,
    ToolInDoubt,
)
from loom.config import load_project_config
from loom.durable import SqliteJournal, run_key
from loom.llm import LLMProvider
from loom.tools import tool
from scripted_openai import ScriptedOpenAI, text_reply

Handler = Callable[[Any, str, Any], Awaitable[Any]]


def project_at(root: Path, durability: str = "", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "workspace").mkdir(exist_ok=True)
    (root / "loom.toml").write_text(
        f'[project]\nname = "durable"\n\n[durability]\nlease = 1\n{durability}\n{extra}\n'
    )
    return root


async def start(root: Path, handler: Handler, *, topics: tuple[str, ...] = ("work",)) -> Runtime:
    runtime = Runtime(load_project_config(root))
    await Agent("worker", topics=list(topics), on_event=handler, runtime=runtime).start()
    return runtime


async def journal_rows(root: Path) -> list[Any]:
    journal = SqliteJournal(root / ".loom" / "journal.db")
    try:
        return (await journal.list_runs()).runs
    finally:
        await journal.close()


async def wait_until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def interrupted_then_resumed(
    root: Path, first: Handler, second: Handler, payload: Any = None
) -> None:
    """Runs ``first`` until it blocks, stops that runtime, then starts ``second`` on a
    new runtime over the same journal (it resumes the run)."""
    rt = await start(root, first)
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload=payload or {"n": 1})
    await asyncio.sleep(0.3)
    await rt.stop(timeout=0.1)
    rt2 = await start(root, second)
    await asyncio.sleep(0.5)
    await rt2.stop(timeout=2)


async def test_a_resumed_run_replays_effects_and_goes_on_live(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    ran: list[str] = []

    @tool("test:charge", register=False)
    def charge(amount: int) -> dict[str, int]:
        """Charges an amount."""
        ran.append(f"charge {amount}")
        return {"charged": amount}

    seen: dict[str, list[Any]] = {"now": [], "random": [], "result": []}
    block = asyncio.Event()

    def handler(*, blocking: bool) -> Handler:
        async def on_event(ctx: Any, topic: str, event: Any) -> None:
            registry = await ctx.runtime.get_tools()
            if registry.local("test:charge") is None:
                registry.register(charge)
            seen["now"].append(await ctx.now())
            seen["random"].append(await ctx.random())
            seen["result"].append(await ctx.tool("test:charge", {"amount": 5}))
            if blocking:
                await block.wait()
            ran.append("after")

        return on_event

    await interrupted_then_resumed(root, handler(blocking=True), handler(blocking=False))
    assert ran == ["charge 5", "after"]  # the tool ran once; the rest went on live
    assert len(set(seen["now"])) == 1 and len(seen["now"]) == 2
    assert len(set(seen["random"])) == 1
    assert seen["result"] == [{"charged": 5}, {"charged": 5}]
    runs = await journal_rows(root)
    assert [(r.agent, r.status, r.steps) for r in runs] == [("worker", "finished", 3)]


async def test_a_different_call_on_replay_is_a_non_determinism_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = project_at(tmp_path / "p")
    errors: list[BaseException] = []

    async def first(ctx: Any, topic: str, event: Any) -> None:
        await ctx.emit("out.a", payload={"x": 1})
        await asyncio.Event().wait()

    async def second(ctx: Any, topic: str, event: Any) -> None:
        try:
            await ctx.emit("out.b", payload={"x": 1})
        except NonDeterminismError as exc:
            errors.append(exc)
            raise

    await interrupted_then_resumed(root, first, second)
    assert len(errors) == 1
    text = str(errors[0])
    assert "out.a" in text and "out.b" in text and "step 0" in text
    assert errors[0].journaled["topic"] == "out.a" and errors[0].requested["topic"] == "out.b"
    [run] = await journal_rows(root)
    assert run.status == "failed" and "NonDeterminismError" in run.error


async def test_an_interrupted_tool_runs_again_only_if_idempotent(tmp_path: Path) -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    @tool("test:lookup", register=False, idempotent=True)
    async def lookup(key: str) -> str:
        """Reads a value."""
        calls.append(f"lookup {key}")
        await gate.wait()
        return "v"

    @tool("test:pay", register=False)
    async def pay(amount: int) -> str:
        """Pays."""
        calls.append(f"pay {amount}")
        await gate.wait()
        return "paid"

    outcome: list[Any] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        registry = await ctx.runtime.get_tools()
        for t in (lookup, pay):
            if registry.local(t.name) is None:
                registry.register(t)
        name = event.payload["tool"]
        try:
            outcome.append(await ctx.tool(name, event.payload["args"]))
        except ToolInDoubt as exc:
            outcome.append(exc)

    for name, args in (("test:lookup", {"key": "k"}), ("test:pay", {"amount": 3})):
        sub = tmp_path / name.replace(":", "_")
        project_at(sub)
        gate.clear()
        rt = await start(sub, on_event)
        client = Agent("client", runtime=rt)
        await client.start()
        await client.ctx.emit("work", payload={"tool": name, "args": args})
        await wait_until(lambda n=name: any(c.startswith(n.split(":")[1]) for c in calls))
        await rt.stop(timeout=0.1)  # the tool is cancelled mid-call: in doubt
        gate.set()
        rt2 = await start(sub, on_event)
        want = 1 if name == "test:lookup" else 2
        await wait_until(lambda w=want: len(outcome) >= w)
        await rt2.stop(timeout=2)

    assert calls == ["lookup k", "lookup k", "pay 3"]  # the read again, the payment not
    assert outcome[0] == "v"
    assert isinstance(outcome[1], ToolInDoubt)
    assert outcome[1].tool == "test:pay" and "may or may not have run" in str(outcome[1])


async def test_a_duplicate_event_is_one_run_and_a_repeated_request_is_answered_again(
    tmp_path: Path,
) -> None:
    root = project_at(tmp_path / "p")
    handled: list[int] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        handled.append(event.payload["n"])
        await ctx.reply(event, "done", {"n": event.payload["n"], "t": await ctx.now()})

    rt = await start(root, on_event)
    client = Agent("client", runtime=rt)
    await client.start()
    key = {"Loom-Effect": "job:abc"}
    first = await client.ctx.request("work", payload={"n": 7}, headers=key, timeout=5)
    again = await client.ctx.request("work", payload={"n": 7}, headers=key, timeout=5)
    assert handled == [7]
    assert first.payload == again.payload
    assert again.correlation_id != first.correlation_id  # each asker gets its own answer
    other = await client.ctx.request("work", payload={"n": 8}, timeout=5)
    assert other.payload["n"] == 8 and handled == [7, 8]
    await rt.stop()
    runs = await journal_rows(root)
    assert sorted(r.status for r in runs) == ["finished", "finished"]


async def test_a_cancelled_run_stops_and_is_not_resumed(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    started: list[int] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        started.append(1)
        await ctx.now()
        await asyncio.sleep(30)

    rt = await start(root, on_event)
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload={})
    await wait_until(lambda: bool(started))
    [run] = await journal_rows(root)
    out = loom_cli(root, "runs", "cancel", run.run_id)
    assert out.returncode == 0 and "cancelled" in out.stdout
    await asyncio.sleep(1.0)  # the lease upkeep sees it (every lease/3 s)
    assert rt.durability is not None and not rt.durability._journals
    await rt.stop(timeout=1)
    rt2 = await start(root, on_event)
    await asyncio.sleep(0.3)
    await rt2.stop(timeout=1)
    assert started == [1]
    [run] = await journal_rows(root)
    assert run.status == "cancelled"
    listing = loom_cli(root, "runs", "list")
    assert run.run_id in listing.stdout and "cancelled" in listing.stdout


async def test_a_denied_approval_is_a_tool_denied(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p", extra='[tools]\nrequire_approval = ["fs:write_file"]')
    outcome: list[Any] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        try:
            await ctx.tool("fs:write_file", {"path": "x.txt", "content": "x"})
            outcome.append("written")
        except ToolDenied as exc:
            outcome.append(exc)

    rt = await start(root, on_event)
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload={})
    pending: list[Any] = []
    while not pending:
        await asyncio.sleep(0.1)
        pending = json.loads(loom_cli(root, "approvals", "list", "--json").stdout)
    [run] = await journal_rows(root)
    assert run.status == "waiting"
    out = loom_cli(root, "approvals", "deny", pending[0]["approval_id"], "--reason", "not now")
    assert out.returncode == 0, out.stderr
    await wait_until(lambda: bool(outcome))
    await rt.stop()
    assert isinstance(outcome[0], ToolDenied) and outcome[0].rule == "approval"
    assert "not now" in str(outcome[0])
    assert not (root / "workspace" / "x.txt").exists()
    again = loom_cli(root, "approvals", "approve", pending[0]["approval_id"])
    assert again.returncode == 1 and "already denied" in again.stdout


async def test_a_payload_that_is_not_json_is_a_clear_error(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    errors: list[BaseException] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        try:
            await ctx.emit("out", payload={"when": object()})
        except DurabilityError as exc:
            errors.append(exc)

    rt = await start(root, on_event)
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload={})
    await wait_until(lambda: bool(errors))
    await rt.stop()
    assert "JSON" in str(errors[0]) and "[durability]" in str(errors[0])


async def test_an_event_that_cannot_be_journaled_is_still_handled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = project_at(tmp_path / "p")
    got: list[Any] = []
    marker = object()

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        got.append(event.payload["thing"])

    rt = await start(root, on_event)
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload={"thing": marker})
    await wait_until(lambda: bool(got))
    await rt.stop()
    assert got == [marker]
    assert "handled without a journal" in caplog.text
    assert await journal_rows(root) == []


async def test_unreadable_runs_are_reported_and_do_not_stop_the_others(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    resumed: list[Any] = []
    gate = asyncio.Event()

    async def first(ctx: Any, topic: str, event: Any) -> None:
        await ctx.now()
        await gate.wait()

    async def second(ctx: Any, topic: str, event: Any) -> None:
        await ctx.now()
        resumed.append(event.payload)

    rt = await start(root, first)
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload={"good": True})
    await asyncio.sleep(0.3)
    await rt.stop(timeout=0.1)
    db = sqlite3.connect(root / ".loom" / "journal.db")
    with db:
        db.execute(
            "INSERT INTO loom_runs VALUES ('bad1', 'worker', 'running', '', 0, 1, '{not json')"
        )
        newer = json.dumps({"run_id": "bad2", "agent": "worker", "version": 99})
        db.execute(
            "INSERT INTO loom_runs VALUES ('bad2', 'worker', 'running', '', 0, 2, ?)", (newer,)
        )
    db.close()
    rt2 = await start(root, second)
    await wait_until(lambda: bool(resumed))
    await rt2.stop()
    assert resumed == [{"good": True}]
    listing = loom_cli(root, "runs", "list")
    assert "bad1  unreadable" in listing.stdout and "corrupt record" in listing.stdout
    assert "bad2  unreadable" in listing.stdout and "newer Loom" in listing.stdout
    db = sqlite3.connect(root / ".loom" / "journal.db")
    assert db.execute("SELECT count(*) FROM loom_runs").fetchone()[0] == 3  # nothing lost
    db.close()


def test_a_journal_of_a_newer_loom_is_refused_before_agents_start(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    (root / ".loom").mkdir()
    db = sqlite3.connect(root / ".loom" / "journal.db")
    with db:
        db.execute("CREATE TABLE loom_journal_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO loom_journal_meta VALUES ('schema', '7')")
    db.close()
    out = loom_cli(root, "runs", "list")
    assert out.returncode == 2 and "newer Loom" in out.stderr and "schema 7" in out.stderr
    (root / "loom.toml").write_text(
        (root / "loom.toml").read_text() + '\n[agents.w]\ncode = "w.py"\ntopics = ["w"]\n'
    )
    (root / "w.py").write_text("async def on_event(ctx, topic, event):\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "loom", "run", str(root)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 1 and "newer Loom" in run.stderr, run.stderr
    assert "agent w started" not in run.stderr


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            "store = 'sqlite'\nleese = 3",
            "[durability.leese]: unknown key 'leese'; did you mean 'lease'?",
        ),
        ("store = 'postgres'", "[durability.store]"),
        ("lease = -1", "[durability.lease]"),
        ("store = 'nats'", "needs [bus] nats"),
    ],
)
def test_a_bad_durability_table_names_file_line_and_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "loom.toml").write_text(f'[project]\nname = "x"\n\n[durability]\n{table}\n')
    out = loom_cli(root, "runs", "list")
    assert out.returncode == 2
    assert f"{root / 'loom.toml'}:" in out.stderr and expected in out.stderr, out.stderr


async def test_without_durability_nothing_is_journaled(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "loom.toml").write_text('[project]\nname = "x"\n')
    replies: list[Any] = []

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        replies.append(await ctx.now())

    rt = Runtime(load_project_config(root))
    await Agent("worker", topics=["work"], on_event=on_event, runtime=rt).start()
    client = Agent("client", runtime=rt)
    await client.start()
    await client.ctx.emit("work", payload={})
    await wait_until(lambda: bool(replies))
    assert rt.durability is None
    await rt.stop()
    assert not (root / ".loom" / "journal.db").exists()


async def test_llm_calls_and_streams_are_answered_from_the_journal(tmp_path: Path) -> None:
    server = ScriptedOpenAI(lambda body: text_reply(f"answer {len(body['messages'])}")).start()
    try:
        root = project_at(
            tmp_path / "p",
            extra=f'[llm.scripted]\nbase_url = "{server.base_url}"\nmodel = "m"\n',
        )
        got: list[Any] = []
        gate = asyncio.Event()

        def handler(blocking: bool) -> Handler:
            async def on_event(ctx: Any, topic: str, event: Any) -> None:
                llm = LLMProvider.from_name(ctx, "scripted")
                called = await llm.call(messages=[{"role": "user", "content": "hi"}])
                streamed = [
                    c
                    async for c in llm.stream(
                        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
                    )
                ]
                got.append((called.content, called.usage.total_tokens, "".join(streamed)))
                if blocking:
                    await gate.wait()
                await ctx.emit("done", payload=got[-1])

            return on_event

        await interrupted_then_resumed(root, handler(True), handler(False))
        assert got == [("answer 1", 15, "answer 2"), ("answer 1", 15, "answer 2")]
        assert server.count == 2  # nothing was asked twice
        assert [bool(r.get("stream")) for r in server.requests] == [False, True]
    finally:
        server.stop()


def test_run_keys_are_stable_for_redeliveries_and_resends() -> None:
    from loom import Envelope

    a = Envelope("t", payload=1)
    assert run_key("w", a) == run_key("w", Envelope("t", payload=2, id=a.id))  # redelivered
    assert run_key("w", a) != run_key("other", a)
    sent = Envelope("t", headers={"Loom-Effect": "r:3"})
    resent = Envelope("t", headers={"Loom-Effect": "r:3"})
    assert sent.id != resent.id
    assert run_key("w", sent) == run_key("w", resent) != run_key("w", a)


def loom_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", *args, "--project", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
