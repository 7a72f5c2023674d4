"""``ctx.kv`` in real runtimes and processes: the project's ``.loom/kv.sqlite3``, shared
by agents, kept across restarts, seen by other processes, no lost updates under
concurrent writers, the event loop never blocked; ``[kv]`` checked up front."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Runtime
from loom.config import parse_project_config
from loom.errors import ConfigError
from loom.kv import KVClosedError, SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def _project(root: Path, extra: str = "") -> Runtime:
    root.mkdir(exist_ok=True)
    text = f'[project]\nname = "kv-test"\n{extra}'
    (root / "loom.toml").write_text(text)
    return Runtime(parse_project_config(text, root / "loom.toml"))


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_agents_of_one_runtime_share_a_bucket(tmp_path: Path) -> None:
    rt = _project(tmp_path / "p")
    seen: list[Any] = []

    async def remember(ctx: Any, topic: str, event: Any) -> None:
        await ctx.kv("notes").put(f"note.{event.payload['n']}", event.payload)
        await ctx.reply(event, payload="ok")

    async def recall(ctx: Any, topic: str, event: Any) -> None:
        entries = await ctx.kv("notes").items("note.")
        seen.extend(e.value["n"] for e in entries)
        await ctx.reply(event, payload=len(entries))

    try:
        async with (
            Agent("writer", topics=["remember"], on_event=remember, runtime=rt),
            Agent("reader", topics=["recall"], on_event=recall, runtime=rt),
            Agent("client", runtime=rt) as client,
        ):
            for n in range(3):
                await client.ctx.request("remember", payload={"n": n})
            reply = await client.ctx.request("recall")
            assert reply.payload == 3 and seen == [0, 1, 2]
            assert client.ctx.kv("notes") is rt.kv("notes")
    finally:
        await rt.stop(timeout=5)
    assert (tmp_path / "p" / ".loom" / "kv.sqlite3").is_file()


async def test_data_survives_a_runtime_restart(tmp_path: Path) -> None:
    first = _project(tmp_path / "p")
    async with Agent("a", runtime=first) as a:
        await a.ctx.kv("plans").put("plans.BTC.1", {"side": "buy"})
        rev = await a.ctx.kv("plans").put("plans.BTC.2", {"side": "sell"})
    await first.stop(timeout=5)
    with pytest.raises(KVClosedError):
        await first.kv("plans").get("plans.BTC.1")

    second = _project(tmp_path / "p")
    try:
        async with Agent("b", runtime=second) as b:
            kv = b.ctx.kv("plans")
            assert await kv.keys("plans.") == ["plans.BTC.1", "plans.BTC.2"]
            assert await kv.value("plans.BTC.2") == {"side": "sell"}
            # Revisions continue where the first runtime stopped.
            assert await kv.put("plans.BTC.3", {}) == rev + 1
    finally:
        await second.stop(timeout=5)


async def test_without_a_project_the_store_is_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rt = Runtime()
    try:
        await rt.kv().put("k", 1)
        assert await rt.kv().value("k") == 1
        assert rt.kv_store is not None and rt.kv_store.path is None
    finally:
        await rt.stop(timeout=5)
    assert list(tmp_path.iterdir()) == []


async def test_the_store_is_opened_only_when_used(tmp_path: Path) -> None:
    rt = _project(tmp_path / "p")
    async with Agent("idle", runtime=rt):
        pass
    await rt.stop(timeout=5)
    assert rt.kv_store is None and not (tmp_path / "p" / ".loom").exists()


async def test_kv_table_options(tmp_path: Path) -> None:
    rt = _project(
        tmp_path / "p",
        '\n[kv]\npath = "state/memory.db"\nsynchronous = "full"\nmax_value_size = 10\n',
    )
    try:
        await rt.kv().put("k", "short")
        store = rt.kv_store
        assert store is not None
        assert store.path == (tmp_path / "p" / "state" / "memory.db").resolve()
        assert (store.synchronous, store.max_value_size) == ("full", 10)
        with pytest.raises(ValueError, match="limit is 10"):
            await rt.kv().put("k", "much too long")
    finally:
        await rt.stop(timeout=5)
    memory = _project(tmp_path / "m", '\n[kv]\npath = ":memory:"\n')
    try:
        await memory.kv().put("k", 1)
        assert memory.kv_store is not None and memory.kv_store.path is None
    finally:
        await memory.stop(timeout=5)


@pytest.mark.parametrize(
    ("table", "line", "key", "message"),
    [
        ('[kv]\npth = "x"\n', 5, "kv.pth", "unknown key 'pth'"),
        ('[kv]\nsynchronous = "off"\n', 5, "kv.synchronous", "'normal' or 'full'"),
        ("[kv]\nmax_value_size = 0\n", 5, "kv.max_value_size", "greater than or equal to 1"),
        ('[kv]\nstore = "redis"\n', 5, "kv.store", "'sqlite'"),
    ],
)
def test_kv_table_is_checked_when_loaded(
    tmp_path: Path, table: str, line: int, key: str, message: str
) -> None:
    path = tmp_path / "loom.toml"
    with pytest.raises(ConfigError) as info:
        parse_project_config(f'[project]\nname = "x"\n\n{table}', path)
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), line, key)
    assert message in str(err)


def test_kv_path_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    text = '[workspace]\nroot = "ws"\n\n[kv]\npath = "ws/kv.sqlite3"\n'
    with pytest.raises(ConfigError, match=r"key-value store \(\[kv\] path\)"):
        parse_project_config(text, tmp_path / "loom.toml")
    ok = parse_project_config('[workspace]\nroot = "ws"\n', tmp_path / "loom.toml")
    assert ok.kv_path == (tmp_path / ".loom" / "kv.sqlite3").resolve()


async def test_another_process_sees_committed_data_and_writes_back(tmp_path: Path) -> None:
    rt = _project(tmp_path / "p")
    try:
        kv = rt.kv("shared")
        await kv.put("from.parent", {"n": 1})
        r = await asyncio.to_thread(
            _python,
            """
            import asyncio, json, sys
            from loom.kv import SqliteStore

            async def main():
                store = SqliteStore(sys.argv[1])
                kv = store.bucket("shared")
                seen = await kv.value("from.parent")
                rev = await kv.put("from.child", {"seen": seen})
                await store.close()
                print(json.dumps({"seen": seen, "rev": rev}))

            asyncio.run(main())
            """,
            str(tmp_path / "p" / ".loom" / "kv.sqlite3"),
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"seen": {"n": 1}, "rev": 2}
        # The parent's open connection sees the child's commit.
        assert await kv.value("from.child") == {"seen": {"n": 1}}
    finally:
        await rt.stop(timeout=5)


async def test_concurrent_writers_in_several_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    per_writer = 100
    child = """
        import asyncio, sys
        from loom.kv import SqliteStore

        async def main():
            store = SqliteStore(sys.argv[1])
            kv = store.bucket("counters")
            for _ in range(int(sys.argv[2])):
                await kv.modify("hits", lambda n: (n or 0) + 1, attempts=10_000)
            await store.close()

        asyncio.run(main())
    """
    # Two stores (two connections) in this process, two other processes.
    stores = [SqliteStore(path), SqliteStore(path)]

    async def local(store: SqliteStore) -> None:
        kv = store.bucket("counters")
        for _ in range(per_writer):
            await kv.modify("hits", lambda n: (n or 0) + 1, attempts=10_000)

    try:
        results = await asyncio.gather(
            asyncio.to_thread(_python, child, str(path), str(per_writer)),
            asyncio.to_thread(_python, child, str(path), str(per_writer)),
            *(local(s) for s in stores),
        )
        for r in results[:2]:
            assert r.returncode == 0, r.stderr
        assert await stores[0].bucket("counters").value("hits") == 4 * per_writer
    finally:
        for s in stores:
            await s.close()


async def test_the_event_loop_keeps_running_during_a_big_write(tmp_path: Path) -> None:
    size = 32 * 1024 * 1024
    store = SqliteStore(tmp_path / "kv.sqlite3", synchronous="full", max_value_size=size)
    kv = store.bucket()
    await kv.put("warm", 1)
    blob = os.urandom(size)
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    for i in range(3):
        await kv.put(f"big{i}", blob)
    elapsed = time.perf_counter() - started
    done.set()
    await beat
    try:
        # Writing ~100 MB with an fsync each takes a while; the loop ticked throughout.
        beats_during = sum(1 for _ in gaps)
        assert beats_during >= 5, (elapsed, gaps)
        assert max(gaps) < max(0.05, elapsed / 4), (elapsed, max(gaps))
        assert await kv.value("big2") == blob
    finally:
        await store.close()
