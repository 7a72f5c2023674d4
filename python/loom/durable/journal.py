"""One run's journal: what :mod:`loom._effects` calls while the run executes.

On a first attempt every step is new: its intent is written before the effect happens
and its outcome after. On a resumed attempt the steps already journaled are handed back
in order — compared with what the handler asks for (a mismatch is a
:class:`~loom.errors.NonDeterminismError`) — until the journal is exhausted; from there
the run is live again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from loom.errors import NonDeterminismError, RunCancelled, ToolDenied

from .records import (
    Approval,
    RunRecord,
    RunStatus,
    StepRecord,
    digest,
    error_from_json,
    error_to_json,
)
from .settings import DurabilitySettings
from .store import JournalStore


class RunHost(Protocol):
    """What a run's journal needs of the runtime's :class:`~loom.durable.Durability`."""

    store: JournalStore
    settings: DurabilitySettings

    def is_cancelled(self, run_id: str) -> bool: ...

    async def set_status(self, run_id: str, status: RunStatus) -> None: ...


log = logging.getLogger("loom.durable")


class JournalStep:
    """A step of a :class:`RunJournal` (implements :class:`loom._effects.Step`)."""

    __slots__ = ("_journal", "in_doubt", "key", "record", "replayed")

    def __init__(
        self, journal: RunJournal, record: StepRecord, *, replayed: bool, in_doubt: bool
    ) -> None:
        self._journal = journal
        self.record = record
        self.replayed = replayed
        self.in_doubt = in_doubt
        self.key = f"{journal.run_id}:{record.seq}"

    def value(self) -> Any:
        if self.record.state == "error":
            raise error_from_json(self.record.error or {})
        return self.record.result

    async def finish(self, value: Any) -> None:
        self.record.state, self.record.result, self.record.ts = "done", value, time.time()
        await self._journal.write(self.record)

    async def fail(self, exc: BaseException) -> None:
        self.record.state, self.record.error = "error", error_to_json(exc)
        self.record.ts = time.time()
        await self._journal.write(self.record)


class RunJournal:
    """The journal of one attempt at one run (implements :class:`loom._effects.Effects`)."""

    def __init__(self, durability: RunHost, run: RunRecord, steps: list[StepRecord]) -> None:
        self.durability = durability
        self.run = run
        self.run_id = run.run_id
        self._journaled = steps
        self._replay_len = len(steps)
        self._next = 0
        #: Where else a reply of this run goes: requests re-sent by a resumed caller
        #: while the run was still executing ((reply_to, correlation_id) pairs).
        self.reply_aliases: list[tuple[str, str]] = []

    @property
    def replaying(self) -> bool:
        return self._next < len(self._journaled)

    @property
    def step(self) -> int:
        """The number of steps taken so far in this attempt."""
        return self._next

    async def begin(self, kind: str, request: Mapping[str, Any]) -> JournalStep:
        seq = self._next
        self._next += 1
        request = dict(request)
        fingerprint = digest(kind, request)
        if seq < len(self._journaled):
            found = self._journaled[seq]
            if found.kind != kind or found.digest != fingerprint:
                raise NonDeterminismError(
                    self.run_id,
                    seq,
                    {"kind": found.kind, **found.request},
                    {"kind": kind, **request},
                )
            if found.state == "intent":
                log.info(
                    "run %s (%s) step %d: %s was interrupted; deciding what to do",
                    self.run_id,
                    self.run.agent,
                    seq,
                    kind,
                )
                return JournalStep(self, found, replayed=False, in_doubt=True)
            return JournalStep(self, found, replayed=True, in_doubt=False)
        if seq == self._replay_len and seq:
            log.info("run %s (%s): journal replayed (%d steps), now live", self.run_id,
                     self.run.agent, seq)  # fmt: skip
        record = StepRecord(seq, kind, fingerprint, request, ts=time.time())
        await self.write(record)
        return JournalStep(self, record, replayed=False, in_doubt=False)

    async def write(self, record: StepRecord) -> None:
        if self.durability.is_cancelled(self.run_id):
            raise RunCancelled(f"run {self.run_id} was cancelled")
        await self.durability.store.put_step(self.run_id, record)
        if record.seq >= len(self._journaled):
            self._journaled.append(record)

    # -- approvals ------------------------------------------------------------------

    async def approval(self, tool: str, arguments: Mapping[str, Any], call_id: str) -> bool:
        """Waits for ``loom approvals approve|deny`` (from any terminal, or machine with
        the nats store). The run is ``waiting`` meanwhile; its request survives a
        restart (the resumed run waits for the same approval)."""
        durability = self.durability
        store = durability.store
        approval_id = call_id.replace(":", "-")
        await store.put_approval(
            Approval(
                approval_id,
                self.run_id,
                self.run.agent,
                tool,
                dict(arguments),
                requested=time.time(),
            )
        )
        log.warning(
            "run %s (%s): %s needs approval: loom approvals approve %s (or deny)",
            self.run_id,
            self.run.agent,
            tool,
            approval_id,
        )
        await durability.set_status(self.run_id, "waiting")
        settings = durability.settings
        deadline = (
            time.monotonic() + settings.approval_timeout if settings.approval_timeout else None
        )
        try:
            while True:
                found = await store.get_approval(approval_id)
                if found is not None and found.status != "pending":
                    approved = found.status == "approved"
                    log.info(
                        "run %s: %s %s by %s", self.run_id, tool, found.status, found.decided_by
                    )
                    if not approved:
                        raise ToolDenied(
                            tool,
                            f"denied by {found.decided_by or 'a person'}"
                            + (f": {found.reason}" if found.reason else ""),
                            rule="approval",
                        )
                    return True
                if deadline is not None and time.monotonic() > deadline:
                    await store.decide(
                        approval_id, "denied", "timeout", "no decision in time", time.time()
                    )
                    raise ToolDenied(
                        tool,
                        f"no decision within {settings.approval_timeout}s "
                        "([durability] approval_timeout)",
                        rule="approval",
                    )
                if durability.is_cancelled(self.run_id):
                    raise RunCancelled(f"run {self.run_id} was cancelled")
                await asyncio.sleep(settings.approval_poll)
        finally:
            if not durability.is_cancelled(self.run_id):
                await durability.set_status(self.run_id, "running")


__all__ = ["JournalStep", "RunJournal"]
