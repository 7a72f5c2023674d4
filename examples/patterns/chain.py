"""Prompt chaining with a confidence gate: a calendar event processor.

Step 1 decides whether the text is a calendar event (with a confidence); the gate stops
the chain there unless it is one with confidence >= 0.7. Step 2 extracts the details,
step 3 writes a confirmation.

    python examples/patterns/chain.py                  # scripted model, runs anywhere
    python examples/patterns/chain.py --provider openai
"""

from __future__ import annotations

import asyncio
import json

from _demo import make_llm, parse_args, schema_title
from pydantic import BaseModel, Field

from loom.patterns import Chain, Gate, Step
from loom.testing import RecordedCall


class EventExtraction(BaseModel):
    description: str = Field(description="The raw description of the event")
    is_calendar_event: bool = Field(description="Whether the text describes a calendar event")
    confidence: float = Field(ge=0, le=1, description="Confidence from 0 to 1")


class EventDetails(BaseModel):
    name: str = Field(description="Name of the event")
    date: str = Field(description="Date and time, ISO 8601")
    duration_minutes: int
    participants: list[str]


class EventConfirmation(BaseModel):
    message: str = Field(description="A natural-language confirmation for the user")


chain_steps = [
    Step(
        "extract",
        EventExtraction,
        instructions="Decide whether the text describes a calendar event, with a confidence.",
        gate=Gate(
            min_confidence=0.7,
            predicate=lambda e: e.is_calendar_event,
            reason="not a calendar event",
        ),
    ),
    Step(
        "details",
        EventDetails,
        instructions="Extract the event's name, date (ISO 8601), duration and participants.",
    ),
    Step("confirm", EventConfirmation, instructions="Write a short, friendly confirmation."),
]


def scripted(call: RecordedCall) -> str:
    """Canned answers, chosen by the schema asked for and the user's text."""
    kind, text = schema_title(call), call.last_user_text
    if kind == "EventExtraction":
        is_event = "meeting" in text.lower()
        return json.dumps(
            {
                "description": text,
                "is_calendar_event": is_event,
                "confidence": 0.9 if is_event else 0.2,
            }
        )
    if kind == "EventDetails":
        return json.dumps(
            {
                "name": "Team meeting",
                "date": "2025-01-07T14:00:00",
                "duration_minutes": 60,
                "participants": ["Alice", "Bob"],
            }
        )
    return json.dumps({"message": "Team meeting with Alice and Bob, Tue 7 Jan at 14:00 (1 h)."})


async def main() -> None:
    args = parse_args(__doc__ or "")
    llm = make_llm(args, scripted)
    chain = Chain(chain_steps, llm=llm)
    try:
        for text in (
            "Let's schedule a 1h team meeting next Tuesday at 2pm with Alice and Bob.",
            "Can you send an email to Alice about the project?",
        ):
            result = await chain.run(text)
            if result.ok:
                print(f"ok: {result.output_as(EventConfirmation).message}")
            else:
                print(f"rejected at {result.failed_step}: {result.reason}")
    finally:
        if hasattr(llm, "aclose"):
            await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
