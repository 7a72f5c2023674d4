"""An optional response cache, keyed by the full request (URL, model, messages, tools,
every parameter). Off by default: turn it on per provider with ``cache = "memory"`` or
``cache = "disk"`` (memory plus ``.loom/cache/llm``) and ``cache_ttl`` seconds.

Only non-streamed calls are cached; a streamed call can be *served* from the cache (its
events are replayed) but a stream is never stored, since a stream that is cut short has
no complete answer to store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .types import LLMResponse

log = logging.getLogger("loom.llm")


def cache_key(url: str, body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the request (``stream`` flags excluded)."""
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    canon = json.dumps([url, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


class ResponseCache:
    """Memory cache with an optional directory behind it."""

    def __init__(self, ttl: float, directory: Path | None = None, max_entries: int = 1024):
        self.ttl = ttl
        self.directory = directory
        self.max_entries = max_entries
        self._mem: dict[str, tuple[float, LLMResponse]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> LLMResponse | None:
        """The cached response, or None if absent or expired."""
        now = time.time()
        hit = self._mem.get(key)
        if hit is not None:
            if now - hit[0] <= self.ttl:
                self.hits += 1
                return hit[1].model_copy(update={"cached": True})
            del self._mem[key]
        if self.directory is not None:
            path = self.directory / f"{key}.json"
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                stamp = float(data["stored_at"])
                if now - stamp <= self.ttl:
                    resp = LLMResponse.model_validate(data["response"])
                    self._remember(key, stamp, resp)
                    self.hits += 1
                    return resp.model_copy(update={"cached": True})
                path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError) as exc:
                log.debug("ignoring unreadable cache entry %s: %s", path, exc)
        self.misses += 1
        return None

    def put(self, key: str, response: LLMResponse) -> None:
        """Store a response."""
        now = time.time()
        self._remember(key, now, response)
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                payload = json.dumps(
                    {"stored_at": now, "response": response.model_dump(mode="json")}
                )
                # Write then rename, so a reader never sees half a file.
                fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(payload)
                os.replace(tmp, self.directory / f"{key}.json")
            except OSError as exc:
                log.warning("could not write LLM cache entry: %s", exc)

    def _remember(self, key: str, stamp: float, response: LLMResponse) -> None:
        if len(self._mem) >= self.max_entries:
            self._mem.pop(next(iter(self._mem)))
        self._mem[key] = (stamp, response)

    def clear(self) -> None:
        """Drop every entry (memory and disk)."""
        self._mem.clear()
        if self.directory is not None and self.directory.is_dir():
            for p in self.directory.glob("*.json"):
                p.unlink(missing_ok=True)


__all__ = ["ResponseCache", "cache_key"]
