"""Errors raised by :mod:`loom.llm`.

One tree under :class:`LLMError` (itself a :class:`loom.errors.LoomError`), modelled on
httpx's and openai-python's: transport failures are :class:`LLMConnectionError` (with
:class:`LLMConnectError`, :class:`LLMReadError` and :class:`LLMTimeoutError` below it),
HTTP error statuses are :class:`LLMStatusError` with a subclass per status family, and a
body we cannot understand is :class:`LLMResponseError`.

The transport and status errors are also the httpx exceptions code written against a
bare ``httpx`` client catches (the original Loom's docs do): ``LLMStatusError`` is an
``httpx.HTTPStatusError`` with ``.request`` and ``.response``, ``LLMTimeoutError`` an
``httpx.TimeoutException``, ``LLMConnectError`` an ``httpx.ConnectError``,
``LLMReadError`` an ``httpx.ReadError``, and every ``LLMConnectionError`` an
``httpx.TransportError``. As in httpx, a timeout is not a ``ConnectError``.

No exception ever carries an API key: bodies and messages are scrubbed with
:func:`redact` before they are stored, and the ``.request`` attached to an error is a
copy with only the method and the URL (no headers, no userinfo, query values masked).
Every error pickles (to cross a process boundary) with its attributes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import httpx

from loom._secrets import redact_url
from loom.errors import LoomError

from ._constants import MAX_ERROR_BODY_CHARS


def _restore(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """Unpickle an error without calling its (keyword-only) ``__init__``."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    return exc


class LLMError(LoomError):
    """Base class of every error raised by the LLM client."""

    #: Name of the provider (``[llm.<name>]``) the error came from, when known.
    provider: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as ``cls(*args)``, which keyword-only arguments break; the
        # attributes (already redacted) travel as the state instead.
        return (_restore, (type(self), self.args), dict(self.__dict__))


def public_request(method: str, url: str | httpx.URL) -> httpx.Request:
    """The ``.request`` attached to an error: method and URL only, without headers
    (the API key), userinfo or query values."""
    safe = httpx.URL(redact_url(str(url)))
    if safe.userinfo:
        safe = safe.copy_with(userinfo=b"")
    return httpx.Request(method, safe)


class LLMConnectionError(LLMError, httpx.TransportError, ConnectionError):
    """The server could not be reached, or the connection broke mid-response.

    Also an ``httpx.TransportError`` and a ``ConnectionError``; ``.request`` is the
    request that failed (method and URL only) when there was one.
    """

    def __init__(
        self, message: str, *, provider: str | None = None, request: httpx.Request | None = None
    ) -> None:
        self.provider = provider
        super().__init__(message)
        self._request = request


class LLMConnectError(LLMConnectionError, httpx.ConnectError):
    """No connection could be made (refused, unknown host, unreachable); also an
    ``httpx.ConnectError``."""


class LLMReadError(LLMConnectionError, httpx.ReadError):
    """The connection broke while the response was being read; also an
    ``httpx.ReadError``."""


class LLMTimeoutError(LLMConnectionError, httpx.TimeoutException, TimeoutError):
    """Connecting, or waiting for the next bytes of the response, took too long; also an
    ``httpx.TimeoutException`` and a ``TimeoutError``."""


