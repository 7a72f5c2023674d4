"""Durable runs (``[durability]``): every run's effects journaled, so a crash costs
nothing — see docs/durability.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.telemetry.state import Telemetry

from .journal import RunJournal
from .records import UNFINISHED, Approval, RunRecord, StepRecord, message_json
from .runs import EFFECT_HEADER, JOB_AGENT, Durability, run_key
from .settings import DurabilitySettings, bucket_name, durability_settings, journal_path
from .sqlite_store import SqliteJournal
from .store import JournalStore, Listing

if TYPE_CHECKING:
    from loom.config import ProjectConfig


async def open_store(
    project: ProjectConfig, settings: DurabilitySettings, nats: Any = None
) -> JournalStore:
    """The journal ``settings`` describe. ``nats``: the connected NATS client (the nats
    store needs it).

    Raises:
        ConfigError: the nats store without a NATS connection.
        JournalError: the journal cannot be opened.
    """
    if settings.store == "nats":
        if nats is None:
            raise project.error(
                'store = "nats" needs the runtime connected to [bus] nats',
                "durability",
                "store",
            )
        from .nats_store import NatsJournal

        journal = NatsJournal(nats, bucket_name(project, settings))
        await journal.open()
        return journal
    sqlite = SqliteJournal(journal_path(project, settings))
    await sqlite.open()
    return sqlite


async def unfinished_job_trace(project: ProjectConfig, message: dict[str, Any]) -> str | None:
    """The traceparent of an unfinished run of this ``[job]`` in the SQLite journal
    (read before ``loom run`` opens its root span, so a resumed run stays one trace);
    None when there is none, or the journal is not SQLite."""
    settings = durability_settings(project)
    if settings is None or settings.store != "sqlite":
        return None
    path = journal_path(project, settings)
    if not path.exists():
        return None
    journal = SqliteJournal(path)
    try:
        listing = await journal.list_runs(statuses=UNFINISHED, agent=JOB_AGENT)
    finally:
        await journal.close()
    for run in listing.runs:
        if run.entry == "job" and run.event == message and run.traceparent:
            return run.traceparent
    return None


async def open_durability(
    project: ProjectConfig, telemetry: Telemetry, nats: Any = None
) -> Durability | None:
    """The runtime's :class:`Durability` for ``project`` (None without
    ``[durability]``)."""
    settings = durability_settings(project)
    if settings is None:
        return None
    store = await open_store(project, settings, nats)
    return Durability(store, settings, telemetry)


__all__ = [
    "EFFECT_HEADER",
    "JOB_AGENT",
    "Approval",
    "Durability",
    "DurabilitySettings",
    "JournalStore",
    "Listing",
    "RunJournal",
    "RunRecord",
    "SqliteJournal",
    "StepRecord",
    "durability_settings",
    "journal_path",
    "message_json",
    "open_durability",
    "open_store",
    "run_key",
    "unfinished_job_trace",
]
