"""The extension's Rust allocator (mimalloc, ``core/src/lib.rs``) across ``os.fork``.

A child forked while other threads allocate in Rust with the GIL released (native tool
calls) must still be able to allocate in Rust: mimalloc installs no fork handlers, so
this holds only while its allocation paths take no lock another thread could hold at
the fork (v2's take none but on a rare path; v3 locks on every thread's start and exit).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from loom import _core

FORKS = 20
EVENTS = 2_000


def wait(pid: int, timeout: float) -> int | None:
    """The child's wait status, or ``None`` (killed) if it has not exited in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def child_work() -> int:
    """Rust allocations of every size in the child: envelopes, headers, a deep queue."""
    bus = _core.Bus()
    sub = bus.subscribe("fork.check", "reliable", EVENTS)
    for i in range(EVENTS):
        bus.publish("fork.check", "tick", {"i": i}, headers={"k": "v" * (i % 300)})
    got = sub.take(EVENTS)
    return 0 if [e.payload["i"] for e in got] == list(range(EVENTS)) else 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_rust_threads_allocate_can_allocate(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f.txt").write_text("x" * 65_536)
    cfg = {"workspace": {"root": str(ws)}, "sandbox": {}, "tools": {}}
    tools = _core.NativeTools(json.dumps(cfg))
    stop = threading.Event()
    calls = [0, 0]

    def worker(k: int) -> None:
        while not stop.is_set():
            _result, error, _spans = tools.call_sync("fs:read_file", {"path": "f.txt"})
            assert error is None, error
            calls[k] += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    statuses = []
    try:
        while sum(calls) < 10:  # the workers are in their loops
            time.sleep(0.001)
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = child_work()
                finally:
                    os._exit(code)
            statuses.append(wait(pid, 20.0))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        tools.close()
    assert all(s is not None and os.waitstatus_to_exitcode(s) == 0 for s in statuses), statuses
    assert all(c > 0 for c in calls), calls
