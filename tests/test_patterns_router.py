"""loom.patterns.router on the scripted model: routing, threshold, reject path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loom.patterns import (
    PatternConfigError,
    Rejection,
    Route,
    RouteDecision,
    Router,
    RouterResult,
)
from loom.testing import ScriptedModel


def decision(route: str, confidence: float, reasoning: str = "because") -> str:
    return json.dumps({"route": route, "confidence": confidence, "reasoning": reasoning})


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def handler(self, name: str, *, sync: bool = False) -> Any:
        if sync:

            def handle(request: Any, info: Any) -> str:
                self.calls.append((name, request, info))
                return f"{name} handled {request}"

            return handle

        async def handle_async(request: Any, info: Any) -> str:
            self.calls.append((name, request, info))
            return f"{name} handled {request}"

        return handle_async


def calendar_router(llm: ScriptedModel, rec: Recorder, **options: Any) -> Router:
    return Router(
        llm,
        [
            Route("new_event", "Create a new calendar event", rec.handler("new")),
            Route("modify_event", "Change an existing event", rec.handler("modify", sync=True)),
        ],
        threshold=0.7,
        **options,
    )


async def test_confident_decision_goes_to_its_handler() -> None:
    rec = Recorder()
    llm = ScriptedModel([decision("modify_event", 0.92), decision("new_event", 0.8)])
    router = calendar_router(llm, rec, reject=rec.handler("reject"))

    result = await router.run("Move my 2pm to Friday")
    assert result.ok
    assert result.route == "modify_event"
    assert result.output == "modify handled Move my 2pm to Friday"
    assert result.decision == RouteDecision(
        route="modify_event", confidence=0.92, reasoning="because"
    )
    assert result.rejection is None and result.reason is None
    assert [c[0] for c in rec.calls] == ["modify"]
    assert rec.calls[0][2] == result.decision  # handlers get the decision too

    second = await router.run("Lunch with Ann tomorrow")
    assert (second.route, second.output) == ("new_event", "new handled Lunch with Ann tomorrow")


async def test_classifier_sees_route_descriptions_and_a_closed_enum() -> None:
    llm = ScriptedModel([decision("new_event", 0.9)])
    router = calendar_router(llm, Recorder())
    await router.run("x")
    system = llm.calls[0].messages[1]["content"]
    assert "- new_event: Create a new calendar event" in system
    assert "- modify_event: Change an existing event" in system
    schema = router.decision_model.model_json_schema()
    assert schema["properties"]["route"]["enum"] == ["new_event", "modify_event", "other"]
    # The schema reached the model (in call_json's instruction).
    assert '"enum": ["new_event", "modify_event", "other"]' in llm.calls[0].messages[0]["content"]


async def test_low_confidence_goes_to_the_reject_handler() -> None:
    rec = Recorder()
    llm = ScriptedModel([decision("new_event", 0.55, "vague")])
    router = calendar_router(llm, rec, reject=rec.handler("reject"))
    result = await router.run("hmm, something on Tuesday?")

    assert not result.ok
    assert result.route is None
    assert result.output == "reject handled hmm, something on Tuesday?"
    assert result.rejection is not None
    assert result.rejection.kind == "low_confidence"
    assert result.reason == "confidence 0.55 for 'new_event' is below the threshold 0.70"
    assert result.decision is not None and result.decision.route == "new_event"
    assert [c[0] for c in rec.calls] == ["reject"]  # the route handler never ran
    assert isinstance(rec.calls[0][2], Rejection)


async def test_threshold_is_inclusive() -> None:
    llm = ScriptedModel([decision("new_event", 0.7)])
    assert (await calendar_router(llm, Recorder()).run("x")).ok


async def test_other_means_no_route() -> None:
    rec = Recorder()
    llm = ScriptedModel([decision("other", 0.95, "it is about the weather")])
    result = await calendar_router(llm, rec, reject=rec.handler("reject")).run("Rain today?")
    assert not result.ok
    assert result.rejection is not None and result.rejection.kind == "no_route"
    assert result.reason == "no route fits: it is about the weather"
    assert [c[0] for c in rec.calls] == ["reject"]


async def test_without_a_reject_handler_a_rejection_is_just_a_result() -> None:
    llm = ScriptedModel([decision("new_event", 0.1)])
    result = await calendar_router(llm, Recorder()).run("x")
    assert result == RouterResult(
        ok=False, decision=result.decision, rejection=result.rejection, output=None
    )
    assert result.rejection is not None and result.rejection.kind == "low_confidence"


async def test_unknown_route_and_invalid_json_fall_back_to_reject() -> None:
    rec = Recorder()
    # An unknown route name fails the enum; the re-ask gets prose. Two attempts allowed.
    llm = ScriptedModel([decision("delete_calendar", 0.99), "I think it is a new event."])
    router = calendar_router(llm, rec, reject=rec.handler("reject"), max_attempts=2)
    result = await router.run("x")
    assert not result.ok
    assert result.decision is None
    assert result.rejection is not None
    assert result.rejection.kind == "invalid_output"
    assert result.reason is not None and result.reason.startswith("no valid classification")
    assert len(llm.calls) == 2
    assert "delete_calendar" in llm.calls[1].messages[-1]["content"]  # error was fed back
    assert [c[0] for c in rec.calls] == ["reject"]


async def test_out_of_range_confidence_is_invalid() -> None:
    llm = ScriptedModel([decision("new_event", 1.7)])
    result = await calendar_router(llm, Recorder(), max_attempts=1).run("x")
    assert result.rejection is not None and result.rejection.kind == "invalid_output"


async def test_user_defined_other_route_is_a_real_route() -> None:
    rec = Recorder()
    llm = ScriptedModel([decision("other", 0.9)])
    router = Router(
        llm,
        [
            Route("faq", "Questions", rec.handler("faq")),
            Route("other", "All else", rec.handler("o")),
        ],
    )
    result = await router.run("x")
    assert result.ok and result.route == "other" and result.output == "o handled x"
    assert router.decision_model.model_json_schema()["properties"]["route"]["enum"] == [
        "faq",
        "other",
    ]


async def test_handler_errors_propagate() -> None:
    async def boom(request: Any, d: RouteDecision) -> None:
        raise RuntimeError("handler broke")

    router = Router(ScriptedModel([decision("a", 0.9)]), [Route("a", "A", boom)])
    with pytest.raises(RuntimeError, match="handler broke"):
        await router.run("x")


def test_config_errors() -> None:
    llm = ScriptedModel([])
    with pytest.raises(PatternConfigError, match="at least one route"):
        Router(llm, [])
    with pytest.raises(PatternConfigError, match="same name"):
        Router(llm, [Route("a", "", lambda r, d: 1), Route("a", "", lambda r, d: 2)])
    with pytest.raises(PatternConfigError, match="threshold"):
        Router(llm, [Route("a", "", lambda r, d: 1)], threshold=2)
    with pytest.raises(PatternConfigError, match=r"topic handlers \(a, reject\) need a ctx"):
        Router(llm, [Route("a", "", "topic.a")], reject="topic.reject")
