"""Choosing a provider: ``"auto"`` means a paid API when its key is set, else the local
model that Loom serves itself."""

from __future__ import annotations

import os
from typing import Any

from loom.llm.provider import LLMProvider

#: (provider, environment variable) in order of preference for ``"auto"``.
AUTO_ORDER = (("openai", "OPENAI_API_KEY"), ("deepseek", "DEEPSEEK_API_KEY"))


def auto_provider_name(ctx: Any = None) -> str:
    """The provider ``"auto"`` resolves to: ``runtime.llm_provider`` (``loom run
    --provider``) if set, else the first of OpenAI/DeepSeek whose API key is in the
    environment, else ``"local"`` (SmolLM2 served by Loom, no key needed)."""
    forced = getattr(getattr(ctx, "runtime", None), "llm_provider", None)
    if forced:
        return str(forced)
    for name, var in AUTO_ORDER:
        if os.environ.get(var):
            return name
    return "local"


def provider_for(ctx: Any, name: str = "auto") -> LLMProvider:
    """``LLMProvider.from_name`` that understands ``"auto"``."""
    return LLMProvider.from_name(ctx, auto_provider_name(ctx) if name == "auto" else name)
