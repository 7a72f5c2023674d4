"""The multi-agent patterns end to end on the real bus, with loom.Agent workers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from loom import Agent, Envelope, RequestTimeout, Runtime
from loom.context import AgentContext
from loom.patterns import (
    BusGuardrails,
    BusOrchestrator,
    BusRouter,
    BusStep,
    Chain,
    Gate,
    RemoteError,
    Route,
    Step,
)
from loom.testing import ScriptedModel

Handler = Any


def replying(fn: Any, *, delay: float = 0.0, type: str = "reply") -> Handler:
    """An on_event handler that replies with ``fn(payload)`` after ``delay``."""

    async def on_event(ctx: AgentContext, topic: str, event: Envelope) -> None:
        if delay:
            await asyncio.sleep(delay)
        await ctx.reply(event, type, fn(event.payload))

    return on_event


# -- chain ---------------------------------------------------------------------------


class Extraction(BaseModel):
    is_event: bool
    confidence: float


class Summary(BaseModel):
    text: str


async def test_chain_mixes_an_llm_step_and_an_agent_step(runtime: Runtime) -> None:
    seen: list[Any] = []

    def extract(payload: Any) -> dict[str, Any]:
        seen.append(payload)
        return {"is_event": True, "confidence": 0.9}

    async with (
        Agent("extractor", topics=["chain.extract"], on_event=replying(extract)),
        Agent("front") as front,
    ):
        llm = ScriptedModel(['{"text": "Lunch booked"}'])
        chain = Chain(
            [
                BusStep(
                    "extract",
                    Extraction,
                    ctx=front.ctx,
                    topic="chain.extract",
                    gate=Gate(min_confidence=0.8),
                ),
                Step("summary", Summary, instructions="Summarise."),
            ],
            llm=llm,
        )
        result = await chain.run("Lunch with Ann at noon")
    assert result.ok
    assert result.output_as(Summary).text == "Lunch booked"
    assert seen == [
        {"step": "extract", "input": "Lunch with Ann at noon", "previous": None, "outputs": {}}
    ]
    assert '"is_event":true' in llm.calls[0].messages[-1]["content"]


async def test_bus_step_gate_invalid_reply_and_error_reply(runtime: Runtime) -> None:
    async with (
        Agent(
            "unsure",
            topics=["chain.unsure"],
            on_event=replying(lambda p: {"is_event": True, "confidence": 0.3}),
        ),
        Agent("garbled", topics=["chain.garbled"], on_event=replying(lambda p: "not json")),
        Agent(
            "broken",
            topics=["chain.broken"],
            on_event=replying(lambda p: "db down", type="error"),
        ),
        Agent("front") as front,
    ):

        def chain(topic: str) -> Chain:
            step = BusStep(
                "extract", Extraction, ctx=front.ctx, topic=topic, gate=Gate(min_confidence=0.5)
            )
            return Chain([step])

        low = await chain("chain.unsure").run("x")
        assert (low.ok, low.failure, low.confidence) == (False, "gate", 0.3)
        bad = await chain("chain.garbled").run("x")
        assert (bad.ok, bad.failure, bad.failed_step) == (False, "invalid_output", "extract")
        with pytest.raises(RemoteError, match="db down") as info:
            await chain("chain.broken").run("x")
        assert info.value.topic == "chain.broken"


# -- router --------------------------------------------------------------------------


async def test_bus_router_dispatches_to_agents_and_rejects_to_a_topic(runtime: Runtime) -> None:
    received: list[tuple[str, str, Any]] = []

    def handler(name: str) -> Handler:
        async def on_event(ctx: AgentContext, topic: str, event: Envelope) -> None:
            received.append((name, event.type, event.payload))
            await ctx.reply(event, payload={"handled_by": name, "input": event.payload["input"]})

        return on_event

    llm = ScriptedModel(
        [
            '{"route": "new_event", "confidence": 0.9, "reasoning": "a new meeting"}',
            '{"route": "modify_event", "confidence": 0.4, "reasoning": "unclear"}',
        ]
    )
    async with (
        Agent("new", topics=["calendar.new"], on_event=handler("new")),
        Agent("modify", topics=["calendar.modify"], on_event=handler("modify")),
        Agent("triage", topics=["calendar.triage"], on_event=handler("triage")),
        Agent("front") as front,
    ):
        router = BusRouter(
            front.ctx,
            llm,
            [
                Route("new_event", "Create an event", "calendar.new"),
                Route("modify_event", "Change an event", "calendar.modify"),
            ],
            threshold=0.7,
            reject="calendar.triage",
        )
        routed = await router.run("Lunch with Ann on Friday")
        rejected = await router.run("the thing, move it?")

    assert routed.ok and routed.route == "new_event"
    assert routed.output == {"handled_by": "new", "input": "Lunch with Ann on Friday"}
    assert not rejected.ok
    assert rejected.output == {"handled_by": "triage", "input": "the thing, move it?"}
    assert [(n, t) for n, t, _ in received] == [("new", "route"), ("triage", "reject")]
    assert received[0][2] == {
        "input": "Lunch with Ann on Friday",
        "route": "new_event",
        "confidence": 0.9,
        "reasoning": "a new meeting",
    }
    assert received[1][2]["kind"] == "low_confidence"
    assert received[1][2]["decision"]["route"] == "modify_event"


async def test_router_inside_an_agent_and_a_silent_route_times_out(runtime: Runtime) -> None:
    llm = ScriptedModel(
        ['{"route": "faq", "confidence": 0.95}', '{"route": "silent", "confidence": 0.95}']
    )

    async def desk(ctx: AgentContext, topic: str, event: Envelope) -> None:
        router = BusRouter(
            ctx,
            llm,
            [Route("faq", "Questions", "desk.faq"), Route("silent", "Nobody", "desk.silent")],
            timeout=0.2,
        )
        try:
            result = await router.run(event.payload)
        except RequestTimeout as exc:
            await ctx.reply(event, "error", str(exc))
        else:
            await ctx.reply(event, payload=result.output)

    async with (
        Agent("desk", topics=["desk.in"], on_event=desk),
        Agent("faq", topics=["desk.faq"], on_event=replying(lambda p: f"FAQ: {p['input']}")),
        Agent("user") as user,
    ):
        answer = await user.ctx.request("desk.in", payload="opening hours?", timeout=5)
        assert answer.payload == "FAQ: opening hours?"
        timed_out = await user.ctx.request("desk.in", payload="hello?", timeout=5)
        assert timed_out.type == "error" and "desk.silent" in timed_out.payload


# -- guardrails ----------------------------------------------------------------------


async def test_bus_guardrails_short_circuit_on_the_first_failing_agent(runtime: Runtime) -> None:
    slow_state = {"started": False, "finished": False}

    async def slow(ctx: AgentContext, topic: str, event: Envelope) -> None:
        slow_state["started"] = True
        await asyncio.sleep(3)
        slow_state["finished"] = True
        await ctx.reply(event, payload={"ok": True, "reason": ""})

    slow_agent = Agent("slow-guard", topics=["guard.slow"], on_event=slow)
    policy = Agent(
        "policy-guard",
        topics=["guard.policy"],
        on_event=replying(lambda p: {"ok": "refund" not in p["input"], "reason": "refunds: no"}),
    )
    ran: list[str] = []
    for a in (slow_agent, policy):
        await a.start()
    try:
        async with Agent("front") as front:
            rails = BusGuardrails(front.ctx, {"slow": "guard.slow", "policy": "guard.policy"})
            start = time.monotonic()
            result = await rails.run("I want a refund", lambda t: ran.append(t))
            elapsed = time.monotonic() - start
    finally:
        await slow_agent.stop(timeout=0.1)
        await policy.stop()

    assert not result.ok
    assert (result.failed_guard, result.reason) == ("policy", "refunds: no")
    assert result.cancelled == ["slow"]
    assert elapsed < 1.0, f"waited {elapsed:.2f}s for a 3 s guard"
    assert slow_state == {"started": True, "finished": False}
    assert ran == []


async def test_bus_guardrails_pass_then_run_the_task(runtime: Runtime) -> None:
    payloads: list[Any] = []

    def ok(p: Any) -> dict[str, Any]:
        payloads.append(p)
        return {"ok": True, "reason": "fine"}

    async with (
        Agent("g1", topics=["guard.pii"], on_event=replying(ok, delay=0.1)),
        Agent("g2", topics=["guard.tone"], on_event=replying(ok, delay=0.1)),
        Agent("front") as front,
    ):
        rails = BusGuardrails(front.ctx, ["guard.pii", "guard.tone"], guards=[lambda t: True])
        result = await rails.run({"text": "hi"}, lambda t: f"answered {t['text']}")
    assert result.ok and result.output == "answered hi"
    assert sorted(result.verdicts) == ["<lambda>", "guard.pii", "guard.tone"]
    assert payloads[0] in (
        {"guard": "guard.pii", "input": {"text": "hi"}},
        {"guard": "guard.tone", "input": {"text": "hi"}},
    )


async def test_bus_guards_fail_closed_on_timeout_and_bad_replies(runtime: Runtime) -> None:
    async with (
        Agent("odd", topics=["guard.odd"], on_event=replying(lambda p: {"okay": 1})),
        Agent("front") as front,
    ):
        silent = await BusGuardrails(front.ctx, ["guard.nobody"], guard_timeout=0.1).check("x")
        assert not silent.ok and silent.failed_guard == "guard.nobody"
        assert silent.reason is not None and silent.reason.startswith("RequestTimeout")
        odd = await BusGuardrails(front.ctx, ["guard.odd"]).check("x")
        assert not odd.ok and odd.reason is not None and odd.reason.startswith("invalid verdict")


# -- orchestrator --------------------------------------------------------------------

PLAN = {
    "tasks": [
        {"name": "intro", "instructions": "Introduce."},
        {"name": "body", "instructions": "Explain."},
        {"name": "outro", "instructions": "Conclude."},
    ]
}


def worker_agent(log: list[dict[str, Any]], delay: float = 0.2) -> Agent:
    async def work(ctx: AgentContext, topic: str, event: Envelope) -> None:
        log.append({"topic": topic, **event.payload})
        await asyncio.sleep(delay)
        task = event.payload["task"]["name"]
        version = "revised" if event.payload["feedback"] else "draft"
        await ctx.reply(event, payload={"content": f"{task} ({version})"})

    return Agent("writers", topics=["work.*"], on_event=work)


def reviewer_agent(name: str, verdicts: list[dict[str, Any]], log: list[Any]) -> Agent:
    async def review(ctx: AgentContext, topic: str, event: Envelope) -> None:
        log.append((name, event.payload))
        await ctx.reply(event, payload=verdicts[event.payload["round"]])

    return Agent(name, topics=["review.panel"], on_event=review)


async def test_bus_orchestrator_workers_in_parallel_and_a_review_panel(runtime: Runtime) -> None:
    work_log: list[dict[str, Any]] = []
    review_log: list[Any] = []
    strict = reviewer_agent(
        "strict",
        [
            {
                "score": 0.4,
                "approved": False,
                "feedback": "body is thin",
                "revisions": [{"task": "body", "instructions": "add an example"}],
            },
            {"score": 0.9, "approved": True, "feedback": "good"},
        ],
        review_log,
    )
    lenient = reviewer_agent(
        "lenient",
        [{"score": 0.8, "approved": True}, {"score": 1.0, "approved": True}],
        review_log,
    )
    planner = Agent("planner", topics=["plan.desk"], on_event=replying(lambda p: PLAN))
    agents = [worker_agent(work_log), strict, lenient, planner]
    for a in agents:
        await a.start()
    try:
        async with Agent("lead") as lead:
            orchestrator = BusOrchestrator(
                lead.ctx,
                planner="plan.desk",
                workers=lambda task: f"work.{task.name}",
                reviewers="review.panel",
                reviewers_expected=2,
                max_revisions=2,
                timeout=5,
            )
            start = time.monotonic()
            result = await orchestrator.run("Explain event buses")
            elapsed = time.monotonic() - start
    finally:
        for a in agents:
            await a.stop()

    assert result.approved and result.stop_reason == "approved"
    assert result.revisions == 1
    assert result.output == "intro (draft)\n\nbody (revised)\n\noutro (draft)"
    assert result.score == pytest.approx(0.95)  # the panel's mean
    first_review = result.rounds[0].review
    assert first_review is not None and not first_review.approved
    assert "strict: body is thin" in first_review.feedback
    # Three drafts in parallel (0.2 s each), then one revision: ~0.4 s, not 0.8 s.
    assert elapsed < 0.7, elapsed
    assert [e["topic"] for e in work_log[:3]] == ["work.intro", "work.body", "work.outro"]
    assert work_log[3]["topic"] == "work.body"
    assert "add an example" in work_log[3]["feedback"]
    assert work_log[3]["previous"] == "body (draft)"
    # Both reviewers reviewed both rounds, with the parts in the payload.
    assert sorted(n for n, _ in review_log) == ["lenient", "lenient", "strict", "strict"]
    assert review_log[0][1]["parts"][0] == {
        "task": "intro",
        "content": "intro (draft)",
        "revision": 0,
    }


async def test_bus_orchestrator_missing_reviewer_never_approves(runtime: Runtime) -> None:
    work_log: list[dict[str, Any]] = []
    review_log: list[Any] = []
    agents = [
        worker_agent(work_log, delay=0.0),
        reviewer_agent("only", [{"score": 1.0, "approved": True}] * 2, review_log),
    ]
    for a in agents:
        await a.start()
    try:
        async with Agent("lead") as lead:
            llm = ScriptedModel([json.dumps(PLAN)])  # an LLM plans, agents work
            result = await BusOrchestrator(
                lead.ctx,
                llm=llm,
                workers="work.any",
                reviewers="review.panel",
                reviewers_expected=2,
                max_revisions=1,
                timeout=0.3,
            ).run("goal")
            nobody = await BusOrchestrator(
                lead.ctx,
                llm=ScriptedModel([json.dumps(PLAN)]),
                workers="work.any",
                reviewers="review.nobody",
                timeout=0.2,
            ).run("goal")
    finally:
        for a in agents:
            await a.stop()

    assert not result.approved and result.stop_reason == "max_revisions"
    assert result.rounds[0].review is not None
    assert "1 reviewer(s) did not answer" in result.rounds[0].review.feedback
    assert nobody.stop_reason == "review_failed" and not nobody.approved
    assert nobody.error is not None and "no review from review.nobody" in nobody.error
