"""The orchestrator's data and roles: a planner, workers and a reviewer.

Each role is a small protocol with an LLM implementation and a bus implementation (an
agent reached with ``ctx.request``, or a panel of reviewers with ``ctx.gather``), so a
:class:`~loom.patterns.orchestrator.Orchestrator` can mix them freely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field, field_validator

from loom.errors import RequestTimeout
from loom.patterns._common import (
    DEFAULT_BUS_TIMEOUT,
    ChatModel,
    messages,
    reply_payload,
)

if TYPE_CHECKING:
    from loom.context import AgentContext

log = logging.getLogger("loom.patterns")


# -- data --------------------------------------------------------------------------------


class Task(BaseModel):
    """One piece of work in a plan."""

    name: str = Field(min_length=1, description="Short unique name, e.g. 'intro'.")
    instructions: str = Field(description="What the worker must produce.")


class Plan(BaseModel):
    """The planner's output: the tasks the workers do in parallel."""

    analysis: str = Field(default="", description="One or two sentences on the goal.")
    tasks: list[Task] = Field(min_length=1, description="Independent tasks, in output order.")

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[Task]) -> list[Task]:
        names = [t.name for t in tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        return tasks


class Part(BaseModel):
    """A worker's output for one task."""

    task: str
    content: str
    revision: int = 0
    """How many times this part was revised."""


class Revision(BaseModel):
    """A reviewer's request to rework one task."""

    task: str = Field(description="The name of the task to rework.")
    instructions: str = Field(description="What to change.")


class Review(BaseModel):
    """The reviewer's verdict on the assembled parts."""

    score: float = Field(ge=0.0, le=1.0, description="Quality from 0 to 1.")
    approved: bool = Field(description="True if the work is good enough to ship.")
    feedback: str = Field(default="", description="What is good and what to improve.")
    revisions: list[Revision] = Field(
        default_factory=list, description="Tasks to rework (empty: rework all if rejected)."
    )


# -- roles -------------------------------------------------------------------------------


class Planner(Protocol):
    """Splits a goal into tasks."""

    async def plan(self, goal: str, *, max_tasks: int) -> Plan:
        """The plan for ``goal`` (at most ``max_tasks`` tasks are used)."""
        ...


class Worker(Protocol):
    """Does one task; called again with feedback for a revision."""

    async def work(
        self, goal: str, task: Task, *, feedback: str | None = None, previous: Part | None = None
    ) -> str:
        """The content for ``task`` (``previous`` and ``feedback`` when revising)."""
        ...


class Reviewer(Protocol):
    """Scores the parts and says what to revise."""

    async def review(self, goal: str, plan: Plan, parts: Sequence[Part], *, round: int) -> Review:
        """The review of ``parts`` in revision round ``round`` (0 = first draft)."""
        ...


def parts_text(parts: Sequence[Part]) -> str:
    """The parts as markdown sections, for a reviewer's prompt."""
    return "\n\n".join(f"## {p.task}\n{p.content}" for p in parts)


PLANNER_INSTRUCTIONS = (
    "You are an orchestrator. Break the goal into at most {max_tasks} independent tasks "
    "that workers can do in parallel, each with a short unique name and clear "
    "instructions, in the order their results should appear."
)
WORKER_INSTRUCTIONS = (
    "You are a worker. Do only your task, as part of the larger goal. Answer with the "
    "result itself, no preamble."
)
REVIEWER_INSTRUCTIONS = (
    "You are a demanding reviewer. Score the combined work from 0 to 1 against the goal, "
    "approve it only if it is ready to ship, give concise feedback, and list the tasks "
    "that need rework with what to change."
)


class LLMPlanner:
    """Plans with ``llm.call_json(..., schema=Plan)``."""

    def __init__(
        self,
        llm: ChatModel,
        *,
        instructions: str = PLANNER_INSTRUCTIONS,
        max_attempts: int | None = None,
    ) -> None:
        self.llm = llm
        self.instructions = instructions
        self.max_attempts = max_attempts

    async def plan(self, goal: str, *, max_tasks: int) -> Plan:
        convo = messages(self.instructions.format(max_tasks=max_tasks), f"Goal:\n{goal}")
        return await self.llm.call_json(convo, Plan, max_attempts=self.max_attempts)


class LLMWorker:
    """Writes a part with ``llm.call`` (free text)."""

    def __init__(self, llm: ChatModel, *, instructions: str = WORKER_INSTRUCTIONS) -> None:
        self.llm = llm
        self.instructions = instructions

    async def work(
        self, goal: str, task: Task, *, feedback: str | None = None, previous: Part | None = None
    ) -> str:
        prompt = f"Goal:\n{goal}\n\nYour task ({task.name}):\n{task.instructions}"
        if previous is not None:
            prompt += f"\n\nYour previous draft:\n{previous.content}"
        if feedback:
            prompt += f"\n\nReviewer feedback to address:\n{feedback}"
        response = await self.llm.call(messages(self.instructions, prompt))
        return response.content


class LLMReviewer:
    """Reviews with ``llm.call_json(..., schema=Review)``."""

    def __init__(
        self,
        llm: ChatModel,
        *,
        instructions: str = REVIEWER_INSTRUCTIONS,
        max_attempts: int | None = None,
    ) -> None:
        self.llm = llm
        self.instructions = instructions
        self.max_attempts = max_attempts

    async def review(self, goal: str, plan: Plan, parts: Sequence[Part], *, round: int) -> Review:
        names = ", ".join(t.name for t in plan.tasks)
        prompt = f"Goal:\n{goal}\n\nTasks: {names}\n\nWork to review:\n\n{parts_text(parts)}"
        return await self.llm.call_json(
            messages(self.instructions, prompt), Review, max_attempts=self.max_attempts
        )


class BusPlanner:
    """A planner agent: request type ``plan``, payload ``{"goal", "max_tasks"}``,
    answered with a :class:`Plan` as JSON data."""

    def __init__(
        self, ctx: AgentContext, topic: str, *, timeout: float = DEFAULT_BUS_TIMEOUT
    ) -> None:
        self.ctx = ctx
        self.topic = topic
        self.timeout = timeout

    async def plan(self, goal: str, *, max_tasks: int) -> Plan:
        reply = await self.ctx.request(
            self.topic, "plan", {"goal": goal, "max_tasks": max_tasks}, timeout=self.timeout
        )
        return Plan.model_validate(reply_payload(reply, self.topic))


class BusWorker:
    """Worker agents: request type ``work``, payload ``{"goal", "task", "feedback",
    "previous"}``, answered with the content (a string, or ``{"content": str}``).

    Args:
        ctx: The context requests are sent from.
        topic: The workers' topic, or ``topic(task)`` to send each task to a specialist.
        timeout: Seconds a worker may take.
    """

    def __init__(
        self,
        ctx: AgentContext,
        topic: str | Callable[[Task], str],
        *,
        timeout: float = DEFAULT_BUS_TIMEOUT,
    ) -> None:
        self.ctx = ctx
        self.topic = topic
        self.timeout = timeout

    async def work(
        self, goal: str, task: Task, *, feedback: str | None = None, previous: Part | None = None
    ) -> str:
        topic = self.topic(task) if callable(self.topic) else self.topic
        payload = {
            "goal": goal,
            "task": task.model_dump(),
            "feedback": feedback,
            "previous": previous.content if previous is not None else None,
        }
        reply = await self.ctx.request(topic, "work", payload, timeout=self.timeout)
        data = reply_payload(reply, topic)
        if isinstance(data, dict) and isinstance(data.get("content"), str):
            return str(data["content"])
        if isinstance(data, str):
            return data
        raise ValueError(f"{topic}: a work reply must be text or {{'content': str}}, got {data!r}")


class BusReviewer:
    """A reviewer agent, or a panel of them, reached with ``ctx.gather``.

    The request (type ``review``) carries ``{"goal", "plan", "parts", "round"}``; each
    reviewer answers with a :class:`Review` as JSON data. A panel's review approves only
    if every expected reviewer answered and approved; its score is the mean, its
    feedback and revisions are the reviewers' combined.

    Args:
        ctx: The context requests are sent from.
        topics: A topic (all its subscribers answer) or several.
        expected: How many reviews to wait for (default: one per topic).
        timeout: Seconds to wait for them.
    """

    def __init__(
        self,
        ctx: AgentContext,
        topics: str | Sequence[str],
        *,
        expected: int | None = None,
        timeout: float = DEFAULT_BUS_TIMEOUT,
    ) -> None:
        self.ctx = ctx
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.expected = expected or len(self.topics)
        self.timeout = timeout

    async def review(self, goal: str, plan: Plan, parts: Sequence[Part], *, round: int) -> Review:
        payload: dict[str, Any] = {
            "goal": goal,
            "plan": plan.model_dump(mode="json"),
            "parts": [p.model_dump(mode="json") for p in parts],
            "round": round,
        }
        replies = await self.ctx.gather(
            self.topics, "review", payload, first=self.expected, timeout=self.timeout
        )
        if not replies:
            raise RequestTimeout(f"no review from {', '.join(self.topics)} within {self.timeout}s")
        where = ", ".join(self.topics)
        reviews = [
            (r.source or "?", Review.model_validate(reply_payload(r, where))) for r in replies
        ]
        if len(reviews) == 1 and self.expected == 1:
            return reviews[0][1]
        missing = self.expected - len(reviews)
        if missing > 0:
            log.warning(
                "review round %d: %d of %d reviewers answered", round, len(reviews), self.expected
            )
        feedback = "\n".join(f"{who}: {rv.feedback}" for who, rv in reviews if rv.feedback)
        if missing > 0:
            feedback += f"\n({missing} reviewer(s) did not answer in time)"
        return Review(
            score=sum(rv.score for _, rv in reviews) / len(reviews),
            approved=missing <= 0 and all(rv.approved for _, rv in reviews),
            feedback=feedback.strip(),
            revisions=_merge_revisions([rv for _, rv in reviews]),
        )


def _merge_revisions(reviews: Sequence[Review]) -> list[Revision]:
    merged: dict[str, list[str]] = {}
    for rv in reviews:
        for r in rv.revisions:
            merged.setdefault(r.task, []).append(r.instructions)
    return [Revision(task=t, instructions="\n".join(ins)) for t, ins in merged.items()]


__all__ = [
    "BusPlanner",
    "BusReviewer",
    "BusWorker",
    "LLMPlanner",
    "LLMReviewer",
    "LLMWorker",
    "Part",
    "Plan",
    "Planner",
    "Review",
    "Reviewer",
    "Revision",
    "Task",
    "Worker",
]
