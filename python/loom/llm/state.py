"""What the LLM client keeps between calls, owned by the runtime: usage and cost totals
(which budgets are checked against), client-side rate limiters, and the local model
servers.

One :class:`LLMState` per runtime (``runtime.llm_state``, created on first use), so two
runtimes in one process — tests, a notebook, an application embedding Loom — have
independent budgets, limits, totals and servers. A provider finds it through its
context's runtime (:class:`LLMHost`, a protocol so that ``loom.llm`` never imports the
runtime); a provider with no runtime gets a private one, shared only with its
``with_options`` copies and its fallbacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from .cost import CostTracker
from .limits import Limiters
from .local_server import LocalServers


class LLMState:
    """Usage totals, limiters and local servers of one runtime."""

    def __init__(self) -> None:
        #: Usage and cost per provider and per agent; budgets are checked against it.
        self.usage = CostTracker()
        #: Client-side RPM/TPM/concurrency limits per provider.
        self.limiters = Limiters()
        #: Local model servers shared by the providers that serve the same model.
        self.local_servers = LocalServers()

    def __repr__(self) -> str:
        return (
            f"LLMState(providers={sorted(self.usage.by_provider)}, "
            f"local_servers={len(self.local_servers.running())})"
        )


@runtime_checkable
class LLMHost(Protocol):
    """What the LLM client needs from the runtime it runs in."""

    @property
    def project(self) -> Any:
        """The project config (``[llm.*]`` tables, fallbacks, the cache directory)."""
        ...

    @property
    def llm_provider(self) -> str | None:
        """The provider ``"auto"`` resolves to (``loom run --provider``), or None."""
        ...

    @property
    def llm_state(self) -> LLMState:
        """The runtime's LLM state."""
        ...

    def on_shutdown(self, hook: Callable[[], Awaitable[None] | None]) -> None:
        """Run ``hook`` when the runtime stops (providers close their pools)."""
        ...


def runtime_state(ctx: Any) -> LLMState | None:
    """The LLM state of the runtime behind an agent context (``ctx.runtime``), or None
    when there is no runtime (standalone use, a context double without one)."""
    state = getattr(getattr(ctx, "runtime", None), "llm_state", None)
    return state if isinstance(state, LLMState) else None


__all__ = ["LLMHost", "LLMState", "runtime_state"]