def _response_content(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


#: Headers that describe the body as it was on the wire, not as the error keeps it.
_BODY_FRAMING = frozenset({"content-length", "content-encoding", "transfer-encoding"})


class LLMStatusError(LLMError, httpx.HTTPStatusError):
    """The server answered with an HTTP error status.

    Also an ``httpx.HTTPStatusError``: ``.response`` is an ``httpx.Response`` with the
    status, the headers and the (scrubbed, bounded) body, ``.request`` the request
    (method and URL only) when it is known.

    Attributes:
        status_code: The HTTP status.
        request_id: The server's request id (``x-request-id`` and friends), if any.
        body: The decoded error body (JSON object or text), API keys removed.
        headers: The response headers (``retry-after`` and friends).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: Any = None,
        provider: str | None = None,
        headers: dict[str, str] | None = None,
        request: httpx.Request | None = None,
    ) -> None:
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.provider = provider
        self.headers = headers or {}
        response = httpx.Response(
            status_code,
            headers={k: v for k, v in self.headers.items() if k.lower() not in _BODY_FRAMING},
            content=_response_content(body),
            request=request,
        )
        # httpx types ``request`` as required; None leaves ``.request`` unset, as httpx's
        # own errors do when there is none ("The .request property has not been set").
        super().__init__(message, request=cast(httpx.Request, request), response=response)


class BadRequestError(LLMStatusError):
    """400 or 422: the server rejected the request; retrying will not help."""


class AuthenticationError(LLMStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(LLMStatusError):
    """403: the key is valid but may not use this model or endpoint."""


class NotFoundError(LLMStatusError):
    """404: wrong ``base_url`` or unknown model."""


class RateLimitError(LLMStatusError):
    """429: rate limited, and the retries (if any) ran out."""


class ServerError(LLMStatusError):
    """5xx: the server failed, and the retries (if any) ran out."""


class LLMResponseError(LLMError):
    """The server answered 2xx but the body (JSON or SSE) is malformed or too large."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        self.provider = provider
        super().__init__(message)


class StructuredOutputError(LLMError):
    """``call_json`` got no schema-valid JSON after all its attempts.

    Attributes:
        raw_text: The model's last answer.
        errors: The last validation error, as text.
        attempts: How many answers were tried.
    """

    def __init__(self, message: str, *, raw_text: str, errors: str, attempts: int) -> None:
        self.raw_text = raw_text
        self.errors = errors
        self.attempts = attempts
        super().__init__(message)


class BudgetExceeded(LLMError):
    """The provider's ``budget_usd`` is spent; no further request is sent.

    Attributes:
        spent_usd: What was spent so far.
        budget_usd: The configured budget.
    """

    def __init__(
        self, message: str, *, spent_usd: float, budget_usd: float, provider: str | None = None
    ) -> None:
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd
        self.provider = provider
        super().__init__(message)


class LocalServerError(LLMError):
    """The local llama.cpp server could not be started (the message ends with its log)."""


_STATUS_CLASSES: dict[int, type[LLMStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[LLMStatusError]:
    """The most specific :class:`LLMStatusError` subclass for an HTTP status."""
    if status_code >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status_code, LLMStatusError)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """Return ``value`` with every secret replaced by ``***``, recursing into JSON.

    Servers sometimes echo the key back ("Incorrect API key provided: sk-..."), so error
    bodies are scrubbed before they reach an exception, a log line or a span.
    """
    secrets = [s for s in secrets if s and len(s) >= 4]
    if not secrets:
        return value
    if isinstance(value, str):
        for s in secrets:
            if s in value:
                value = value.replace(s, "***")
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value


def make_status_error(
    status_code: int,
    body: Any,
    *,
    request_id: str | None,
    provider: str | None,
    secrets: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    bad_request_500: bool = False,
    request: httpx.Request | None = None,
) -> LLMStatusError:
    """Build the typed error for an HTTP error response (body already decoded).

    ``bad_request_500``: the server (llama.cpp) answers 500 to requests it could not
    validate; such a 500 becomes :class:`BadRequestError`, since retrying cannot help.
    ``request``: the request that got this answer (see :func:`public_request`).
    """
    secrets = list(secrets)
    body = redact(body, secrets)
    headers = {k: redact(v, secrets) for k, v in (headers or {}).items()}
    if isinstance(body, str) and len(body) > MAX_ERROR_BODY_CHARS:
        body = body[:MAX_ERROR_BODY_CHARS] + "..."
    detail = ""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            detail = str(err.get("message") or err.get("msg") or "")
        elif isinstance(err, str):
            detail = err
    elif isinstance(body, str):
        detail = body.strip()[:300]
    where = f"{provider}: " if provider else ""
    message = f"{where}HTTP {status_code}" + (f": {detail}" if detail else "")
    if request_id:
        message += f" (request id {request_id})"
    cls = status_error_class(status_code)
    if bad_request_500 and status_code == 500 and "validation" in str(body).lower():
        cls = BadRequestError
    return cls(
        message,
        status_code=status_code,
        request_id=request_id,
        body=body,
        provider=provider,
        headers=headers,
        request=request,
    )


__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "LLMConnectError",
    "LLMConnectionError",
    "LLMError",
    "LLMReadError",
    "LLMResponseError",
    "LLMStatusError",
    "LLMTimeoutError",
    "LocalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "StructuredOutputError",
]
