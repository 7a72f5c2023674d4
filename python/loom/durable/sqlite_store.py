"""The embedded journal: one SQLite file (``.loom/journal.db`` by default).

One connection, used only from the store's own thread (no call blocks the loop). WAL
mode with ``synchronous=NORMAL``: every committed write survives a kill -9 of the
process. Other processes (``loom runs``, ``loom approvals``, a second ``loom run``) open
the same file; a conditional write runs in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from loom.errors import JournalError

from .records import (
    Approval,
    ApprovalStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    dumps,
    loads,
)
from .store import Listing

log = logging.getLogger("loom.durable")

T = TypeVar("T")

#: The schema this module reads and writes (``loom_journal_meta``'s ``schema`` row).
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS loom_journal_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS loom_runs (
    run_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    owner TEXT NOT NULL,
    lease_until REAL NOT NULL,
    updated REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS loom_runs_status ON loom_runs (status, agent);
CREATE TABLE IF NOT EXISTS loom_steps (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS loom_approvals (
    approval_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
"""

_COLUMNS = ("agent", "status", "owner", "lease_until", "updated")

#: Calls on the loop's connection between two checkpoints of the WAL (on the thread).
CHECKPOINT_EVERY = 500


def _nothing(conn: sqlite3.Connection) -> None:
    pass


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


