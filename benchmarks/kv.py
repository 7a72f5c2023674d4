"""Key-value benchmark: ``ctx.kv`` (SQLite backend) vs plain ``sqlite3`` in
``asyncio.to_thread``, same run, same file settings.

The baseline is what a user would write without Loom: one table ``(key TEXT PRIMARY
KEY, value BLOB)``, ``INSERT OR REPLACE`` of ``json.dumps(value)`` per put (one
autocommitted statement, i.e. one transaction each) and ``SELECT`` + ``json.loads`` per
get, each call run with ``asyncio.to_thread`` on one connection; WAL mode and
``synchronous=NORMAL`` — the store's default durability. Loom does more per put (key
check, a bucket-wide revision, timestamp and expiry columns, an explicit ``BEGIN
IMMEDIATE`` transaction), which is what the ratio prices.

Measures, for one task awaiting each call in turn (a handler's pattern) on a fresh
database file: puts/s and gets/s of a ~200-byte JSON value over N distinct keys; best of
three rounds, alternating the two sides.

Usage: python benchmarks/kv.py [--smoke] [--ops N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loom import Runtime
from loom.config import parse_project_config

VALUE: dict[str, Any] = {
    "symbol": "BTC-USD",
    "side": "buy",
    "qty": 0.25,
    "entry": 64123.5,
    "stop": 62000.0,
    "targets": [66000.0, 68000.0],
    "reason": "breakout above the 20-day high on rising volume",
}


class Baseline:
    """Plain sqlite3 through asyncio.to_thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self.lock = threading.Lock()  # to_thread may pick any worker thread

    def _put(self, key: str, data: bytes) -> None:
        with self.lock:
            self.conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, data))

    def _get(self, key: str) -> bytes | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    async def put(self, key: str, value: Any) -> None:
        await asyncio.to_thread(self._put, key, json.dumps(value).encode())

    async def get(self, key: str) -> Any:
        data = await asyncio.to_thread(self._get, key)
        return None if data is None else json.loads(data)

    async def close(self) -> None:
        self.conn.close()


async def _timed(n: int, op: Callable[[int], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    return time.perf_counter() - start


def _project(root: Path) -> Runtime:
    root.mkdir()
    text = '[project]\nname = "bench"\n'
    (root / "loom.toml").write_text(text)
    return Runtime(parse_project_config(text, root / "loom.toml"))


async def loom_round(n: int, root: Path) -> tuple[float, float]:
    rt = _project(root)
    kv = rt.kv("plans")
    await kv.put("warm", 0)
    try:
        put = await _timed(n, lambda i: kv.put(f"plans.BTC.{i:08d}", VALUE))
        got: list[Any] = []
        get = await _timed(n, lambda i: _collect(got, kv.value(f"plans.BTC.{i:08d}")))
        assert got[-1] == VALUE and len(got) == n
    finally:
        await rt.stop(timeout=5)
    return put, get


async def baseline_round(n: int, root: Path) -> tuple[float, float]:
    db = Baseline(root / "kv.sqlite3")
    await db.put("warm", 0)
    try:
        put = await _timed(n, lambda i: db.put(f"plans.BTC.{i:08d}", VALUE))
        got: list[Any] = []
        get = await _timed(n, lambda i: _collect(got, db.get(f"plans.BTC.{i:08d}")))
        assert got[-1] == VALUE and len(got) == n
    finally:
        await db.close()
    return put, get


async def _collect(out: list[Any], value: Awaitable[Any]) -> None:
    out.append(await value)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI")
    parser.add_argument("--ops", type=int, default=None, help="puts (and gets) per round")
    args = parser.parse_args()
    n = args.ops or (300 if args.smoke else 5000)
    rounds = 1 if args.smoke else 3

    best: dict[str, list[float]] = {"loom": [1e9, 1e9], "baseline": [1e9, 1e9]}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = ("loom", "baseline") if r % 2 == 0 else ("baseline", "loom")
            for side in order:
                run = loom_round if side == "loom" else baseline_round
                put, get = await run(n, Path(tmp) / f"{side}{r}")
                best[side] = [min(best[side][0], put), min(best[side][1], get)]

    print(
        f"kv: {n} sequential ops/round, best of {rounds}, ~{len(json.dumps(VALUE))}-byte "
        f"JSON value, WAL + synchronous=NORMAL, {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    for i, op in enumerate(("put", "get")):
        loom_t, base_t = best["loom"][i], best["baseline"][i]
        print(
            f"  {op}: ctx.kv {n / loom_t:9.0f}/s ({loom_t / n * 1e6:6.1f} µs)   "
            f"sqlite3+to_thread {n / base_t:9.0f}/s ({base_t / n * 1e6:6.1f} µs)   "
            f"time ratio ctx.kv/baseline {loom_t / base_t:.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
