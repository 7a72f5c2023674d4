"""Routing with a confidence threshold and a reject path.

An LLM classifies the request into one of the routes (or ``"other"``) with a
confidence; a confident decision goes to that route's handler, anything else to the
reject path::

    router = Router(
        llm,
        [
            Route("new_event", "Create a new calendar event", handle_new),
            Route("modify_event", "Change or cancel an existing event", handle_modify),
        ],
        threshold=0.7,
        reject=lambda request, rejection: f"Sorry: {rejection.reason}",
    )
    result = await router.run("Move my meeting with Bob to Friday")

A handler is ``handler(request, decision)`` (sync or async), or, with a context
(:class:`BusRouter`), a topic: the request goes to the agent listening there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, Field, create_model

from loom._aio import resolve
from loom.llm.errors import StructuredOutputError
from loom.patterns._common import (
    DEFAULT_BUS_TIMEOUT,
    ChatModel,
    content_attr,
    messages,
    reply_payload,
    span,
    to_jsonable,
    to_text,
    workflow_span,
)
from loom.patterns.errors import PatternConfigError

if TYPE_CHECKING:
    from loom.context import AgentContext

#: The route name the classifier uses when nothing fits (unless you define it).
OTHER = "other"

#: Why a request was rejected.
RejectKind = Literal["low_confidence", "no_route", "invalid_output"]


class RouteDecision(BaseModel):
    """The classifier's answer."""

    route: str = Field(description="The chosen route's name.")
    confidence: float = Field(ge=0.0, le=1.0, description="How sure, from 0 to 1.")
    reasoning: str = Field(default="", description="One sentence on why.")


class Rejection(BaseModel):
    """Why a request went to the reject path."""

    kind: RejectKind
    reason: str
    decision: RouteDecision | None = None
    """The classifier's decision (``None`` when it gave no valid one)."""


