"""Pattern runs are traced: one workflow span, a child per step, no content by default."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from loom.patterns import Chain, FunctionGuard, Gate, Guardrails, Orchestrator, Route, Router, Step
from loom.telemetry import set_capture_content
from loom.testing import FunctionModel, RecordedCall, ScriptedModel


class Extraction(BaseModel):
    confidence: float


@pytest.fixture
def capture() -> Iterator[None]:
    set_capture_content(True)
    try:
        yield
    finally:
        set_capture_content(None)


def by_name(exporter: InMemorySpanExporter) -> dict[str, dict[str, object]]:
    return {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}


async def test_chain_spans_and_no_content_by_default(span_exporter: InMemorySpanExporter) -> None:
    set_capture_content(False)
    try:
        llm = ScriptedModel(['{"confidence": 0.9}', '{"confidence": 0.2}'])
        chain = Chain(
            [
                Step("first", Extraction, instructions="a"),
                Step("second", Extraction, instructions="b", gate=Gate(min_confidence=0.5)),
            ],
            llm=llm,
        )
        await chain.run("secret input")
    finally:
        set_capture_content(None)
    spans = span_exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert "invoke_workflow chain" in names
    assert "chain step first" in names and "chain step second" in names
    wf = next(s for s in spans if s.name == "invoke_workflow chain")
    step2 = next(s for s in spans if s.name == "chain step second")
    assert step2.parent is not None and step2.parent.span_id == wf.context.span_id
    attrs = by_name(span_exporter)
    assert attrs["invoke_workflow chain"]["gen_ai.operation.name"] == "invoke_workflow"
    assert attrs["invoke_workflow chain"]["loom.pattern.kind"] == "chain"
    assert attrs["invoke_workflow chain"]["loom.pattern.outcome"] == "gate"
    assert attrs["invoke_workflow chain"]["loom.pattern.failed_step"] == "second"
    assert attrs["chain step second"]["loom.pattern.confidence"] == 0.2
    assert attrs["chain step first"]["loom.pattern.outcome"] == "ok"
    # No prompt content anywhere unless opted in.
    for s in spans:
        for v in (s.attributes or {}).values():
            assert "secret input" not in str(v)


async def test_content_only_when_opted_in(
    span_exporter: InMemorySpanExporter, capture: None
) -> None:
    llm = ScriptedModel(['{"route": "a", "confidence": 0.9}'])
    router = Router(llm, [Route("a", "A", lambda r, d: "handled")])
    await router.run("visible input")
    attrs = by_name(span_exporter)
    wf = attrs["invoke_workflow router"]
    assert wf["loom.pattern.input"] == "visible input"
    assert wf["loom.pattern.output"] == "handled"
    assert wf["loom.pattern.route"] == "a"
    assert attrs["router classify"]["loom.pattern.confidence"] == 0.9
    assert "route a" in attrs


async def test_guardrail_spans_mark_the_cancelled_guard(
    span_exporter: InMemorySpanExporter,
) -> None:
    async def slow(text: str) -> bool:
        await asyncio.sleep(5)
        return True

    await Guardrails([FunctionGuard("slow", slow), FunctionGuard("fast", lambda t: False)]).check(
        "x"
    )
    attrs = by_name(span_exporter)
    assert attrs["guardrail fast"]["loom.pattern.outcome"] == "fail"
    assert attrs["guardrail slow"]["loom.pattern.outcome"] == "cancelled"
    assert attrs["invoke_workflow guardrails"]["loom.pattern.outcome"] == "blocked"
    assert attrs["invoke_workflow guardrails"]["loom.pattern.failed_guard"] == "fast"


async def test_orchestrator_worker_spans_are_children_of_the_workflow(
    span_exporter: InMemorySpanExporter,
) -> None:
    def respond(call: RecordedCall) -> str:
        system = call.messages[0]["content"]
        if '"title": "Plan"' in system:
            return json.dumps({"tasks": [{"name": "a", "instructions": "x"}]})
        if '"title": "Review"' in system:
            return json.dumps({"score": 0.9, "approved": True})
        return "part"

    await Orchestrator(llm=FunctionModel(respond)).run("goal")
    spans = span_exporter.get_finished_spans()
    wf = next(s for s in spans if s.name == "invoke_workflow orchestrator")
    work = next(s for s in spans if s.name == "orchestrator work a")
    assert work.parent is not None and work.parent.span_id == wf.context.span_id
    attrs = dict(wf.attributes or {})
    assert attrs["loom.pattern.outcome"] == "approved"
    assert attrs["loom.pattern.approved"] is True
    assert {"orchestrator plan", "orchestrator review"} <= {s.name for s in spans}
