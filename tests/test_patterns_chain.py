"""loom.patterns.chain on the scripted model: steps, gates, invalid output, config."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from loom.errors import LoomError
from loom.llm.errors import LLMConnectionError
from loom.patterns import (
    Chain,
    ChainResult,
    ChainState,
    FunctionStep,
    Gate,
    PatternConfigError,
    PatternError,
    Step,
)
from loom.testing import ScriptedModel


class EventExtraction(BaseModel):
    is_calendar_event: bool
    description: str
    confidence: float | None = Field(default=None, ge=0, le=1)


class EventDetails(BaseModel):
    name: str
    date: str
    participants: list[str]


class Confirmation(BaseModel):
    message: str


def extraction(confidence: float | None = 0.9, is_event: bool = True) -> str:
    return json.dumps(
        {"is_calendar_event": is_event, "description": "Team sync", "confidence": confidence}
    )


DETAILS = json.dumps({"name": "Team sync", "date": "2025-01-07T14:00", "participants": ["Al"]})
CONFIRM = json.dumps({"message": "Booked: Team sync on Tuesday"})


def calendar_chain(llm: ScriptedModel, **gate: object) -> Chain:
    return Chain(
        [
            Step(
                "extract",
                EventExtraction,
                instructions="Decide whether the text describes a calendar event.",
                gate=Gate(
                    min_confidence=0.7,
                    predicate=lambda e: e.is_calendar_event,
                    reason="not a calendar event",
                    **gate,  # type: ignore[arg-type]
                ),
            ),
            Step("details", EventDetails, instructions="Extract the event details."),
            Step("confirm", Confirmation, instructions="Write a confirmation."),
        ],
        llm=llm,
    )


async def test_success_runs_every_step_and_feeds_outputs_forward() -> None:
    llm = ScriptedModel([extraction(0.95), DETAILS, CONFIRM])
    result = await calendar_chain(llm).run("Team sync next Tuesday at 2pm with Al")

    assert result.ok
    assert result.failed_step is None and result.reason is None
    assert list(result.outputs) == ["extract", "details", "confirm"]
    assert result.output_as(Confirmation).message == "Booked: Team sync on Tuesday"
    assert result.get("details", EventDetails).participants == ["Al"]
    assert len(llm.calls) == 3
    # Each step sends its own system prompt; later steps see the input and the
    # previous step's output.
    first, second = llm.calls[0].messages, llm.calls[1].messages
    assert {"role": "system", "content": "Extract the event details."} in second
    assert first[-1] == {"role": "user", "content": "Team sync next Tuesday at 2pm with Al"}
    assert "Team sync next Tuesday" in second[-1]["content"]
    assert '"is_calendar_event":true' in second[-1]["content"]
    assert "'extract'" in second[-1]["content"]
    # The result round-trips as JSON with the nested outputs intact.
    dumped = json.loads(result.model_dump_json())
    assert dumped["outputs"]["details"]["participants"] == ["Al"]


async def test_low_confidence_rejects_early_without_running_later_steps() -> None:
    # Only one answer scripted: a chain that went on would fail the test.
    llm = ScriptedModel([extraction(0.4)])
    result = await calendar_chain(llm).run("maybe something sometime?")

    assert result == ChainResult(
        ok=False,
        outputs=result.outputs,
        failed_step="extract",
        failure="gate",
        reason="confidence 0.40 is below 0.70",
        confidence=0.4,
    )
    assert result.output is None
    assert result.get("extract", EventExtraction).confidence == 0.4  # kept for debugging
    assert len(llm.calls) == 1
    with pytest.raises(TypeError, match="stopped at 'extract'"):
        result.output_as(Confirmation)


async def test_threshold_is_inclusive() -> None:
    llm = ScriptedModel([extraction(0.7), DETAILS, CONFIRM])
    assert (await calendar_chain(llm).run("x")).ok


async def test_predicate_rejects_with_its_reason() -> None:
    llm = ScriptedModel([extraction(0.99, is_event=False)])
    result = await calendar_chain(llm).run("What's the weather?")
    assert not result.ok
    assert (result.failed_step, result.failure) == ("extract", "gate")
    assert result.reason == "not a calendar event"
    assert result.confidence == 0.99


async def test_missing_confidence_is_a_rejection() -> None:
    llm = ScriptedModel([extraction(None)])
    result = await calendar_chain(llm).run("x")
    assert result.failure == "gate"
    assert result.reason == "no numeric 'confidence' in the output"


async def test_invalid_json_is_reasked_then_reported_as_invalid_output() -> None:
    llm = ScriptedModel(["Sure! It is an event.", '{"is_calendar_event": true'])
    chain = Chain(
        [Step("extract", EventExtraction, instructions="x", max_attempts=2, gate=Gate())],
        llm=llm,
    )
    result = await chain.run("x")
    assert not result.ok
    assert (result.failed_step, result.failure) == ("extract", "invalid_output")
    assert result.reason is not None and result.reason.startswith("invalid output: ")
    assert "EventExtraction" in result.reason
    assert len(llm.calls) == 2
    # The re-ask told the model what was wrong.
    assert "not valid" in llm.calls[1].messages[-1]["content"]


async def test_invalid_then_valid_answer_recovers() -> None:
    llm = ScriptedModel(['{"is_calendar_event": "maybe"}', extraction(0.9), DETAILS, CONFIRM])
    result = await calendar_chain(llm).run("x")
    assert result.ok
    assert len(llm.calls) == 4


async def test_schema_violation_in_a_later_step_names_that_step() -> None:
    llm = ScriptedModel([extraction(0.9), '{"name": "x"}'])
    chain = Chain(
        [
            Step("extract", EventExtraction, instructions="a"),
            Step("details", EventDetails, instructions="b", max_attempts=1),
        ],
        llm=llm,
    )
    result = await chain.run("x")
    assert result.failed_step == "details"
    assert result.failure == "invalid_output"
    assert "date" in (result.reason or "")  # the missing field is named
    assert list(result.outputs) == ["extract"]


async def test_function_step_and_custom_prompt_see_the_state() -> None:
    seen: list[tuple[object, object]] = []

    def lookup(state: ChainState) -> dict[str, object]:
        seen.append((state.input, state.last))
        ext = state.get("extract", EventExtraction)
        return {"name": ext.description, "date": "tomorrow", "participants": []}

    llm = ScriptedModel([extraction(0.9), CONFIRM])
    chain = Chain(
        [
            Step("extract", EventExtraction, instructions="a"),
            FunctionStep("details", EventDetails, lookup),
            Step(
                "confirm",
                Confirmation,
                instructions="c",
                prompt=lambda s: f"Confirm {s.get('details', EventDetails).name} for {s.input}",
            ),
        ],
        llm=llm,
    )
    result = await chain.run("the input")
    assert result.ok
    assert seen[0][0] == "the input"
    assert isinstance(seen[0][1], EventExtraction)
    assert llm.calls[1].messages[-1]["content"] == "Confirm Team sync for the input"


async def test_function_step_output_is_validated() -> None:
    chain = Chain([FunctionStep("f", EventDetails, lambda s: {"name": 1})])
    result = await chain.run(None)
    assert result.failure == "invalid_output"


async def test_per_step_llm_overrides_the_chain_llm() -> None:
    main = ScriptedModel([extraction(0.9)])
    other = ScriptedModel([CONFIRM])
    chain = Chain(
        [
            Step("extract", EventExtraction, instructions="a"),
            Step("confirm", Confirmation, instructions="b", llm=other),
        ],
        llm=main,
    )
    assert (await chain.run("x")).ok
    assert (len(main.calls), len(other.calls)) == (1, 1)


async def test_model_input_is_sent_as_json() -> None:
    llm = ScriptedModel([CONFIRM])
    chain = Chain([Step("confirm", Confirmation, instructions="b")], llm=llm)
    await chain.run(EventDetails(name="n", date="d", participants=[]))
    assert llm.calls[0].messages[-1]["content"] == '{"name":"n","date":"d","participants":[]}'


async def test_transport_errors_propagate() -> None:
    llm = ScriptedModel([LLMConnectionError("server down")])
    with pytest.raises(LLMConnectionError, match="server down"):
        await calendar_chain(llm).run("x")


def test_config_errors_are_typed_and_clear() -> None:
    llm = ScriptedModel([])
    with pytest.raises(PatternConfigError, match="at least one step"):
        Chain([], llm=llm)
    with pytest.raises(PatternConfigError, match="two chain steps are named 'a'"):
        Chain(
            [Step("a", Confirmation, instructions=""), Step("a", Confirmation, instructions="")],
            llm=llm,
        )
    with pytest.raises(PatternConfigError, match="has no llm"):
        Chain([Step("a", Confirmation, instructions="")])
    with pytest.raises(PatternConfigError, match="Confirmation does not have"):
        Step("a", Confirmation, instructions="", gate=Gate(min_confidence=0.5))
    with pytest.raises(PatternConfigError, match="pydantic model"):
        Step("a", dict, instructions="")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Gate(min_confidence=1.5)
    # One hierarchy: catchable as PatternError, LoomError and ValueError.
    assert issubclass(PatternConfigError, PatternError)
    assert issubclass(PatternError, LoomError)
    assert issubclass(PatternConfigError, ValueError)


def test_gate_with_custom_confidence_field() -> None:
    class Scored(BaseModel):
        score: float

    gate = Gate(min_confidence=0.5, confidence_field="score")
    Step("s", Scored, instructions="", gate=gate)  # accepted: the field exists
    assert gate.evaluate(Scored(score=0.6)) is None
    assert gate.evaluate(Scored(score=0.2)) == "score 0.20 is below 0.50"
