"""Errors raised by :mod:`loom.llm`.

One tree under :class:`LLMError` (itself a :class:`loom.errors.LoomError`), modelled on
httpx's and openai-python's: transport failures are :class:`LLMConnectionError` (with
:class:`LLMTimeoutError` below it), HTTP error statuses are :class:`LLMStatusError` with a
subclass per status family, and a body we cannot understand is :class:`LLMResponseError`.

No exception ever carries an API key: bodies and messages are scrubbed with
:func:`redact` before they are stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from loom.errors import LoomError

from ._constants import MAX_ERROR_BODY_CHARS


class LLMError(LoomError):
    """Base class of every error raised by the LLM client."""

    #: Name of the provider (``[llm.<name>]``) the error came from, when known.
    provider: str | None = None


class LLMConnectionError(LLMError, ConnectionError):
    """The server could not be reached, or the connection broke mid-response."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        self.provider = provider
        super().__init__(message)


class LLMTimeoutError(LLMConnectionError, TimeoutError):
    """Connecting, or waiting for the next bytes of the response, took too long."""


class LLMStatusError(LLMError):
    """The server answered with an HTTP error status.

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
    ) -> None:
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.provider = provider
        self.headers = headers or {}
        super().__init__(message)


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
    headers: dict[str, str] | None = None,
    bad_request_500: bool = False,
) -> LLMStatusError:
    """Build the typed error for an HTTP error response (body already decoded).

    ``bad_request_500``: the server (llama.cpp) answers 500 to requests it could not
    validate; such a 500 becomes :class:`BadRequestError`, since retrying cannot help.
    """
    body = redact(body, secrets)
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
    )


__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "LLMConnectionError",
    "LLMError",
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
