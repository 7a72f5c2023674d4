"""Orchestrator → workers → reviewer, with a bounded revision loop.

A planner splits the goal into tasks (a :class:`~loom.patterns.roles.Plan`), workers
do the tasks concurrently, and a reviewer scores the result and says what to rework.
Rejected work is revised (only the parts the reviewer named, or all of them) up to
``max_revisions`` times; the result is the approved version, or else the best-scored
one, with a flag saying whether it was approved::

    orchestrator = Orchestrator(llm=llm, max_revisions=2, min_score=0.8)
    result = await orchestrator.run("A blog post on event-driven agents")
    if result.approved:
        publish(result.output)  # else: result.score says how close it came

Any role can be replaced: ``Orchestrator(planner=..., worker=..., reviewer=...)`` with
the LLM or bus roles of :mod:`loom.patterns.roles`, or your own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from loom.errors import RequestTimeout
from loom.llm.errors import StructuredOutputError
from loom.patterns._common import (
    DEFAULT_BUS_TIMEOUT,
    ChatModel,
    content_attr,
    gather_or_cancel,
    span,
    workflow_span,
)
from loom.patterns.errors import OrchestratorError, PatternConfigError, RemoteError
from loom.patterns.roles import (
    BusPlanner,
    BusReviewer,
    BusWorker,
    LLMPlanner,
    LLMReviewer,
    LLMWorker,
    Part,
    Plan,
    Planner,
    Review,
    Reviewer,
    Task,
    Worker,
)

if TYPE_CHECKING:
    from loom.context import AgentContext

#: Why the revision loop stopped.
StopReason = Literal["approved", "max_revisions", "review_failed"]

#: Errors that mean "the reviewer gave no usable review" (the loop stops, see run()).
_REVIEW_FAILURES = (StructuredOutputError, ValidationError, RemoteError, RequestTimeout)


class Round(BaseModel):
    """One draft and its review (``review`` is ``None`` if the reviewer failed)."""

    round: int
    parts: list[Part]
    review: Review | None = None


class OrchestratorResult(BaseModel):
    """The outcome of :meth:`Orchestrator.run`.

    ``output`` is the approved draft, or (not ``approved``) the best-scored one;
    ``stop_reason`` says why the loop ended and ``error`` holds the reviewer's failure
    when it was ``"review_failed"``.
    """

    approved: bool
    output: str
    parts: list[Part]
    plan: Plan
    score: float
    """The chosen draft's score (0 when it was never reviewed)."""
    best_round: int
    revisions: int
    """Revision rounds done (0: the first draft was final)."""
    stop_reason: StopReason
    rounds: list[Round] = Field(default_factory=list)
    error: str | None = None


Assemble = Callable[[Plan, Sequence[Part]], str]


def default_assemble(plan: Plan, parts: Sequence[Part]) -> str:
    """The parts' contents in plan order, separated by blank lines."""
    return "\n\n".join(p.content.strip() for p in parts)