RouteHandler = Callable[[Any, RouteDecision], Awaitable[Any] | Any]
RejectHandler = Callable[[Any, Rejection], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Route:
    """A destination: its name and description (both shown to the classifier) and its
    handler, ``handler(request, decision)`` or a topic (with a context)."""

    name: str
    description: str
    handler: RouteHandler | str


class RouterResult(BaseModel):
    """The outcome of :meth:`Router.run`.

    ``ok`` is true when a route handled the request; ``output`` is what its handler
    returned. Otherwise ``rejection`` says why, and ``output`` is what the reject
    handler returned (``None`` without one).
    """

    ok: bool
    route: str | None = None
    decision: RouteDecision | None = None
    output: Any = None
    rejection: Rejection | None = None

    @property
    def reason(self) -> str | None:
        """The rejection reason (``None`` when routed)."""
        return self.rejection.reason if self.rejection else None


_INSTRUCTIONS = """You are a request router. Choose the one route that fits the request.

Routes:
{routes}

Answer with the route's name, your confidence from 0 to 1, and one sentence of
reasoning. If no route fits, choose "{other}" with a low confidence."""


class Router:
    """Classifies a request with an LLM and dispatches it.

    Args:
        llm: The classifier model.
        routes: The routes (unique names).
        threshold: A decision below this confidence is rejected.
        reject: ``reject(request, rejection)`` for rejected requests (or a topic, with
            ``ctx``). Without one a rejection is just a result with ``ok=False``.
        instructions: Replaces the classifier's system prompt (``{routes}`` and
            ``{other}`` are filled in).
        ctx: Needed when handlers are topics: requests are sent from it.
        timeout: Seconds to wait for a topic handler's reply.
        max_attempts: Answers the classifier may try before it counts as invalid.
        name: Names the run's span.

    Raises:
        PatternConfigError: no routes, duplicate names, a bad threshold, or a topic
            handler without ``ctx``.
    """

    def __init__(
        self,
        llm: ChatModel,
        routes: Sequence[Route],
        *,
        threshold: float = 0.7,
        reject: RejectHandler | str | None = None,
        instructions: str | None = None,
        ctx: AgentContext | None = None,
        timeout: float = DEFAULT_BUS_TIMEOUT,
        max_attempts: int | None = None,
        name: str = "router",
    ) -> None:
        self.routes = {r.name: r for r in routes}
        if not self.routes:
            raise PatternConfigError("a router needs at least one route")
        if len(self.routes) != len(routes):
            raise PatternConfigError("two routes have the same name")
        if not 0.0 <= threshold <= 1.0:
            raise PatternConfigError(f"threshold must be within 0..1, got {threshold}")
        needs_ctx = [r.name for r in routes if isinstance(r.handler, str)]
        if isinstance(reject, str):
            needs_ctx.append("reject")
        if needs_ctx and ctx is None:
            raise PatternConfigError(
                f"topic handlers ({', '.join(needs_ctx)}) need a ctx to send requests from"
            )
        self.llm = llm
        self.threshold = threshold
        self.reject = reject
        self.ctx = ctx
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.name = name
        choices = list(self.routes)
        if OTHER not in self.routes:
            choices.append(OTHER)
        #: The classifier's schema: ``RouteDecision`` with ``route`` limited to the names.
        self.decision_model = cast(
            "type[RouteDecision]",
            create_model(
                "RouteDecision",
                __base__=RouteDecision,
                route=(
                    cast(Any, Literal)[tuple(choices)],
                    Field(description="The chosen route's name."),
                ),
            ),
        )
        listing = "\n".join(f"- {r.name}: {r.description}" for r in routes)
        self.instructions = (instructions or _INSTRUCTIONS).format(routes=listing, other=OTHER)

    async def classify(self, request: Any) -> RouteDecision:
        """Asks the LLM for a decision (no threshold applied).

        Raises:
            StructuredOutputError: no valid decision after ``max_attempts`` answers.
        """
        convo = messages(self.instructions, to_text(request))
        narrow = await self.llm.call_json(
            convo, self.decision_model, max_attempts=self.max_attempts
        )
        # A plain RouteDecision: equal to one built by hand, and picklable.
        return RouteDecision.model_validate(narrow.model_dump())

    async def run(self, request: Any) -> RouterResult:
        """Classifies ``request`` and runs the chosen route's handler, or the reject path.

        A decision below ``threshold``, the ``"other"`` route, or a classifier that gives
        no valid answer (the documented fallback for invalid JSON) all go to the reject
        path; none of them raise.

        Raises:
            Whatever a handler raises; ``RequestTimeout`` or :class:`RemoteError` from a
            topic handler; LLM transport errors from the classifier.
        """
        with workflow_span("router", self.name) as wf:
            content_attr(wf, "loom.pattern.input", request)
            rejection: Rejection | None = None
            decision: RouteDecision | None = None
            with span("router classify", "router") as s:
                try:
                    decision = await self.classify(request)
                except StructuredOutputError as exc:
                    rejection = Rejection(
                        kind="invalid_output", reason=f"no valid classification: {exc}"[:2000]
                    )
                    s.set_attribute("loom.pattern.outcome", "invalid_output")
                else:
                    s.set_attribute("loom.pattern.route", decision.route)
                    s.set_attribute("loom.pattern.confidence", decision.confidence)
                    rejection = self._check(decision)
            if rejection is not None:
                wf.set_attribute("loom.pattern.outcome", "rejected")
                wf.set_attribute("loom.pattern.reject_kind", rejection.kind)
                output = await self._on_reject(request, rejection)
                return RouterResult(ok=False, decision=decision, rejection=rejection, output=output)
            assert decision is not None
            route = self.routes[decision.route]
            wf.set_attribute("loom.pattern.route", route.name)
            wf.set_attribute("loom.pattern.confidence", decision.confidence)
            with span(f"route {route.name}", "router", route=route.name):
                output = await self._dispatch(route.handler, request, decision, "route")
            wf.set_attribute("loom.pattern.outcome", "routed")
            content_attr(wf, "loom.pattern.output", output)
            return RouterResult(ok=True, route=route.name, decision=decision, output=output)

    def _check(self, decision: RouteDecision) -> Rejection | None:
        if decision.route not in self.routes:
            why = f": {decision.reasoning}" if decision.reasoning else ""
            return Rejection(kind="no_route", reason=f"no route fits{why}", decision=decision)
        if decision.confidence < self.threshold:
            return Rejection(
                kind="low_confidence",
                reason=(
                    f"confidence {decision.confidence:.2f} for {decision.route!r} is below "
                    f"the threshold {self.threshold:.2f}"
                ),
                decision=decision,
            )
        return None

    async def _on_reject(self, request: Any, rejection: Rejection) -> Any:
        if self.reject is None:
            return None
        with span("route reject", "router", reject_kind=rejection.kind):
            return await self._dispatch(self.reject, request, rejection, "reject")

    async def _dispatch(
        self,
        handler: Callable[[Any, Any], Awaitable[Any] | Any] | str,
        request: Any,
        info: RouteDecision | Rejection,
        type: str,
    ) -> Any:
        if not isinstance(handler, str):
            return await resolve(handler(request, info))
        assert self.ctx is not None  # checked in __init__
        payload = {"input": to_jsonable(request), **info.model_dump(mode="json")}
        reply = await self.ctx.request(handler, type, payload, timeout=self.timeout)
        return reply_payload(reply, handler)


class BusRouter(Router):
    """A :class:`Router` whose routes are agents: each route's handler is a topic, the
    request (type ``route``, payload ``{"input", "route", "confidence", "reasoning"}``)
    goes there with ``ctx.request``, and the reply's payload is the output. A topic
    reject path gets type ``reject`` and ``{"input", "kind", "reason", "decision"}``.

    Args:
        ctx: The context requests are sent from.
        llm: The classifier model.
        routes: The routes; handlers are topics (callables work too).
        **options: As for :class:`Router` (``threshold``, ``reject``, ``timeout``...).
    """

    def __init__(
        self, ctx: AgentContext, llm: ChatModel, routes: Sequence[Route], **options: Any
    ) -> None:
        super().__init__(llm, routes, ctx=ctx, **options)


__all__ = [
    "OTHER",
    "BusRouter",
    "RejectHandler",
    "RejectKind",
    "Rejection",
    "Route",
    "RouteDecision",
    "RouteHandler",
    "Router",
    "RouterResult",
]
