"""Configuration, results and stream events of a cognitive run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WrapValidator

from loom.llm.types import Usage
from loom.prompts import Prompt

ToolChoice = str | dict[str, Any]


class CognitiveConfig(BaseModel):
    """How a :class:`~loom.cognitive.CognitiveAgent` thinks and acts."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    #: Text, or a :class:`loom.prompts.Prompt` loaded from a file (kept as one, so the
    #: ``chat`` spans name its file and version).
    system_prompt: Annotated[
        str, WrapValidator(lambda v, handler: v if isinstance(v, Prompt) else handler(v))
    ] = "You are a capable assistant. Use the tools when they help, then answer concisely."
    #: LLM turns per run before giving up with ``success=False``.
    max_iterations: int = Field(default=8, ge=1)
    #: Seconds each tool call may take.
    tool_timeout: float = Field(default=30.0, gt=0)
    #: ``native`` (function calling), ``react`` (text protocol, for models without
    #: tool calling) or ``auto`` (native when tools are offered).
    tool_mode: Literal["auto", "native", "react"] = "auto"
    #: ``tool_choice`` per LLM turn: one value for every turn, or a list (turn i uses
    #: item i, the last repeats). E.g. ``[{"type": "function", "function": {"name":
    #: "fs__read_file"}}, "none"]`` forces a read first and an answer next — what tiny
    #: local models need.
    tool_choice: ToolChoice | list[ToolChoice] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    #: Tokens of conversation history kept in the prompt; older turns are compacted
    #: into a summary.
    memory_tokens: int = Field(default=3000, ge=200)
    #: Tool outputs longer than this (characters) are saved to ``.loom/cache`` and only
    #: a preview goes into the prompt.
    offload_chars: int = Field(default=4000, ge=200)
    preview_chars: int = Field(default=800, ge=50)
    #: Summarise old history with the LLM (else keep an extractive summary).
    llm_compaction: bool = True


@dataclass
class Step:
    """One thing the agent did: a tool call (with its result or error) or an answer."""

    kind: Literal["tool", "answer", "thought"]
    iteration: int
    tool: str | None = None
    call_id: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    text: str = ""
    seconds: float = 0.0


@dataclass
class CognitiveResult:
    """The outcome of :meth:`CognitiveAgent.run`."""

    answer: str
    steps: list[Step]
    iterations: int
    success: bool
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0
    cost_usd: float = 0.0

    @property
    def tool_calls(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "tool"]


# -- stream events (besides the LLM's TextDelta / ToolCallStart / ToolCallDelta) ------


@dataclass(frozen=True)
class ToolResult:
    """A tool finished (``error`` set if it failed or was denied)."""

    call_id: str
    name: str
    result: Any
    error: str | None = None
    type: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True)
class RunFinished:
    """The last event of ``run_stream``."""

    result: CognitiveResult
    type: Literal["result"] = "result"
