"""A small key-value store for agents: ``ctx.kv(bucket)`` (see docs/kv.md).

Buckets of keys with NATS-KV-compatible names, revisions for compare-and-set, optional
per-entry TTL; JSON or bytes values. The embedded backend is SQLite
(:class:`SqliteStore`, ``.loom/kv.sqlite3`` of the project); the interface
(:class:`KeyValue`) is the one a JetStream KV backend will implement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom.errors import (
    InvalidKeyError,
    InvalidValueError,
    KeyExistsError,
    KVClosedError,
    KVConflictError,
    KVError,
    ValueTooLargeError,
)
from loom.kv.base import DEFAULT_MAX_VALUE_SIZE, MAX_KEY_LENGTH, Entry, KeyValue, validate_key
from loom.kv.sqlite import SqliteBucket, SqliteStore

if TYPE_CHECKING:
    from loom.config import ProjectConfig


def open_store(project: ProjectConfig | None) -> SqliteStore:
    """The store ``[kv]`` of ``project`` describes (nothing is opened until the first
    call): the project's ``.loom/kv.sqlite3`` by default, in memory without a project
    file."""
    if project is None:
        return SqliteStore(None)
    spec = project.kv
    return SqliteStore(
        project.kv_path, synchronous=spec.synchronous, max_value_size=spec.max_value_size
    )


__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "MAX_KEY_LENGTH",
    "Entry",
    "InvalidKeyError",
    "InvalidValueError",
    "KVClosedError",
    "KVConflictError",
    "KVError",
    "KeyExistsError",
    "KeyValue",
    "SqliteBucket",
    "SqliteStore",
    "ValueTooLargeError",
    "open_store",
    "validate_key",
]
