"""The bus across processes and machines, over NATS.

:class:`NatsBridge` joins a runtime's in-process bus to a NATS server, so agents in
different processes talk with the same API (``ctx.emit``, ``ctx.request``, queue
groups, ``ctx.gather``...). Topics are NATS subjects already (same syntax), so the
mapping is 1:1:

* every event published locally is also published to NATS;
* for every local subscription the bridge subscribes to the same subject on NATS, and
  injects what arrives from *other* processes into the local bus, marked so it is not
  sent out again;
* a queue group becomes a NATS queue subscription, and NATS alone picks the member:
  local publishes skip local groups (``Bus.set_remote_groups``), and whichever process
  NATS hands the event to — this one included — serves it with one of its members.
  So a pool of workers spread over machines gets each job exactly once.

The envelope travels in one NATS header (``Loom``, see :mod:`loom.nats.codec`) next to
the event's own headers — the W3C ``traceparent`` among them, so a trace continues
across processes. The payload is JSON (pydantic models and dataclasses are
converted); ``bytes`` travel raw. A payload that cannot be encoded is logged and not
sent.

Enable it in loom.toml (``[bus] nats = "nats://127.0.0.1:4222"``) or call
:func:`connect` yourself before starting agents.
"""

from loom.nats.bridge import BusHost, NatsBridge
from loom.nats.codec import REMOTE, decode, encode
from loom.nats.connection import connect
from loom.nats.jetstream import JetStreamLink, enable_jetstream

__all__ = [
    "REMOTE",
    "BusHost",
    "JetStreamLink",
    "NatsBridge",
    "connect",
    "decode",
    "enable_jetstream",
    "encode",
]
