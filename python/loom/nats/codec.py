"""Events as NATS messages.

The envelope travels in one header, ``Loom``: a compact JSON array ``[version, type,
id, source, correlation_id, reply_to, thread_id, ttl, timestamp_ns, encoding,
origin]``, next to the event's own headers (the W3C ``traceparent`` among them). One
header rather than one per field: the NATS client validates and parses every header
line in Python, so the per-message cost grows with their number. The payload is JSON
(pydantic models and dataclasses are converted); ``bytes`` travel raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json, to_json

from loom._core import Envelope
from loom.bus import DEFAULT_TTL
from loom.errors import BusError

#: Marks events that came from NATS, so the bridge does not send them back out.
REMOTE = "loom-remote"
#: The header holding the envelope.
HEADER = "Loom"
#: Set on events that came from NATS: the publisher's event id.
REMOTE_ID = "loom-remote-id"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Meta:
    """What a message says of itself beyond the ``Bus.publish`` arguments."""

    #: The publisher's event id.
    id: str | None
    timestamp_ns: int | None
    #: The process that published it (:attr:`NatsBridge.origin`), to skip echoes.
    origin: str | None


def encode(
    event: Envelope, origin: str | None = None, headers: dict[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """An envelope as a NATS payload and headers (``headers``: a copy of
    ``event.headers`` the caller already holds; it is modified).

    Raises:
        BusError: the payload is not JSON-serialisable.
    """
    if headers is None:
        headers = event.headers
    headers.pop(REMOTE, None)
    headers.pop(REMOTE_ID, None)
    payload = event.payload
    raw = isinstance(payload, (bytes, bytearray, memoryview))
    headers[HEADER] = to_json(
        [
            _VERSION,
            event.type,
            event.id,
            event.source,
            event.correlation_id,
            event.reply_to,
            event.thread_id,
            event.ttl,
            event.timestamp_ns,
            1 if raw else 0,
            origin,
        ]
    ).decode()
    if raw:
        return bytes(payload), headers
    try:
        return to_json(payload), headers
    except Exception as exc:
        raise BusError(
            f"event {event.id} on {event.topic!r}: payload of type "
            f"{type(payload).__name__} is not JSON-serialisable ({exc})"
        ) from None


def decode_message(
    subject: str, data: bytes, headers: dict[str, str] | None
) -> tuple[dict[str, Any], Meta]:
    """Keyword arguments for ``Bus.publish`` from a NATS message, and its :class:`Meta`.

    A message without the ``Loom`` header (published by another NATS client) is an
    ``event`` with a JSON payload, or the raw bytes when they are not JSON.

    Raises:
        ValueError: a malformed ``Loom`` header, or a newer envelope version.
    """
    h = dict(headers) if headers else {}
    env = h.pop(HEADER, None)
    if env is None:
        fields: list[Any] = [_VERSION, "event", None, None, None, None, None, DEFAULT_TTL]
        fields += [None, None, None]
        foreign = True
    else:
        fields = from_json(env)
        if not isinstance(fields, list) or len(fields) < 11:
            raise ValueError(f"malformed {HEADER} header")
        if fields[0] != _VERSION:
            raise ValueError(f"envelope version {fields[0]!r} (this Loom reads {_VERSION})")
        foreign = False
    if fields[9]:
        payload: Any = data
    elif data:
        try:
            payload = from_json(data)
        except ValueError:
            if not foreign:
                raise
            payload = data
    else:
        payload = None
    h[REMOTE] = "1"
    if fields[2]:
        h[REMOTE_ID] = fields[2]
    ttl = fields[7] if isinstance(fields[7], int) else DEFAULT_TTL
    kwargs = {
        "topic": subject,
        "type": fields[1] or "event",
        "payload": payload,
        "source": fields[3],
        "correlation_id": fields[4],
        "reply_to": fields[5],
        "thread_id": fields[6],
        "ttl": max(ttl - 1, 0),  # crossing NATS is a hop
        "headers": h,
    }
    stamp = fields[8] if isinstance(fields[8], int) else None
    return kwargs, Meta(fields[2], stamp, fields[10])


def decode(subject: str, data: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for ``Bus.publish`` from a NATS message."""
    return decode_message(subject, data, headers)[0]
