"""Token accounting, prices and budgets.

Prices are USD per 1M tokens (list prices when this table was written; override them
per provider with ``prices = { input = ..., output = ..., cached_input = ... }`` in
loom.toml). Models served locally cost nothing. Usage and cost accumulate per provider
and per agent in a :class:`CostTracker`, one per runtime (``runtime.llm_state.usage``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from .config import Pricing
from .errors import BudgetExceeded
from .types import Usage

#: USD per 1M tokens: (input, output, cached input). Matched by exact name, then by the
#: longest prefix (so dated snapshots like ``gpt-4o-mini-2024-07-18`` find their family).
PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "gpt-5-mini": (0.25, 2.00, 0.025),
    "gpt-5": (1.25, 10.00, 0.125),
    "o4-mini": (1.10, 4.40, 0.275),
    "o3-mini": (1.10, 4.40, 0.55),
    "o3": (2.00, 8.00, 0.50),
    "deepseek-chat": (0.28, 0.42, 0.028),
    "deepseek-reasoner": (0.28, 0.42, 0.028),
    "openai/gpt-4o-mini": (0.15, 0.60, 0.075),
    "openai/gpt-4o": (2.50, 10.00, 1.25),
    "deepseek/deepseek-chat": (0.28, 0.42, 0.028),
}


def price_for(model: str, override: Pricing | None = None) -> Pricing:
    """The price of ``model`` (an override wins; unknown models cost 0)."""
    if override is not None:
        return override
    entry = PRICES.get(model)
    if entry is None:
        best = ""
        for name in PRICES:
            if model.startswith(name) and len(name) > len(best):
                best = name
        entry = PRICES.get(best)
    if entry is None:
        return Pricing(input=0.0, output=0.0, cached_input=None)
    return Pricing(input=entry[0], output=entry[1], cached_input=entry[2])


def cost_of(usage: Usage, pricing: Pricing) -> float:
    """USD for one call's usage: uncached input + cached input + output."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = pricing.cached_input if pricing.cached_input is not None else pricing.input
    return (
        (usage.prompt_tokens - cached) * pricing.input
        + cached * cached_price
        + usage.completion_tokens * pricing.output
    ) / 1_000_000


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: ~4 characters per token for English and code.

    Good enough for rate limits and budgets; not for packing a context window exactly.
    """
    return max(1, math.ceil(len(text) / 4)) if text else 0


@dataclass
class Totals:
    """Accumulated usage and cost."""

    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0


class CostTracker:
    """Usage and cost of one runtime, per provider and per agent (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_provider: dict[str, Totals] = {}
        self.by_agent: dict[str, Totals] = {}

    def record(self, provider: str, agent_id: str | None, usage: Usage, cost: float) -> None:
        """Add one call."""
        with self._lock:
            keys: list[tuple[dict[str, Totals], str]] = [(self.by_provider, provider)]
            if agent_id:
                keys.append((self.by_agent, agent_id))
            for table, key in keys:
                t = table.get(key)
                if t is None:
                    t = table[key] = Totals()
                t.calls += 1
                t.usage = t.usage + usage
                t.cost_usd += cost

    def provider(self, name: str) -> Totals:
        """Totals of one provider (zeros if it made no call)."""
        with self._lock:
            return self.by_provider.get(name) or Totals()

    def agent(self, agent_id: str) -> Totals:
        """Totals of one agent (zeros if it made no call)."""
        with self._lock:
            return self.by_agent.get(agent_id) or Totals()

    def total_cost(self) -> float:
        """USD spent in all."""
        with self._lock:
            return sum(t.cost_usd for t in self.by_provider.values())

    def check_budget(self, provider: str, budget_usd: float | None) -> None:
        """Raise :class:`BudgetExceeded` if ``provider`` has spent its budget."""
        if budget_usd is None:
            return
        spent = self.provider(provider).cost_usd
        if spent >= budget_usd:
            raise BudgetExceeded(
                f"{provider}: budget of ${budget_usd:.4f} spent (${spent:.4f}); "
                "no request was sent",
                spent_usd=spent,
                budget_usd=budget_usd,
                provider=provider,
            )

    def reset(self) -> None:
        """Forget everything (a new run with the same runtime)."""
        with self._lock:
            self.by_provider.clear()
            self.by_agent.clear()


__all__ = ["PRICES", "CostTracker", "Totals", "cost_of", "estimate_tokens", "price_for"]
