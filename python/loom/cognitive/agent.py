"""``CognitiveAgent``: an LLM that thinks, calls sandboxed tools, and answers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from loom import _effects
from loom._depth import value_too_deep
from loom.cognitive import react
from loom.cognitive.memory import Memory
from loom.cognitive.model import CallableModel, chat_model
from loom.cognitive.policy import Permission, PermissionCallback, not_offered, select
from loom.cognitive.types import (
    CognitiveConfig,
    CognitiveResult,
    RunFinished,
    Step,
    ThinkingStrategy,
    ToolChoice,
    ToolResult,
)
from loom.errors import LoomError, ToolArgumentsInvalid, ToolError, ToolNotFound
from loom.llm.types import (
    ChatModel,
    FinishEvent,
    LLMResponse,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from loom.prompts import Prompt

log = logging.getLogger("loom.cognitive")

StreamItem = TextDelta | ToolCallStart | ToolCallDelta | ToolResult | RunFinished

#: Deepest tool result (or run context) rendered as JSON for the model; results come
#: from tools, not from the model, so this is a guard against recursion, not a policy.
RESULT_DEPTH = 200


def _add_usage(total: Usage, u: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + u.prompt_tokens,
        completion_tokens=total.completion_tokens + u.completion_tokens,
        total_tokens=total.total_tokens + u.total_tokens,
        cached_tokens=total.cached_tokens + u.cached_tokens,
        reasoning_tokens=total.reasoning_tokens + u.reasoning_tokens,
        estimated=total.estimated or u.estimated,
    )


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    problem = value_too_deep(value, RESULT_DEPTH)
    if problem:
        # json.dumps and repr both recurse: a tool result this deep cannot be shown.
        return f"(the result is {problem} and cannot be shown)"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


class CognitiveAgent:
    """Runs a goal to an answer: LLM turns, tool calls (concurrent when the model asks
    for several at once), memory across runs.

    Example:
        >>> cognitive = CognitiveAgent(agent.ctx, LLMProvider.from_name(agent.ctx, "local"),
        ...     config=CognitiveConfig(max_iterations=5), tools=["fs:read_file"])
        >>> result = await cognitive.run("What does notes.md say about Loom?")

    Args:
        ctx: The agent's context (tools are called through it; may be None if no
            tools are used).
        llm: The model: a :class:`~loom.llm.types.ChatModel` (an ``LLMProvider``, a
            ``loom.testing`` model), or any object with an async
            ``call(messages, **kwargs)`` (see :mod:`loom.cognitive.model`).
        config: How to think; see :class:`CognitiveConfig`.
        tools: What the model is offered and may call: tool names, ``fnmatch``
            patterns (``"fs:*"``) or ``@tool`` functions; ``None`` offers every
            registered tool, ``[]`` none. A call of any other tool is refused.
        permission_callback: ``(tool_name, arguments) -> bool`` (or awaitable), also
            ``(tool_name, arguments, reason)``; asked before each tool call, only
            ``True`` lets it run (see :mod:`loom.cognitive.policy`).
        available_tools: The original Loom's name for ``tools`` (give one of them).
        memory: A :class:`Memory` to use (default: a new one).

    Raises:
        TypeError: ``llm`` has no ``call`` method, both ``tools`` and
            ``available_tools`` are given, ``tools`` is a string, or
            ``permission_callback`` is not callable.
    """

    def __init__(
        self,
        ctx: Any,
        llm: ChatModel | CallableModel,
        config: CognitiveConfig | None = None,
        tools: Iterable[Any] | None = None,
        permission_callback: PermissionCallback | None = None,
        *,
        available_tools: Iterable[Any] | None = None,
        memory: Memory | None = None,
    ) -> None:
        if available_tools is not None:
            if tools is not None:
                raise TypeError(
                    "give tools= or available_tools= (the original Loom's name for it), not both"
                )
            tools = available_tools
        if isinstance(tools, (str, bytes)):
            # list("fs:read_file") would be a list of characters.
            raise TypeError(f"tools must be a list of tool names, not the string {tools!r}")
        self.ctx = ctx
        #: The model as given; :attr:`model` is what the agent calls.
        self.llm = llm
        self.model = chat_model(llm)
        self.config = config or CognitiveConfig()
        self.permission = None if permission_callback is None else Permission(permission_callback)
        self._tool_items = None if tools is None else list(tools)
        project = getattr(ctx, "project", None)
        root = project.root if project is not None else Path.cwd()
        self.memory = memory or Memory(
            self.model,
            max_tokens=self.config.memory_tokens,
            cache_dir=root / ".loom" / "cache",
            offload_chars=self.config.offload_chars,
            preview_chars=self.config.preview_chars,
        )
        self._tool_defs: list[dict[str, Any]] | None = None
        #: Registered names the model may call (set with the offered tools).
        self._allowed: set[str] = set()

    @property
    def agent_id(self) -> str:
        return str(getattr(self.ctx, "agent_id", "cognitive"))

    # -- public API ----------------------------------------------------------------

    async def run(self, goal: str, context: Any = None) -> CognitiveResult:
        """Works on ``goal`` until the model answers or ``max_iterations`` is hit.

        Failures (LLM errors, the iteration limit) come back as a result with
        ``success=False`` and ``error`` set, not as exceptions; tool errors are shown to
        the model so it can recover, and recorded in ``steps``.
        """
        result: CognitiveResult | None = None
        async for item in self._loop(goal, context, stream=False):
            if isinstance(item, RunFinished):
                result = item.result
        assert result is not None
        return result

    async def run_stream(self, goal: str, context: Any = None) -> AsyncIterator[StreamItem]:
        """Like :meth:`run`, yielding as it goes: ``TextDelta``, ``ToolCallStart``,
        ``ToolCallDelta``, ``ToolResult`` and finally ``RunFinished(result)``."""
        async for item in self._loop(goal, context, stream=True):
            yield item

    # -- the loop ------------------------------------------------------------------

    @property
    def _one_call(self) -> bool:
        """Whether the strategy is a single LLM call without tools."""
        return self.config.thinking_strategy is not ThinkingStrategy.REACT

    async def offered_tools(self) -> list[dict[str, Any]]:
        """The tools this agent offers the model, in the OpenAI format."""
        if self._tool_defs is not None:
            return self._tool_defs
        if self._tool_items == [] or self.ctx is None or self._one_call:
            self._tool_defs = []
            return self._tool_defs
        registry = await self.ctx.runtime.get_tools()
        defs: list[dict[str, Any]] = registry.openai_tools(select(registry, self._tool_items))
        self._allowed = {registry.get(d["function"]["name"]).spec.name for d in defs}
        self._tool_defs = defs
        return defs

    def _choice(self, iteration: int) -> ToolChoice | None:
        choice = self.config.tool_choice
        if isinstance(choice, list):
            return choice[min(iteration, len(choice) - 1)] if choice else None
        return choice

    def _system(self, tools: list[dict[str, Any]], mode: str) -> str:
        base = self.config.system_prompt
        extra = ""
        if self.config.thinking_strategy is ThinkingStrategy.CHAIN_OF_THOUGHT:
            extra = react.CHAIN_OF_THOUGHT
        elif mode == "react" and tools:
            extra = react.instructions(tools)
        if not extra:
            return base
        text = f"{base}\n\n{extra}"
        return Prompt(text, base.file, base.version) if isinstance(base, Prompt) else text

    async def _loop(self, goal: str, context: Any, *, stream: bool) -> AsyncIterator[StreamItem]:
        from loom.telemetry.agent_spans import cognitive_span, end_cognitive_span
        from loom.telemetry.state import telemetry_of

        started = time.perf_counter()
        one_call = self._one_call
        limit = 1 if one_call else self.config.max_iterations
        with cognitive_span(telemetry_of(self.ctx), self.agent_id, limit) as span:
            tools = await self.offered_tools()
            mode = self.config.tool_mode
            if mode == "auto":
                mode = "native"
            user = goal if context is None else f"{goal}\n\nContext:\n{_render(context)}"
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": self._system(tools, mode)},
                *self.memory.messages(),
                {"role": "user", "content": user},
            ]
            run_turns: list[dict[str, Any]] = [{"role": "user", "content": user}]
            steps: list[Step] = []
            usage = Usage()
            cost = 0.0
            answer = ""
            error: str | None = None
            success = False
            iterations = 0
            for it in range(limit):
                iterations = it + 1
                kwargs: dict[str, Any] = {}
                if self.config.temperature is not None:
                    kwargs["temperature"] = self.config.temperature
                if self.config.max_tokens is not None:
                    kwargs["max_tokens"] = self.config.max_tokens
                if mode == "native" and tools:
                    kwargs["tools"] = tools
                    choice = self._choice(it)
                    if choice is not None:
                        kwargs["tool_choice"] = choice
                try:
                    if stream:
                        response: LLMResponse | None = None
                        async for ev in self.model.stream_events(messages, **kwargs):
                            if isinstance(ev, FinishEvent):
                                response = ev.response
                            elif isinstance(ev, (TextDelta, ToolCallStart, ToolCallDelta)):
                                yield ev
                        if response is None:
                            raise LoomError("the stream ended without a finish event")
                    else:
                        response = await self.model.call(messages=messages, **kwargs)
                except LoomError as exc:
                    error = f"LLM call failed: {exc}"
                    log.warning("%s: %s", self.agent_id, error)
                    break
                usage = _add_usage(usage, response.usage)
                cost += float(getattr(response, "cost_usd", 0.0) or 0.0)

                if one_call:
                    answer, error = self._one_call_answer(response, steps)
                    success = error is None
                    break

                if mode == "native" and response.tool_calls:
                    messages.append(self._assistant_tool_message(response))
                    for step in await self._call_tools(response.tool_calls, it):
                        steps.append(step)
                        shown = self._shown(step)
                        messages.append(
                            {"role": "tool", "tool_call_id": step.call_id or "", "content": shown}
                        )
                        run_turns.append(
                            {"role": "assistant", "content": f"[{step.tool}] {shown[:300]}"}
                        )
                        if stream:
                            yield ToolResult(
                                step.call_id or "", step.tool or "", step.result, step.error
                            )
                    continue

                if mode == "react" and tools:
                    parsed = react.parse(response.content)
                    if parsed.kind == "action":
                        call = ToolCall(
                            id=f"react_{it}", name=parsed.tool, arguments=parsed.arguments or {}
                        )
                        step = await self._call_tool(call, it)
                        steps.append(step)
                        shown = self._shown(step)
                        messages.append({"role": "assistant", "content": response.content})
                        messages.append({"role": "user", "content": f"Observation: {shown}"})
                        run_turns.append(
                            {"role": "assistant", "content": f"[{step.tool}] {shown[:300]}"}
                        )
                        if stream:
                            yield ToolResult(
                                step.call_id or "", step.tool or "", step.result, step.error
                            )
                        continue
                    if parsed.kind == "invalid":
                        messages.append({"role": "assistant", "content": response.content})
                        messages.append(
                            {
                                "role": "user",
                                "content": f"Your reply did not follow the format "
                                f"({parsed.error}). Reply with an Action and Action Input, "
                                "or a Final Answer.",
                            }
                        )
                        steps.append(Step("thought", it, text=response.content, error=parsed.error))
                        continue
                    answer = parsed.answer
                else:
                    answer = response.content
                steps.append(Step("answer", it, text=answer))
                success = True
                break
            else:
                error = (
                    f"stopped after {self.config.max_iterations} iterations without a final "
                    "answer (raise CognitiveConfig.max_iterations?)"
                )
            if success:
                run_turns.append({"role": "assistant", "content": answer})
                await self.memory.remember(run_turns, self._summarizer())
            result = CognitiveResult(
                answer=answer,
                steps=steps,
                iterations=iterations,
                success=success,
                error=error,
                usage=usage,
                latency=time.perf_counter() - started,
                cost_usd=cost,
            )
            end_cognitive_span(
                span,
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                iterations=iterations,
                tool_calls=len(result.tool_calls),
                cost_usd=cost,
                error=error,
            )
            yield RunFinished(result)

    def _one_call_answer(self, response: LLMResponse, steps: list[Step]) -> tuple[str, str | None]:
        """The answer (and error) of a ``single_shot`` or ``cot`` run's one call."""
        strategy = self.config.thinking_strategy
        text = response.content
        if not text.strip() and response.tool_calls:
            names = ", ".join(tc.name for tc in response.tool_calls)
            return "", (
                f"the model asked for tools ({names}), but thinking_strategy="
                f"{strategy.value!r} runs none"
            )
        if strategy is ThinkingStrategy.CHAIN_OF_THOUGHT:
            split = react.split_final(text)
            if split is not None:
                reasoning, text = split
                if reasoning:
                    steps.append(Step("thought", 0, text=reasoning))
        steps.append(Step("answer", 0, text=text))
        return text, None

    @staticmethod
    def _assistant_tool_message(response: LLMResponse) -> dict[str, Any]:
        # content "" rather than None: strict servers (llama.cpp) reject null content
        # next to tool calls.
        return {
            "role": "assistant",
            "content": response.content or "",
            "tool_calls": [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": json.dumps(tc.arguments)},
                }
                for tc in response.tool_calls
            ],
            **(
                {"reasoning_content": response.reasoning_content}
                if response.reasoning_content
                else {}
            ),
        }

    def _shown(self, step: Step) -> str:
        """What the model sees of a tool step."""
        if step.error:
            return f"error: {step.error}"
        return self.memory.offload(_render(step.result))

    async def _call_tools(self, calls: list[ToolCall], iteration: int) -> list[Step]:
        """Runs one turn's tool calls concurrently, at most ``max_tools_per_step``; the
        rest get a "not run" step (each call needs an answer for the model)."""
        cap = self.config.max_tools_per_step
        now = calls if cap is None else calls[:cap]
        if _effects.current() is not None:
            # A durable run journals effects in order: one call at a time, so a resumed
            # run asks for them in the same order.
            done = [await self._call_tool(tc, iteration) for tc in now]
        else:
            done = list(await asyncio.gather(*(self._call_tool(tc, iteration) for tc in now)))
        for tc in calls[len(now) :]:
            step = Step("tool", iteration, tool=tc.name, call_id=tc.id, arguments=tc.arguments)
            step.error = (
                f"not run: max_tools_per_step={cap} allows {cap} tool call(s) per reply; "
                "ask for it again in your next reply if you still need it"
            )
            if self.ctx is not None:
                try:
                    registry = await self.ctx.runtime.get_tools()
                    step.tool = registry.get(tc.name).spec.name
                except ToolNotFound:
                    pass
            done.append(step)
        return done

    async def _call_tool(self, call: ToolCall, iteration: int) -> Step:
        started = time.perf_counter()
        step = Step("tool", iteration, tool=call.name, call_id=call.id, arguments=call.arguments)
        try:
            if self.ctx is None:
                raise LoomError("no context: this CognitiveAgent cannot call tools")
            registry = await self.ctx.runtime.get_tools()
            name = registry.get(call.name).spec.name
            step.tool = name
            await self.offered_tools()
            if name not in self._allowed:
                raise not_offered(name, self._allowed)
            if call.arguments_error:
                raise ToolArgumentsInvalid(name, call.arguments_error)
            if self.permission is not None:
                await self.permission.check(name, call.arguments)
            step.result = await self.ctx.tool(
                name, call.arguments, timeout=self.config.tool_timeout, call_id=call.id or None
            )
        except ToolError as exc:
            step.error = f"{type(exc).__name__}: {exc.reason}"
        except LoomError as exc:
            step.error = str(exc)
        step.seconds = time.perf_counter() - started
        if step.error:
            log.info("%s: tool %s failed: %s", self.agent_id, step.tool, step.error)
        return step

    def _summarizer(self) -> Any:
        if not self.config.llm_compaction:
            return None

        async def summarize(transcript: str) -> str:
            response = await self.model.call(
                messages=[
                    {
                        "role": "system",
                        "content": "Summarise this conversation in a few sentences, keeping "
                        "facts, file names and results.",
                    },
                    {"role": "user", "content": transcript},
                ]
            )
            return str(response.content)

        return summarize

    def reset(self) -> None:
        """Forgets the conversation history."""
        self.memory.clear()
