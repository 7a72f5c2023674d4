"""Prompts loaded from files name their file and version on the `chat` span (no text)."""

from __future__ import annotations

from pathlib import Path

from conftest import completion, respond
from loom.prompts import PromptLoader


async def test_prompt_file_and_version_on_the_chat_span(
    tmp_path: Path, fault_server, make_provider, spans
) -> None:
    (tmp_path / "v2").mkdir()
    (tmp_path / "system.txt").write_text("You are terse.")
    (tmp_path / "v2" / "ask.txt").write_text("Summarise {topic}.")
    prompts = PromptLoader(tmp_path)
    fault_server.push(respond(200, completion("ok")))
    await make_provider().call(
        messages=[
            {"role": "system", "content": prompts.load("system.txt")},
            {"role": "user", "content": prompts.render("ask.txt", version="v2", topic="bees")},
            {"role": "user", "content": "plain text"},
        ]
    )
    (span,) = spans.get_finished_spans()
    a = span.attributes
    assert tuple(a["loom.prompt.file"]) == ("system.txt", "ask.txt")
    assert tuple(a["loom.prompt.version"]) == ("", "v2")
    assert "gen_ai.input.messages" not in a  # no content unless capture is on
    sent = fault_server.requests[-1].json()["messages"]
    assert sent[1]["content"] == "Summarise bees."


async def test_a_cognitive_agents_prompt_file_reaches_its_chat_spans(
    tmp_path: Path, fault_server, make_provider, spans
) -> None:
    from loom import Agent, Runtime
    from loom.cognitive import CognitiveAgent, CognitiveConfig

    (tmp_path / "sys.txt").write_text("Be brief.")
    prompts = PromptLoader(tmp_path)
    fault_server.push(respond(200, completion("done")))
    runtime = Runtime()
    try:
        async with Agent("c", runtime=runtime) as a:
            config = CognitiveConfig(system_prompt=prompts.load("sys.txt"), max_iterations=1)
            result = await CognitiveAgent(a.ctx, make_provider(), config, tools=[]).run("hi")
            assert result.success, result.error
    finally:
        await runtime.stop()
    chat = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert chat and tuple(chat[0].attributes["loom.prompt.file"]) == ("sys.txt",)
    assert fault_server.requests[-1].json()["messages"][0]["content"] == "Be brief."
