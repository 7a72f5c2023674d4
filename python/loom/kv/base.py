"""The key-value interface, independent of where the data lives.

A *bucket* is a named set of keys. Keys follow the NATS KV rules, so a bucket can move
to JetStream KV unchanged: ``[-/_=.a-zA-Z0-9]+``, no leading or trailing dot, no empty
dot-separated token. Every write gives the key a new *revision*: an integer that grows
across the whole bucket (as a JetStream stream sequence does), so ``update(key, value,
revision)`` is a compare-and-set and ``create`` a put-if-absent (expected revision 0).

Values are JSON (anything :func:`json.dumps` accepts; read back as plain JSON types) or
bytes (read back as ``bytes``). They are encoded when the call is made — later changes
to the object are not stored — and checked against the store's ``max_value_size``.

Backends implement four primitives (``_load``, ``_write``, ``_remove``, ``_scan``); the
public methods here validate keys, encode values and implement the retry helper.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loom.errors import (
    InvalidKeyError,
    InvalidValueError,
    KeyExistsError,
    KVConflictError,
    ValueTooLargeError,
)

#: Default limit on one encoded value (NATS' default max payload is 1 MiB too).
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024

#: Longest key accepted (characters; keys are ASCII).
MAX_KEY_LENGTH = 1024

#: How many times :meth:`KeyValue.modify` retries a conflicting write by default.
DEFAULT_ATTEMPTS = 64

#: ``kind`` of a stored value.
JSON, BYTES = 0, 1

_KEY_CHARS = re.compile(r"[-/_=.a-zA-Z0-9]+")
_BUCKET_CHARS = re.compile(r"[-_a-zA-Z0-9]+")


def validate_key(key: object) -> str:
    """Returns ``key`` if it is a valid NATS KV key.

    Raises:
        InvalidKeyError: not a string, empty, too long, a character outside
            ``[-/_=.a-zA-Z0-9]``, a leading or trailing dot, or an empty token (``a..b``).
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"a key must be a string, not {type(key).__name__}")
    if _KEY_CHARS.fullmatch(key) and len(key) <= MAX_KEY_LENGTH and ".." not in key:
        if key[0] != "." and key[-1] != ".":
            return key
    if not key:
        raise InvalidKeyError("a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"key {key[:40]!r}... is {len(key)} characters; at most {MAX_KEY_LENGTH}"
        )
    bad = next((c for c in key if not _KEY_CHARS.fullmatch(c)), None)
    if bad is not None:
        raise InvalidKeyError(
            f"key {key!r}: character {bad!r} is not allowed (keys use "
            "letters, digits and - / _ = . like NATS KV; e.g. 'plans.BTC.2024-05-01')"
        )
    if key[0] == "." or key[-1] == ".":
        raise InvalidKeyError(f"key {key!r}: must not start or end with '.'")
    raise InvalidKeyError(f"key {key!r}: empty token between dots ('..')")


def validate_prefix(prefix: object) -> str:
    """Returns ``prefix`` if some valid key can start with it ('' lists everything)."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"a key prefix must be a string, not {type(prefix).__name__}")
    if prefix and (not _KEY_CHARS.fullmatch(prefix) or prefix[0] == "." or ".." in prefix):
        raise InvalidKeyError(f"prefix {prefix!r} cannot start any valid key")
    return prefix


def validate_bucket(name: object) -> str:
    """Returns ``name`` if it is a valid bucket name (NATS: ``[-_a-zA-Z0-9]+``).

    Raises:
        InvalidKeyError: it is not.
    """
    if isinstance(name, str) and _BUCKET_CHARS.fullmatch(name) and len(name) <= 64:
        return name
    raise InvalidKeyError(
        f"bucket name {name!r}: use 1-64 letters, digits, '-' or '_' (NATS KV bucket rules)"
    )


def encode(key: str, value: Any, limit: int) -> tuple[bytes, int]:
    """``(data, kind)`` for ``value``.

    Raises:
        InvalidValueError: neither bytes nor JSON-serialisable.
        ValueTooLargeError: the encoded value exceeds ``limit`` bytes.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data, kind = bytes(value), BYTES
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidValueError(
                f"value for key {key!r} is not JSON-serialisable or bytes "
                f"({type(value).__name__}: {_reason(exc)})"
            ) from None
        data, kind = text.encode(), JSON
    if len(data) > limit:
        raise ValueTooLargeError(key, len(data), limit)
    return data, kind


