"""The dashboard: agents, the bus, runs and traces of a project, live, in a browser.

``loom run --dashboard`` (or ``[dashboard] enabled = true``) serves it while the
project runs; ``loom dash`` shows the traces of past runs. See ``docs/dashboard.md``.

:class:`~loom.dashboard.server.Dashboard` is imported on first use, so that reading
``[dashboard]`` settings (:mod:`loom.dashboard.settings`) needs no web server.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Dashboard"]


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        from loom.dashboard.server import Dashboard

        return Dashboard
    raise AttributeError(f"module 'loom.dashboard' has no attribute {name!r}")
