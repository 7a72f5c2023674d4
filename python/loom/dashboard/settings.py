"""``[dashboard]`` in loom.toml: whether ``loom run`` serves the dashboard, and where.

The original Loom's keys (``enabled``, ``host``, ``port``) mean what they meant; the
dashboard itself is new: loopback only unless told otherwise, a token per run, read-only
unless ``allow_send``.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from loom.config import ProjectConfig


class DashboardSettings(BaseModel):
    """``[dashboard]``: a live view of the agents, the bus and the runs, in a browser."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Serve the dashboard during ``loom run`` (``loom run --dashboard`` does too).
    enabled: bool = False
    #: The address to bind. Loopback by default; anything else is reachable from the
    #: network (still behind the token) and is logged as a warning.
    host: str = "127.0.0.1"
    #: The port; 0 picks a free one (the URL printed says which).
    port: int = Field(default=0, ge=0, le=65535)
    #: Let the page send events onto the bus (a form on the Events tab). Off: the
    #: dashboard is read-only.
    allow_send: bool = False
    #: Most events per second the live stream shows each page; the rest are counted.
    stream_rate: int = Field(default=200, ge=1, le=5000)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("host must not be empty (127.0.0.1 serves this machine only)")
        if "/" in value or " " in value:
            raise ValueError(f"host must be an address or a name, not {value!r}")
        return value

    @property
    def loopback(self) -> bool:
        """Whether :attr:`host` is reachable from this machine only."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dashboard_settings(project: ProjectConfig | None) -> DashboardSettings:
    """``project``'s ``[dashboard]`` table, validated (defaults without one).

    Raises:
        ConfigError: an unknown key or a bad value (file, line and key).
    """
    if project is None:
        return DashboardSettings()
    return project.validated(DashboardSettings, "dashboard", project.dashboard)


__all__ = ["DashboardSettings", "dashboard_settings", "is_loopback"]