class Orchestrator:
    """Plans, fans the tasks out to workers, and reviews, revising a bounded number
    of times.

    Args:
        llm: Builds the roles not given (:class:`~loom.patterns.roles.LLMPlanner`,
            ``LLMWorker``, ``LLMReviewer``).
        planner: Splits the goal into tasks.
        worker: Does each task (called concurrently).
        reviewer: Scores the draft and asks for revisions.
        max_revisions: Revision rounds after the first draft (0: review once).
        min_score: A review approves only if ``approved`` and ``score >= min_score``.
        max_tasks: Tasks of a longer plan are dropped (the planner is told the limit).
        max_concurrency: Workers running at once.
        assemble: Builds the output from the parts (default: joined by blank lines).
        name: Names the run's span.

    Raises:
        PatternConfigError: a role is missing and there is no ``llm``, or a bad limit.
    """

    def __init__(
        self,
        *,
        llm: ChatModel | None = None,
        planner: Planner | None = None,
        worker: Worker | None = None,
        reviewer: Reviewer | None = None,
        max_revisions: int = 2,
        min_score: float = 0.0,
        max_tasks: int = 8,
        max_concurrency: int = 8,
        assemble: Assemble | None = None,
        name: str = "orchestrator",
    ) -> None:
        missing = [
            role
            for role, given in (("planner", planner), ("worker", worker), ("reviewer", reviewer))
            if given is None
        ]
        if missing and llm is None:
            raise PatternConfigError(f"no llm to build the {', '.join(missing)} with")
        if max_revisions < 0:
            raise PatternConfigError("max_revisions must be 0 or more")
        if not 0.0 <= min_score <= 1.0:
            raise PatternConfigError(f"min_score must be within 0..1, got {min_score}")
        if max_tasks < 1 or max_concurrency < 1:
            raise PatternConfigError("max_tasks and max_concurrency must be at least 1")
        self.planner: Planner = planner or LLMPlanner(_need(llm))
        self.worker: Worker = worker or LLMWorker(_need(llm))
        self.reviewer: Reviewer = reviewer or LLMReviewer(_need(llm))
        self.max_revisions = max_revisions
        self.min_score = min_score
        self.max_tasks = max_tasks
        self.max_concurrency = max_concurrency
        self.assemble: Assemble = assemble or default_assemble
        self.name = name

    def approves(self, review: Review) -> bool:
        """Whether ``review`` accepts the draft."""
        return review.approved and review.score >= self.min_score

    async def run(self, goal: str) -> OrchestratorResult:
        """Plans, works, reviews and revises; returns the approved or best draft.

        A reviewer that gives no usable review (invalid JSON, a bad or error reply, a
        timeout) ends the loop with ``stop_reason="review_failed"``: the result holds the
        best draft reviewed so far (else the current one), not approved.

        Raises:
            OrchestratorError: planning failed (``stage="plan"``), a worker failed
                (``stage="work"``, ``task``; the other workers are cancelled), or the
                reviewer raised something unexpected (``stage="review"``). The cause is
                chained.
        """
        with workflow_span("orchestrator", self.name) as wf:
            content_attr(wf, "loom.pattern.input", goal)
            plan = await self._plan(goal)
            wf.set_attribute("loom.pattern.tasks", len(plan.tasks))
            parts = await self._work(goal, plan, plan.tasks, {}, None)
            rounds: list[Round] = []
            stop: StopReason = "max_revisions"
            error: str | None = None
            for n in range(self.max_revisions + 1):
                review, error = await self._review(goal, plan, parts, n)
                rounds.append(Round(round=n, parts=parts, review=review))
                if review is None:
                    stop = "review_failed"
                    break
                if self.approves(review):
                    stop = "approved"
                    break
                if n == self.max_revisions:
                    break
                targets, notes = self._targets(plan, review)
                parts = await self._work(goal, plan, targets, notes, parts, round=n + 1)
            result = self._result(plan, rounds, stop, error)
            wf.set_attribute("loom.pattern.outcome", stop)
            wf.set_attribute("loom.pattern.approved", result.approved)
            wf.set_attribute("loom.pattern.score", result.score)
            wf.set_attribute("loom.pattern.revisions", result.revisions)
            content_attr(wf, "loom.pattern.output", result.output)
            return result

    async def _plan(self, goal: str) -> Plan:
        with span("orchestrator plan", "orchestrator") as s:
            try:
                plan = await self.planner.plan(goal, max_tasks=self.max_tasks)
            except Exception as exc:
                raise OrchestratorError(f"planning failed: {exc}"[:2000], stage="plan") from exc
            if len(plan.tasks) > self.max_tasks:
                plan = plan.model_copy(update={"tasks": plan.tasks[: self.max_tasks]})
            s.set_attribute("loom.pattern.tasks", len(plan.tasks))
            return plan

    async def _work(
        self,
        goal: str,
        plan: Plan,
        targets: Sequence[Task],
        notes: dict[str, str],
        previous: Sequence[Part] | None,
        *,
        round: int = 0,
    ) -> list[Part]:
        """Runs the workers for ``targets`` concurrently; returns every part in plan
        order (parts not targeted are kept from ``previous``)."""
        by_task = {p.task: p for p in previous or ()}
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(task: Task) -> Part:
            before = by_task.get(task.name)
            async with limit:
                with span(
                    f"orchestrator work {task.name}", "orchestrator", task=task.name, round=round
                ):
                    try:
                        content = await self.worker.work(
                            goal, task, feedback=notes.get(task.name), previous=before
                        )
                    except Exception as exc:
                        raise OrchestratorError(
                            f"worker for {task.name!r} failed: {exc}"[:2000],
                            stage="work",
                            task=task.name,
                        ) from exc
            return Part(
                task=task.name,
                content=content,
                revision=(before.revision + 1) if before is not None else 0,
            )

        done = await gather_or_cancel([one(t) for t in targets])
        by_task.update({p.task: p for p in done})
        return [by_task[t.name] for t in plan.tasks if t.name in by_task]

    async def _review(
        self, goal: str, plan: Plan, parts: list[Part], n: int
    ) -> tuple[Review | None, str | None]:
        with span("orchestrator review", "orchestrator", round=n) as s:
            try:
                review = await self.reviewer.review(goal, plan, parts, round=n)
            except _REVIEW_FAILURES as exc:
                s.set_attribute("loom.pattern.outcome", "review_failed")
                return None, f"{type(exc).__name__}: {exc}"[:2000]
            except Exception as exc:
                raise OrchestratorError(f"review failed: {exc}"[:2000], stage="review") from exc
            s.set_attribute("loom.pattern.score", review.score)
            s.set_attribute("loom.pattern.approved", self.approves(review))
            return review, None

    def _targets(self, plan: Plan, review: Review) -> tuple[list[Task], dict[str, str]]:
        """The tasks to rework and the feedback each gets: those the reviewer named
        (unknown names ignored), or all of them when it named none."""
        named: dict[str, list[str]] = {}
        for r in review.revisions:
            named.setdefault(r.task, []).append(r.instructions)
        targets = [t for t in plan.tasks if t.name in named]
        general = review.feedback.strip()
        if not targets:
            return list(plan.tasks), {t.name: general for t in plan.tasks}
        notes = {
            t.name: "\n".join([*named[t.name], *([f"Overall: {general}"] if general else [])])
            for t in targets
        }
        return targets, notes

    def _result(
        self, plan: Plan, rounds: list[Round], stop: StopReason, error: str | None
    ) -> OrchestratorResult:
        reviewed = [r for r in rounds if r.review is not None]
        if stop == "approved":
            chosen = rounds[-1]
        elif reviewed:
            # Best score; the later draft on a tie (it has had more feedback).
            chosen = max(reversed(reviewed), key=lambda r: r.review.score if r.review else 0.0)
        else:
            chosen = rounds[-1]
        return OrchestratorResult(
            approved=stop == "approved",
            output=self.assemble(plan, chosen.parts),
            parts=chosen.parts,
            plan=plan,
            score=chosen.review.score if chosen.review else 0.0,
            best_round=chosen.round,
            revisions=len(rounds) - 1,
            stop_reason=stop,
            rounds=rounds,
            error=error,
        )


