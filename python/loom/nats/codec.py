"""Events as NATS messages: the envelope in ``Loom-*`` headers, the payload as JSON
(``bytes`` raw)."""

from __future__ import annotations

import json
from typing import Any

from loom._core import Envelope
from loom.bus import DEFAULT_TTL
from loom.errors import BusError

#: Marks events that came from NATS, so the bridge does not send them back out.
REMOTE = "loom-remote"
#: Header naming the process that published a message (its echo is skipped).
ORIGIN = "Loom-Origin"
_PREFIX = "Loom-"
_FIELDS = ("Type", "Id", "Source", "Correlation-Id", "Reply-To", "Thread-Id", "Ttl", "Timestamp")


def encode(event: Envelope) -> tuple[bytes, dict[str, str]]:
    """An envelope as a NATS payload and headers.

    Raises:
        BusError: the payload is not JSON-serialisable.
    """
    headers = {k: v for k, v in event.headers.items() if k != REMOTE}
    headers[f"{_PREFIX}Type"] = event.type
    headers[f"{_PREFIX}Id"] = event.id
    headers[f"{_PREFIX}Ttl"] = str(event.ttl)
    headers[f"{_PREFIX}Timestamp"] = str(event.timestamp_ns)
    for name, value in (
        ("Source", event.source),
        ("Correlation-Id", event.correlation_id),
        ("Reply-To", event.reply_to),
        ("Thread-Id", event.thread_id),
    ):
        if value is not None:
            headers[f"{_PREFIX}{name}"] = value
    payload = event.payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        headers[f"{_PREFIX}Encoding"] = "bytes"
        return bytes(payload), headers
    try:
        from pydantic_core import to_json

        return to_json(payload), headers
    except Exception as exc:
        raise BusError(
            f"event {event.id} on {event.topic!r}: payload of type "
            f"{type(payload).__name__} is not JSON-serialisable ({exc})"
        ) from None


def decode(subject: str, data: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for ``Bus.publish`` from a NATS message."""
    h = dict(headers or {})
    fields = {name: h.pop(f"{_PREFIX}{name}", None) for name in _FIELDS}
    encoding = h.pop(f"{_PREFIX}Encoding", None)
    if encoding == "bytes":
        payload: Any = data
    elif data:
        payload = json.loads(data)
    else:
        payload = None
    h[REMOTE] = "1"
    if fields["Id"]:
        h["loom-remote-id"] = fields["Id"]
    return {
        "topic": subject,
        "type": fields["Type"] or "event",
        "payload": payload,
        "source": fields["Source"],
        "correlation_id": fields["Correlation-Id"],
        "reply_to": fields["Reply-To"],
        "thread_id": fields["Thread-Id"],
        "ttl": max(int(fields["Ttl"] or DEFAULT_TTL) - 1, 0),  # crossing NATS is a hop
        "headers": h,
    }
