"""What the dashboard shows of a runtime, as plain JSON-ready data.

Each function reads state the runtime already keeps (bus counters, agents'
subscriptions, the tool registry, LLM usage, the journal); none of them adds work to
the event path. Secrets never reach the result: provider settings are shown as name,
model and a redacted base URL only, and every free-form value goes through
:func:`loom._secrets.redacted`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from loom import _core
from loom._secrets import redact_url, redacted
from loom.agent import Agent
from loom.config import ProjectConfig
from loom.runtime import Runtime

log = logging.getLogger("loom.dashboard")

#: Seconds a JetStream consumer-info request may take before it is left out.
CONSUMER_INFO_TIMEOUT = 1.0
_HOST = socket.gethostname()


def project_view(project: ProjectConfig | None) -> dict[str, Any]:
    if project is None:
        return {"name": "", "path": None}
    return {
        "name": project.project.name,
        "path": str(project.path) if project.path else None,
        "job": (
            {"topic": project.job.topic, "type": project.job.type}
            if project.job is not None
            else None
        ),
        "nats": redact_url(str(project.bus["nats"])) if project.bus.get("nats") else None,
    }


def agents_view(runtime: Runtime) -> list[dict[str, Any]]:
    """Every agent of the runtime with its subscriptions."""
    out = []
    for agent_id, hosted in sorted(runtime.agents.items()):
        item: dict[str, Any] = {"id": agent_id, "inbox": hosted.inbox, "subscriptions": []}
        if isinstance(hosted, Agent):
            item.update(
                kind=type(hosted).__name__,
                running=hosted.running,
                topics=list(hosted.topics),
                group=hosted.group,
                qos=hosted.qos,
                max_concurrency=hosted.max_concurrency,
                subscriptions=hosted.ctx.subscription_info(),
            )
        out.append(item)
    return out


def topics_view(runtime: Runtime, rates: dict[str, float]) -> list[dict[str, Any]]:
    """Concrete topics seen on the bus with counters, rate and subscribers (agents)."""
    stats = runtime.bus.stats()
    subscribers: dict[str, list[str]] = {}
    patterns = [
        (a.agent_id, s["pattern"])
        for a in runtime.agents.values()
        if isinstance(a, Agent)
        for s in a.ctx.subscription_info()
    ]
    out = []
    for topic, t in sorted(stats.topics.items()):
        subscribers[topic] = sorted(
            {agent for agent, pattern in patterns if _core.topic_matches(pattern, topic)}
        )
        out.append(
            {
                "topic": topic,
                "published": t.published,
                "delivered": t.delivered,
                "dropped": t.dropped,
                "subscriptions": t.subscribers,  # the page's own stream is not one
                "rate": round(rates.get(topic, 0.0), 1),
                "agents": subscribers[topic],
            }
        )
    return out


def bus_view(runtime: Runtime, observers: set[int]) -> dict[str, Any]:
    """Totals and every subscription's queue: depth, delivered, dropped by reason; the
    dashboard's own observers (``observers``) summed apart."""
    stats = runtime.bus.stats()
    owners: dict[int, str] = {}
    for a in runtime.agents.values():
        if isinstance(a, Agent):
            for info in a.ctx.subscription_info():
                if info.get("transport") == "bus":
                    owners[int(info["id"])] = a.agent_id
    subs = []
    for s in stats.subscriptions:
        if s.id in observers:
            continue
        subs.append(
            {
                "id": s.id,
                "agent": owners.get(s.id, ""),
                "pattern": s.pattern,
                "group": s.group,
                "qos": s.qos,
                "capacity": s.capacity,
                "depth": s.depth,
                "enqueued": s.enqueued,
                "delivered": s.delivered,
                "dropped": dict(s.dropped),
            }
        )
    taps = [s for s in stats.subscriptions if s.id in observers]
    return {
        "published": stats.published,
        "untracked_published": stats.untracked_published,
        "subscriptions": subs,
        "stream": (
            {
                "pages": len(taps),
                "seen": sum(t.enqueued for t in taps),
                "dropped": sum(sum(t.dropped.values()) for t in taps),
            }
            if taps
            else None
        ),
    }


