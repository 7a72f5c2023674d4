"""Connecting a runtime to a NATS server: credentials, TLS, and a first connection
that fails fast and says why.

nats-py, told to reconnect forever, retries its *first* connection forever too: a wrong
password would be a silent loop. So the first connection gets ``[bus]
connect_timeout`` seconds. An error retrying cannot fix — the server refused the
credentials, the TLS handshake failed, the server offers no TLS where it is required —
ends it at once; an unreachable server is retried within that time (it may be starting
too). The error names what failed. Once connected, the client reconnects for as long as
it takes.

Credentials go to nats-py as options, never inside the server URLs it keeps (URL
credentials are moved out of them): they then reach servers discovered in a cluster,
and when TLS is required they are handed over only once the connection is encrypted —
a downgraded or impostor plain-text server gets nothing. Every message leaving this
module, error or log line, names the servers through :func:`~loom._secrets.redact_url`
and has the token and password scrubbed out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loom._secrets import MASK, redact_url
from loom.errors import BusError, ConfigError
from loom.nats.bridge import BusHost, NatsBridge
from loom.nats.settings import (
    BadFile,
    BusSettings,
    auth_problem,
    tls_context,
    url_credentials,
    without_credentials,
)

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger("loom.nats")

#: Secrets shorter than this are not scrubbed from texts (it would garble them, and
#: such a secret guards nothing).
_MIN_SCRUBBED = 3

_NO_TLS = (
    "the server does not offer TLS, which [bus] requires (a tls_* key or a tls:// URL); "
    "no credentials were sent"
)


async def connect(
    host: BusHost,
    url: str | None = None,
    *,
    settings: BusSettings | None = None,
    name: str | None = None,
) -> NatsBridge:
    """Connects ``host``'s bus (a :class:`~loom.Runtime`) to the NATS server at
    ``url`` (default: ``settings.nats``), authenticating as ``settings`` says; call it
    before starting agents. The bridge closes when the host stops.

    Raises:
        ConfigError: ``settings`` cannot work (conflicting credentials, a TLS file
            that cannot be loaded).
        BusError: no server could be joined within ``settings.connect_timeout``
            seconds, or one refused the credentials or the TLS handshake (the message
            says which).
    """
    from nats.aio.client import Client

    settings = settings or BusSettings(nats=url)
    url = url or settings.nats
    if not url:
        raise BusError("connect(): no NATS URL (give url= or [bus] nats)")
    if url != settings.nats:
        settings = settings.model_copy(update={"nats": url})
    shown = redact_url(url)
    problem = auth_problem(settings)
    if problem is not None:
        raise ConfigError(problem[0], key=f"bus.{problem[1]}")
    try:
        tls = tls_context(settings)
    except BadFile as exc:
        raise ConfigError(exc.message, key=f"bus.{exc.key}") from None
    scrub = _scrubber(settings)
    nc = Client()
    options = _credentials(nc, settings)
    loop = asyncio.get_running_loop()
    hopeless: asyncio.Future[BaseException] = loop.create_future()
    failures: list[BaseException] = []
    state = {"connected": False, "abandoned": False}
    closing: list[asyncio.Task[None]] = []

    async def on_error(exc: Exception) -> None:
        if state["abandoned"]:
            return
        if not state["connected"]:
            failures.append(exc)
            log.debug("nats %s: connection attempt failed: %s", shown, scrub(describe(exc)))
            if _is_hopeless(exc) and not hopeless.done():
                hopeless.set_result(exc)
            return
        log.warning("nats %s: %s", shown, scrub(describe(exc)))

    async def on_disconnected() -> None:
        if state["connected"] and not nc.is_closed:
            log.warning("nats %s: connection lost; reconnecting", shown)

    async def on_reconnected() -> None:
        where = nc.connected_url.geturl() if nc.connected_url else url
        if settings.wants_tls and not _encrypted(nc):
            log.error("nats %s: %s; closing the connection", redact_url(where), _NO_TLS)
            # Not awaited here: closing waits for the reconnection task running this.
            closing.append(loop.create_task(nc.close()))
            return
        log.info("nats: reconnected to %s", redact_url(where))

    attempt = loop.create_task(
        nc.connect(
            [without_credentials(s) for s in settings.servers],
            name=settings.name or name or "loom",
            # Each attempt gets part of the time, so a silent server leaves time for
            # the next one of a cluster.
            connect_timeout=max(1, math.ceil(settings.connect_timeout / 2)),
            reconnect_time_wait=2,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            tls=tls,
            **options,
        ),
        name="loom:nats-connect",
    )
    try:
        waiting: set[asyncio.Future[Any]] = {attempt, hopeless}
        await asyncio.wait(
            waiting,
            timeout=settings.connect_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    except BaseException:
        state["abandoned"] = True
        await _abandon(nc, attempt)
        raise
    failure: BaseException | None = None
    if not attempt.done():
        failure = hopeless.result() if hopeless.done() else None
    elif attempt.exception() is not None:
        failure = attempt.exception()
    elif settings.wants_tls and not _encrypted(nc):
        failure = BusError(_NO_TLS)
    if failure is not None or not attempt.done():
        state["abandoned"] = True
        await _abandon(nc, attempt)
        if failure is None and failures:
            reason = f"{describe(failures[-1])} (for {settings.connect_timeout:g} s)"
        elif failure is None:
            reason = f"no answer within {settings.connect_timeout:g} s"
        else:
            reason = describe(failure)
        raise BusError(f"cannot connect to NATS at {shown}: {scrub(reason)}") from None
    state["connected"] = True
    hopeless.cancel()
    bridge = NatsBridge(host, nc)
    await bridge.start()
    host.on_shutdown(bridge.close)
    log.info("bus joined to NATS at %s", shown)
    # Remote tools: this runtime's registry reaches other hosts' exports, and serves
    # its own `[tools] export` (docs/tool-hosts.md).
    from loom.nats.tool_host import start_tool_services

    await start_tool_services(host, nc, name=settings.name or name)
    from loom.nats.presence import start_presence

    await start_presence(host, nc, project=name or "loom", name=settings.name or name)
    return bridge


def describe(exc: BaseException) -> str:
    """What went wrong connecting, in words: ``authorization violation``, ``connection
    refused``, ``TLS handshake failed: ...``."""
    text = str(exc)
    if _is_auth(exc):
        return (
            "authorization violation: the server refused the credentials ([bus] token, "
            "user and password, nkey_seed, creds, or those in the URL)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS handshake failed: certificate verify failed ({exc.verify_message}): the "
            "server's certificate is not signed by a CA this client trusts (set [bus] "
            "tls_ca to the CA that signed it), or is not for this host name"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or text}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (no server listening there)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer (timed out)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return text.removeprefix("nats: ") or type(exc).__name__


def _is_auth(exc: BaseException) -> bool:
    from nats.errors import AuthorizationError

    return isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()


def _is_hopeless(exc: BaseException) -> bool:
    """Whether retrying cannot help: refused credentials, a failed TLS handshake, a
    server without the TLS [bus] requires."""
    return _is_auth(exc) or isinstance(exc, (ssl.SSLError, _tls_required()))


@functools.cache
def _tls_required() -> type[Exception]:
    """The error a credential callback raises on a plain-text connection: a nats-py
    error, so the client treats it as a failed attempt (and tries the next server)."""
    from nats.errors import Error

    class TLSRequired(Error):
        def __str__(self) -> str:
            return _NO_TLS

    return TLSRequired


def _encrypted(nc: Client) -> bool:
    # nats-py switches to TLS exactly when the server's INFO requires it, before it
    # sends CONNECT; it offers no public way to ask.
    return bool(nc._server_info.get("tls_required"))


def _credentials(nc: Client, settings: BusSettings) -> dict[str, Any]:
    """nats-py's options for ``settings``' credentials. Secrets are handed over by
    callables that, when TLS is required, refuse a plain-text connection."""

    def handed(secret: str) -> str | Callable[[], str]:
        if not settings.wants_tls:
            return secret

        def give() -> str:
            if not _encrypted(nc):
                raise _tls_required()()
            return secret

        return give

    options: dict[str, Any] = {}
    in_url = url_credentials(settings.servers)
    if settings.token is not None:
        options["token"] = handed(settings.token.get_secret_value())
    elif settings.user is not None and settings.password is not None:
        options["user"] = settings.user
        options["password"] = handed(settings.password.get_secret_value())
    elif in_url is not None:
        user, password = in_url
        if password is None:
            options["token"] = handed(user)
        else:
            options["user"] = user
            options["password"] = handed(password)
    if settings.nkey_seed:
        options["nkeys_seed"] = settings.nkey_seed
    if settings.creds:
        options["user_credentials"] = settings.creds
    return options


def _scrubber(settings: BusSettings) -> Callable[[str], str]:
    """A function taking ``settings``' secrets (and credentials in its URLs) out of a
    text."""
    url = settings.nats or ""
    raw = [url, *(p.strip() for p in url.split(","))]
    urls = [(u, redact_url(u)) for u in raw if u]
    secrets: set[str] = set()
    for secret in (settings.token, settings.password):
        if secret is not None:
            secrets.add(secret.get_secret_value())
    for server in settings.servers:
        try:
            parts = urlsplit(server)
        except ValueError:
            continue
        if parts.password is not None:
            secrets.add(parts.password)
        elif parts.username is not None:
            secrets.add(parts.username)  # a token
    in_url = url_credentials(settings.servers)
    if in_url is not None:
        secrets.add(in_url[1] if in_url[1] is not None else in_url[0])
    scrubbed = sorted((s for s in secrets if len(s) >= _MIN_SCRUBBED), key=len, reverse=True)

    def scrub(text: str) -> str:
        for u, shown in urls:
            text = text.replace(u, shown)
        for secret in scrubbed:
            text = text.replace(secret, MASK)
        return text

    return scrub


async def _abandon(nc: Client, attempt: asyncio.Task[None]) -> None:
    """Stops a first connection that did not work, and whatever it left running."""
    attempt.cancel()
    await asyncio.gather(attempt, return_exceptions=True)
    try:
        await nc.close()
    except Exception as exc:  # a client that never connected may not close cleanly
        log.debug("nats: closing an unconnected client: %s", type(exc).__name__)
