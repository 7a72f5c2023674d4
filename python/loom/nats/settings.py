"""``[bus]``: the NATS connection (URL, credentials, TLS) and ``[bus.jetstream]``, the
stream behind ``reliable`` subscriptions. Validated when loom.toml is read; every error
names the file, line and key."""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from loom.config import ProjectConfig

#: Stream and consumer names: what NATS accepts in a subject token, kept short.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JetStreamSettings(_Strict):
    """``[bus.jetstream]``: where ``reliable`` events are stored (see docs/nats.md)."""

    #: ``false`` keeps ``reliable`` subscriptions on core NATS (at most once).
    enabled: bool = True
    #: The stream's name; created at start if missing, else its subjects are checked
    #: and extended.
    stream: str = "LOOM"
    #: Subjects stored besides those of the ``reliable`` subscriptions (added as they
    #: subscribe) and ``<dlq_prefix>.>``.
    subjects: list[str] = Field(default_factory=list)
    #: ``limits`` (keep until the limits below), ``interest`` (until every consumer
    #: acked), ``workqueue`` (until one consumer acked; one consumer per subject).
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    replicas: int = Field(default=1, ge=1, le=5)
    #: Limits of the stream (-1: none).
    max_msgs: int = Field(default=-1, ge=-1)
    max_bytes: int = Field(default=-1, ge=-1)
    #: Seconds a stored event is kept (0: forever).
    max_age: float = Field(default=7 * 24 * 3600.0, ge=0)
    #: Seconds within which a re-published event id is stored only once.
    duplicate_window: float = Field(default=120.0, gt=0)
    #: What a reliable subscription's consumer gets the first time it is created:
    #: ``all`` stored events on its subjects (work published before any worker ran is
    #: not lost) or only ``new`` ones. Later starts continue where it stopped.
    deliver: Literal["all", "new"] = "all"
    #: Seconds after which the server deletes a consumer no process has used (an
    #: agent that is gone for good); 0: never.
    consumer_inactive_threshold: float = Field(default=7 * 24 * 3600.0, ge=0)
    #: Delivery attempts before an event goes to the dead-letter subject.
    max_deliver: int = Field(default=5, ge=1)
    #: Seconds the server waits for an ack before redelivering (a running handler
    #: extends it while it works).
    ack_wait: float = Field(default=30.0, gt=0)
    #: Delays before redelivering a failed event, in seconds (the last repeats).
    backoff: list[float] = Field(default_factory=lambda: [1.0, 5.0, 30.0])
    #: Unacked events one consumer may hold; a stalled consumer holds at most this many.
    max_ack_pending: int = Field(default=1000, ge=1)
    #: Seconds a publish to a stored subject waits for the server's ack.
    publish_timeout: float = Field(default=5.0, gt=0)
    #: Failed events go to ``<dlq_prefix>.<topic>``, with the error in headers.
    dlq_prefix: str = "loom.dlq"

    @field_validator("stream")
    @classmethod
    def _stream_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("letters, digits, '_' and '-' only (at most 64)")
        return v

    @field_validator("backoff")
    @classmethod
    def _backoff(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v):
            raise ValueError("a non-empty list of seconds, none negative")
        return v


class BusSettings(_Strict):
    """``[bus]``. Credentials accept ``${VAR}``; they never appear in logs or errors."""

    #: ``nats://host:4222`` (several, comma-separated, for a cluster); unset: the bus
    #: stays in this process.
    nats: str | None = None
    #: Name this process shows on the server (default: the project's name).
    name: str | None = None
    #: Authentication: a token; or user and password; or an NKey seed file; or a
    #: ``.creds`` file (JWT + NKey).
    token: str | None = None
    user: str | None = None
    password: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    #: TLS: the CA that signed the server's certificate, and a client certificate.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Seconds the first connection may take before ``loom run`` fails.
    connect_timeout: float = Field(default=5.0, gt=0)
    jetstream: JetStreamSettings = Field(default_factory=JetStreamSettings)

    @field_validator("nats", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Any:
        if v is not None and not (isinstance(v, str) and "://" in v):
            raise ValueError("must be a URL string such as 'nats://127.0.0.1:4222'")
        return v


def bus_settings(project: ProjectConfig) -> BusSettings:
    """``project``'s ``[bus]`` table, validated.

    Raises:
        ConfigError: an unknown key or a bad value (file, line and key).
    """
    table: dict[str, Any] = dict(project.bus)
    try:
        return BusSettings.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        keys = [str(k) for k in first["loc"] if isinstance(k, str)]
        if first["type"] == "extra_forbidden":
            model: type[BaseModel] = JetStreamSettings if len(keys) > 1 else BusSettings
            close = difflib.get_close_matches(keys[-1], sorted(model.model_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key {keys[-1]!r}{hint}"
        else:
            message = first["msg"].removeprefix("Value error, ")
        raise project.error(message, "bus", *keys) from None
