"""How native tool results reach asyncio: the loop's completion port (an eventfd the
loop watches, filled by Rust workers without the GIL) and the ``call_soon_threadsafe``
fallback for a loop that is not the caller's running loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from loom import _core


def native_tools(tmp_path: Path) -> tuple[_core.NativeTools, Path]:
    ws = tmp_path / "ws"
    ws.mkdir()
    cfg = {"workspace": {"root": str(ws)}, "sandbox": {}, "tools": {}}
    return _core.NativeTools(json.dumps(cfg)), ws


async def read(core: _core.NativeTools, path: str) -> Any:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    core.call("fs:read_file", {"path": path}, None, loop, fut)
    result, error, _spans = await fut
    assert error is None, error
    return result["content"]


def loop_fds(loop: asyncio.AbstractEventLoop) -> set[int]:
    """The fds the loop's selector watches for reading."""
    selector = loop._selector  # type: ignore[attr-defined]
    return {key.fd for key in selector.get_map().values() if key.events}


def test_many_concurrent_results_arrive_through_one_port(tmp_path: Path) -> None:
    core, ws = native_tools(tmp_path)
    for i in range(64):
        (ws / f"f{i}.txt").write_text(f"content {i}")

    async def main() -> set[int]:
        before = loop_fds(asyncio.get_running_loop())
        got = await asyncio.gather(*(read(core, f"f{i}.txt") for i in range(64)))
        assert got == [f"content {i}" for i in range(64)]
        again = await asyncio.gather(*(read(core, f"f{i}.txt") for i in range(64)))
        assert again == got
        return loop_fds(asyncio.get_running_loop()) - before

    added = asyncio.run(main())
    # One eventfd for this loop, however many calls.
    assert len(added) == 1, added


def test_each_loop_gets_its_own_port(tmp_path: Path) -> None:
    core, ws = native_tools(tmp_path)
    (ws / "a.txt").write_text("a")
    for _ in range(3):  # a new loop each time; the closed ones are forgotten
        assert asyncio.run(read(core, "a.txt")) == "a"


def test_a_cancelled_call_does_not_stop_later_results(tmp_path: Path) -> None:
    core, ws = native_tools(tmp_path)
    (ws / "a.txt").write_text("a")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        handle = core.call("system:shell", {"argv": ["sleep", "5"]}, None, loop, fut)
        fut.cancel()
        handle.cancel()
        assert await read(core, "a.txt") == "a"
        await asyncio.sleep(0.3)  # the cancelled call's outcome arrives and is dropped
        assert await read(core, "a.txt") == "a"

    asyncio.run(main())


def test_a_loop_of_another_thread_is_resolved_with_call_soon_threadsafe(tmp_path: Path) -> None:
    core, ws = native_tools(tmp_path)
    (ws / "a.txt").write_text("from another thread")
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        ready.wait()
        watched = loop_fds(loop)
        fut: asyncio.Future[Any] = loop.create_future()
        # Called from this thread, where `loop` is not running: no port can be registered
        # (add_reader is not thread-safe), the fallback delivers.
        core.call("fs:read_file", {"path": "a.txt"}, None, loop, fut)
        result, error, _ = asyncio.run_coroutine_threadsafe(_wait(fut), loop).result(timeout=10)
        assert error is None and result["content"] == "from another thread"
        assert loop_fds(loop) == watched, "no reader was added from a foreign thread"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _wait(fut: asyncio.Future[Any]) -> Any:
    return await fut


def test_loops_in_several_threads_share_one_native_tools(tmp_path: Path) -> None:
    core, ws = native_tools(tmp_path)
    (ws / "a.txt").write_text("shared")
    errors: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            for _ in range(20):  # each call, and each new loop, looks the port up again
                got = await asyncio.gather(*(read(core, "a.txt") for _ in range(8)))
                assert got == ["shared"] * 8

        try:
            for _ in range(3):
                asyncio.run(main())
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not errors, errors


def test_a_forked_child_calls_tools_on_workers_of_its_own(tmp_path: Path) -> None:
    # The parent's workers do not exist in a forked child (an idle one may even hold the
    # job queue's lock there): the child's calls must run on threads of its own, file
    # reads and sandboxed processes alike, with the parent's tools and with new ones.
    core, ws = native_tools(tmp_path)
    (ws / "a.txt").write_text("a")

    async def calls(tools: _core.NativeTools) -> None:
        assert await read(tools, "a.txt") == "a"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        tools.call("system:shell", {"argv": ["echo", "hi"]}, None, loop, fut)
        result, error, _spans = await fut
        assert error is None, error
        assert result["stdout"] == "hi\n", result

    asyncio.run(asyncio.wait_for(calls(core), 30))  # the parent's pool has workers now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            asyncio.run(asyncio.wait_for(calls(core), 20))
            (tmp_path / "child").mkdir()
            fresh, fresh_ws = native_tools(tmp_path / "child")
            (fresh_ws / "a.txt").write_text("a")
            asyncio.run(asyncio.wait_for(calls(fresh), 20))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child's tool calls hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    asyncio.run(asyncio.wait_for(calls(core), 30))  # the parent's pool is unaffected
