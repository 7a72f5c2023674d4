"""The original project layout: ``agents/*.py`` scripts, run in-process on the shared
runtime.

The original ``loom run`` started every ``agents/*.py`` (and a ``main.py``, ``run.py``
or ``app.py`` beside loom.toml) as its own ``python`` process, each connecting to a
bridge. Here the bus lives in the process, so a script in a separate process would
get a private bus and its events would reach no one. Instead :class:`Script` executes
each script in the ``loom run`` process, on its running loop, while the project's
runtime is the default one — every ``Agent(...)`` the script builds joins it.

How a script runs (:meth:`Script.start`):

1. Its code is executed as ``__main__``, so an ``if __name__ == "__main__":`` block
   runs, with the script's directory and the project directory on the import path.
   While it (or a synchronous ``main()``) runs, ``asyncio.run(coro)`` called on the
   loop's thread does not try to nest a loop: ``coro`` becomes a task on the running
   loop. (``asyncio.run`` is swapped for that version only for the duration of the
   synchronous call, and stays the original on every other thread.) ``agent.run()``
   starts the agent on the running loop by itself (:meth:`loom.Agent.run`).
2. If that started nothing, a zero-argument ``main()`` (``async def`` or plain) is
   called; failing that, ``Agent`` objects built at module level are started.
3. A script that starts nothing is a :class:`ConfigError` naming the file; one that
   raises while starting is an :class:`AgentError` naming the file and line.

A script's ``main()`` that raises later is logged with its traceback and not
restarted (the original process would have exited); the agents it started keep
running until the runtime stops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from loom.agent import Agent
from loom.config import ProjectConfig
from loom.errors import AgentError, ConfigError
from loom.runtime import Runtime

log = logging.getLogger("loom.scripts")

#: After a script's coroutines are scheduled, how long ``start`` waits at most for the
#: agents they start (a ``[job]`` is sent only after every script has started), and
#: the quiet period that counts as "started".
SETTLE_TIMEOUT = 5.0
SETTLE_QUIET = 0.1


class Script:
    """One script of the original layout, run in-process on ``runtime``.

    Args:
        path: The script file.
        runtime: The runtime its agents join (made the default while it runs).
        project: The project (for the import path and error messages).
        module: Already imported (``[agents.x] code`` naming a module whose ``main()``
            takes no arguments): skip executing the file, go straight to ``main()``.
    """

    def __init__(
        self,
        path: Path,
        runtime: Runtime,
        project: ProjectConfig,
        *,
        module: ModuleType | None = None,
    ) -> None:
        self.path = path.resolve()
        self.runtime = runtime
        self.project = project
        self.module = module
        try:
            self.name = str(self.path.relative_to(project.root.resolve()))
        except ValueError:
            self.name = str(self.path)
        self._coroutines: list[Coroutine[Any, Any, Any]] = []

    @property
    def agent_id(self) -> str:
        return f"script:{self.name}"

    def __repr__(self) -> str:
        return f"Script({self.name!r})"

    async def start(self) -> None:
        """Runs the script until it has started its agents (see the module docstring).

        Raises:
            ConfigError: the script starts nothing.
            AgentError: the script raised while starting (file and line).
        """
        loop = asyncio.get_running_loop()
        Runtime.set_default(self.runtime)
        before_tasks = asyncio.all_tasks(loop)
        before_agents = set(self.runtime.agents)
        if self.module is None:
            self.module = self._execute(loop)
        started = bool(self._coroutines) or bool(asyncio.all_tasks(loop) - before_tasks)
        if not started:
            started = await self._fallback(loop)
        if not started:
            raise self._nothing_runnable()
        await self._await_agent_starts(before_tasks)
        for coro in self._coroutines:
            self.runtime.supervise(f"{self.name}.main", _once(coro, self.name))
        self._coroutines = []
        await self._settle(before_agents)
        log.info("script %s started", self.name)

    async def stop(self, timeout: float | None = None) -> None:
        """Nothing of its own to stop: its agents and tasks belong to the runtime."""

    # -- running the file ----------------------------------------------------------

    def _execute(self, loop: asyncio.AbstractEventLoop) -> ModuleType:
        try:
            source = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the agent script: {exc}", path=str(self.path)) from None
        module = ModuleType("__main__")
        module.__file__ = str(self.path)
        for entry in (str(self.project.root), str(self.path.parent)):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        try:
            code = compile(source, str(self.path), "exec")
        except SyntaxError as exc:
            raise AgentError(f"{self.path}:{exc.lineno}: invalid Python: {exc.msg}") from None
        with self._as_main(module, loop):
            try:
                exec(code, module.__dict__)
            except SystemExit as exc:
                # ``sys.exit(asyncio.run(main()))``: main is now a task; 0/None is fine.
                if exc.code not in (None, 0):
                    raise self._failed(exc, exc.__traceback__) from None
            except Exception as exc:
                raise self._failed(exc, exc.__traceback__) from exc
        return module

    async def _fallback(self, loop: asyncio.AbstractEventLoop) -> bool:
        """``main()`` without arguments, else module-level agents; False if neither."""
        assert self.module is not None
        main = getattr(self.module, "main", None)
        if callable(main) and takes_no_arguments(main):
            if inspect.iscoroutinefunction(main):
                self._coroutines.append(main())
                return True
            with self._as_main(self.module, loop):
                try:
                    result = main()
                except SystemExit as exc:
                    if exc.code not in (None, 0):
                        raise self._failed(exc, exc.__traceback__) from None
                    result = None
                except Exception as exc:
                    raise self._failed(exc, exc.__traceback__) from exc
            if inspect.isawaitable(result):
                self._coroutines.append(_as_coroutine(result))
            return True
        agents = [a for a in vars(self.module).values() if isinstance(a, Agent)]
        for agent in agents:
            if not agent.running:
                try:
                    await agent.start()
                except AgentError:
                    raise
                except Exception as exc:
                    raise AgentError(
                        f"{self.name}: starting agent {agent.agent_id!r} failed: {exc}"
                    ) from exc
        return bool(agents)

    async def _await_agent_starts(self, before: set[asyncio.Task[Any]]) -> None:
        """Waits for the ``agent.run()`` calls of the script; their errors are its."""
        starts = [
            t
            for t in asyncio.all_tasks() - before
            if t.get_name().startswith("loom:") and t.get_name().endswith(".start")
        ]
        for task in starts:
            try:
                await task
            except (AgentError, ConfigError):
                raise
            except Exception as exc:
                raise AgentError(f"{self.name}: agent.run() failed: {exc}") from exc

    async def _settle(self, before: set[str]) -> None:
        """Gives the script's coroutines time to start their agents: until the set of
        running agents has not changed for :data:`SETTLE_QUIET` seconds."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        seen = set(self.runtime.agents)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            now = set(self.runtime.agents)
            if now != seen:
                seen, quiet_since = now, time.monotonic()
            elif now - before and time.monotonic() - quiet_since >= SETTLE_QUIET:
                return

    @contextmanager
    def _as_main(self, module: ModuleType, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """While the script's synchronous code runs: it is ``sys.modules["__main__"]``
        (classes it defines resolve their annotations there), and ``asyncio.run`` on
        this thread schedules on ``loop`` instead of nesting."""
        original_run = asyncio.run
        coroutines = self._coroutines

        def run(main: Coroutine[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                return original_run(main, *args, **kwargs)
            coroutines.append(main)
            return None

        saved_main = sys.modules.get("__main__")
        sys.modules["__main__"] = module
        asyncio.run = run
        try:
            yield
        finally:
            asyncio.run = original_run
            if saved_main is not None:
                sys.modules["__main__"] = saved_main

    # -- errors --------------------------------------------------------------------

    def _failed(self, exc: BaseException, tb: TracebackType | None) -> AgentError:
        line = None
        for frame in traceback.extract_tb(tb):
            if Path(frame.filename).resolve() == self.path:
                line = frame.lineno
        where = f"{self.path}:{line}" if line else str(self.path)
        detail = f"exited with {exc.code!r}" if isinstance(exc, SystemExit) else f"raised {exc!r}"
        return AgentError(f"{where}: the agent script {detail}")

    def _nothing_runnable(self) -> ConfigError:
        assert self.module is not None
        hint = ""
        hooks = [n for n in ("on_event", "on_batch") if callable(getattr(self.module, n, None))]
        main = getattr(self.module, "main", None)
        if callable(main) and not takes_no_arguments(main):
            hooks.append("main(ctx)")
        if hooks:
            hint = (
                f"; it defines {', '.join(hooks)}: to run it as an agent module, name it "
                f'in its table: [agents.NAME] code = "{self.name}"'
            )
        return ConfigError(
            "the agent script starts nothing: no agent.run() or asyncio.run(main()) "
            'under if __name__ == "__main__":, no main() without arguments, and no '
            "Agent(...) at module level" + hint,
            path=str(self.path),
        )


def takes_no_arguments(fn: Callable[..., Any]) -> bool:
    """``fn()`` is a valid call (an original script's ``main``, not a ``main(ctx)``
    hook)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
    )


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _once(coro: Coroutine[Any, Any, Any], name: str) -> Callable[[], Awaitable[None]]:
    """A supervised factory that runs ``coro`` once: an error is logged, not retried
    (a second run would build the same agents again)."""
    used = False

    async def run() -> None:
        nonlocal used
        if used:
            return
        used = True
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: main() failed; its agents keep running", name)

    return run


def build_scripts(
    project: ProjectConfig, runtime: Runtime, paths: Sequence[Path] | None = None
) -> list[Script]:
    """A :class:`Script` for each of ``paths`` (default: every one of
    :meth:`ProjectConfig.script_files`)."""
    chosen = project.script_files() if paths is None else paths
    return [Script(path, runtime, project) for path in chosen]
