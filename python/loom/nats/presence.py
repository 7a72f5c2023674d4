"""Which processes of a project are on its NATS bus, and what they run.

Every runtime joined to ``[bus] nats`` answers requests on
``_loom.presence.<project>`` with a short description of itself: its process (host,
pid, name) and its agents with their subscriptions (pattern, QoS, queue group). The
dashboard asks, collects the answers for a moment, and draws the project's processes.
Nothing is sent until someone asks: no heartbeat, no per-event work.

What a process tells: agent ids, subscription patterns and groups — the same names
anyone allowed to subscribe to the project's subjects could learn. Never
configuration, payloads or secrets. Restrict ``_loom.>`` with NATS permissions to hide
it (docs/nats-security.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loom.nats.roundtrip import round_trip

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = logging.getLogger("loom.nats")

#: Seconds a request for presence collects answers by default.
GATHER = 0.3
#: Largest answer accepted (bytes).
MAX_ANSWER = 256 * 1024


@runtime_checkable
class PresenceHost(Protocol):
    """A runtime that can describe its agents (``Runtime``)."""

    def describe_agents(self) -> list[dict[str, Any]]: ...

    def on_shutdown(self, hook: Any) -> None: ...


def subject(project: str) -> str:
    """The presence subject of ``project`` (its name made one subject token)."""
    token = re.sub(r"[^A-Za-z0-9_-]", "_", project) or "project"
    return f"_loom.presence.{token}"


class Presence:
    """Answers presence requests for one runtime."""

    def __init__(self, host: PresenceHost, nc: Client, project: str, name: str | None) -> None:
        self._host = host
        self._nc = nc
        self.subject = subject(project)
        self.process = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "name": name or "loom",
            "instance": os.urandom(6).hex(),
            "started": time.time(),
        }
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self.subject, cb=self._answer)

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            body = json.dumps(
                {"process": self.process, "agents": self._host.describe_agents()}, default=str
            ).encode()
            await self._nc.publish(msg.reply, body)
        except Exception as exc:  # one failed answer must not end the subscription
            log.debug("presence: no answer sent: %s", exc)

    async def close(self) -> None:
        if self._sub is not None and not self._nc.is_closed:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:
                log.debug("presence: unsubscribe failed: %s", exc)
        self._sub = None


async def start_presence(host: object, nc: Client, *, project: str, name: str | None) -> None:
    """Lets ``host`` answer presence requests until it stops (nothing for hosts that
    cannot describe their agents)."""
    if not isinstance(host, PresenceHost):
        return
    presence = Presence(host, nc, project, name)
    await presence.start()
    host.on_shutdown(presence.close)


async def gather(nc: Client, project: str, wait: float = GATHER) -> list[dict[str, Any]]:
    """The answers of the project's processes within ``wait`` seconds (this one's
    included), sorted by host and pid."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        if len(msg.data) > MAX_ANSWER:
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(answer, dict) and isinstance(answer.get("process"), dict):
            answers.append(answer)

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(subject(project), b"", reply=inbox)
        await round_trip(nc)
        await asyncio.sleep(wait)
    finally:
        await sub.unsubscribe()
    return sorted(
        answers, key=lambda a: (str(a["process"].get("host")), a["process"].get("pid", 0))
    )


__all__ = ["GATHER", "Presence", "PresenceHost", "gather", "start_presence", "subject"]
