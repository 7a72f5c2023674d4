"""Memory that reaches the prompt: history across runs, a token budget, compaction of
old turns into a summary, and large tool outputs offloaded to ``.loom/cache``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("loom.cognitive")


class _Counter(Protocol):
    def count_tokens(self, text: str) -> int: ...


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else json.dumps(content)


class Memory:
    """Conversation memory of one cognitive agent.

    ``history`` holds the turns of earlier runs (the goal, what the tools returned, the
    answer); when it exceeds ``max_tokens`` the oldest half is folded into ``summary``
    (by the LLM if ``summarize`` is given, else extractively). Both go into the next
    prompt, so what the agent learnt stays available.
    """

    def __init__(
        self,
        counter: _Counter,
        *,
        max_tokens: int = 3000,
        cache_dir: Path | None = None,
        offload_chars: int = 4000,
        preview_chars: int = 800,
    ) -> None:
        self._counter = counter
        self.max_tokens = max_tokens
        self.cache_dir = cache_dir or Path(".loom") / "cache"
        self.offload_chars = offload_chars
        self.preview_chars = preview_chars
        self.history: list[dict[str, Any]] = []
        self.summary = ""

    def messages(self) -> list[dict[str, Any]]:
        """What goes into the prompt before the new goal."""
        out: list[dict[str, Any]] = []
        if self.summary:
            out.append(
                {
                    "role": "system",
                    "content": f"Summary of the earlier conversation:\n{self.summary}",
                }
            )
        return out + list(self.history)

    def tokens(self) -> int:
        return sum(self._counter.count_tokens(_text(m)) for m in self.messages())

    def clear(self) -> None:
        self.history.clear()
        self.summary = ""

    def offload(self, text: str) -> str:
        """``text`` itself, or a preview plus where the full text was saved."""
        if len(text) <= self.offload_chars:
            return text
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = self.cache_dir / f"tool-output-{digest}.txt"
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            where = f"full output ({len(text)} characters) saved to {path}"
        except OSError as exc:
            where = f"output truncated from {len(text)} characters (could not save: {exc})"
        return f"{text[: self.preview_chars]}\n[... {where}]"

    async def remember(self, turns: list[dict[str, Any]], summarize: Any = None) -> None:
        """Adds a finished run's turns, compacting when over budget.

        ``summarize``: an async ``(text) -> str`` (an LLM call) or None.
        """
        self.history.extend(turns)
        while self.tokens() > self.max_tokens and len(self.history) > 2:
            cut = max(1, len(self.history) // 2)
            old, self.history = self.history[:cut], self.history[cut:]
            transcript = "\n".join(f"{m['role']}: {_text(m)}" for m in old)
            if self.summary:
                transcript = f"Earlier summary: {self.summary}\n{transcript}"
            self.summary = await self._summarize(transcript, summarize)
            log.debug("memory: compacted %d turns into a summary", len(old))
        if self.tokens() > self.max_tokens and self.summary:
            # Still over (one huge turn): the summary itself is cut to fit.
            budget_chars = max(200, self.max_tokens * 2)
            self.summary = self.summary[-budget_chars:]

    async def _summarize(self, transcript: str, summarize: Any) -> str:
        if summarize is not None:
            try:
                text = str(await summarize(transcript)).strip()
                if text:
                    return text
            except Exception as exc:  # a failed summary must not lose the run
                log.warning("memory: LLM summary failed (%s); keeping an extract", exc)
        lines = [ln[:160] for ln in transcript.splitlines() if ln.strip()]
        return "\n".join(lines[-20:])
