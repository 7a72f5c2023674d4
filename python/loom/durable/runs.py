"""Durable runs: the runtime's side of ``[durability]``.

Each event an agent handles becomes a *run* keyed by (agent, event): journaled as
started before the handler is called, finished when it returns. A run is owned by one
process at a time (a lease it renews); an unfinished run whose owner is gone is taken
over — at start-up, when its event is delivered again, or by the periodic scan — and
executed again from its journal (:mod:`loom.durable.journal`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loom._aio import resolve
from loom._core import Envelope
from loom._effects import activate, deactivate, journaled_started
from loom.errors import DurabilityError, JournalError, RunCancelled
from loom.telemetry.state import Telemetry

from .journal import RunJournal
from .records import UNFINISHED, RunRecord, RunStatus, StepRecord, event_from_json, event_to_json
from .settings import DurabilitySettings
from .store import JournalStore

log = logging.getLogger("loom.durable")

#: The header that names the effect an event is (``<run>:<step>``, or ``job:<run>``):
#: the same on every attempt, so a re-sent event maps to the run it started.
EFFECT_HEADER = "Loom-Effect"

Handler = Callable[[Any, str, Envelope], Awaitable[Any] | Any]

#: The agent name runs of ``loom run``'s ``[job]`` are journaled under.
JOB_AGENT = "loom.run"


def run_key(agent_id: str, event: Envelope) -> str:
    """The run an event starts at an agent: the same for a redelivery (same id) and for
    a re-send by a resumed run (same effect header)."""
    headers = event.headers
    origin = (headers.get(EFFECT_HEADER) if headers else None) or event.id
    return hashlib.sha256(f"{agent_id}\0{origin}".encode()).hexdigest()[:24]


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[-1].split()[19].decode()


def owner_id() -> str:
    """This runtime, unmistakably: host, pid, the pid's start time, and a nonce (two
    runtimes of one process are two owners)."""
    pid = os.getpid()
    started = _start_time(pid) or int(time.time())
    return f"{socket.gethostname()}:{pid}:{started}:{os.urandom(3).hex()}"


def owner_gone(owner: str) -> bool:
    """Whether ``owner`` is a process of this machine that no longer runs. (Owners on
    other machines are judged by their lease alone.)"""
    host, pid, started, *_ = [*owner.split(":"), "", "", ""]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _start_time(int(pid)) != started


class Durability:
    """The journal of a runtime: wraps agents' handlers into durable runs, resumes
    unfinished ones, renews leases, answers cancellations."""

    def __init__(
        self, store: JournalStore, settings: DurabilitySettings, telemetry: Telemetry
    ) -> None:
        self.store = store
        self.settings = settings
        self.telemetry = telemetry
        self.owner = owner_id()
        self._entries: dict[str, dict[str, tuple[Any, Handler]]] = {}
        self._journals: dict[str, RunJournal] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: ``[job]`` runs this process is waiting on (their leases are renewed too).
        self._jobs: set[str] = set()
        self._cancelled: set[str] = set()
        #: Runs another process took over while this one held them (it stalled past
        #: its lease): stopped here, left to the new owner.
        self._lost: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<Durability {self.store.where} owner={self.owner}>"

    # -- handlers -------------------------------------------------------------------

    def wrap(self, ctx: Any, entry: str, handler: Handler) -> Handler:
        """``handler`` (``(ctx, topic, event)``) as a durable run per event; ``entry``
        names it among the agent's handlers (the pattern, or ``"inbox"``)."""
        agent = str(ctx.agent_id)
        self._entries.setdefault(agent, {})[entry] = (ctx, handler)
        self._start_ticker()

        async def durable(_ctx: Any, _topic: str, event: Envelope) -> None:
            await self.deliver(agent, entry, event)

        return durable

    async def deliver(self, agent: str, entry: str, event: Envelope) -> None:
        """Handles ``event`` as a run of ``agent``: a new run, or the run it already
        started (resumed when its owner is gone, answered again when finished)."""
        run_id = run_key(agent, event)
        now = time.time()
        headers = event.headers
        try:
            journaled_event = event_to_json(event)
        except DurabilityError as exc:
            # In-process events may carry any object; such a run cannot be journaled,
            # but it is not lost either.
            log.warning("%s: event %s is handled without a journal: %s", agent, event.id, exc)
            ctx, handler = self._entries[agent][entry]
            await resolve(handler(ctx, event.topic, event))
            return
        record = RunRecord(
            run_id,
            agent,
            entry,
            journaled_event,
            created=now,
            updated=now,
            owner=self.owner,
            lease_until=now + self.settings.lease,
            traceparent=(headers.get("traceparent") or "") if headers else "",
        )
        if await self.store.create_run(record):
            await journaled_started()  # a JetStream delivery is acked now
            await self._execute(record, [], resumed=False)
            return
        try:
            found = await self.store.get_run(run_id)
        except JournalError as exc:
            log.error("%s: event %s: %s", agent, event.id, exc)
            return
        if found is None:
            return
        await journaled_started()
        running = self._journals.get(run_id)
        if running is not None:
            if event.reply_to and event.correlation_id:
                running.reply_aliases.append((event.reply_to, event.correlation_id))
            log.debug("run %s: event %s delivered again while it runs", run_id, event.id)
            return
        if found.status == "finished":
            await self._answer_again(found, event)
            return
        if found.status == "failed":
            raise DurabilityError(f"run {run_id} ({agent}) failed: {found.error}")
        if found.status == "cancelled":
            log.info("run %s (%s) was cancelled; event %s dropped", run_id, agent, event.id)
            return
        if await self._claim(found):
            await self._resume(found)

    async def resume_agent(self, agent: str) -> int:
        """Takes over and resumes ``agent``'s unfinished runs whose owner is gone (in
        background tasks); returns how many were started."""
        listing = await self.store.list_runs(statuses=UNFINISHED, agent=agent)
        for run_id, problem in listing.broken:
            log.error("run %s cannot be resumed: %s", run_id, problem)
        started = 0
        for run in listing.runs:
            if run.run_id in self._journals or run.entry not in self._entries.get(agent, {}):
                continue
            if await self._claim(run):
                self._spawn(self._resume(run), f"resume {run.run_id}")
                started += 1
        return started

    # -- executing --------------------------------------------------------------------

    async def _claim(self, run: RunRecord) -> bool:
        now = time.time()
        if not (run.owner == self.owner or run.lease_until < now or owner_gone(run.owner)):
            return False
        ok = await self.store.swap_owner(
            run.run_id, (run.owner, run.lease_until), self.owner, now + self.settings.lease
        )
        if ok:
            run.owner, run.lease_until = self.owner, now + self.settings.lease
        return ok

    async def _resume(self, run: RunRecord) -> None:
        try:
            steps = await self.store.steps(run.run_id)
        except JournalError as exc:
            log.error("run %s (%s) cannot be resumed: %s", run.run_id, run.agent, exc)
            return
        log.info(
            "resuming run %s (agent %s, %s) at step %d",
            run.run_id,
            run.agent,
            run.entry,
            len(steps),
        )
        try:
            await self._execute(run, steps, resumed=True)
        except Exception:
            log.exception("resumed run %s (%s) failed", run.run_id, run.agent)

    async def _execute(self, run: RunRecord, steps: list[StepRecord], *, resumed: bool) -> None:
        entry = self._entries.get(run.agent, {}).get(run.entry)
        if entry is None:
            log.error("run %s: agent %s has no handler %r here", run.run_id, run.agent, run.entry)
            return
        ctx, handler = entry
        event = event_from_json(run.event)
        journal = RunJournal(self, run, steps)
        self._journals[run.run_id] = journal
        telemetry = self.telemetry

        async def body() -> None:
            token = activate(journal)
            try:
                if resumed and telemetry.active:
                    from loom.telemetry.agent_spans import invoke_agent_span

                    # The journaled event carries the first attempt's trace context.
                    with invoke_agent_span(telemetry, run.agent, event) as span:
                        span.add_event(
                            "loom.run.resumed",
                            {"loom.run.id": run.run_id, "loom.run.step": len(steps)},
                        )
                        await resolve(handler(ctx, event.topic, event))
                else:
                    await resolve(handler(ctx, event.topic, event))
            finally:
                deactivate(token)

        task = self._tasks[run.run_id] = asyncio.ensure_future(body())
        try:
            await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            stopping = me is not None and getattr(me, "cancelling", lambda: 0)() > 0
            if run.run_id in self._lost and task.cancelled() and not stopping:
                self._lost.discard(run.run_id)
                return  # the new owner finishes it; nothing of ours to write
            if run.run_id in self._cancelled and task.cancelled() and not stopping:
                await self._finish(run.run_id, "cancelled", "cancelled (loom runs cancel)")
                return
            # The runtime is stopping: the run stays unfinished, and its lease is handed
            # back so that the next runtime (or another process) resumes it at once.
            try:
                await asyncio.shield(self.store.renew(self.owner, [run.run_id], 0.0))
            except BaseException:
                log.debug("run %s: its lease could not be handed back", run.run_id)
            raise
        except RunCancelled as exc:
            await self._finish(run.run_id, "cancelled", str(exc))
        except Exception as exc:
            await self._finish(run.run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        else:
            await self._finish(run.run_id, "finished", "")
        finally:
            self._journals.pop(run.run_id, None)
            self._tasks.pop(run.run_id, None)

    async def _finish(self, run_id: str, status: RunStatus, error: str) -> None:
        journal = self._journals.get(run_id)
        steps = journal.step if journal is not None else 0
        await self.store.update_run(
            run_id, status=status, error=error, updated=time.time(), steps=steps, lease_until=0.0
        )

    async def set_status(self, run_id: str, status: RunStatus) -> None:
        await self.store.update_run(run_id, status=status, updated=time.time())

    def is_cancelled(self, run_id: str) -> bool:
        return run_id in self._cancelled

    async def _answer_again(self, run: RunRecord, event: Envelope) -> None:
        """A finished run's event delivered again, with somewhere to answer (a caller
        that resumed and asked again): its journaled replies are sent there."""
        if not event.reply_to:
            log.debug("run %s: finished; event %s dropped", run.run_id, event.id)
            return
        entry = self._entries.get(run.agent, {}).get(run.entry)
        if entry is None:
            return
        ctx = entry[0]
        for step in await self.store.steps(run.run_id):
            if step.kind == "reply" and step.state == "done":
                message = step.request
                await ctx.emit(
                    event.reply_to,
                    str(message.get("type", "reply")),
                    message.get("payload"),
                    correlation_id=event.correlation_id or event.id,
                    thread_id=event.thread_id,
                )

    # -- the [job] --------------------------------------------------------------------

    async def job_run(self, message: dict[str, Any], traceparent: str) -> tuple[str, bool]:
        """The run of ``loom run``'s ``[job]``: an unfinished one (its owner gone) is
        resumed — the job is sent again with the same effect key, which the agents'
        runs recognise — else a new one starts. Returns (run id, resumed)."""
        listing = await self.store.list_runs(statuses=UNFINISHED, agent=JOB_AGENT)
        for run in listing.runs:
            if run.entry == "job" and run.event == message and await self._claim(run):
                log.info("resuming the [job] of run %s (sent again, answered once)", run.run_id)
                self._jobs.add(run.run_id)
                self._start_ticker()
                return run.run_id, True
        now = time.time()
        run_id = os.urandom(12).hex()
        await self.store.create_run(
            RunRecord(
                run_id,
                JOB_AGENT,
                "job",
                message,
                created=now,
                updated=now,
                owner=self.owner,
                lease_until=now + self.settings.lease,
                traceparent=traceparent,
            )
        )
        self._jobs.add(run_id)
        self._start_ticker()
        return run_id, False

    async def end_job(self, run_id: str, status: RunStatus, error: str = "") -> None:
        self._jobs.discard(run_id)
        await self.store.update_run(
            run_id, status=status, error=error, updated=time.time(), lease_until=0.0
        )

    # -- background: leases, cancellations, take-overs, retention ----------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"loom:durable:{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start_ticker(self) -> None:
        if self._ticker is None and not self.closed:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(), name="loom:durable:leases"
            )

    async def _tick(self) -> None:
        interval = self.settings.lease / 3
        next_scan = time.monotonic() + self.settings.lease
        next_prune = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.settings.lease
                    for agent in list(self._entries):
                        await self.resume_agent(agent)
                if self.settings.retention_days and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 3600
                    cutoff = time.time() - self.settings.retention_days * 86400
                    pruned = await self.store.prune(cutoff)
                    if pruned:
                        log.info("journal: %d finished run(s) past retention deleted", pruned)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("journal %s: lease upkeep failed", self.store.where)

    async def _renew(self) -> None:
        owned = [*self._journals, *self._jobs]
        if not owned:
            return
        lost = set(await self.store.renew(self.owner, owned, time.time() + self.settings.lease))
        for run_id in owned:
            found = await self.store.get_run(run_id)
            if found is None:
                continue
            if found.status == "cancelled":
                self._cancel_here(run_id)
            elif run_id in lost and found.owner != self.owner and run_id in self._journals:
                self._leave(run_id)

    def _leave(self, run_id: str) -> None:
        """Stops a run whose lease this process lost (it stalled, another process took
        the run over): the other one resumes it from the journal; this one must not
        do its effects a second time."""
        if run_id in self._lost:
            return
        self._lost.add(run_id)
        log.warning(
            "run %s was taken over by another process while this one stalled; stopping it here",
            run_id,
        )
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()

    def _cancel_here(self, run_id: str) -> None:
        if run_id in self._cancelled:
            return
        self._cancelled.add(run_id)
        log.info("run %s was cancelled; stopping it", run_id)
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stops the upkeep and hands unfinished runs back (lease expired now, so
        another process can take them over at once)."""
        if self.closed:
            return
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.store.renew(self.owner, [*self._journals, *self._jobs], 0.0)
        except Exception:
            log.debug("journal: could not hand back the leases held", exc_info=True)
        await self.store.close()


__all__ = ["EFFECT_HEADER", "JOB_AGENT", "Durability", "owner_gone", "owner_id", "run_key"]
