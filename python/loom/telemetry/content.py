"""Content on spans: one rendering of a value as text, one length limit.

Used for tool arguments and results, and pattern inputs and outputs; only when content
capture is on (:meth:`loom.telemetry.Telemetry.capture_content`). LLM messages are the
exception: they go on ``chat`` spans whole, as the JSON the GenAI conventions specify.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

#: Content attributes are cut to this many characters (an ellipsis marks the cut).
MAX_CONTENT = 8192


def content_text(value: Any) -> str:
    """``value`` as span text: strings as they are, pydantic models and data as JSON,
    anything else (or data nested too deep for JSON) as its ``repr``; cut to
    :data:`MAX_CONTENT` characters. Never raises for an odd value: a span must not fail
    in place of the call it describes."""
    if isinstance(value, str):
        text = value
    else:
        try:
            if isinstance(value, BaseModel):
                text = value.model_dump_json()
            else:
                text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            try:
                text = repr(value)
            except RecursionError:
                text = f"<{type(value).__name__} nested too deep to show>"
    return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "…"


__all__ = ["MAX_CONTENT", "content_text"]
