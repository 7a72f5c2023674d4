"""``[durability]`` in loom.toml: where the journal lives and how runs are owned."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from loom.config import ProjectConfig


class DurabilitySettings(BaseModel):
    """``[durability]``: journal every run's effects so a crash costs nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``"sqlite"``: a file beside loom.toml (one machine); ``"nats"``: JetStream
    #: key-value buckets (needs ``[bus] nats``), so any process of the project resumes.
    store: Literal["sqlite", "nats"] = "sqlite"
    #: The SQLite file, relative to loom.toml.
    path: str = ".loom/journal.db"
    #: The JetStream key-value bucket of the nats store (default: ``loom_runs_<project>``).
    bucket: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: Seconds a process holds a run without renewing its lease; after that another
    #: process may take the run over (sooner on the same machine once the owner's
    #: process is gone).
    lease: float = Field(default=15.0, gt=0.5, le=3600)
    #: Days finished runs are kept (``loom runs``); 0 keeps them forever.
    retention_days: float = Field(default=7.0, ge=0)
    #: Seconds a run waits for an approval before the call is denied; 0 waits forever.
    approval_timeout: float = Field(default=0.0, ge=0)
    #: Seconds between checks for decisions made elsewhere (``loom approvals``).
    approval_poll: float = Field(default=0.5, gt=0, le=60)


def durability_settings(project: ProjectConfig) -> DurabilitySettings | None:
    """``project``'s ``[durability]`` table, validated; None when there is none.

    Raises:
        ConfigError: an unknown key or a bad value (file, line and key); ``store =
            "nats"`` without ``[bus] nats``.
    """
    if not project.durability and "durability" not in project.raw:
        return None
    settings = project.validated(DurabilitySettings, "durability", project.durability)
    if settings.store == "nats" and not project.bus.get("nats"):
        raise project.error(
            'store = "nats" needs [bus] nats (the NATS server whose JetStream holds the '
            'journal); use store = "sqlite" for one machine',
            "durability",
            "store",
        )
    return settings


def journal_path(project: ProjectConfig, settings: DurabilitySettings) -> Path:
    """The absolute SQLite journal file."""
    return (project.root / Path(settings.path).expanduser()).resolve()


def bucket_name(project: ProjectConfig, settings: DurabilitySettings) -> str:
    """The nats store's bucket."""
    if settings.bucket:
        return settings.bucket
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in project.project.name)
    return f"loom_runs_{safe}"[:64]


__all__ = ["DurabilitySettings", "bucket_name", "durability_settings", "journal_path"]
