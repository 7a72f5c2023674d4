"""The embedded backend: every bucket of a runtime in one SQLite database.

One connection per store, used only from the store's own thread, so no call blocks the
event loop (SQLite releases the GIL while it works) and calls of one store run in the
order they were made. The database is in WAL mode: readers in other processes see every
committed write and do not wait for writers; writers in other processes wait up to
``busy_timeout`` seconds for each other. A conditional write (``create``, ``update``,
``delete(revision=)``) reads and writes in one ``BEGIN IMMEDIATE`` transaction, so it is
atomic across processes too.

Durability: ``synchronous = "normal"`` (default) keeps every committed write through a
crash of the process (kill -9); ``"full"`` also through a power loss, at the price of an
fsync per write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from loom.errors import KVClosedError, KVError
from loom.kv.base import DEFAULT_MAX_VALUE_SIZE, KeyValue, Row, conflict, validate_bucket

log = logging.getLogger("loom.kv")

T = TypeVar("T")

#: The schema this module reads and writes (``loom_kv_meta``'s ``schema`` row).
SCHEMA_VERSION = 1

#: Seconds between sweeps of expired entries (they are invisible from the moment they
#: expire; the sweep only reclaims their space).
SWEEP_INTERVAL = 60.0

Synchronous = Literal["normal", "full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS loom_kv_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS loom_kv_buckets (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS loom_kv (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    revision INTEGER NOT NULL,
    ts REAL NOT NULL,
    expires REAL,
    kind INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE INDEX IF NOT EXISTS loom_kv_expiry ON loom_kv (expires) WHERE expires IS NOT NULL;
"""

_LIVE = "(expires IS NULL OR expires > ?)"

_NEXT_SEQ = (
    "INSERT INTO loom_kv_buckets (name, seq) VALUES (?, 1) "
    "ON CONFLICT (name) DO UPDATE SET seq = seq + 1"
)
_RETURNING = sqlite3.sqlite_version_info >= (3, 35)


