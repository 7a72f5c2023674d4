"""``[bus]``: the NATS connection (URL, credentials, TLS) and ``[bus.jetstream]``, the
stream behind ``reliable`` subscriptions. Validated when loom.toml is read; every error
names the file, line and key."""

from __future__ import annotations

import difflib
import importlib.util
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from loom._envvars import environment, expand
from loom._secrets import redacted
from loom.errors import MissingEnvironmentVariable

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
    """``[bus]``: where the NATS server is and how to authenticate to it.

    In loom.toml every string accepts ``${VAR}`` / ``${VAR:-default}`` (the environment
    over the project's ``.env``) and file paths are relative to the project directory
    (:func:`bus_settings`). ``repr``/``str`` mask the token, the password and URL
    credentials; they never appear in logs or errors either (see docs/nats-security.md).
    """

    #: ``nats://host:4222`` (several, comma-separated, for a cluster; ``tls://`` asks
    #: for TLS); unset: the bus stays in this process.
    nats: str | None = None
    #: Name this process shows on the server (default: the project's name).
    name: str | None = None
    #: Authentication, one way only: a token; or user and password; or an NKey seed
    #: file; or a ``.creds`` file (JWT + NKey seed) — or credentials in the URL.
    token: SecretStr | None = None
    user: str | None = None
    password: SecretStr | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    #: TLS: the CA that signed the server's certificate (default: the system's), and
    #: a client certificate and its key for servers that verify clients. Any of them
    #: (or a ``tls://`` URL) makes TLS required: a server that does not offer it is
    #: refused before any credential is sent.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Seconds the first connection may take before ``loom run`` fails.
    connect_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    jetstream: JetStreamSettings = Field(default_factory=JetStreamSettings)

    @field_validator("nats", mode="before")
    @classmethod
    def _url(cls, v: Any) -> Any:
        if v is not None and not (isinstance(v, str) and "://" in v):
            raise ValueError("must be a URL string such as 'nats://127.0.0.1:4222'")
        return v

    def __repr_args__(self) -> Any:
        for key, value in self:
            yield key, redacted(value, key)

    @property
    def servers(self) -> list[str]:
        """The servers of :attr:`nats`, each a URL (``nats://`` added where missing)."""
        return split_servers(self.nats or "")

    @property
    def wants_tls(self) -> bool:
        """Whether TLS is required (a ``tls_*`` key or a ``tls://`` server)."""
        return bool(self.tls_ca or self.tls_cert or self.tls_key) or any(
            u.startswith("tls://") for u in self.servers
        )


def split_servers(url: str) -> list[str]:
    """``url``'s comma-separated servers, each with a scheme."""
    pieces = [p.strip() for p in url.split(",")]
    return [p if "://" in p else f"nats://{p}" for p in pieces if p]


def url_credentials(servers: list[str]) -> tuple[str, str | None] | None:
    """The ``user:password`` (or token: ``(token, None)``) the server URLs carry,
    percent-decoded; ``None`` when they carry none.

    Raises:
        ValueError: the servers carry different credentials.
    """
    found: set[tuple[str, str | None]] = set()
    for server in servers:
        try:
            parts = urlsplit(server)
        except ValueError:
            continue
        if parts.username is not None:
            password = None if parts.password is None else unquote(parts.password)
            found.add((unquote(parts.username), password))
    if len(found) > 1:
        raise ValueError("its servers carry different credentials (use the same for all)")
    return found.pop() if found else None


def without_credentials(server: str) -> str:
    """``server`` without the ``user:password@`` (or ``token@``) of its URL."""
    parts = urlsplit(server)
    if "@" not in parts.netloc:
        return server
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


#: The keys naming files; relative paths are relative to the project directory.
FILE_KEYS = ("nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key")

#: An NKey seed (``SU...``, ``SA...``): what ``nkey_seed`` holds the *path* of.
_SEED_RE = re.compile(r"^S[A-Z][A-Z2-7]{40,}$")


