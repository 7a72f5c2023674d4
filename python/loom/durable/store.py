"""The journal's storage: what a backend (SQLite, JetStream) provides.

Every method is atomic on its own; :meth:`JournalStore.swap_owner` is the one
compare-and-set the lease protocol needs (a run has one owner at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .records import Approval, ApprovalStatus, RunRecord, RunStatus, StepRecord


@dataclass
class Listing:
    """Runs read from the journal, and the records that could not be read (id, why) —
    reported, left in place, never dropped."""

    runs: list[RunRecord] = field(default_factory=list)
    broken: list[tuple[str, str]] = field(default_factory=list)


class JournalStore(Protocol):
    """A journal backend."""

    #: Where the journal is (a path, a bucket), for messages.
    where: str

    async def create_run(self, run: RunRecord) -> bool:
        """Adds ``run``; False when a run with its id exists already."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None. Raises ``JournalError`` when its record is unreadable."""
        ...

    async def list_runs(
        self, *, statuses: tuple[RunStatus, ...] | None = None, agent: str | None = None
    ) -> Listing:
        """Runs (newest first), filtered by status and agent."""
        ...

    async def update_run(self, run_id: str, **fields: Any) -> None:
        """Sets fields of a run's record (status, steps, error, ...)."""
        ...

    async def swap_owner(
        self, run_id: str, expected: tuple[str, float], owner: str, lease_until: float
    ) -> bool:
        """Makes ``owner`` the run's owner if its (owner, lease_until) is still
        ``expected``; False when another process got there first."""
        ...

    async def renew(self, owner: str, run_ids: list[str], lease_until: float) -> list[str]:
        """Extends the lease of the unfinished runs ``owner`` holds; returns those of
        ``run_ids`` it did not renew (another owner has them, they ended, or are gone)."""
        ...

    async def steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in order. Raises ``JournalError`` when one is unreadable."""
        ...

    async def put_step(self, run_id: str, step: StepRecord) -> None:
        """Writes (or overwrites) step ``step.seq`` of the run; durable on return."""
        ...

    async def put_approval(self, approval: Approval) -> None:
        """Adds an approval request (unchanged if one with its id exists)."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def list_approvals(self, status: ApprovalStatus | None = None) -> list[Approval]: ...

    async def decide(
        self, approval_id: str, status: ApprovalStatus, by: str, reason: str, now: float
    ) -> Approval | None:
        """Records a decision on a pending approval; returns it, or None when it does
        not exist. A decided one keeps its first decision (returned unchanged)."""
        ...

    async def prune(self, finished_before: float) -> int:
        """Deletes finished, failed and cancelled runs last updated before the time
        given, with their steps; returns how many."""
        ...

    async def close(self) -> None: ...


__all__ = ["JournalStore", "Listing"]
