"""loom.patterns.orchestrator on a function model: plan, concurrent workers, review loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest

from loom.llm.errors import StructuredOutputError
from loom.patterns import (
    Orchestrator,
    OrchestratorError,
    Part,
    PatternConfigError,
    Plan,
    Review,
    Task,
)
from loom.testing import FunctionModel, RecordedCall

PLAN = {
    "analysis": "A short post.",
    "tasks": [
        {"name": "intro", "instructions": "Write the intro."},
        {"name": "body", "instructions": "Write the body."},
        {"name": "outro", "instructions": "Write the conclusion."},
    ],
}


def review(score: float, approved: bool, feedback: str = "", **revisions: str) -> dict[str, Any]:
    return {
        "score": score,
        "approved": approved,
        "feedback": feedback,
        "revisions": [{"task": t, "instructions": i} for t, i in revisions.items()],
    }


class Desk:
    """A FunctionModel brain: answers plan, work and review calls (workers may run
    concurrently, so answers depend on the prompt, not the call order)."""

    def __init__(
        self,
        reviews: Sequence[dict[str, Any] | str],
        *,
        plan: dict[str, Any] | str = PLAN,
        work_delay: float = 0.0,
        delays: dict[str, float] | None = None,
        fail_task: str | None = None,
    ) -> None:
        self.plan = plan
        self.reviews = list(reviews)
        self.work_delay = work_delay
        self.delays = delays or {}
        self.fail_task = fail_task
        self.work_prompts: list[str] = []
        self.review_prompts: list[str] = []
        self.active = self.peak = 0
        self.cancelled: list[str] = []
        self.model = FunctionModel(self.respond)

    async def respond(self, call: RecordedCall) -> str:
        system = call.messages[0]["content"]
        if '"title": "Plan"' in system:
            return self.plan if isinstance(self.plan, str) else json.dumps(self.plan)
        if '"title": "Review"' in system:
            self.review_prompts.append(call.last_user_text)
            item = self.reviews.pop(0)
            return item if isinstance(item, str) else json.dumps(item)
        prompt = call.last_user_text
        self.work_prompts.append(prompt)
        task = prompt.split("Your task (", 1)[1].split(")", 1)[0]
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delays.get(task, self.work_delay))
            if task == self.fail_task:
                raise RuntimeError(f"{task} worker crashed")
        except asyncio.CancelledError:
            self.cancelled.append(task)
            raise
        finally:
            self.active -= 1
        version = prompt.count("Reviewer feedback")
        return f"[{task} v{version}]"


async def test_approved_first_draft() -> None:
    desk = Desk([review(0.9, True, "great")], work_delay=0.2)
    start = time.monotonic()
    result = await Orchestrator(llm=desk.model).run("Write about agents")
    elapsed = time.monotonic() - start

    assert result.approved and result.stop_reason == "approved"
    assert result.revisions == 0 and result.best_round == 0
    assert result.score == 0.9
    assert result.output == "[intro v0]\n\n[body v0]\n\n[outro v0]"
    assert [p.task for p in result.parts] == ["intro", "body", "outro"]
    assert result.plan == Plan.model_validate(PLAN)
    # Workers ran concurrently: three 0.2 s workers in well under 0.6 s.
    assert desk.peak == 3
    assert elapsed < 0.5, elapsed
    # The reviewer saw every part.
    assert all(f"## {t}\n[{t} v0]" in desk.review_prompts[0] for t in ("intro", "body", "outro"))
    assert "Write about agents" in desk.work_prompts[0]


async def test_revision_reworks_only_the_named_parts_with_feedback() -> None:
    desk = Desk(
        [
            review(0.5, False, "Too dry.", body="Add an example."),
            review(0.95, True, "Good now."),
        ]
    )
    result = await Orchestrator(llm=desk.model, max_revisions=2).run("goal")

    assert result.approved and result.revisions == 1 and result.best_round == 1
    assert result.output == "[intro v0]\n\n[body v1]\n\n[outro v0]"
    assert {p.task: p.revision for p in result.parts} == {"intro": 0, "body": 1, "outro": 0}
    assert len(desk.work_prompts) == 4  # 3 drafts + 1 revision
    revision_prompt = desk.work_prompts[-1]
    assert "Your previous draft:\n[body v0]" in revision_prompt
    assert "Add an example." in revision_prompt and "Overall: Too dry." in revision_prompt
    assert [r.review.approved for r in result.rounds if r.review] == [False, True]


async def test_rejection_without_named_tasks_reworks_everything() -> None:
    desk = Desk([review(0.2, False, "Start over."), review(0.9, True)])
    result = await Orchestrator(llm=desk.model).run("goal")
    assert result.approved
    assert all(p.revision == 1 for p in result.parts)
    assert all("Start over." in p for p in desk.work_prompts[3:])


async def test_revision_limit_returns_the_best_draft_unapproved() -> None:
    desk = Desk(
        [
            review(0.3, False, "weak"),
            review(0.7, False, "closer", intro="sharper"),
            review(0.6, False, "worse", intro="again"),
        ]
    )
    result = await Orchestrator(llm=desk.model, max_revisions=2).run("goal")

    assert not result.approved
    assert result.stop_reason == "max_revisions"
    assert result.revisions == 2
    assert len(desk.review_prompts) == 3  # bounded: no fourth review
    assert desk.reviews == []
    assert result.best_round == 1 and result.score == 0.7
    assert result.output == "[intro v1]\n\n[body v1]\n\n[outro v1]"
    assert [r.round for r in result.rounds] == [0, 1, 2]


async def test_zero_revisions_reviews_once() -> None:
    desk = Desk([review(0.4, False, "meh")])
    result = await Orchestrator(llm=desk.model, max_revisions=0).run("goal")
    assert not result.approved and result.revisions == 0 and len(desk.work_prompts) == 3


async def test_min_score_overrides_a_lenient_approval() -> None:
    desk = Desk([review(0.6, True), review(0.85, True)])
    result = await Orchestrator(llm=desk.model, min_score=0.8).run("goal")
    assert result.approved and result.score == 0.85 and result.revisions == 1


async def test_invalid_review_json_stops_the_loop_with_the_best_so_far() -> None:
    desk = Desk([review(0.5, False, "redo"), "LGTM!", "Really, LGTM.", "LGTM"])
    orchestrator = Orchestrator(llm=desk.model, max_revisions=3)
    result = await orchestrator.run("goal")
    assert not result.approved
    assert result.stop_reason == "review_failed"
    assert result.error is not None and result.error.startswith("StructuredOutputError")
    assert result.best_round == 0 and result.score == 0.5  # the only reviewed draft
    assert result.rounds[-1].review is None


async def test_invalid_first_review_still_returns_the_draft() -> None:
    desk = Desk(['{"score": 2, "approved": true}'] * 3)
    result = await Orchestrator(llm=desk.model).run("goal")
    assert result.stop_reason == "review_failed" and not result.approved
    assert result.score == 0.0 and result.output.startswith("[intro v0]")


async def test_invalid_plan_raises_a_typed_error() -> None:
    desk = Desk([], plan="Here is my plan: intro, body, outro.")
    with pytest.raises(OrchestratorError, match="planning failed") as info:
        await Orchestrator(llm=desk.model).run("goal")
    assert info.value.stage == "plan" and info.value.task is None
    assert isinstance(info.value.__cause__, StructuredOutputError)


async def test_duplicate_task_names_are_rejected_and_reasked() -> None:
    dup = {"tasks": [{"name": "a", "instructions": "x"}, {"name": "a", "instructions": "y"}]}
    plans = [json.dumps(dup), json.dumps(PLAN)]
    desk = Desk([review(0.9, True)])
    original = desk.respond

    async def respond(call: RecordedCall) -> str:
        if '"title": "Plan"' in call.messages[0]["content"]:
            return plans.pop(0)
        return await original(call)

    desk.model.function = respond
    result = await Orchestrator(llm=desk.model).run("goal")
    assert result.approved and len(result.plan.tasks) == 3
    assert plans == []


async def test_long_plan_is_cut_to_max_tasks() -> None:
    desk = Desk([review(0.9, True)])
    result = await Orchestrator(llm=desk.model, max_tasks=2).run("goal")
    assert [t.name for t in result.plan.tasks] == ["intro", "body"]
    assert len(desk.work_prompts) == 2


async def test_failing_worker_raises_and_cancels_the_others() -> None:
    # body fails fast; intro and outro would take 5 s.
    desk = Desk([], work_delay=5.0, delays={"body": 0.01}, fail_task="body")
    start = time.monotonic()
    with pytest.raises(OrchestratorError, match="worker for 'body' failed") as info:
        await Orchestrator(llm=desk.model).run("goal")
    assert time.monotonic() - start < 1.0
    assert (info.value.stage, info.value.task) == ("work", "body")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert sorted(desk.cancelled) == ["intro", "outro"]
    assert desk.active == 0


async def test_max_concurrency_bounds_the_workers() -> None:
    desk = Desk([review(0.9, True)], work_delay=0.05)
    await Orchestrator(llm=desk.model, max_concurrency=2).run("goal")
    assert desk.peak == 2


async def test_custom_roles_and_assembly() -> None:
    class Planner:
        async def plan(self, goal: str, *, max_tasks: int) -> Plan:
            return Plan(tasks=[Task(name="only", instructions=goal)])

    class Worker:
        async def work(
            self,
            goal: str,
            task: Task,
            *,
            feedback: str | None = None,
            previous: Part | None = None,
        ) -> str:
            return f"{task.instructions}!" if feedback else task.instructions

    class Reviewer:
        async def review(
            self, goal: str, plan: Plan, parts: Sequence[Part], *, round: int
        ) -> Review:
            ok = parts[0].content.endswith("!")
            return Review(score=1.0 if ok else 0.1, approved=ok, feedback="more excitement")

    result = await Orchestrator(
        planner=Planner(),
        worker=Worker(),
        reviewer=Reviewer(),
        assemble=lambda plan, parts: "|".join(p.content for p in parts),
    ).run("hello")
    assert result.approved and result.output == "hello!" and result.revisions == 1


def test_config_errors() -> None:
    with pytest.raises(PatternConfigError, match="no llm to build the planner, worker"):
        Orchestrator()
    desk = Desk([])
    with pytest.raises(PatternConfigError, match="max_revisions"):
        Orchestrator(llm=desk.model, max_revisions=-1)
    with pytest.raises(PatternConfigError, match="min_score"):
        Orchestrator(llm=desk.model, min_score=5)
    with pytest.raises(PatternConfigError, match="at least 1"):
        Orchestrator(llm=desk.model, max_concurrency=0)
