"""``loom runs`` and ``loom approvals``: the durable runs of a project (docs/durability.md).

Both read the journal ``[durability]`` names — the SQLite file, or JetStream with the
nats store — so they work from any terminal (and, with the nats store, any machine)
while ``loom run`` is running, or after it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from loom._text import escape_line, shorten

if TYPE_CHECKING:
    from loom.config import ProjectConfig
    from loom.durable import JournalStore
    from loom.durable.records import ApprovalStatus


def add_parser(sub: Any) -> None:
    runs = sub.add_parser("runs", help="durable runs: list, show, cancel")
    runs_sub = runs.add_subparsers(dest="action", metavar="ACTION")
    ls = runs_sub.add_parser("list", help="runs, newest first")
    ls.add_argument("--status", help="only runs with this status (running, waiting, ...)")
    ls.add_argument("--agent", help="only runs of this agent")
    ls.add_argument("--json", action="store_true", help="as JSON")
    show = runs_sub.add_parser("show", help="one run and its steps")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="as JSON")
    cancel = runs_sub.add_parser("cancel", help="stop an unfinished run (it is not resumed)")
    cancel.add_argument("run_id")
    for p in (runs, ls, show, cancel):
        p.add_argument(
            "--project", default="loom.toml", help="loom.toml or its directory (default: .)"
        )
    runs.set_defaults(func=cmd_runs, action="list", status=None, agent=None, json=False)

    appr = sub.add_parser("approvals", help="tool calls of durable runs waiting for a person")
    appr_sub = appr.add_subparsers(dest="action", metavar="ACTION")
    appr_ls = appr_sub.add_parser("list", help="pending approvals (--all: decided ones too)")
    appr_ls.add_argument("--all", action="store_true", help="decided ones too")
    appr_ls.add_argument("--json", action="store_true", help="as JSON")
    for verb in ("approve", "deny"):
        p = appr_sub.add_parser(verb, help=f"{verb} a pending call")
        p.add_argument("approval_id")
        p.add_argument("--reason", default="", help="recorded with the decision")
    for p in (appr, *appr_sub.choices.values()):
        p.add_argument(
            "--project", default="loom.toml", help="loom.toml or its directory (default: .)"
        )
    appr.set_defaults(func=cmd_approvals, action="list", all=False, json=False)


@asynccontextmanager
async def _journal(project: ProjectConfig) -> AsyncIterator[JournalStore]:
    from loom.durable import durability_settings, open_store
    from loom.errors import ConfigError

    settings = durability_settings(project)
    if settings is None:
        raise ConfigError(
            "no [durability] table: this project's runs are not journaled",
            path=str(project.path) if project.path else None,
        )
    if settings.store == "sqlite":
        store = await open_store(project, settings)
        try:
            yield store
        finally:
            await store.close()
        return
    from loom.nats import connect
    from loom.nats.settings import bus_settings
    from loom.runtime import Runtime

    runtime = Runtime(project)
    try:
        bus = bus_settings(project)
        bridge = await connect(runtime, bus.nats, settings=bus, name=f"{project.project.name}-cli")
        store = await open_store(project, settings, bridge.nc)
        try:
            yield store
        finally:
            await store.close()
    finally:
        await runtime.stop(timeout=5)


def _run(path: str, body: Callable[[JournalStore], Awaitable[int]]) -> int:
    from loom.config import load_project_config
    from loom.errors import LoomError

    async def go() -> int:
        async with _journal(load_project_config(path)) as store:
            return await body(store)

    try:
        return asyncio.run(go())
    except LoomError as exc:
        print(f"loom: error: {escape_line(str(exc))}", file=sys.stderr)
        return 2


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


# -- loom runs ----------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    async def body(store: JournalStore) -> int:
        if args.action == "show":
            return await _show(store, args.run_id, as_json=args.json)
        if args.action == "cancel":
            return await _cancel(store, args.run_id)
        statuses = (args.status,) if args.status else None
        listing = await store.list_runs(statuses=statuses, agent=args.agent)
        if args.json:
            print(json.dumps([r.to_json() for r in listing.runs], indent=2, default=str))
            return 0
        if not listing.runs and not listing.broken:
            print("no runs")
        for r in listing.runs:
            topic = str(r.event.get("topic", ""))
            line = (
                f"{r.run_id}  {r.status:<9} {r.agent:<16} {r.steps:>4} steps  "
                f"{_when(r.updated)}  {topic}"
            )
            print(escape_line(line))
            if r.error:
                print(f"    {shorten(escape_line(r.error), 120)}")
        for run_id, problem in listing.broken:
            print(escape_line(f"{run_id}  unreadable: {problem}"))
        return 0

    return _run(args.project, body)


async def _show(store: JournalStore, run_id: str, *, as_json: bool) -> int:
    run = await store.get_run(run_id)
    if run is None:
        print(f"loom: error: no run {escape_line(run_id)}", file=sys.stderr)
        return 1
    steps = await store.steps(run_id)
    if as_json:
        data = {**run.to_json(), "journal": [s.to_json() for s in steps]}
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(escape_line(f"run {run.run_id}: {run.status}, agent {run.agent} ({run.entry})"))
    print(escape_line(f"  event   {run.event.get('type')} on {run.event.get('topic')}"))
    print(f"  started {_when(run.created)}, updated {_when(run.updated)}")
    if run.owner:
        print(escape_line(f"  owner   {run.owner} (lease until {_when(run.lease_until)})"))
    if run.error:
        print(escape_line(f"  error   {run.error}"))
    for s in steps:
        what = ", ".join(
            f"{k}={shorten(json.dumps(v, default=str), 60)}" for k, v in s.request.items()
        )
        outcome = {"intent": "in doubt / running", "done": "done", "error": "error"}[s.state]
        if s.state == "error" and s.error:
            outcome += f": {s.error.get('message', '')}"
        print(
            escape_line(f"  {s.seq:>3} {s.kind:<8} {shorten(what, 90)}  -> {shorten(outcome, 80)}")
        )
    return 0


async def _cancel(store: JournalStore, run_id: str) -> int:
    run = await store.get_run(run_id)
    if run is None:
        print(f"loom: error: no run {escape_line(run_id)}", file=sys.stderr)
        return 1
    if run.status not in ("running", "waiting"):
        print(f"run {run_id} is {run.status} already")
        return 1
    await store.update_run(run_id, status="cancelled", error="cancelled (loom runs cancel)",
                           updated=time.time())  # fmt: skip
    print(f"run {run_id} cancelled (a running process stops it within a lease period)")
    return 0


# -- loom approvals -------------------------------------------------------------------------


def cmd_approvals(args: argparse.Namespace) -> int:
    async def body(store: JournalStore) -> int:
        if args.action in ("approve", "deny"):
            status: ApprovalStatus = "approved" if args.action == "approve" else "denied"
            found = await store.decide(args.approval_id, status, _who(), args.reason, time.time())
            if found is None:
                print(f"loom: error: no approval {escape_line(args.approval_id)}", file=sys.stderr)
                return 1
            if found.status != status or found.decided_by != _who():
                print(f"approval {found.approval_id} was already {found.status} by "
                      f"{escape_line(found.decided_by)}")  # fmt: skip
                return 1
            print(
                f"{found.approval_id}: {status} ({escape_line(found.tool)} of run {found.run_id})"
            )
            return 0
        pending = await store.list_approvals(None if args.all else "pending")
        if args.json:
            print(json.dumps([a.to_json() for a in pending], indent=2, default=str))
            return 0
        if not pending:
            print("no pending approvals" if not args.all else "no approvals")
        for a in pending:
            arguments = shorten(json.dumps(a.arguments, default=str), 100)
            print(
                escape_line(f"{a.approval_id}  {a.status:<8} {a.agent:<16} {a.tool}  {arguments}")
            )
            print(f"    requested {_when(a.requested)}")
        return 0

    return _run(args.project, body)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