async def jetstream_view(runtime: Runtime) -> dict[str, Any] | None:
    """With ``[bus] nats`` and JetStream: the stream's counters and each durable
    consumer's pending, in-flight and redelivered counts (from the server)."""
    link = runtime.jetstream
    if link is None:
        return None
    stream = link.settings.stream
    consumers = []
    for c in list(link.consumers):
        item: dict[str, Any] = {"name": c.name, "pattern": c.pattern, "group": c.group}
        try:
            info = await asyncio.wait_for(
                link.js.consumer_info(stream, c.name), CONSUMER_INFO_TIMEOUT
            )
            item.update(
                pending=info.num_pending,
                ack_pending=info.num_ack_pending,
                redelivered=info.num_redelivered,
                waiting=info.num_waiting,
            )
        except Exception as exc:  # the page shows the rest; the reason goes to the log
            log.debug("consumer info %s: %s", c.name, exc)
            item["unavailable"] = type(exc).__name__
        consumers.append(item)
    return {"stream": stream, "counters": vars(link.stats), "consumers": consumers}


def tools_view(runtime: Runtime) -> dict[str, Any]:
    """The registry (when built) and what the sandbox enforces."""
    registry = runtime.tools
    tools = []
    if registry is not None:
        for spec in registry.specs():
            tools.append(
                {
                    "name": spec.name,
                    "source": spec.source,
                    "server": spec.server,
                    "hosts": list(spec.hosts),
                    "description": spec.description.splitlines()[0] if spec.description else "",
                    "parameters": sorted(spec.parameters.get("properties", {})),
                    "requires_approval": spec.requires_approval,
                    "idempotent": spec.idempotent,
                }
            )
    return {"tools": tools, "sandbox": redacted(runtime.sandbox_status)}


def llm_view(runtime: Runtime) -> dict[str, Any]:
    """Configured providers (name, model, redacted base URL) and usage/cost so far."""
    project = runtime.project
    providers = []
    for name, table in sorted((project.llm if project is not None else {}).items()):
        base = table.get("base_url") or table.get("api_base")
        providers.append(
            {
                "name": name,
                "model": table.get("model"),
                "base_url": redact_url(str(base)) if base else None,
                "serve": table.get("serve"),
            }
        )
    usage = runtime.llm_state.usage

    def totals(table: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {
                "name": key,
                "calls": t.calls,
                "input_tokens": t.usage.prompt_tokens,
                "output_tokens": t.usage.completion_tokens,
                "cost_usd": round(t.cost_usd, 6),
            }
            for key, t in sorted(table.items())
        ]

    return {
        "providers": providers,
        "by_provider": totals(dict(usage.by_provider)),
        "by_agent": totals(dict(usage.by_agent)),
        "total_cost_usd": round(usage.total_cost(), 6),
    }


async def durable_view(runtime: Runtime, limit: int = 100) -> dict[str, Any] | None:
    """With ``[durability]``: recent runs and pending approvals (arguments redacted)."""
    durability = runtime.durability
    if durability is None:
        return None
    store = durability.store
    listing = await store.list_runs()
    approvals = await store.list_approvals("pending")
    return {
        "where": store.where,
        "runs": [
            {
                "run_id": r.run_id,
                "agent": r.agent,
                "entry": r.entry,
                "status": r.status,
                "steps": r.steps,
                "created": r.created,
                "updated": r.updated,
                "owner": r.owner,
                "error": r.error,
                "topic": r.event.get("topic"),
            }
            for r in listing.runs[:limit]
        ],
        "broken": [{"id": i, "why": why} for i, why in listing.broken],
        "approvals": [
            {
                "approval_id": a.approval_id,
                "run_id": a.run_id,
                "agent": a.agent,
                "tool": a.tool,
                "arguments": redacted(a.arguments),
                "requested": a.requested,
            }
            for a in approvals
        ],
    }


async def processes_view(runtime: Runtime) -> list[dict[str, Any]] | None:
    """With ``[bus] nats``: the processes of the project on the bus (this one
    included, marked ``self``), each with its agents and their subscriptions."""
    bridge = runtime.nats_bridge
    project = runtime.project
    if bridge is None or project is None or bridge.nc.is_closed:
        return None
    from loom.nats.presence import gather

    own = os.getpid()
    answers = await gather(bridge.nc, project.project.name)
    for a in answers:
        a["self"] = a["process"].get("pid") == own and a["process"].get("host") == _HOST
    return answers


def edges_view(edges: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    return [
        {"source": source, "topic": topic, "count": n}
        for (source, topic), n in sorted(edges.items(), key=lambda kv: -kv[1])[:500]
    ]


__all__ = [
    "agents_view",
    "bus_view",
    "durable_view",
    "edges_view",
    "jetstream_view",
    "llm_view",
    "processes_view",
    "project_view",
    "tools_view",
    "topics_view",
]
