"""``LLMProvider``: calls one OpenAI-compatible chat completions endpoint.

Every request goes through :func:`loom.llm._http.open_attempt` (one attempt) inside the retry loops
of :meth:`LLMProvider._call_direct` and :meth:`LLMProvider._stream_direct`, each wrapped
in one ``chat {model}`` span: the single place where telemetry, limits, budgets and the
cache apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic_core import from_json, to_json

from loom._secrets import redact_url
from loom.errors import ConfigError
from loom.telemetry import chat_spans as _otel

from . import _http
from ._request import CallRequest, MessageLike, build_body, estimate_prompt_tokens, wire_tool_name
from .cache import ResponseCache, cache_key
from .config import LLMConfig, has_config, project_root, resolve_config
from .cost import cost_of, estimate_tokens, price_for, tracker
from .errors import (
    LLMConnectionError,
    LLMError,
    LLMResponseError,
    LLMStatusError,
    RateLimitError,
    ServerError,
    redact,
)
from .limits import limiter_for
from .quirks import detect
from .retry import retry_delay, retryable
from .streaming import SSEDecoder, StreamAccumulator, parse_completion, response_events
from .types import LLMResponse, StreamEvent, TextDelta, UsageEvent

if TYPE_CHECKING:
    from .cost import Totals
    from .local_server import LocalModelServer

log = logging.getLogger("loom.llm")

T = TypeVar("T")


def _fallbackable(exc: LLMError) -> bool:
    return isinstance(exc, (LLMConnectionError, ServerError, RateLimitError))


class LLMProvider:
    """A client for one OpenAI-compatible provider.

    Args:
        ctx: The agent context (``agent.ctx``) or None for standalone use. Used for the
            agent id (per-agent usage), the project (fallbacks, ``.loom/cache``) and the
            runtime (the client is closed when the runtime stops).
        config: The provider's settings.
        project: The project config used to resolve ``fallbacks`` (default: ``ctx.project``).
        http_client: An ``httpx.AsyncClient`` to use instead of the provider's own pool
            (the provider will not close it).

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
        self._client = http_client
        self._owns_client = http_client is None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._transport: httpx.AsyncBaseTransport | None = None
        self._url: httpx.URL | None = None
        self._endpoint: _http.Endpoint | None = None
        self._host: str = ""
        self._port: int | None = None
        self._server: LocalModelServer | None = None
        self._server_lock: asyncio.Lock | None = None
        self._owns_server = False
        self._base_url = config.base_url.rstrip("/")
        self._limiter = limiter_for(
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
        self._fallbacks: list[LLMProvider] | None = None
        self._closed = False
        runtime = getattr(ctx, "runtime", None)
        on_shutdown = getattr(runtime, "on_shutdown", None)
        #: Closes the pool when its event loop ends, for a provider no runtime closes.
        self._closer: asyncio.Task[None] | None = None
        self._runtime_closes = callable(on_shutdown)
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
        sharing this provider's connection pool, limits and usage totals."""
        config = self.config.model_copy(update=overrides)
        LLMConfig.model_validate(config.model_dump())  # re-check the new values
        other = LLMProvider(None, config, project=self._project, http_client=self._client)
        other.ctx = self.ctx
        if config.base_url == self.config.base_url:
            other._transport = self._transport  # same pool, fast path too
        other._server = self._server
        if self._server is not None and config.serve == self.config.serve:
            other._base_url = self._base_url
        if self._client is None:
            # No pool yet: let the copy make its own, owned and closed by it.
            other._owns_client = True
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
        """Usage and cost of this provider in this process (all agents)."""
        return tracker.provider(self.name)

    # -- public API ---------------------------------------------------------------------

    async def call(
        self,
        messages: Sequence[MessageLike],
        *,
        tools: Iterable[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        extra_headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> LLMResponse:
        """One chat completion.

        Args:
            messages: Dicts in the OpenAI shape or :class:`Message` objects.
            tools: Tool descriptions (OpenAI shape, the seed's flat shape, or ``@tool``s).
            tool_choice: ``"auto"``, ``"none"``, ``"required"``, or a tool name to force.
            response_format: Passed through (e.g. ``{"type": "json_object"}``).
            model: Overrides the configured model for this call.
            temperature: Overrides the configured temperature.
            max_tokens: Overrides the configured limit.
            timeout: Seconds a read may stall, for this call.
            max_retries: Retries for this call.
            extra_headers: More HTTP headers for this call.
            extra_body: More JSON fields for this call.
            **overrides: Any other request field (``top_p``, ``seed``, ``stop``...).

        Returns:
            The response; ``response.tool_calls`` holds parsed tool calls.

        Raises:
            LLMConnectionError: unreachable or broken connection (after retries).
            LLMTimeoutError: a read stalled past the timeout (after retries).
            LLMStatusError: an HTTP error status (a subclass per status).
            LLMResponseError: a malformed or oversized body.
            BudgetExceeded: the provider's budget is spent; nothing was sent.
        """
        req = self._request(
            messages,
            tools,
            tool_choice,
            response_format,
            model,
            temperature,
            max_tokens,
            timeout,
            max_retries,
            extra_headers,
            extra_body,
            overrides,
        )
        try:
            return await self._call_direct(req)
        except LLMError as exc:
            if not _fallbackable(exc) or not self.config.fallbacks:
                raise
            last = exc
        for fb in self._fallback_providers():
            log.warning("%s failed (%s); falling back to %s", self.name, last, fb.name)
            try:
                return await fb._call_direct(req)
            except LLMError as exc:
                if not _fallbackable(exc):
                    raise
                last = exc
        raise last

    async def stream(self, messages: Sequence[MessageLike], **kwargs: Any) -> AsyncIterator[str]:
        """Stream the answer's text deltas (the seed's ``async for chunk in llm.stream``).

        Accepts the same keyword arguments as :meth:`call`. Use :meth:`stream_events` to
        see tool calls, usage and the final response.
        """
        async for event in self.stream_events(messages, **kwargs):
            if type(event) is TextDelta:
                yield event.text

    async def stream_events(
        self,
        messages: Sequence[MessageLike],
        *,
        tools: Iterable[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        extra_headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[StreamEvent]:
        """Stream typed events: text and reasoning deltas, tool-call start / argument
        delta / complete, usage, and a final :class:`~loom.llm.types.FinishEvent`
        carrying the assembled response.

        Retries and fallbacks apply only until the first event; after it, an error ends
        the stream with the typed exception (a half-streamed answer cannot be retried
        without the caller seeing text twice).
        """
        req = self._request(
            messages,
            tools,
            tool_choice,
            response_format,
            model,
            temperature,
            max_tokens,
            timeout,
            max_retries,
            extra_headers,
            extra_body,
            overrides,
        )
        started = False
        try:
            async for event in self._stream_direct(req):
                started = True
                yield event
            return
        except LLMError as exc:
            if started or not _fallbackable(exc) or not self.config.fallbacks:
                raise
            last = exc
        # Fallbacks are built only now, so a misconfigured one cannot break the primary.
        for fb in self._fallback_providers():
            log.warning("%s failed (%s); falling back to %s", self.name, last, fb.name)
            try:
                async for event in fb._stream_direct(req):
                    started = True
                    yield event
                return
            except LLMError as exc:
                if started or not _fallbackable(exc):
                    raise
                last = exc
        raise last

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

    async def generate(self, prompt: str, **kwargs: Any) -> str:
        """Seed-000 style: one user prompt in, text out."""
        response = await self.call([{"role": "user", "content": prompt}], **kwargs)
        return response.content

    async def generate_json(self, prompt: str, schema: type[T], **kwargs: Any) -> T:
        """Seed-000 style: one user prompt in, a validated ``schema`` instance out."""
        return await self.call_json([{"role": "user", "content": prompt}], schema, **kwargs)

    def count_tokens(self, text: str) -> int:
        """Estimated tokens in ``text`` (~4 characters each; no tokenizer download)."""
        return estimate_tokens(text)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int = 0) -> float:
        """USD for that many tokens at this provider's prices."""
        from .types import Usage

        return cost_of(
            Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            self._pricing,
        )

    async def _close_with_loop(self) -> None:
        """Closes this loop's pool and local server when the loop ends; the provider
        stays usable (a later loop gets a fresh pool)."""
        try:
            await asyncio.Event().wait()
        finally:
            self._closer = None
            self._transport = None
            self._url = None
            self._client_loop = None
            await self._release()
            self._base_url = self.config.base_url.rstrip("/")

    async def _release(self) -> None:
        """Closes the owned pool and stops the owned local server, if any."""
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()
        if self._server is not None and self._owns_server:
            from .local_server import release

            server, self._server = self._server, None
            await release(server)

    async def aclose(self) -> None:
        """Close the connection pool (and stop a served local model). Idempotent.

        ``async with LLMProvider(...)`` closes it too; a provider used outside a runtime
        and never closed is closed when its event loop ends (``asyncio.run``)."""
        if self._closed:
            return
        self._closed = True
        closer, self._closer = self._closer, None
        if closer is not None and closer is not asyncio.current_task():
            closer.cancel()
        await self._release()
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

    def _request(
        self,
        messages: Sequence[MessageLike],
        tools: Iterable[Any] | None,
        tool_choice: Any,
        response_format: Any,
        model: str | None,
        temperature: float | None,
        max_tokens: int | None,
        timeout: float | None,
        max_retries: int | None,
        extra_headers: dict[str, str] | None,
        extra_body: dict[str, Any] | None,
        overrides: dict[str, Any],
    ) -> CallRequest:
        if isinstance(messages, (str, bytes)):  # type: ignore[unreachable]
            raise TypeError("messages must be a list of messages, not a string")
        body = dict(extra_body or {})
        body.update(overrides)
        return CallRequest(
            messages=list(messages),
            tools=list(tools) if tools is not None else None,
            tool_choice=tool_choice,
            response_format=response_format,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            extra_headers=dict(extra_headers or {}),
            extra_body=body,
        )

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
                out.append(LLMProvider(self.ctx, config, project=self._project))
            self._fallbacks = out
        return self._fallbacks

    def _body(self, req: CallRequest, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        return build_body(
            self.config, self.quirks, req, stream=stream, stream_usage=self._stream_usage
        )

    async def _ensure_ready(self) -> _http.Endpoint:
        if self._closed:
            raise LLMError(f"{self.name}: provider is closed")
        if self.config.serve and self._server is None:
            if self._server_lock is None:
                self._server_lock = asyncio.Lock()
            async with self._server_lock:
                if self._server is None:
                    from .local_server import acquire

                    self._server = await acquire(
                        self.config.serve,
                        chat_format=self.config.serve_chat_format,
                        n_ctx=self.config.serve_ctx,
                        extra_args=self.config.serve_args,
                    )
                    self._owns_server = True
                    self._base_url = self._server.base_url
        if self._client is not None and self._owns_client:
            loop = asyncio.get_running_loop()
            if self._client_loop is not loop:
                # A pooled connection belongs to the loop that opened it; a provider used
                # from a new loop (a second asyncio.run) gets a fresh pool. The old one's
                # loop is gone, so it cannot be closed gracefully.
                if self._client_loop is not None:
                    log.debug("%s: new event loop, new connection pool", self.name)
                    self._client = None
                    self._transport = None
                    self._url = None
        if self._client is None:
            self._client, self._transport = _http.make_client(
                kind=self.config.transport,
                timeout=self.config.timeout,
                connect_timeout=self.config.connect_timeout,
                headers={},
            )
            self._owns_client = True
            self._client_loop = asyncio.get_running_loop()
            if not self._runtime_closes:
                # Nobody else will close this pool: close it when the loop ends (asyncio.run
                # cancels leftover tasks, and this one closes the pool as it ends), so no
                # "Unclosed client session" warning is printed at exit.
                self._closer = self._client_loop.create_task(
                    self._close_with_loop(), name=f"loom.llm:{self.name}:close-at-exit"
                )
        if self._url is None or self._endpoint is None:
            self._prepare_requests()
        assert self._endpoint is not None
        return self._endpoint

    def _prepare_requests(self) -> None:
        """Headers, URL and timeouts computed once, not per request."""
        headers = {
            "User-Agent": "loom-llm",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json",
        }
        headers.update(self.quirks.headers)
        headers.update(self.config.headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        assert self._client is not None
        self._endpoint = _http.Endpoint(
            provider=self.name,
            url=httpx.URL(self._base_url + "/chat/completions"),
            headers=headers,
            timeout=self.config.timeout,
            connect_timeout=self.config.connect_timeout,
            client=self._client,
            transport=self._transport,
            max_response_bytes=self.config.max_response_bytes,
            secrets=self._secrets,
            bad_request_500=self.quirks.name == "llamacpp",
        )
        self._url = self._endpoint.url

    def _check_budget(self) -> None:
        tracker.check_budget(self.name, self.config.budget_usd)

    def _account(self, response: LLMResponse, started: float) -> None:
        response.latency_ms = (time.perf_counter() - started) * 1000.0
        if not response.cached:
            response.cost_usd = cost_of(response.usage, self._pricing)
            tracker.record(
                self.name, getattr(self.ctx, "agent_id", None), response.usage, response.cost_usd
            )
        if not response.provider:
            response.provider = self.name

    def _system(self) -> str:
        """``gen_ai.provider.name``: the kind of server, else the configured name."""
        return self.quirks.name if self.quirks.name != "generic" else self.name

    def _end_ok(self, span: Any, response: LLMResponse) -> None:
        """Ends the call's span and records the GenAI client metrics."""
        from loom.telemetry.metrics import record_llm_call

        u = response.usage
        record_llm_call(
            provider=self._system(),
            request_model=self.model,
            duration_s=response.latency_ms / 1000.0,
            response_model=response.model or None,
            input_tokens=u.prompt_tokens,
            output_tokens=u.completion_tokens,
            server_address=self._host or None,
            server_port=self._port,
        )
        _otel.end_ok(span, response, response.latency_ms)

    def _end_error(self, span: Any, exc: BaseException, started: float) -> None:
        from loom.telemetry.metrics import record_llm_call

        latency_ms = (time.perf_counter() - started) * 1000.0
        status = getattr(exc, "status_code", None)
        record_llm_call(
            provider=self._system(),
            request_model=self.model,
            duration_s=latency_ms / 1000.0,
            error_type=str(status) if status else type(exc).__name__,
            server_address=self._host or None,
            server_port=self._port,
        )
        _otel.end_error(span, exc, latency_ms)

    def _span(self, body: dict[str, Any], stream: bool) -> Any:
        if not self._host:
            parts = urlsplit(self._base_url)
            self._host, self._port = parts.hostname or "", parts.port
        return _otel.start_chat_span(
            provider=self.name,
            system=self._system(),
            body=body,
            host=self._host,
            port=self._port,
            stream=stream,
        )

    def _retryable(self, err: LLMError) -> bool:
        return retryable(err)

    async def _backoff(self, err: LLMError, retries_taken: int, span: Any) -> None:
        delay = retry_delay(retries_taken, err.headers if isinstance(err, LLMStatusError) else None)
        reason = str(err.status_code) if isinstance(err, LLMStatusError) else type(err).__name__
        log.debug(
            "%s: retrying in %.2fs (retry %d) after %s",
            self.name,
            delay,
            retries_taken + 1,
            redact(str(err), self._secrets),
        )
        _otel.retry_event(span, attempt=retries_taken + 1, delay=delay, reason=reason)
        await asyncio.sleep(delay)

    def _no_retry(self, err: LLMError, retries_taken: int) -> None:
        if not retryable(err):
            log.debug("%s: not retrying %s", self.name, type(err).__name__)
        else:
            log.debug(
                "%s: giving up after %d retries: %s",
                self.name,
                retries_taken,
                redact(str(err), self._secrets),
            )

    def _estimate(self, body: dict[str, Any]) -> int:
        return estimate_prompt_tokens(body)

    async def _call_direct(self, req: CallRequest) -> LLMResponse:
        self._check_budget()
        endpoint = await self._ensure_ready()
        body, name_map = self._body(req, stream=False)
        key = None
        if self._cache is not None:
            key = cache_key(self._base_url, body)
            hit = self._cache.get(key)
            if hit is not None:
                log.debug("%s: cache hit", self.name)
                return hit
        started = time.perf_counter()
        span = self._span(body, stream=False)
        max_retries = req.max_retries if req.max_retries is not None else self.config.max_retries
        try:
            retries = 0
            while True:
                try:
                    if self._limiter is not None:
                        est = self._estimate(body) + int(body.get("max_tokens") or 0)
                        async with self._limiter.slot(est) as slot:
                            data = await _http.fetch_json(
                                endpoint, to_json(body), req.extra_headers, req.timeout
                            )
                            slot.settle(int((data.get("usage") or {}).get("total_tokens") or est))
                    else:
                        data = await _http.fetch_json(
                            endpoint, to_json(body), req.extra_headers, req.timeout
                        )
                    break
                except LLMError as err:
                    if retries >= max_retries or not self._retryable(err):
                        self._no_retry(err, retries)
                        raise
                    await self._backoff(err, retries, span)
                    retries += 1
            response = parse_completion(data, self.name, name_map)
            self._account(response, started)
        except BaseException as exc:
            self._end_error(span, exc, started)
            raise
        self._end_ok(span, response)
        if self._cache is not None and key is not None:
            self._cache.put(key, response)
        return response

    async def _stream_direct(self, req: CallRequest) -> AsyncIterator[StreamEvent]:
        self._check_budget()
        endpoint = await self._ensure_ready()
        body, name_map = self._body(req, stream=True)
        if self._cache is not None:
            hit = self._cache.get(cache_key(self._base_url, body))
            if hit is not None:
                for event in response_events(hit):
                    yield event
                return
        started = time.perf_counter()
        span = self._span(body, stream=True)
        max_retries = req.max_retries if req.max_retries is not None else self.config.max_retries
        retries = 0
        yielded = False
        done: list[LLMResponse] = []
        try:
            while True:
                try:
                    if self._limiter is not None:
                        est = self._estimate(body) + int(body.get("max_tokens") or 0)
                        async with self._limiter.slot(est) as slot:
                            async for event in self._stream_once(
                                endpoint, body, req, name_map, span, started, done
                            ):
                                yielded = True
                                yield event
                                if isinstance(event, UsageEvent):
                                    slot.settle(event.usage.total_tokens)
                    else:
                        async for event in self._stream_once(
                            endpoint, body, req, name_map, span, started, done
                        ):
                            yielded = True
                            yield event
                    break
                except LLMError as err:
                    if yielded or retries >= max_retries or not self._retryable(err):
                        if yielded:
                            log.debug("%s: not retrying a stream after its first chunk", self.name)
                        else:
                            self._no_retry(err, retries)
                        raise
                    await self._backoff(err, retries, span)
                    retries += 1
        except BaseException as exc:
            if done:  # the consumer stopped after the answer was complete
                self._end_ok(span, done[0])
            else:
                self._end_error(span, exc, started)
            raise
        if done:
            self._end_ok(span, done[0])
        else:  # the consumer stopped early: the stream ended without an answer
            self._end_error(span, GeneratorExit(), started)

    async def _stream_once(
        self,
        endpoint: _http.Endpoint,
        body: dict[str, Any],
        req: CallRequest,
        name_map: dict[str, str],
        span: Any,
        started: float,
        done: list[LLMResponse],
    ) -> AsyncIterator[StreamEvent]:
        response = await _http.open_attempt(endpoint, to_json(body), req.extra_headers, req.timeout)
        url = str(response.url)
        try:
            ctype = response.headers.get("content-type", "")
            if "event-stream" not in ctype:
                if "json" not in ctype:
                    raise LLMResponseError(
                        f"{self.name}: expected text/event-stream, got {ctype or 'no'} "
                        "content type",
                        provider=self.name,
                    )
                # The server ignored stream=true and sent one JSON body: replay it.
                raw = await _http.read_body(response, self.config.max_response_bytes, self.name)
                try:
                    data = from_json(raw)
                except ValueError as exc:
                    raise LLMResponseError(
                        f"{self.name}: invalid JSON body: {exc}", provider=self.name
                    ) from None
                resp = parse_completion(data, self.name, name_map)
                self._account(resp, started)
                done.append(resp)
                for event in response_events(resp):
                    yield event
                return

            def first() -> None:
                _otel.first_chunk(span, time.perf_counter() - started)

            decoder = SSEDecoder()
            acc = StreamAccumulator(self.name, name_map, on_first_chunk=first)
            limit = self.config.max_response_bytes
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise LLMResponseError(
                            f"{self.name}: stream exceeds the limit of {limit} bytes",
                            provider=self.name,
                        )
                    for payload in decoder.feed(chunk):
                        for event in acc.feed_payload(payload):
                            yield event
                    if acc.done:
                        break
            except _http.TRANSPORT_ERRORS as exc:
                raise _http.map_transport_error(exc, self.name, url) from None
            for payload in decoder.close():
                for event in acc.feed_payload(payload):
                    yield event
            final = acc.finish(estimate_prompt_tokens=self._estimate(body))
            resp = final[-1].response  # type: ignore[union-attr]
            self._account(resp, started)
            done.append(resp)
            for event in final:
                yield event
        finally:
            await response.aclose()


__all__ = ["LLMProvider", "wire_tool_name"]
