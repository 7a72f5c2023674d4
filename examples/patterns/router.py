"""Routing with a confidence threshold and a reject path: a calendar front desk.

An LLM classifies each request as a new event, a change to an existing one, or
neither; confident decisions go to their handler, the rest to the reject handler.

    python examples/patterns/router.py                  # scripted model, runs anywhere
    python examples/patterns/router.py --provider openai
"""

from __future__ import annotations

import asyncio
import json

from _demo import make_llm, parse_args

from loom.patterns import Rejection, Route, RouteDecision, Router
from loom.testing import RecordedCall


async def new_event(request: str, decision: RouteDecision) -> str:
    return f"created an event ({decision.confidence:.2f} sure)"


async def modify_event(request: str, decision: RouteDecision) -> str:
    return f"updated the event ({decision.confidence:.2f} sure)"


def reject(request: str, rejection: Rejection) -> str:
    return f"sorry, I can only manage calendar events ({rejection.kind}: {rejection.reason})"


ROUTES = [
    Route("new_event", "Create a new calendar event", new_event),
    Route("modify_event", "Change, move or cancel an existing event", modify_event),
]


def scripted(call: RecordedCall) -> str:
    text = call.last_user_text.lower()
    if "move" in text:
        answer = {"route": "modify_event", "confidence": 0.92, "reasoning": "moves a meeting"}
    elif "schedule" in text:
        answer = {"route": "new_event", "confidence": 0.95, "reasoning": "a new meeting"}
    elif "that thing" in text:
        answer = {"route": "modify_event", "confidence": 0.4, "reasoning": "unclear which"}
    else:
        answer = {"route": "other", "confidence": 0.9, "reasoning": "not about the calendar"}
    return json.dumps(answer)


async def main() -> None:
    args = parse_args(__doc__ or "")
    llm = make_llm(args, scripted)
    router = Router(llm, ROUTES, threshold=0.7, reject=reject)
    try:
        for text in (
            "Schedule a team meeting next Tuesday at 2pm with Alice and Bob.",
            "Move my meeting with Bob to Friday at 10.",
            "Do that thing with the thing.",
            "What's the weather like today?",
        ):
            result = await router.run(text)
            where = result.route or "reject"
            print(f"{where}: {result.output}")
    finally:
        if hasattr(llm, "aclose"):
            await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
