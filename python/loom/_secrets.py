"""Keeping secrets out of ``repr``, ``str``, logs and error messages.

Configuration holds secrets in three shapes: single values (API keys, tokens,
passwords), tables of them (HTTP ``headers``, a child's ``env``) and URLs that carry
them (``https://user:pw@host``, ``?api_key=...``). ``${VAR}`` expansion puts the real
values in; a ``repr`` in a traceback, a log line or a debugger then shows them.

The rule, applied by every config object that can hold one (``LLMConfig``, the MCP
server configs, ``TelemetrySettings``, ``ProjectConfig``, the LLM client's endpoint and
requests): its ``repr``/``str`` shows values through :func:`redacted` —

* a table under a name in :data:`TABLE_KEYS` keeps its keys, every value is ``***``;
* a string under a secret-looking name (``api_key``, ``token``, ``password``,
  ``authorization``, ... — :func:`is_secret_key`) is ``***``; pydantic ``SecretStr``
  values stay masked as pydantic masks them;
* any URL loses its userinfo and its query values (:func:`redact_url`);

and error messages and log lines that name a URL name it through :func:`redact_url`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

MASK = "***"

#: Tables whose every value may be a secret.
TABLE_KEYS = frozenset({"headers", "extra_headers", "env", "environment"})

_SECRET_NAME = re.compile(
    r"(key|token|secret|passw|auth|cookie|credential|session|signature|bearer)", re.I
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# Nesting walked before giving up (configs are shallow; this only bounds the walk).
_MAX_DEPTH = 16


def is_secret_key(name: str) -> bool:
    """Whether a value stored under ``name`` should be treated as a secret. Names ending
    in ``_env`` hold the *name* of a variable, not its value."""
    return not name.lower().endswith("_env") and bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """``url`` without its userinfo and with every query value replaced by ``***``
    (names kept, so the URL stays recognisable). A comma-separated list of servers
    (``nats://u:p@h1:4222,nats://u:p@h2:4222``) is redacted server by server."""
    if "," in url and "?" not in url and "#" not in url:
        return ",".join(_redact_one(piece) for piece in url.split(","))
    return _redact_one(url)


def _redact_one(url: str) -> str:
    if not _URL.match(url.lstrip()):
        # ``user:pw@host:4222`` without a scheme (a NATS client accepts it)
        return f"{MASK}@{url.rsplit('@', 1)[1]}" if "@" in url else url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if query:
            query = "&".join(
                f"{p.split('=', 1)[0]}={MASK}" if "=" in p else p for p in query.split("&")
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<a URL that cannot be parsed>"


class _Shown:
    """A model's fields, redacted, shown as ``Name(field=value, ...)``."""

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self.name, self.fields = name, fields

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.fields.items())})"


def redacted(value: Any, key: str = "", _depth: int = 0) -> Any:
    """``value`` (stored under ``key``) as it may be shown; see the module docstring."""
    if _depth > _MAX_DEPTH:
        return "…"
    if isinstance(value, BaseModel):
        # Free-form tables ([project], agent tables) keep their extra keys in the model.
        return _Shown(type(value).__name__, {k: redacted(v, k, _depth + 1) for k, v in value})
    if isinstance(value, Mapping):
        if key.lower() in TABLE_KEYS:
            return {k: MASK for k in value}
        return {k: redacted(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [redacted(v, key, _depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, str):
        if key and is_secret_key(key):
            return MASK
        if _URL.match(value):
            return redact_url(value)
        return value
    if value is not None and key.lower().endswith(("url", "endpoint")):
        return redact_url(str(value))  # e.g. an httpx.URL
    return value


def safe_repr(obj: Any) -> str:
    """A dataclass's ``repr`` with every field passed through :func:`redacted`."""
    shown = ", ".join(
        f"{f.name}={redacted(getattr(obj, f.name), f.name)!r}"
        for f in dataclasses.fields(obj)
        if f.repr
    )
    return f"{type(obj).__name__}({shown})"


__all__ = ["MASK", "TABLE_KEYS", "is_secret_key", "redact_url", "redacted", "safe_repr"]
