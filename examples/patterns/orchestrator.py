"""Orchestrator -> workers -> reviewer with a bounded revision loop: a blog post.

The planner splits the topic into sections, workers write them concurrently, and a
reviewer scores the draft and names sections to rework; the loop revises up to
``max_revisions`` times and returns the approved draft (or the best one, flagged).

    python examples/patterns/orchestrator.py                  # scripted model
    python examples/patterns/orchestrator.py --provider openai
"""

from __future__ import annotations

import asyncio
import json

from _demo import make_llm, parse_args, schema_title

from loom.patterns import Orchestrator
from loom.testing import RecordedCall

TOPIC = "Why event-driven runtimes suit AI agents"


async def scripted(call: RecordedCall) -> str:
    kind, text = schema_title(call), call.last_user_text
    if kind == "Plan":
        sections = [
            ("intro", "Open with the problem agents have with request/response glue."),
            ("example", "Show a concrete example of two agents talking over a bus."),
            ("conclusion", "Summarise the benefits in two sentences."),
        ]
        return json.dumps(
            {
                "analysis": "A short explanatory post for engineers.",
                "tasks": [{"name": n, "instructions": i} for n, i in sections],
            }
        )
    if kind == "Review":
        if "(revised)" in text:
            return json.dumps({"score": 0.9, "approved": True, "feedback": "Clear and concrete."})
        return json.dumps(
            {
                "score": 0.55,
                "approved": False,
                "feedback": "Good start, but the example is abstract.",
                "revisions": [{"task": "example", "instructions": "Use real topic names."}],
            }
        )
    task = text.split("Your task (", 1)[1].split(")", 1)[0]
    await asyncio.sleep(0.05)  # workers run concurrently
    revised = " (revised)" if "Reviewer feedback" in text else ""
    return f"[{task} section{revised}]"


async def main() -> None:
    args = parse_args(__doc__ or "")
    llm = make_llm(args, scripted)
    orchestrator = Orchestrator(llm=llm, max_revisions=2, min_score=0.8)
    try:
        result = await orchestrator.run(TOPIC)
        print(f"plan: {', '.join(t.name for t in result.plan.tasks)}")
        for r in result.rounds:
            if r.review is not None:
                print(f"round {r.round}: score {r.review.score:.2f}, approved {r.review.approved}")
        print(
            f"approved: {result.approved} after {result.revisions} revision(s) "
            f"({result.stop_reason})"
        )
        if result.error:
            print(f"reviewer failed: {result.error}")
        print(result.output)
    finally:
        if hasattr(llm, "aclose"):
            await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