def auth_problem(settings: BusSettings) -> tuple[str, str] | None:
    """Why ``settings``' authentication keys cannot go together, and the key to point
    at; ``None`` when they can."""
    if (settings.user is None) != (settings.password is None):
        given, lacking = ("user", "password") if settings.password is None else ("password", "user")
        return f"{given} needs {lacking} too", given
    try:
        in_url = url_credentials(settings.servers)
    except ValueError as exc:
        return str(exc), "nats"
    ways = [
        key
        for key, value in (
            ("token", settings.token),
            ("user/password", settings.user),
            ("nkey_seed", settings.nkey_seed),
            ("creds", settings.creds),
            ("nats", in_url),
        )
        if value is not None
    ]
    if len(ways) > 1:
        a, b = (("credentials in the nats URL" if w == "nats" else w) for w in ways[:2])
        key = ways[1] if ways[1] != "user/password" else "user"
        return f"{a} and {b} are both set: authenticate one way only", key
    if settings.tls_key and not settings.tls_cert:
        return "tls_key needs tls_cert (the client certificate it belongs to)", "tls_key"
    return None


class BadFile(Exception):
    """A file a ``[bus]`` key names cannot be used (``key`` says which)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def check_file(key: str, value: str, root: Path) -> Path:
    """The file ``value`` of ``key``, resolved against ``root``.

    Raises:
        BadFile: it is missing, or ``value`` is the secret itself instead of a path
            (then the message does not repeat it).
    """
    if _SEED_RE.match(value.strip()) or "-----BEGIN" in value or "\n" in value:
        raise BadFile(key, "must be the path of a file, not its contents (not shown)")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise BadFile(key, f"no such file: {path}")
    return path


def tls_context(settings: BusSettings) -> ssl.SSLContext | None:
    """The client's TLS context when TLS is required (``None``: nats-py's default,
    used if a server asks for TLS on its own).

    Raises:
        BadFile: a CA, certificate or key that cannot be loaded.
    """
    if not settings.wants_tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=settings.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise BadFile(
            "tls_ca", f"cannot load the CA {settings.tls_ca}: {_ssl_reason(exc)}"
        ) from None
    if settings.tls_cert:
        try:
            ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            key = "tls_key" if settings.tls_key else "tls_cert"
            raise BadFile(
                key, f"cannot load the client certificate and key: {_ssl_reason(exc)}"
            ) from None
    return ctx


def _ssl_reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc.strerror or exc)


def bus_settings(project: ProjectConfig) -> BusSettings:
    """``project``'s ``[bus]`` table, validated: ``${VAR}`` expanded from the
    environment over the project's ``.env``, file paths resolved against the project
    directory and checked, the authentication keys checked to go together and the
    TLS files loaded — all before anything connects.

    Raises:
        ConfigError: an unknown key, a bad value, an unset variable
            (:class:`~loom.errors.MissingEnvironmentVariable`), conflicting keys, a
            missing or unreadable file (file, line and key).
    """
    table: dict[str, Any] = dict(project.bus)
    env = environment(project.root)
    for key, value in table.items():
        if isinstance(value, str):
            table[key] = _expand(project, env, key, value)
    try:
        settings = BusSettings.model_validate(table)
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
    problem = auth_problem(settings)
    if problem is not None:
        raise project.error(problem[0], "bus", problem[1])
    try:
        paths = {
            key: str(check_file(key, value, project.root))
            for key in FILE_KEYS
            if isinstance(value := getattr(settings, key), str)
        }
        settings = settings.model_copy(update=paths)
        tls_context(settings)
    except BadFile as exc:
        raise project.error(exc.message, "bus", exc.key) from None
    if settings.nkey_seed or settings.creds:
        if importlib.util.find_spec("nkeys") is None:  # nats-py signs the nonce with it
            key = "nkey_seed" if settings.nkey_seed else "creds"
            raise project.error(
                "needs the nkeys package (pip install nkeys, or nats-py[nkeys])", "bus", key
            )
    return settings


def _expand(project: ProjectConfig, env: Mapping[str, str], key: str, value: str) -> str:
    def missing(var: str) -> NoReturn:
        raise MissingEnvironmentVariable(
            var,
            f"environment variable {var} is not set (referenced as ${{{var}}}); "
            "nothing was connected",
            path=str(project.path) if project.path else None,
            line=project.line_of("bus", key),
            key=f"bus.{key}",
        )

    return expand(value, env, missing)