class SqliteJournal:
    """A journal in a SQLite file (``path``), or in memory (``None``)."""

    def __init__(self, path: str | os.PathLike[str] | None, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path) if path is not None else None
        self.where = str(self.path) if self.path else ":memory:"
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._fast: sqlite3.Connection | None = None
        self._writes = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<SqliteJournal {self.where}>"

    # -- the thread -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise JournalError(f"journal {self.where} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="loom-journal")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, fn, args
        )

    async def _quick(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` for the small reads and writes of a run's steps:
        on the loop's thread (tens of µs; a hop to the store's thread costs more than
        the write under load), with no wait for locks — a busy database (another
        process writing) sends the call to the store's thread, which waits there."""
        fast = self._fast
        if fast is None:
            if self._conn is None or self.path is None:
                return await self._run(fn, *args)  # opens (and checks) the schema first
            fast = self._fast = self._connect(busy_timeout=0.0)
            fast.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on the thread
        if self.closed:
            raise JournalError(f"journal {self.where} is closed")
        try:
            result = fn(fast, *args)
        except sqlite3.OperationalError as exc:
            if fast.in_transaction:
                fast.execute("ROLLBACK")
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise JournalError(f"journal {self.where}: {exc}") from exc
            return await self._run(fn, *args)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.where}: {exc}") from exc
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY == 0:
            self._checkpoint = asyncio.ensure_future(self._run(_checkpoint))
        return result

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return fn(self._conn, *args)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.where}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only: arguments and results of tool calls may be sensitive.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = self._connect(busy_timeout=self.busy_timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO loom_journal_meta VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            found = conn.execute(
                "SELECT value FROM loom_journal_meta WHERE name='schema'"
            ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        if not str(found[0]).isdigit() or int(found[0]) > SCHEMA_VERSION:
            conn.close()
            raise JournalError(
                f"journal {self.where}: written by a newer Loom (schema {found[0]}; this one "
                f"reads schema {SCHEMA_VERSION}); use that Loom, or point [durability] path "
                "at another file"
            )
        return conn

    def _connect(self, *, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.where, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        # WAL + NORMAL: a committed write survives a crash of the process.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def open(self) -> None:
        """Opens the file now (creating it, checking its schema) rather than at the
        first run, so a journal that cannot be used is reported before agents start.

        Raises:
            JournalError: unreadable, not a database, or written by a newer Loom.
        """
        await self._run(_nothing)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
            executor.shutdown(wait=False)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- runs -----------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO loom_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.agent,
                    run.status,
                    run.owner,
                    run.lease_until,
                    run.updated,
                    dumps(run.to_json()),
                ),
            )
            return cur.rowcount == 1

        return await self._quick(op)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def op(conn: sqlite3.Connection) -> tuple[str, str, float] | None:
            row: tuple[str, str, float] | None = conn.execute(
                "SELECT data, owner, lease_until FROM loom_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return row

        row = await self._quick(op)
        return None if row is None else self._record(run_id, *row)

    def _record(self, run_id: str, text: str, owner: str, lease_until: float) -> RunRecord:
        """A run's record, with its lease as the columns hold it (renewals write only
        those)."""
        where = f"{self.where}: run {run_id}"
        record = RunRecord.from_json(loads(text, where), where)
        record.owner, record.lease_until = owner, lease_until
        return record

    async def list_runs(
        self, *, statuses: tuple[RunStatus, ...] | None = None, agent: str | None = None
    ) -> Listing:
        def op(conn: sqlite3.Connection) -> list[tuple[str, str, str, float]]:
            sql = "SELECT run_id, data, owner, lease_until FROM loom_runs WHERE 1"
            args: list[str] = []
            if statuses:
                sql += f" AND status IN ({','.join('?' * len(statuses))})"
                args.extend(statuses)
            if agent is not None:
                sql += " AND agent = ?"
                args.append(agent)
            return conn.execute(sql + " ORDER BY updated DESC", args).fetchall()

        out = Listing()
        for run_id, text, owner, lease_until in await self._run(op):
            try:
                out.runs.append(self._record(run_id, text, owner, lease_until))
            except JournalError as exc:
                out.broken.append((run_id, str(exc)))
        return out

    async def update_run(self, run_id: str, **fields: Any) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT data FROM loom_runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if row is None:
                    raise JournalError(f"{self.where}: no run {run_id}")
                where = f"{self.where}: run {run_id}"
                data = loads(row[0], where)
                if not isinstance(data, dict):
                    raise JournalError(f"{where}: a run record must be an object")
                lease = conn.execute(
                    "SELECT owner, lease_until FROM loom_runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                data.update(owner=lease[0], lease_until=lease[1])
                data.update(fields)
                _write_run(conn, run_id, data)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._quick(op)

    async def swap_owner(
        self, run_id: str, expected: tuple[str, float], owner: str, lease_until: float
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT owner, lease_until, data FROM loom_runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if row is None or (row[0], row[1]) != expected:
                    conn.execute("ROLLBACK")
                    return False
                data = loads(row[2], f"{self.where}: run {run_id}")
                data.update(owner=owner, lease_until=lease_until)
                _write_run(conn, run_id, data)
                conn.execute("COMMIT")
                return True
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._quick(op)

    async def renew(self, owner: str, run_ids: list[str], lease_until: float) -> list[str]:
        if not run_ids:
            return []

        def op(conn: sqlite3.Connection) -> list[str]:
            # The columns are what claims compare; records are read with them.
            lost = []
            for r in run_ids:
                changed = conn.execute(
                    "UPDATE loom_runs SET lease_until = ? "
                    "WHERE run_id = ? AND owner = ? AND status IN ('running', 'waiting')",
                    (lease_until, r, owner),
                ).rowcount
                if not changed:
                    lost.append(r)
            return lost

        return await self._quick(op)

    # -- steps ----------------------------------------------------------------------

    async def steps(self, run_id: str) -> list[StepRecord]:
        def op(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            return conn.execute(
                "SELECT seq, data FROM loom_steps WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()

        out = []
        for seq, text in await self._quick(op):
            where = f"{self.where}: run {run_id} step {seq}"
            out.append(StepRecord.from_json(loads(text, where), where))
        return out

    async def put_step(self, run_id: str, step: StepRecord) -> None:
        text = dumps(step.to_json())

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO loom_steps VALUES (?, ?, ?)", (run_id, step.seq, text)
            )

        await self._quick(op)

    # -- approvals ------------------------------------------------------------------

    async def put_approval(self, approval: Approval) -> None:
        text = dumps(approval.to_json())

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO loom_approvals VALUES (?, ?, ?)",
                (approval.approval_id, approval.status, text),
            )

        await self._quick(op)

    async def get_approval(self, approval_id: str) -> Approval | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT data FROM loom_approvals WHERE approval_id = ?", (approval_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        text = await self._quick(op)
        if text is None:
            return None
        where = f"{self.where}: approval {approval_id}"
        return Approval.from_json(loads(text, where), where)

    async def list_approvals(self, status: ApprovalStatus | None = None) -> list[Approval]:
        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            if status is None:
                return conn.execute("SELECT approval_id, data FROM loom_approvals").fetchall()
            return conn.execute(
                "SELECT approval_id, data FROM loom_approvals WHERE status = ?", (status,)
            ).fetchall()

        out = []
        for approval_id, text in await self._run(op):
            where = f"{self.where}: approval {approval_id}"
            try:
                out.append(Approval.from_json(loads(text, where), where))
            except JournalError as exc:
                log.error("%s", exc)
        return sorted(out, key=lambda a: a.requested)

    async def decide(
        self, approval_id: str, status: ApprovalStatus, by: str, reason: str, now: float
    ) -> Approval | None:
        def op(conn: sqlite3.Connection) -> str | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT data FROM loom_approvals WHERE approval_id = ?", (approval_id,)
                ).fetchone()
                if row is None:
                    conn.execute("ROLLBACK")
                    return None
                data = loads(row[0], f"{self.where}: approval {approval_id}")
                if data.get("status") == "pending":
                    data.update(status=status, decided=now, decided_by=by, reason=reason)
                    conn.execute(
                        "UPDATE loom_approvals SET status = ?, data = ? WHERE approval_id = ?",
                        (status, dumps(data), approval_id),
                    )
                conn.execute("COMMIT")
                return dumps(data)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        text = await self._quick(op)
        if text is None:
            return None
        where = f"{self.where}: approval {approval_id}"
        return Approval.from_json(loads(text, where), where)

    # -- retention ------------------------------------------------------------------

    async def prune(self, finished_before: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT run_id FROM loom_runs WHERE status IN "
                        "('finished', 'failed', 'cancelled') AND updated < ?",
                        (finished_before,),
                    )
                ]
                for run_id in ids:
                    conn.execute("DELETE FROM loom_steps WHERE run_id = ?", (run_id,))
                    conn.execute("DELETE FROM loom_runs WHERE run_id = ?", (run_id,))
                conn.execute(
                    "DELETE FROM loom_approvals WHERE status != 'pending' AND "
                    "json_extract(data, '$.decided') < ?",
                    (finished_before,),
                )
                conn.execute("COMMIT")
                return len(ids)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(op)


def _write_run(conn: sqlite3.Connection, run_id: str, data: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE loom_runs SET agent = ?, status = ?, owner = ?, lease_until = ?, updated = ?, "
        "data = ? WHERE run_id = ?",
        (*(data.get(c, "") if c in ("agent", "status", "owner") else float(data.get(c) or 0)
           for c in _COLUMNS), dumps(data), run_id),
    )  # fmt: skip


__all__ = ["SCHEMA_VERSION", "SqliteJournal"]