class SqliteStore:
    """A SQLite database holding buckets (:meth:`bucket`). ``path=None`` keeps it in
    memory (gone when the store closes). Nothing is opened until the first call."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: Synchronous = "normal",
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = Path(path) if path is not None else None
        self.synchronous = synchronous
        self.max_value_size = max_value_size
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._buckets: dict[str, SqliteBucket] = {}
        self._next_sweep = 0.0
        self.closed = False

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path) if self.path else ':memory:'}>"

    def bucket(self, name: str = "default") -> SqliteBucket:
        """The bucket ``name`` (created by its first write).

        Raises:
            InvalidKeyError: the name breaks the NATS bucket rules.
        """
        found = self._buckets.get(name)
        if found is None:
            found = self._buckets[validate_bucket(name)] = SqliteBucket(self, name)
        return found

    async def close(self) -> None:
        """Finishes the calls already made, then closes the database. Calls made later
        raise :class:`KVClosedError`."""
        if self.closed:
            return
        self.closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
        finally:
            executor.shutdown(wait=False)

    # -- the thread ---------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn(connection, *args)`` on the store's thread."""
        if self.closed:
            raise KVClosedError(f"{self!r} is closed (its runtime stopped)")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="loom-kv")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            if self._conn is None:
                self._conn = self._open()
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            raise KVError(f"key-value store {self._where()}: {exc}") from exc

    def _where(self) -> str:
        return str(self.path) if self.path else ":memory:"

    def _open(self) -> sqlite3.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created owner-only: values may be secrets. (The -wal and -shm files take
            # the database file's permissions.)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(
            str(self.path) if self.path else ":memory:",
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO loom_kv_meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            found = conn.execute("SELECT value FROM loom_kv_meta WHERE name='schema'").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        if int(found[0]) > SCHEMA_VERSION:
            conn.close()
            raise KVError(
                f"key-value store {self._where()}: written by a newer Loom (schema "
                f"{found[0]}; this one reads schema {SCHEMA_VERSION})"
            )
        log.debug("key-value store opened: %s", self._where())
        return conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def sweep_expired(self, conn: sqlite3.Connection, now: float) -> None:
        """Inside a write transaction: reclaims expired entries once in a while."""
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            conn.execute("DELETE FROM loom_kv WHERE expires IS NOT NULL AND expires <= ?", (now,))


class SqliteBucket(KeyValue):
    """One bucket of a :class:`SqliteStore`."""

    def __init__(self, store: SqliteStore, bucket: str) -> None:
        super().__init__(bucket, max_value_size=store.max_value_size)
        self.store = store

    def __repr__(self) -> str:
        return f"<SqliteBucket {self.bucket!r} of {self.store!r}>"

    async def _load(self, key: str) -> Row | None:
        return await self.store.run(self._load_sync, key)

    async def _write(
        self, key: str, data: bytes, kind: int, expect: int | None, ttl: float | None
    ) -> int:
        return await self.store.run(self._write_sync, key, data, kind, expect, ttl)

    async def _remove(self, key: str, expect: int | None) -> bool:
        return await self.store.run(self._remove_sync, key, expect)

    async def _scan(self, prefix: str, limit: int | None, reverse: bool, values: bool) -> list[Row]:
        return await self.store.run(self._scan_sync, prefix, limit, reverse, values)

    # -- on the store's thread ----------------------------------------------------

    def _load_sync(self, conn: sqlite3.Connection, key: str) -> Row | None:
        row = conn.execute(
            "SELECT key, value, kind, revision, ts, expires FROM loom_kv "
            f"WHERE bucket = ? AND key = ? AND {_LIVE}",
            (self.bucket, key, time.time()),
        ).fetchone()
        return None if row is None else _row(row)

    def _current(self, conn: sqlite3.Connection, key: str, now: float) -> int | None:
        row = conn.execute(
            f"SELECT revision FROM loom_kv WHERE bucket = ? AND key = ? AND {_LIVE}",
            (self.bucket, key, now),
        ).fetchone()
        return None if row is None else int(row[0])

    def _write_sync(
        self,
        conn: sqlite3.Connection,
        key: str,
        data: bytes,
        kind: int,
        expect: int | None,
        ttl: float | None,
    ) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            if expect is not None:
                actual = self._current(conn, key, now)
                if actual != (expect or None):
                    raise conflict(key, expect, actual)
            self.store.sweep_expired(conn, now)
            if _RETURNING:
                (revision,) = conn.execute(_NEXT_SEQ + " RETURNING seq", (self.bucket,)).fetchone()
            else:  # SQLite < 3.35
                conn.execute(_NEXT_SEQ, (self.bucket,))
                (revision,) = conn.execute(
                    "SELECT seq FROM loom_kv_buckets WHERE name = ?", (self.bucket,)
                ).fetchone()
            conn.execute(
                "INSERT INTO loom_kv (bucket, key, revision, ts, expires, kind, value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bucket, key) DO UPDATE SET "
                "revision = excluded.revision, ts = excluded.ts, expires = excluded.expires, "
                "kind = excluded.kind, value = excluded.value",
                (self.bucket, key, revision, now, None if ttl is None else now + ttl, kind, data),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(revision)

    def _remove_sync(self, conn: sqlite3.Connection, key: str, expect: int | None) -> bool:
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            actual = self._current(conn, key, now)
            if expect is not None and actual != expect:
                raise conflict(key, expect, actual)
            # An expired row is removed too; it did not exist for the caller.
            conn.execute("DELETE FROM loom_kv WHERE bucket = ? AND key = ?", (self.bucket, key))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return actual is not None

    def _scan_sync(
        self,
        conn: sqlite3.Connection,
        prefix: str,
        limit: int | None,
        reverse: bool,
        values: bool,
    ) -> list[Row]:
        column = "value" if values else "x''"
        where = f"bucket = ? AND {_LIVE}"
        params: list[Any] = [self.bucket, time.time()]
        if prefix:
            # Keys are ASCII below '\x7f', so every key starting with the prefix sorts
            # between these two bounds (an index range, unlike LIKE with its wildcards).
            where += " AND key >= ? AND key < ?"
            params += [prefix, prefix + "\x7f"]
        sql = (
            f"SELECT key, {column}, kind, revision, ts, expires FROM loom_kv WHERE {where} "
            f"ORDER BY key {'DESC' if reverse else 'ASC'}"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row(r) for r in conn.execute(sql, params)]


def _row(r: tuple[Any, ...]) -> Row:
    return (r[0], bytes(r[1]), int(r[2]), int(r[3]), float(r[4]), r[5])


__all__ = ["SCHEMA_VERSION", "SqliteBucket", "SqliteStore"]
