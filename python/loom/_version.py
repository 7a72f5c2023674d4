"""Loom's version (Cargo's, exported by the extension) and the User-Agent it sends."""

from __future__ import annotations

from loom._core import __version__

#: ``User-Agent`` of every HTTP request Loom makes (LLM providers, ``http:fetch``, MCP).
USER_AGENT = f"loom/{__version__}"

__all__ = ["USER_AGENT", "__version__"]
