"""The shared journal: one JetStream key-value bucket (``[durability] store = "nats"``).

Keys (one value each, history 1, file storage)::

    run.<run_id>              the run's record
    step.<run_id>.<seq:08d>   its steps (zero-padded: key order is step order)
    live.<run_id>             there while the run may be unfinished (an index)
    appr.<approval_id>        approvals

The ``live.`` index keeps the scans for runs to resume (every ``lease`` seconds, in
every process) proportional to the unfinished runs, not to the finished ones kept for
``retention_days``. It is written before a run becomes unfinished and removed after it
has ended, so it never misses an unfinished run; an entry left by a crash in between
is removed by the next scan that finds its run ended.

Values are the same JSON the SQLite store writes (:func:`~loom.durable.records.dumps`).
A conditional write is a publish with ``Nats-Expected-Last-Subject-Sequence`` (the
key's revision when it was read): the server refuses it if another process wrote the
key meanwhile, and the read-modify-write is tried again on the new value — so
``swap_owner`` has exactly one winner across processes and machines. The NATS
connection is the runtime's: :meth:`NatsJournal.close` leaves it open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors as js_errors
from nats.js import api

from loom.errors import JournalError

from .records import (
    UNFINISHED,
    Approval,
    ApprovalStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    dumps,
    loads,
)
from .store import Listing

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("loom.durable")

_ID = re.compile(r"^[A-Za-z0-9_=-]{1,200}$")
_ENDED = ("finished", "failed", "cancelled")
#: Read-modify-write attempts before a key written by others all the time is an error.
_ATTEMPTS = 64
#: A scan's consumer is removed by the server this long after its scan (if the scan
#: could not remove it).
_SCAN_CONSUMER_IDLE = 10.0
# JetStream API error codes.
_WRONG_LAST_SEQUENCE = (10071, 10164)
_JS_NOT_ENABLED_FOR_ACCOUNT = 10039


class _Missing(Exception):
    """The key of a read-modify-write does not exist."""


class _Abort(Exception):
    """Ends a read-modify-write without writing (``value`` is what to return)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class NatsJournal:
    """A journal in the JetStream key-value bucket ``bucket``, through ``nc`` (a
    connected nats-py client; not closed by this store). Call :meth:`open` first."""

    def __init__(self, nc: Client, bucket: str, *, timeout: float = 5.0) -> None:
        self.bucket = bucket
        self.timeout = timeout
        self.where = f"JetStream bucket {bucket}"
        self.stream = f"KV_{bucket}"
        self._js: JetStreamContext = nc.jetstream(timeout=timeout)
        self._kv: KeyValue | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<NatsJournal {self.bucket}>"

    # -- opening, errors --------------------------------------------------------------

    async def open(self) -> None:
        """Binds the bucket, creating it (history 1, file storage) if it is missing.

        Raises:
            JournalError: JetStream is not enabled, or the bucket cannot be created or
                read (permissions), with what to do.
        """
        try:
            self._kv = await self._js.key_value(self.bucket)
            return
        except js_errors.BucketNotFoundError:
            pass
        except nats.errors.Error as exc:
            raise JournalError(f"{self.where}: cannot open it: {self._explain(exc)}") from None
        try:
            self._kv = await self._js.create_key_value(
                bucket=self.bucket,
                history=1,
                storage=api.StorageType.FILE,
                description="Loom durable runs (the journal of [durability] store = nats)",
            )
        except nats.errors.Error as exc:
            raise JournalError(
                f"{self.where}: cannot create it: {self._explain(exc)}; create it beforehand "
                f"(nats kv add {self.bucket} --history 1 --storage file) or let this NATS "
                f"user create it ($JS.API.STREAM.CREATE.{self.stream})"
            ) from None
        log.info("journal: created %s", self.where)

    def _explain(self, exc: BaseException) -> str:
        code = getattr(exc, "err_code", None)
        if isinstance(exc, (js_errors.ServiceUnavailableError, nats.errors.NoRespondersError)) or (
            code == _JS_NOT_ENABLED_FOR_ACCOUNT
        ):
            return (
                "JetStream is not enabled on the NATS server (start nats-server with -js, or "
                'enable JetStream for this account), or use [durability] store = "sqlite"'
            )
        if isinstance(exc, asyncio.TimeoutError):  # nats.errors.TimeoutError among them
            return (
                f"no answer from JetStream within {self.timeout}s: the NATS user may not be "
                f"allowed the bucket's subjects (publish $JS.API.> and $KV.{self.bucket}.>, "
                "subscribe _INBOX.>; the server logs a permissions violation), or the server "
                "is overloaded"
            )
        if isinstance(exc, js_errors.APIError):
            return f"JetStream refused: {exc.description or type(exc).__name__} (code {code})"
        return str(exc) or type(exc).__name__

    def _bucket(self) -> KeyValue:
        if self.closed:
            raise JournalError(f"journal {self.where} is closed")
        if self._kv is None:
            raise JournalError(f"journal {self.where} is not open (call open() first)")
        return self._kv

    def _failed(self, what: str, exc: BaseException) -> JournalError:
        return JournalError(f"{self.where}: {what}: {self._explain(exc)}")

    def _key(self, kind: str, ident: str) -> str:
        if not _ID.match(ident):
            raise JournalError(f"{self.where}: {ident!r} cannot be a key (letters, digits, _=-)")
        return f"{kind}.{ident}"

    # -- reading and writing keys ------------------------------------------------------

    async def _get(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self._bucket().get(key)
        except js_errors.KeyNotFoundError:
            return None
        except nats.errors.Error as exc:
            raise self._failed(f"reading {key}", exc) from None
        return entry.value or b"", entry.revision or 0

    async def _scan(self, pattern: str) -> list[tuple[str, bytes, int]]:
        """The keys matching ``pattern`` (``run.>``) with their values and revisions.

        An ephemeral pull consumer (last value per key, no acks): nothing is delivered
        before it is asked for, so the count the server gives at its creation says when
        everything has been read. (The library's key watcher can end a scan before
        messages already on their way have been seen: it would miss keys.)
        """
        self._bucket()  # open, not closed
        js, prefix = self._js, f"$KV.{self.bucket}."
        config = api.ConsumerConfig(
            name=f"loom_scan_{os.urandom(8).hex()}",
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=prefix + pattern,
            inactive_threshold=_SCAN_CONSUMER_IDLE,  # removed by the server if not by us
            mem_storage=True,
        )
        found: dict[str, tuple[bytes, int]] = {}
        try:
            info = await js.add_consumer(self.stream, config)
            sub = await js.pull_subscribe_bind(info.name, stream=self.stream)
            try:
                remaining = info.num_pending or 0
                while remaining > 0:
                    try:
                        batch = await sub.fetch(min(remaining, 256), timeout=self.timeout)
                    except asyncio.TimeoutError:
                        # Fewer than counted: keys were deleted meanwhile — or a failure.
                        if (await js.consumer_info(self.stream, info.name)).num_pending:
                            raise
                        break
                    for msg in batch:
                        remaining = msg.metadata.num_pending or 0
                        key = msg.subject[len(prefix) :]
                        op = msg.headers.get("KV-Operation") if msg.headers else None
                        if op in ("DEL", "PURGE"):
                            found.pop(key, None)
                        else:
                            found[key] = (msg.data, msg.metadata.sequence.stream)
            finally:
                await _quietly(sub.unsubscribe())
                await _quietly(js.delete_consumer(self.stream, info.name))
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._failed(f"reading {pattern}", exc) from None
        return [(key, value, revision) for key, (value, revision) in found.items()]

    async def _create(self, key: str, value: str) -> bool:
        for _ in range(_ATTEMPTS):
            try:
                await self._bucket().create(key, value.encode())
                return True
            except js_errors.KeyWrongLastSequenceError:
                # Exists — or was deleted (pruned) and its marker just went away: retry.
                if await self._get(key) is not None:
                    return False
            except nats.errors.Error as exc:
                raise self._failed(f"writing {key}", exc) from None
        raise JournalError(f"{self.where}: {key} changed {_ATTEMPTS} times while created")

    async def _modify(self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
        """Read-modify-write of one record, retried when another writer got in between.
        ``change`` returns the new record, or raises :class:`_Abort` to leave it;
        returns the record written (or the abort's value)."""
        kv = self._bucket()
        for attempt in range(_ATTEMPTS):
            found = await self._get(key)
            if found is None:
                raise _Missing(key)
            value, revision = found
            data = loads(value, f"{self.where}: {key}")
            if not isinstance(data, dict):
                raise JournalError(f"{self.where}: {key}: a record must be an object")
            try:
                new = change(data)
            except _Abort as stop:
                return stop.value
            try:
                await kv.update(key, dumps(new).encode(), last=revision)
                return new
            except js_errors.KeyWrongLastSequenceError:
                log.debug("journal: %s changed meanwhile (attempt %d)", key, attempt + 1)
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
            except nats.errors.Error as exc:
                raise self._failed(f"writing {key}", exc) from None
        raise JournalError(f"{self.where}: {key} changed {_ATTEMPTS} times while updated")

    async def _purge(self, key: str, revision: int) -> bool:
        """Removes ``key`` (one purge marker stays) if it is still at ``revision``."""
        headers = {
            "KV-Operation": "PURGE",
            api.Header.ROLLUP: "sub",
            api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision),
        }
        try:
            await self._js.publish(f"$KV.{self.bucket}.{key}", b"", headers=headers)
        except nats.errors.Error as exc:
            if getattr(exc, "err_code", None) in _WRONG_LAST_SEQUENCE:
                return False  # written meanwhile: kept
            raise self._failed(f"deleting {key}", exc) from None
        return True

    async def close(self) -> None:
        self.closed = True  # the connection is the runtime's: left open

    # -- runs -----------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> bool:
        key = self._key("run", run.run_id)
        if run.status in UNFINISHED:
            await self._put(f"live.{run.run_id}", b"1")
        return await self._create(key, dumps(run.to_json()))

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self._bucket().put(key, value)
        except nats.errors.Error as exc:
            raise self._failed(f"writing {key}", exc) from None

    async def _read_run(self, run_id: str) -> RunRecord | JournalError | None:
        try:
            return await self.get_run(run_id)
        except JournalError as exc:
            return exc

    async def get_run(self, run_id: str) -> RunRecord | None:
        found = await self._get(self._key("run", run_id))
        if found is None:
            return None
        where = f"{self.where}: run {run_id}"
        return RunRecord.from_json(loads(found[0], where), where)

    async def list_runs(
        self, *, statuses: tuple[RunStatus, ...] | None = None, agent: str | None = None
    ) -> Listing:
        out = Listing()
        found: list[tuple[str, RunRecord | JournalError | None]] = []
        if statuses and all(s in UNFINISHED for s in statuses):
            # Through the index: only the runs that may be unfinished are read.
            live = await self._scan("live.>")
            ids = [key.removeprefix("live.") for key, _, _ in live]
            runs = await asyncio.gather(*(self._read_run(i) for i in ids))
            found = list(zip(ids, runs, strict=True))
            for (key, _, revision), run in zip(live, runs, strict=True):
                if isinstance(run, RunRecord) and run.status in _ENDED:
                    await self._purge(key, revision)  # left by a crash: tidied
        else:
            for key, value, _ in await self._scan("run.>"):
                run_id = key.removeprefix("run.")
                where = f"{self.where}: run {run_id}"
                try:
                    found.append((run_id, RunRecord.from_json(loads(value, where), where)))
                except JournalError as exc:
                    found.append((run_id, exc))
        for run_id, run in found:
            if isinstance(run, JournalError):
                out.broken.append((run_id, str(run)))
            elif run is None:  # being created, or deleted meanwhile
                continue
            elif (not statuses or run.status in statuses) and agent in (None, run.agent):
                out.runs.append(run)
        out.runs.sort(key=lambda r: r.updated, reverse=True)
        return out

    async def update_run(self, run_id: str, **fields: Any) -> None:
        def change(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, **fields}

        key, status = self._key("run", run_id), fields.get("status")
        if status in UNFINISHED:
            await self._put(f"live.{run_id}", b"1")
        try:
            await self._modify(key, change)
        except _Missing:
            raise JournalError(f"{self.where}: no run {run_id}") from None
        if status in _ENDED:
            await self._unlist(run_id)

    async def _unlist(self, run_id: str) -> None:
        """Removes the run from the ``live.`` index (it has ended)."""
        found = await self._get(f"live.{run_id}")
        if found is not None:
            await self._purge(f"live.{run_id}", found[1])

    async def swap_owner(
        self, run_id: str, expected: tuple[str, float], owner: str, lease_until: float
    ) -> bool:
        def change(data: dict[str, Any]) -> dict[str, Any]:
            if (data.get("owner"), data.get("lease_until")) != expected:
                raise _Abort(False)
            return {**data, "owner": owner, "lease_until": lease_until}

        try:
            return await self._modify(self._key("run", run_id), change) is not False
        except _Missing:
            return False

    async def renew(self, owner: str, run_ids: list[str], lease_until: float) -> list[str]:
        def change(data: dict[str, Any]) -> dict[str, Any]:
            if data.get("owner") != owner or data.get("status") in _ENDED:
                raise _Abort(False)
            return {**data, "lease_until": lease_until}

        async def one(run_id: str) -> bool:
            try:
                return await self._modify(self._key("run", run_id), change) is not False
            except _Missing:
                return False  # pruned or never created: not this owner's to renew

        renewed = await asyncio.gather(*(one(r) for r in run_ids))
        return [r for r, ok in zip(run_ids, renewed, strict=True) if not ok]

    # -- steps ----------------------------------------------------------------------

    async def steps(self, run_id: str) -> list[StepRecord]:
        found = await self._scan(f"{self._key('step', run_id)}.>")
        out = []
        for key, value, _ in sorted(found):
            where = f"{self.where}: run {run_id} step {key.rpartition('.')[2]}"
            out.append(StepRecord.from_json(loads(value, where), where))
        return out

    async def put_step(self, run_id: str, step: StepRecord) -> None:
        await self._put(
            f"{self._key('step', run_id)}.{step.seq:08d}", dumps(step.to_json()).encode()
        )

    # -- approvals ------------------------------------------------------------------

    async def put_approval(self, approval: Approval) -> None:
        await self._create(self._key("appr", approval.approval_id), dumps(approval.to_json()))

    async def get_approval(self, approval_id: str) -> Approval | None:
        found = await self._get(self._key("appr", approval_id))
        if found is None:
            return None
        where = f"{self.where}: approval {approval_id}"
        return Approval.from_json(loads(found[0], where), where)

    async def list_approvals(self, status: ApprovalStatus | None = None) -> list[Approval]:
        out = []
        for key, value, _ in await self._scan("appr.>"):
            where = f"{self.where}: approval {key.removeprefix('appr.')}"
            try:
                approval = Approval.from_json(loads(value, where), where)
            except JournalError as exc:
                log.error("%s", exc)
                continue
            if status is None or approval.status == status:
                out.append(approval)
        return sorted(out, key=lambda a: a.requested)

    async def decide(
        self, approval_id: str, status: ApprovalStatus, by: str, reason: str, now: float
    ) -> Approval | None:
        def change(data: dict[str, Any]) -> dict[str, Any]:
            if data.get("status") != "pending":
                raise _Abort(data)  # decided already: the first decision stands
            return {**data, "status": status, "decided": now, "decided_by": by, "reason": reason}

        try:
            data = await self._modify(self._key("appr", approval_id), change)
        except _Missing:
            return None
        where = f"{self.where}: approval {approval_id}"
        return Approval.from_json(data, where)

    # -- retention ------------------------------------------------------------------

    async def prune(self, finished_before: float) -> int:
        pruned = 0
        for key, value, revision in await self._scan("run.>"):
            run_id = key.removeprefix("run.")
            try:
                run = RunRecord.from_json(loads(value, key), key)
            except JournalError:
                continue  # unreadable: reported by list_runs, never deleted here
            if run.status not in _ENDED or run.updated >= finished_before:
                continue
            if not await self._purge(key, revision):
                continue
            # The steps, without markers. (Unconditional: a run of this id started anew in
            # this very moment — its event delivered again after retention_days — would
            # lose its first steps; JetStream has no conditional purge.)
            try:
                await self._js.purge_stream(
                    self.stream, subject=f"$KV.{self.bucket}.step.{run_id}.>"
                )
            except nats.errors.Error as exc:
                raise self._failed(f"deleting the steps of run {run_id}", exc) from None
            await self._unlist(run_id)
            pruned += 1
        for key, value, revision in await self._scan("appr.>"):
            try:
                approval = Approval.from_json(loads(value, key), key)
            except JournalError:
                continue
            if approval.status != "pending" and approval.decided < finished_before:
                await self._purge(key, revision)
        return pruned


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except Exception as exc:
        log.debug("journal: cleaning up after a scan: %s", exc)


__all__ = ["NatsJournal"]
