"""Who may see the dashboard: one random token per run, then a cookie; the Host header
checked on loopback (no DNS rebinding); headers that forbid framing, inline scripts and
cross-origin use. Nothing here sets a CORS header: other origins get nothing."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

#: Every response carries these.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    """A fresh per-run token (192 bits)."""
    return secrets.token_urlsafe(24)


class Gate:
    """The checks every request passes, as an aiohttp middleware.

    ``hosts``: the Host header values accepted (``None``: any, when the dashboard is
    bound to a non-loopback address and reached under names it cannot know).
    """

    def __init__(self, token: str, cookie: str, hosts: frozenset[str] | None) -> None:
        self._token = token
        self.cookie = cookie
        self.hosts = hosts

    def valid(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self._token.encode())

    def _presented(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        return request.cookies.get(self.cookie)

    def same_origin(self, request: web.Request) -> bool:
        """Whether a state-changing request comes from the dashboard's own page."""
        origin = request.headers.get("Origin")
        if origin is None:
            # Scripts (curl, tests) send no Origin; they proved the token by header.
            return request.headers.get("Authorization", "").startswith("Bearer ")
        return urlsplit(origin).netloc == request.host

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.hosts is not None and request.host not in self.hosts:
            raise web.HTTPForbidden(text="unexpected Host header\n")
        query_token = request.query.get("token")
        if query_token is not None:
            if not self.valid(query_token):
                raise web.HTTPUnauthorized(text="wrong token: open the URL loom printed\n")
            # Trade the token in the URL for a cookie, and drop it from the address bar
            # (and from the history) at once.
            rest = {k: v for k, v in request.query.items() if k != "token"}
            clean = request.rel_url.with_query(rest)
            response = web.HTTPSeeOther(location=str(clean))
            response.set_cookie(
                self.cookie, query_token, httponly=True, samesite="Strict", path="/"
            )
            raise response
        if not self.valid(self._presented(request)):
            raise web.HTTPUnauthorized(text="token required: open the URL loom printed\n")
        return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response (errors and event streams included)."""
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)


__all__ = ["SECURITY_HEADERS", "Gate", "add_security_headers", "new_token"]