def _reason(exc: Exception) -> str:
    # json's messages name the offending type ("Object of type set is not ...") or say
    # "Out of range float values"; neither quotes the value itself.
    return str(exc).split("\n")[0][:120]


def decode(data: bytes, kind: int) -> Any:
    """The value stored as ``(data, kind)``."""
    return data if kind == BYTES else json.loads(data)


@dataclass(frozen=True, slots=True, repr=False)
class Entry:
    """One key's current value.

    ``revision`` is the bucket-wide sequence number of the write that produced it;
    ``timestamp`` when that write happened (seconds since the epoch); ``expires`` when
    the entry stops existing (None: never).
    """

    bucket: str
    key: str
    value: Any
    revision: int
    timestamp: float
    expires: float | None = None

    def __repr__(self) -> str:  # values may be secrets: never shown
        kind = "bytes" if isinstance(self.value, bytes) else type(self.value).__name__
        return (
            f"Entry(bucket={self.bucket!r}, key={self.key!r}, revision={self.revision}, "
            f"timestamp={self.timestamp:.3f}, value=<{kind}>)"
        )


#: A stored row as backends return it: key, data, kind, revision, timestamp, expires.
Row = tuple[str, bytes, int, int, float, "float | None"]


class KeyValue(ABC):
    """One bucket of a key-value store. Every method is a coroutine that does not block
    the event loop."""

    def __init__(self, bucket: str, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        self.bucket = validate_bucket(bucket)
        #: Largest encoded value accepted, in bytes.
        self.max_value_size = max_value_size

    def __repr__(self) -> str:
        return f"<{type(self).__name__} bucket={self.bucket!r}>"

    # -- backend primitives -------------------------------------------------------

    @abstractmethod
    async def _load(self, key: str) -> Row | None:
        """The live row of ``key``, if any."""

    @abstractmethod
    async def _write(
        self, key: str, data: bytes, kind: int, expect: int | None, ttl: float | None
    ) -> int:
        """Stores ``key`` and returns its new revision. ``expect``: None = any current
        state, 0 = must be absent, n = must be at revision n (else
        :class:`KVConflictError`/:class:`KeyExistsError`)."""

    @abstractmethod
    async def _remove(self, key: str, expect: int | None) -> bool:
        """Deletes ``key`` (``expect`` as for :meth:`_write`); whether it existed."""

    @abstractmethod
    async def _scan(self, prefix: str, limit: int | None, reverse: bool, values: bool) -> list[Row]:
        """Live rows whose key starts with ``prefix``, in key order (data empty unless
        ``values``)."""

    # -- reading ------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry of ``key``, or None if it is absent (never written, deleted or
        expired)."""
        row = await self._load(validate_key(key))
        return None if row is None else self._entry(row)

    async def value(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is absent."""
        entry = await self.get(key)
        return default if entry is None else entry.value

    async def keys(
        self, prefix: str = "", *, limit: int | None = None, reverse: bool = False
    ) -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix), sorted (descending with
        ``reverse``), at most ``limit``."""
        rows = await self._scan(validate_prefix(prefix), _limit(limit), reverse, False)
        return [row[0] for row in rows]

    async def items(
        self, prefix: str = "", *, limit: int | None = None, reverse: bool = False
    ) -> list[Entry]:
        """Entries whose key starts with ``prefix``, sorted by key (descending with
        ``reverse``), at most ``limit``."""
        rows = await self._scan(validate_prefix(prefix), _limit(limit), reverse, True)
        return [self._entry(row) for row in rows]

    # -- writing ------------------------------------------------------------------

    async def put(self, key: str, value: Any, *, ttl: float | None = None) -> int:
        """Sets ``key`` to ``value`` whatever its state; returns the new revision.
        ``ttl``: seconds until the entry expires (None: never).

        Raises:
            InvalidKeyError, InvalidValueError, ValueTooLargeError: see the module doc.
        """
        key = validate_key(key)
        data, kind = encode(key, value, self.max_value_size)
        return await self._write(key, data, kind, None, _ttl(ttl))

    async def create(self, key: str, value: Any, *, ttl: float | None = None) -> int:
        """Sets ``key`` only if it is absent (an expired or deleted key is absent);
        returns the new revision.

        Raises:
            KeyExistsError: the key exists (``.actual`` is its revision).
        """
        key = validate_key(key)
        data, kind = encode(key, value, self.max_value_size)
        return await self._write(key, data, kind, 0, _ttl(ttl))

    async def update(self, key: str, value: Any, revision: int, *, ttl: float | None = None) -> int:
        """Sets ``key`` only if it is still at ``revision`` (compare-and-set); returns
        the new revision.

        Raises:
            KVConflictError: the key is at another revision, or absent.
        """
        key = validate_key(key)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise ValueError(f"revision must be a positive integer, not {revision!r}")
        data, kind = encode(key, value, self.max_value_size)
        return await self._write(key, data, kind, revision, _ttl(ttl))

    async def delete(self, key: str, *, revision: int | None = None) -> bool:
        """Removes ``key``; returns whether it existed. With ``revision``, only if the
        key is still at that revision (else :class:`KVConflictError`)."""
        key = validate_key(key)
        if revision is not None and (isinstance(revision, bool) or revision < 1):
            raise ValueError(f"revision must be a positive integer, not {revision!r}")
        return await self._remove(key, revision)

    async def modify(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        ttl: float | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> int:
        """Read-modify-write without lost updates: calls ``fn(current value or None)``
        and writes its result with :meth:`update` (or :meth:`create` if the key was
        absent), retrying on a conflict. ``fn`` may run more than once: keep it pure.
        Returns the new revision.

        Raises:
            KVConflictError: still conflicting after ``attempts`` tries.
        """
        key = validate_key(key)
        last: KVConflictError | None = None
        for attempt in range(max(1, attempts)):
            entry = await self.get(key)
            new = fn(None if entry is None else entry.value)
            try:
                if entry is None:
                    return await self.create(key, new, ttl=ttl)
                return await self.update(key, new, entry.revision, ttl=ttl)
            except KVConflictError as exc:
                last = exc
                await asyncio.sleep(random.uniform(0, 0.0005 * 2 ** min(attempt, 8)))
        assert last is not None
        raise KVConflictError(
            key,
            last.expected,
            last.actual,
            f"key {key!r}: still conflicting after {attempts} attempts",
        )

    # -- helpers ------------------------------------------------------------------

    def _entry(self, row: Row) -> Entry:
        key, data, kind, revision, timestamp, expires = row
        return Entry(self.bucket, key, decode(data, kind), revision, timestamp, expires)


def _limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
    return limit


def _ttl(ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return float(ttl)


def conflict(key: str, expect: int, actual: int | None) -> KVConflictError:
    """The error for a conditional write that found ``actual`` (None: absent)."""
    if expect == 0 and actual is not None:
        return KeyExistsError(
            key, expect, actual, f"key {key!r} already exists (revision {actual})"
        )
    return KVConflictError(key, expect, actual)


__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "MAX_KEY_LENGTH",
    "Entry",
    "KeyValue",
    "conflict",
    "decode",
    "encode",
    "validate_bucket",
    "validate_key",
    "validate_prefix",
]
