"""What lower layers need of the runtime that hosts them, as small Protocols.

Tools, the NATS bridge and the LLM client are built for a runtime but never import it:
they take one of these, which :class:`loom.runtime.Runtime` satisfies (and a test can
satisfy with a few lines).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from loom.config import ProjectConfig

#: Run once when the runtime stops: a function, or one returning an awaitable.
ShutdownHook = Callable[[], Awaitable[None] | None]


class ShutdownHost(Protocol):
    """Something that closes what it was given when it stops."""

    def on_shutdown(self, hook: ShutdownHook) -> None: ...


class ProjectHost(ShutdownHost, Protocol):
    """A host with the project it runs (``None``: no loom.toml)."""

    @property
    def project(self) -> ProjectConfig | None: ...


__all__ = ["ProjectHost", "ShutdownHook", "ShutdownHost"]