def _need(llm: ChatModel | None) -> ChatModel:
    assert llm is not None  # checked by the caller
    return llm


class BusOrchestrator(Orchestrator):
    """An :class:`Orchestrator` whose workers and reviewers are agents.

    Each task goes to a worker agent (``ctx.request``, type ``work``) concurrently; the
    draft goes to the reviewer topic(s) with ``ctx.gather`` (type ``review``), so a
    panel of reviewers can answer (see :class:`~loom.patterns.roles.BusReviewer`). The
    plan comes from an LLM (``llm``) or a planner agent (``planner`` topic).

    Args:
        ctx: The context requests are sent from.
        workers: The worker topic, or ``topic(task)`` to pick a specialist per task.
        reviewers: The reviewer topic(s).
        planner: A planner agent's topic, or a :class:`Planner` (default: ``llm``).
        llm: Plans when ``planner`` is not given.
        reviewers_expected: Reviews to wait for (default: one per reviewer topic).
        timeout: Seconds each worker, reviewer or planner reply may take.
        **options: As for :class:`Orchestrator` (``max_revisions``, ``min_score``...).
    """

    def __init__(
        self,
        ctx: AgentContext,
        *,
        workers: str | Callable[[Task], str],
        reviewers: str | Sequence[str],
        planner: str | Planner | None = None,
        llm: ChatModel | None = None,
        reviewers_expected: int | None = None,
        timeout: float = DEFAULT_BUS_TIMEOUT,
        **options: Any,
    ) -> None:
        plan_role = (
            BusPlanner(ctx, planner, timeout=timeout) if isinstance(planner, str) else planner
        )
        super().__init__(
            llm=llm,
            planner=plan_role,
            worker=BusWorker(ctx, workers, timeout=timeout),
            reviewer=BusReviewer(ctx, reviewers, expected=reviewers_expected, timeout=timeout),
            **options,
        )
        self.ctx = ctx


__all__ = [
    "Assemble",
    "BusOrchestrator",
    "Orchestrator",
    "OrchestratorResult",
    "Round",
    "StopReason",
    "default_assemble",
]
