"""``LLMProvider``: calls one OpenAI-compatible chat completions endpoint.

A call and a stream take the same path, :meth:`LLMProvider._answer`: budget check,
cache, one ``chat {model}`` span, then the attempt loop (:mod:`loom.llm.attempts`:
limits, retries, and fallbacks to other providers) around single attempts
(:mod:`loom.llm.exchange`). The connection pool is :mod:`loom.llm.pool`'s, a served
model :mod:`loom.llm.local_server`'s, and the totals, limiters and servers live on the
runtime's :class:`~loom.llm.state.LLMState`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic_core import to_json

from loom import _effects
from loom._secrets import redact_url
from loom.errors import ConfigError

from . import _http, exchange
from ._request import (
    CallRequest,
    MessageLike,
    build_body,
    estimate_prompt_tokens,
    prompt_messages,
    request,
    wire_tool_name,
    with_request_options,
)
from .attempts import Attempt, with_fallbacks, with_retries
from .cache import ResponseCache, cache_key
from .calltrace import CallTrace
from .config import LLMConfig, has_config, merge_config, project_root, resolve_config
from .cost import Totals, cost_of, estimate_tokens, price_for
from .errors import LLMError, LLMResponseError
from .local_server import LocalModelServer, ServedModel
from .pool import Pool, endpoint
from .quirks import detect
from .state import LLMState, runtime_state
from .streaming import response_events
from .types import ChatModel, FinishEvent, LLMResponse, StreamEvent, TextDelta, Usage

log = logging.getLogger("loom.llm")

T = TypeVar("T")


class LLMProvider(ChatModel):
    """A client for one OpenAI-compatible provider.

    Args:
        ctx: The agent context (``agent.ctx``) or None for standalone use. Used for the
            agent id (per-agent usage), the project (fallbacks, ``.loom/cache``) and the
            runtime (its usage totals, budgets, limiters and local servers; the client
            is closed when the runtime stops).
        config: The provider's settings.
        project: The project config used to resolve ``fallbacks`` (default: ``ctx.project``).
        http_client: An ``httpx.AsyncClient`` to use instead of the provider's own pool
            (the provider will not close it).
        state: The usage totals, limiters and local servers to use (default: the
            runtime's; without a runtime, the provider's own).

    Example:
        >>> llm = LLMProvider.from_name(agent.ctx, "deepseek")  # doctest: +SKIP
        >>> response = await llm.call(messages=[{"role": "user", "content": "hi"}])
    """

    def __init__(
        self,
        ctx: Any,
        config: LLMConfig,
        *,
        project: Any = None,
        http_client: httpx.AsyncClient | None = None,
        state: LLMState | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.name = config.name
        self._project = project if project is not None else getattr(ctx, "project", None)
        self._api_key = config.resolved_api_key()
        self._secrets = [s for s in (self._api_key, *config.secret_values()) if s]
        has_auth = self._api_key or any(k.lower() == "authorization" for k in config.headers)
        if has_auth and "@" in urlsplit(config.base_url).netloc:
            # httpx refuses the combination with a bare ValueError at the first call.
            raise ConfigError(
                f"LLM provider {self.name!r}: base_url {redact_url(config.base_url)!r} has "
                "credentials (user:password@) and an API key or Authorization header is "
                "set too; use one of them",
                key=f"llm.{self.name}.base_url",
            )
        self.quirks = detect(config.base_url, override=config.quirks, serve=config.serve)
        self._stream_usage = (
            config.stream_usage if config.stream_usage is not None else self.quirks.stream_usage
        )
        #: Usage totals, limiters and local servers (the runtime's, else this provider's).
        self.state = state or runtime_state(ctx) or LLMState()
        self._base_url = config.base_url.rstrip("/")
        self._served: ServedModel | None = None
        self._owns_served = True
        if config.serve:
            self._served = ServedModel(
                self.state.local_servers,
                config.serve,
                chat_format=config.serve_chat_format,
                n_ctx=config.serve_ctx,
                extra_args=config.serve_args,
            )
        on_shutdown = getattr(getattr(ctx, "runtime", None), "on_shutdown", None)
        self._pool = Pool(
            self.name,
            kind=config.transport,
            timeout=config.timeout,
            connect_timeout=config.connect_timeout,
            client=http_client,
            # Nobody else closes this pool: it closes itself when its event loop ends.
            at_loop_end=None if callable(on_shutdown) else self._after_loop,
        )
        self._owns_pool = True
        self._endpoint: _http.Endpoint | None = None
        self._limiter = self.state.limiters.limiter(
            self.name,
            config.serve or self._base_url,
            rpm=config.rpm,
            tpm=config.tpm,
            max_concurrency=config.max_concurrency,
        )
        self._pricing = (
            price_for(config.model, config.prices)
            if not config.serve
            else (config.prices or price_for(""))
        )
        self._cache: ResponseCache | None = None
        if config.cache:
            directory = None
            if config.cache in ("disk", True):
                root = project_root(self._project) or Path.cwd()
                directory = (
                    Path(config.cache_dir) if config.cache_dir else root / ".loom" / "cache" / "llm"
                )
            self._cache = ResponseCache(config.cache_ttl, directory)
        system = self.quirks.name if self.quirks.name != "generic" else self.name
        self._trace = CallTrace(self.name, system, config.model)
        self._fallbacks: list[LLMProvider] | None = None
        self._closed = False
        if callable(on_shutdown):
            on_shutdown(self.aclose)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_name(cls, ctx: Any, name: str = "local", project: Any = None) -> LLMProvider:
        """The provider ``name`` from loom.toml (``ctx.project``), else a built-in preset.

        Raises:
            ConfigError: unknown name, a bad value, or an unset API key variable.
        """
        project = project if project is not None else getattr(ctx, "project", None)
        return cls(ctx, resolve_config(name, project), project=project)

    @classmethod
    def from_config(cls, ctx: Any, name: str, project_config: Any) -> LLMProvider:
        """The provider ``name`` of a project config (anything with ``.llm``, or a dict
        ``{"llm": {...}}``), merged over the preset of the same name if there is one."""
        return cls(ctx, resolve_config(name, project_config), project=project_config)

    def with_options(self, **overrides: Any) -> LLMProvider:
        """A copy with some settings changed (``model``, ``temperature``, ``timeout``...),
        sharing this provider's connection pool, limits, usage totals and served model.

        Raises:
            pydantic.ValidationError: an unknown setting or a bad value.
        """
        config = merge_config(self.config.model_dump(), overrides)
        caller_client = None if self._pool.owned else self._pool.client
        other = LLMProvider(
            None, config, project=self._project, http_client=caller_client, state=self.state
        )
        other.ctx = self.ctx
        if self._pool.owned:
            other._pool, other._owns_pool = self._pool, False
        if self._served is not None and config.serve == self.config.serve:
            other._served, other._owns_served = self._served, False
        return other

    def __repr__(self) -> str:
        return (
            f"LLMProvider(name={self.name!r}, model={self.config.model!r}, "
            f"base_url={redact_url(self.base_url)!r})"
        )

    @property
    def base_url(self) -> str:
        """The endpoint base (for a served model, known once the server runs)."""
        return self._base_url

    @property
    def model(self) -> str:
        """The configured model name."""
        return self.config.model

    @property
    def usage(self) -> Totals:
        """Usage and cost of this provider in its runtime (all agents)."""
        return self.state.usage.provider(self.name)

    @property
    def _client(self) -> httpx.AsyncClient | None:
        """The pool's client now (None before the first call and after closing)."""
        return self._pool.client

    @property
    def _server(self) -> LocalModelServer | None:
        """The local server behind a served model, once it runs."""
        return self._served.server if self._served is not None else None

    # -- public API ---------------------------------------------------------------------

    @with_request_options(request)
    async def call(self, req: CallRequest) -> LLMResponse:
        """One chat completion: ``call(messages, *, tools=None, ...)``.

        Args:
            messages: Dicts in the OpenAI shape or :class:`Message` objects.
            tools: Tool descriptions (OpenAI shape, the seed's flat shape, or ``@tool``s).
            tool_choice: ``"auto"``, ``"none"``, ``"required"``, or a tool name to force.
            response_format: Passed through (e.g. ``{"type": "json_object"}``), or a
                pydantic model class (a ``json_schema`` format).
            model: Overrides the configured model for this call.
            temperature: Overrides the configured temperature.
            max_tokens: Overrides the configured limit.
            timeout: Seconds a read may stall, for this call (per attempt).
            timeout_ms: The same in milliseconds (the original Loom's name).
            max_retries: Retries for this call.
            extra_headers: More HTTP headers for this call.
            extra_body: More JSON fields for this call (provider-specific ones).
            **fields: Other fields of OpenAI's request body (``top_p``, ``seed``,
                ``stop``... see :data:`loom.llm.BODY_FIELDS`); any other keyword is a
                ``TypeError``.

        Returns:
            The response; ``response.tool_calls`` holds parsed tool calls.

        Raises:
            LLMConnectionError: unreachable (``LLMConnectError``) or broken
                (``LLMReadError``) connection, after retries; an ``httpx.TransportError``.
            LLMTimeoutError: a read stalled past the timeout (after retries); an
                ``httpx.TimeoutException``.
            LLMStatusError: an HTTP error status (a subclass per status); an
                ``httpx.HTTPStatusError``.
            LLMResponseError: a malformed or oversized body.
            BudgetExceeded: the provider's budget is spent; nothing was sent.
        """
        response: LLMResponse | None = None
        async for event in self._events(req, stream=False):
            if type(event) is FinishEvent:
                response = event.response
        if response is None:
            raise LLMResponseError(f"{self.name}: no answer", provider=self.name)
        return response

    async def stream(self, messages: Sequence[MessageLike], **kwargs: Any) -> AsyncIterator[str]:
        """Stream the answer's text deltas (the seed's ``async for chunk in llm.stream``).

        Accepts the same keyword arguments as :meth:`call`. Use :meth:`stream_events` to
        see tool calls, usage and the final response.
        """
        async for event in self.stream_events(messages, **kwargs):
            if type(event) is TextDelta:
                yield event.text

    @with_request_options(request)
    def stream_events(self, req: CallRequest) -> AsyncIterator[StreamEvent]:
        """Stream typed events: text and reasoning deltas, tool-call start / argument
        delta / complete, usage, and a final :class:`~loom.llm.types.FinishEvent`
        carrying the assembled response. Takes the arguments of :meth:`call`.

        Retries and fallbacks apply only until the first event; after it, an error ends
        the stream with the typed exception (a half-streamed answer cannot be retried
        without the caller seeing text twice).
        """
        return self._events(req, stream=True)

    async def call_json(
        self,
        messages: Sequence[MessageLike],
        schema: type[T] | dict[str, Any],
        *,
        max_attempts: int | None = None,
        **kwargs: Any,
    ) -> T:
        """Ask for JSON matching ``schema`` and return it validated.

        Uses ``response_format`` ``json_schema`` where the provider supports it (a grammar
        on llama.cpp), instructions otherwise; on invalid output re-asks with the
        validation error. See :func:`loom.llm.structured.call_json`.

        Raises:
            StructuredOutputError: no valid answer after ``max_attempts``.
        """
        from .structured import call_json

        return await call_json(self, messages, schema, max_attempts=max_attempts, **kwargs)

    async def generate(self, prompt: str, system: str | None = None, **kwargs: Any) -> str:
        """The original Loom's call: one prompt in, text out.

        ``system`` is sent as a system message before the prompt; the other keywords are
        :meth:`call`'s (``timeout_ms=``, ``temperature=``, ``max_tokens=``...).
        """
        response = await self.call(prompt_messages(prompt, system), **kwargs)
        return response.content

    async def generate_stream(
        self, prompt: str, system: str | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        """:meth:`generate`, streamed: the answer's text deltas as they arrive."""
        async for text in self.stream(prompt_messages(prompt, system), **kwargs):
            yield text

    async def chat(self, messages: Sequence[MessageLike], **kwargs: Any) -> str:
        """The original Loom's chat: a conversation in, the answer's text out (use
        :meth:`call` for tool calls, usage and the rest of the response)."""
        response = await self.call(messages, **kwargs)
        return response.content

    async def generate_json(
        self, prompt: str, schema: type[T], system: str | None = None, **kwargs: Any
    ) -> T:
        """Seed-000 style: one prompt in (after ``system``, if given), a validated
        ``schema`` instance out."""
        return await self.call_json(prompt_messages(prompt, system), schema, **kwargs)

    def count_tokens(self, text: str) -> int:
        """Estimated tokens in ``text`` (~4 characters each; no tokenizer download)."""
        return estimate_tokens(text)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int = 0) -> float:
        """USD for that many tokens at this provider's prices."""
        return cost_of(
            Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            self._pricing,
        )

    async def aclose(self) -> None:
        """Close the connection pool (and stop a served local model). Idempotent.

        ``async with LLMProvider(...)`` closes it too; a provider used outside a runtime
        and never closed is closed when its event loop ends (``asyncio.run``)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_pool:
            await self._pool.aclose()
        await self._release_served()
        for fb in self._fallbacks or ():
            await fb.aclose()

    async def __aenter__(self) -> LLMProvider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals ----------------------------------------------------------------------

    async def _release_served(self) -> None:
        if self._served is not None and self._owns_served:
            await self._served.release()

    async def _after_loop(self) -> None:
        """When the pool closed itself at the end of its loop: the served model goes
        too, and a later loop starts afresh (the provider stays usable)."""
        await self._release_served()
        self._base_url = self.config.base_url.rstrip("/")
        self._endpoint = None

    def _events(self, req: CallRequest, *, stream: bool) -> AsyncGenerator[StreamEvent, None]:
        effects = _effects.current()
        if effects is not None:
            return self._journaled(effects, req, stream)
        return self._live_events(req, stream)

    async def _journaled(
        self, effects: _effects.Effects, req: CallRequest, stream: bool
    ) -> AsyncGenerator[StreamEvent, None]:
        """A call in a durable run: the journaled response on replay (no request
        sent), else the live answer, journaled once complete. The fingerprint is the
        request body (not the URL: a served model's port changes between runs)."""
        body, _ = build_body(self.config, self.quirks, req, stream=False, stream_usage=False)
        step = await effects.begin(
            "llm", {"provider": self.name, "model": body.get("model"), "body": cache_key("", body)}
        )
        if step.replayed:
            answer = LLMResponse.model_validate(step.value())
            for event in response_events(answer) if stream else [
                FinishEvent(answer.finish_reason, answer)
            ]:  # fmt: skip
                yield event
            return
        done: LLMResponse | None = None
        try:
            async for event in self._live_events(req, stream):
                if type(event) is FinishEvent:
                    done = event.response
                yield event
        except Exception as exc:
            await step.fail(exc)
            raise
        if done is not None:
            await step.finish(done.model_dump(mode="json"))

    def _live_events(self, req: CallRequest, stream: bool) -> AsyncGenerator[StreamEvent, None]:
        if not self.config.fallbacks:
            return self._answer(req, stream)
        return with_fallbacks(self.name, self._answers(req, stream))

    def _answers(self, req: CallRequest, stream: bool) -> Iterator[tuple[str, Attempt]]:
        """This provider's answer, then each fallback's (built only when reached)."""
        yield self.name, functools.partial(self._answer, req, stream)
        for fb in self._fallback_providers():
            yield fb.name, functools.partial(fb._answer, req, stream)

    def _fallback_providers(self) -> list[LLMProvider]:
        if self._fallbacks is None:
            out = []
            for name in self.config.fallbacks:
                if name == self.name or not has_config(name, self._project):
                    log.warning("%s: ignoring unknown fallback %r", self.name, name)
                    continue
                try:
                    config = resolve_config(name, self._project)
                except ConfigError as exc:
                    # e.g. its key variable is unset: skip it rather than hide the
                    # primary's error behind a config error.
                    log.warning("%s: skipping fallback %r: %s", self.name, name, exc)
                    continue
                out.append(LLMProvider(self.ctx, config, project=self._project, state=self.state))
            self._fallbacks = out
        return self._fallbacks

    async def _ready(self) -> _http.Endpoint:
        """The endpoint to send to: the served model running, the pool open on this
        loop."""
        if self._closed:
            raise LLMError(f"{self.name}: provider is closed")
        if self._served is not None:
            base_url = await self._served.base_url()
            if base_url != self._base_url:
                self._base_url, self._endpoint = base_url, None
        client = self._pool.open()
        ep = self._endpoint
        if ep is None or ep.client is not client:
            ep = self._endpoint = endpoint(
                self.config,
                self.quirks,
                base_url=self._base_url,
                api_key=self._api_key,
                secrets=self._secrets,
                pool=self._pool,
            )
        return ep

    def _account(self, response: LLMResponse, started: float) -> None:
        response.latency_ms = (time.perf_counter() - started) * 1000.0
        if not response.cached:
            response.cost_usd = cost_of(response.usage, self._pricing)
            self.state.usage.record(
                self.name, getattr(self.ctx, "agent_id", None), response.usage, response.cost_usd
            )
        if not response.provider:
            response.provider = self.name

    async def _answer(self, req: CallRequest, stream: bool) -> AsyncGenerator[StreamEvent, None]:
        """This provider's answer to ``req`` as events, retries and limits included."""
        self.state.usage.check_budget(self.name, self.config.budget_usd)
        ep = await self._ready()
        body, name_map = build_body(
            self.config, self.quirks, req, stream=stream, stream_usage=self._stream_usage
        )
        key = None
        if self._cache is not None:
            key = cache_key(self._base_url, body)
            hit = self._cache.get(key)
            if hit is not None:
                log.debug("%s: cache hit", self.name)
                replay = response_events(hit) if stream else [FinishEvent(hit.finish_reason, hit)]
                for event in replay:
                    yield event
                return
        started = time.perf_counter()
        trace = self._trace
        span = trace.start(body, stream=stream, base_url=self._base_url)
        content = to_json(body)
        prompt_tokens = estimate_prompt_tokens(body) if stream or self._limiter else 0
        done: LLMResponse | None = None

        def answered(response: LLMResponse) -> None:
            nonlocal done
            self._account(response, started)
            done = response

        def attempt() -> AsyncGenerator[StreamEvent, None]:
            if not stream:
                return exchange.complete(
                    ep, content, req.extra_headers, req.timeout, name_map, on_answer=answered
                )
            return exchange.stream(
                ep,
                content,
                req.extra_headers,
                req.timeout,
                name_map,
                prompt_tokens=prompt_tokens,
                on_first_chunk=lambda: trace.first_chunk(span, time.perf_counter() - started),
                on_answer=answered,
            )

        try:
            async for event in with_retries(
                attempt,
                provider=self.name,
                max_retries=req.max_retries
                if req.max_retries is not None
                else self.config.max_retries,
                limiter=self._limiter,
                estimated_tokens=prompt_tokens + int(body.get("max_tokens") or 0),
                secrets=self._secrets,
                on_retry=functools.partial(trace.retry, span),
            ):
                yield event
        except BaseException as exc:
            if done is not None:  # the consumer stopped after the answer was complete
                trace.ok(span, done)
            else:
                trace.error(span, exc, started)
            raise
        if done is None:  # the consumer stopped early: the stream ended without an answer
            trace.error(span, GeneratorExit(), started)
            return
        trace.ok(span, done)
        if key is not None and not stream:
            assert self._cache is not None
            self._cache.put(key, done)


__all__ = ["LLMProvider", "wire_tool_name"]
