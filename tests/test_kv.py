"""The key-value store's semantics, on a real SQLite file: revisions, compare-and-set,
put-if-absent, prefix listing, delete, TTL, limits and the errors for each misuse."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loom.errors import LoomError
from loom.kv import (
    InvalidKeyError,
    InvalidValueError,
    KeyExistsError,
    KVClosedError,
    KVConflictError,
    KVError,
    SqliteStore,
    ValueTooLargeError,
    validate_key,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "kv.sqlite3")
    try:
        yield s
    finally:
        await s.close()


async def test_put_get_and_revisions_grow_across_the_bucket(store: SqliteStore) -> None:
    kv = store.bucket("plans")
    assert await kv.get("a") is None
    assert await kv.value("a", "none") == "none"
    r1 = await kv.put("a", {"side": "buy", "qty": 2})
    r2 = await kv.put("b", [1, "two", None, True, 1.5])
    r3 = await kv.put("a", "replaced")
    assert (r1, r2, r3) == (1, 2, 3)
    entry = await kv.get("a")
    assert entry is not None
    assert (entry.bucket, entry.key, entry.value, entry.revision) == ("plans", "a", "replaced", 3)
    assert abs(entry.timestamp - time.time()) < 60 and entry.expires is None
    assert await kv.value("b") == [1, "two", None, True, 1.5]
    # Another bucket has its own keys and its own revisions.
    other = store.bucket("other")
    assert await other.get("a") is None
    assert await other.put("a", 1) == 1


async def test_bytes_stay_bytes_and_json_is_plain_json(store: SqliteStore) -> None:
    kv = store.bucket()
    await kv.put("raw", b"\x00\xffbinary")
    await kv.put("view", memoryview(b"mv"))
    await kv.put("tuple", (1, 2))
    await kv.put("text", "héllo")
    assert await kv.value("raw") == b"\x00\xffbinary"
    assert await kv.value("view") == b"mv"
    assert await kv.value("tuple") == [1, 2]
    assert await kv.value("text") == "héllo"


async def test_the_value_is_taken_when_put_is_called(store: SqliteStore) -> None:
    kv = store.bucket()
    plan = {"steps": [1]}
    pending = asyncio.ensure_future(kv.put("p", plan))
    await asyncio.sleep(0)
    plan["steps"].append(2)  # changed while the write is in flight
    await pending
    assert await kv.value("p") == {"steps": [1]}


async def test_create_is_put_if_absent(store: SqliteStore) -> None:
    kv = store.bucket()
    rev = await kv.create("dedupe.x", True)
    with pytest.raises(KeyExistsError) as info:
        await kv.create("dedupe.x", False)
    assert isinstance(info.value, KVConflictError) and isinstance(info.value, LoomError)
    assert info.value.actual == rev and info.value.expected == 0
    assert "already exists" in str(info.value)
    assert await kv.value("dedupe.x") is True
    # Absent again once deleted.
    await kv.delete("dedupe.x")
    assert await kv.create("dedupe.x", "again") > rev


async def test_update_is_compare_and_set(store: SqliteStore) -> None:
    kv = store.bucket()
    r1 = await kv.put("counter", 1)
    r2 = await kv.update("counter", 2, r1)
    with pytest.raises(KVConflictError) as info:
        await kv.update("counter", 99, r1)  # stale revision
    assert (info.value.key, info.value.expected, info.value.actual) == ("counter", r1, r2)
    assert "expected it at revision 1, found it at revision 2" in str(info.value)
    assert await kv.value("counter") == 2
    with pytest.raises(KVConflictError) as absent:
        await kv.update("missing", 1, 5)
    assert absent.value.actual is None and not isinstance(absent.value, KeyExistsError)
    for bad in (0, -1, True, "1"):
        with pytest.raises(ValueError, match="revision must be a positive integer"):
            await kv.update("counter", 3, bad)  # type: ignore[arg-type]


async def test_delete_and_conditional_delete(store: SqliteStore) -> None:
    kv = store.bucket()
    r = await kv.put("k", 1)
    await kv.put("k", 2)
    with pytest.raises(KVConflictError):
        await kv.delete("k", revision=r)
    assert await kv.value("k") == 2
    assert await kv.delete("k") is True
    assert await kv.delete("k") is False
    assert await kv.get("k") is None
    # A deleted key never gets an old revision back (no ABA for compare-and-set).
    assert await kv.put("k", 3) > r + 1


async def test_keys_and_items_by_prefix(store: SqliteStore) -> None:
    kv = store.bucket("plans")
    for key in ("plans.BTC.2024-05-02", "plans.BTC.2024-05-01", "plans.ETH.2024-05-01", "other"):
        await kv.put(key, {"k": key})
    # A bucket's neighbour with a similar name is not listed.
    await store.bucket("plans2").put("plans.BTC.x", 1)
    assert await kv.keys() == [
        "other",
        "plans.BTC.2024-05-01",
        "plans.BTC.2024-05-02",
        "plans.ETH.2024-05-01",
    ]
    assert await kv.keys("plans.BTC.") == ["plans.BTC.2024-05-01", "plans.BTC.2024-05-02"]
    assert await kv.keys("plans.B") == ["plans.BTC.2024-05-01", "plans.BTC.2024-05-02"]
    assert await kv.keys("plans.BTC", reverse=True, limit=1) == ["plans.BTC.2024-05-02"]
    assert await kv.keys("zzz") == []
    assert await kv.keys("plans.", limit=0) == []
    items = await kv.items("plans.", reverse=True)
    assert [e.key for e in items] == [
        "plans.ETH.2024-05-01",
        "plans.BTC.2024-05-02",
        "plans.BTC.2024-05-01",
    ]
    assert items[0].value == {"k": "plans.ETH.2024-05-01"} and items[0].bucket == "plans"
    # '_' and '%' are not wildcards here (no LIKE).
    await kv.put("a_b", 1)
    await kv.put("axb", 1)
    assert await kv.keys("a_") == ["a_b"]
    with pytest.raises(InvalidKeyError, match="cannot start any valid key"):
        await kv.keys("a b")
    with pytest.raises(ValueError, match="limit"):
        await kv.keys("", limit=-1)


async def test_ttl_expires_entries(store: SqliteStore) -> None:
    kv = store.bucket()
    await kv.put("session", {"user": 1}, ttl=0.2)
    await kv.put("forever", 1)
    entry = await kv.get("session")
    assert entry is not None and entry.expires is not None
    assert entry.expires - entry.timestamp == pytest.approx(0.2)
    await asyncio.sleep(0.3)
    assert await kv.get("session") is None
    assert await kv.keys() == ["forever"]
    # An expired key is absent: create succeeds, update does not.
    with pytest.raises(KVConflictError):
        await kv.update("session", 2, entry.revision)
    assert await kv.create("session", 2) > entry.revision
    assert (await kv.get("session")).expires is None  # type: ignore[union-attr]
    for bad in (0, -1, "5", True):
        with pytest.raises(ValueError, match="ttl must be a positive number"):
            await kv.put("x", 1, ttl=bad)  # type: ignore[arg-type]


async def test_expired_rows_are_reclaimed(store: SqliteStore) -> None:
    kv = store.bucket()
    await kv.put("old", "x" * 1000, ttl=0.05)
    await asyncio.sleep(0.1)
    store._next_sweep = 0.0  # the next write sweeps (normally once a minute)
    await kv.put("new", 1)
    con = sqlite3.connect(store.path)  # type: ignore[arg-type]
    rows = con.execute("SELECT key FROM loom_kv").fetchall()
    con.close()
    assert rows == [("new",)]


async def test_modify_retries_until_no_update_is_lost(store: SqliteStore) -> None:
    kv = store.bucket()

    async def bump() -> None:
        await kv.modify("n", lambda n: (n or 0) + 1)

    await asyncio.gather(*(bump() for _ in range(50)))
    assert await kv.value("n") == 50


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must not be empty"),
        ("a b", "character ' ' is not allowed"),
        ("plans.*", "character '*' is not allowed"),
        ("plans.>", "character '>' is not allowed"),
        ("ünï", "character 'ü' is not allowed"),
        (".plans", "must not start or end with '.'"),
        ("plans.", "must not start or end with '.'"),
        ("plans..x", "empty token"),
        ("k" * 1025, "at most 1024"),
    ],
)
async def test_bad_keys_are_refused_with_the_reason(
    store: SqliteStore, key: str, message: str
) -> None:
    kv = store.bucket()
    with pytest.raises(InvalidKeyError, match=re.escape(message)) as info:
        await kv.put(key, 1)
    assert isinstance(info.value, ValueError) and isinstance(info.value, KVError)
    with pytest.raises(InvalidKeyError):
        await kv.get(key)


def test_valid_keys_follow_nats_kv() -> None:
    for key in ("a", "plans.BTC.2024-05-01T12=00", "a/b_c-d=e", "A.b.9", "k" * 1024):
        assert validate_key(key) == key
    with pytest.raises(InvalidKeyError, match="must be a string"):
        validate_key(5)


async def test_bad_bucket_names(store: SqliteStore) -> None:
    for name in ("", "a.b", "a b", "x" * 65):
        with pytest.raises(InvalidKeyError, match="bucket name"):
            store.bucket(name)


async def test_values_that_are_not_json_or_too_large(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "kv.sqlite3", max_value_size=100)
    kv = store.bucket()
    try:
        with pytest.raises(InvalidValueError, match=r"'k' is not JSON-serialisable.*set") as info:
            await kv.put("k", {"s": {1, 2}})
        assert isinstance(info.value, TypeError)
        with pytest.raises(InvalidValueError, match="float"):
            await kv.put("k", float("nan"))
        with pytest.raises(ValueTooLargeError) as big:
            await kv.put("k", "x" * 200)
        assert (big.value.size, big.value.limit) == (202, 100)
        assert "202 bytes encoded; the limit is 100 ([kv] max_value_size)" in str(big.value)
        assert "xxx" not in str(big.value)
        with pytest.raises(ValueTooLargeError):
            await kv.create("k", b"\0" * 101)
        await kv.put("k", b"\0" * 100)  # exactly the limit
        assert await kv.keys() == ["k"]
    finally:
        await store.close()


async def test_values_never_appear_in_reprs_errors_or_logs(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kv = store.bucket("secrets")
    secret = "sk-SECRET-0123456789"
    await kv.put("api", {"key": secret})
    entry = await kv.get("api")
    await kv.items()
    with pytest.raises(KVConflictError) as conflict:
        await kv.create("api", secret)
    texts = [repr(entry), str(entry), repr(kv), repr(store), str(conflict.value), caplog.text]
    assert all(secret not in t for t in texts), texts
    assert "value=<dict>" in repr(entry)


async def test_database_file_is_private_and_in_wal_mode(store: SqliteStore) -> None:
    await store.bucket().put("k", 1)
    assert store.path is not None
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


async def test_nothing_is_created_until_the_first_call(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "deep" / "kv.sqlite3")
    store.bucket("x")
    assert not (tmp_path / "deep").exists()
    await store.bucket("x").get("k")
    assert (tmp_path / "deep" / "kv.sqlite3").is_file()
    await store.close()


async def test_in_memory_store(tmp_path: Path) -> None:
    store = SqliteStore(None)
    await store.bucket().put("k", 1)
    assert await store.bucket().value("k") == 1
    await store.close()
    assert list(tmp_path.iterdir()) == []


async def test_closed_store_refuses_calls_but_finishes_pending_ones(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "kv.sqlite3")
    kv = store.bucket()
    writes = [asyncio.ensure_future(kv.put(f"k{i}", i)) for i in range(20)]
    await asyncio.sleep(0)
    await store.close()
    assert [await w for w in writes] == list(range(1, 21))
    with pytest.raises(KVClosedError, match="closed"):
        await kv.get("k1")
    await store.close()  # twice is fine
    reopened = SqliteStore(tmp_path / "kv.sqlite3")
    assert len(await reopened.bucket().keys()) == 20
    await reopened.close()


async def test_a_file_that_is_not_a_store_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    path.write_bytes(b"this is not a database, just text " * 100)
    store = SqliteStore(path)
    with pytest.raises(KVError, match=rf"key-value store {path}: file is not a database"):
        await store.bucket().get("k")
    await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    store = SqliteStore(path)
    await store.bucket().put("k", 1)
    await store.close()
    con = sqlite3.connect(path)
    con.execute("UPDATE loom_kv_meta SET value = '99' WHERE name = 'schema'")
    con.commit()
    con.close()
    newer = SqliteStore(path)
    with pytest.raises(
        KVError, match=re.escape("written by a newer Loom (schema 99; this one reads schema 1)")
    ):
        await newer.bucket().get("k")
    await newer.close()


def test_synchronous_must_be_known() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(None, synchronous="off")  # type: ignore[arg-type]
