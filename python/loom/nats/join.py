"""A project's runtime joining its NATS bus: the connection, then JetStream for the
``reliable`` subscriptions."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from loom.nats.connection import connect
from loom.nats.jetstream import JetStreamHost, enable_jetstream, storable
from loom.nats.settings import bus_settings

if TYPE_CHECKING:
    from loom.config import ProjectConfig
    from loom.nats.bridge import NatsBridge

log = logging.getLogger("loom.nats")


def reliable_topics(project: ProjectConfig) -> list[str]:
    """The topics the project's agents subscribe to with ``qos = "reliable"`` (the
    default), and the ``[job]`` topic: stored from the start, so a publisher in any
    process of the project waits for their storage."""
    topics = [
        t
        for spec in project.agents.values()
        if spec.enabled and spec.qos == "reliable"
        for t in spec.topics
    ]
    if project.job is not None:
        topics.append(project.job.topic)
    return [t for t in dict.fromkeys(topics) if storable(t)]


async def join_project_bus(host: JetStreamHost, project: ProjectConfig) -> NatsBridge:
    """Connects ``host`` to ``[bus] nats`` and, unless ``[bus.jetstream] enabled =
    false``, sets ``host.jetstream``.

    Raises:
        ConfigError: a bad ``[bus]`` table.
        BusError: the server cannot be reached, or JetStream cannot be used.

    Returns:
        The bridge (its ``nc`` is the connection).
    """
    settings = bus_settings(project)
    bridge = await connect(host, settings.nats, settings=settings, name=project.project.name)
    if settings.jetstream.enabled:
        await enable_jetstream(host, bridge, settings.jetstream, reliable_topics(project))
    return bridge
