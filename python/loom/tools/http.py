"""``http:fetch``: GET/POST to hosts on an allowlist, with size and time caps.

Registered only when ``[tools.http] allow`` lists at least one host:

.. code-block:: toml

    [tools.http]
    allow = ["example.com", "*.example.org", "127.0.0.1:8080"]
    max_bytes = 1048576          # response body cap (the rest is not read)
    max_request_bytes = 262144   # POST body cap
    timeout = 30                 # seconds for the whole fetch, redirects included
    max_redirects = 5

Every URL — the first and each redirect target — passes the same checks, in order:

1. scheme ``http`` or ``https`` (``http.scheme``);
2. no userinfo (``user@host``), which has fooled URL parsers before (``http.userinfo``);
3. the host, normalised by the same parser that sends the request (lowercase, IDNA
   ``xn--`` form, no trailing dot), matches an entry, and so does the port: an entry
   without a port allows the scheme's default port only, ``host:*`` any port. IP
   literals only match an identical IP entry (``http.host``);
4. the host is resolved once and the request is sent to that address (the TLS
   certificate is still checked against the host name). Addresses that are not
   public (loopback, private, link-local, CGNAT, multicast, unspecified, and IPv6
   forms embedding such IPv4 addresses) are refused unless the host is an IP
   entry or an exact (non-wildcard) host name entry, e.g. ``localhost:8080``
   (``http.address``). Because the connection goes to the checked address, a DNS
   answer that changes between check and connect (DNS rebinding) cannot redirect
   it.

A redirect that fails a check is refused with ``rule="http.redirect"``. Proxies from the
environment are ignored, and responses are requested uncompressed.

The configuration lives in :mod:`loom.tools._http_config`, the checks in
:mod:`loom.tools._http_policy`, and how a body becomes text (which charsets are allowed, and why) in
:mod:`loom.tools._http_body`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from loom._version import USER_AGENT
from loom.errors import ConfigError, ToolArgumentsInvalid, ToolDenied, ToolFailed, ToolTimeout
from loom.tools._http_body import decode_body_off_loop
from loom.tools._http_config import NAME, HostRule, HttpConfig, IPAddress, parse_config, parse_rule
from loom.tools._http_policy import Target, check_addresses, check_url, is_public, resolve
from loom.tools.registry import ToolRegistry
from loom.tools.spec import ToolSpec, validate_arguments

if TYPE_CHECKING:
    from loom._host import ProjectHost

log = logging.getLogger("loom.tools.http")

#: Addresses of a host tried in turn when connecting fails.
MAX_ADDRESSES_TRIED = 3

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Response headers passed back to the caller; the rest (cookies, server internals)
#: are dropped.
SAFE_RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-language",
        "content-disposition",
        "last-modified",
        "etag",
        "cache-control",
        "expires",
        "date",
        "age",
        "location",
        "retry-after",
        "link",
    }
)
#: Request headers a caller may not set: they would let it smuggle requests, choose
#: another virtual host than the checked one, or reach a proxy.
FORBIDDEN_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "accept-encoding",
        "proxy-authorization",
        "proxy-connection",
    }
)
#: Dropped when a redirect leaves the origin (as browsers and httpx do).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
#: A header name: an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value Loom sends: visible ASCII, spaces and tabs (no controls, no bytes that
#: would need an encoding the server may not share).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

# -- the tool ----------------------------------------------------------------------------


class FetchArgs(BaseModel):
    """Arguments of ``http:fetch``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="An http:// or https:// URL whose host is on the allowlist.")
    method: Literal["GET", "POST"] = Field("GET", description="GET or POST.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (Host and the like excluded)."
    )
    body: str | None = Field(None, description="POST body, sent as UTF-8 text.")
    json_body: Any = Field(None, alias="json", description="POST body, sent as JSON.")


class HttpFetch:
    """The ``http:fetch`` tool."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        schema = FetchArgs.model_json_schema(by_alias=True)
        schema.pop("title", None)
        schema.pop("description", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self.spec = ToolSpec(
            name=NAME,
            description=(
                "Fetches a URL with GET or POST (hosts on the allowlist only). Returns "
                "{status, headers, body, body_encoding ('text' or 'base64'), truncated, url}."
            ),
            parameters=schema,
            source="native",
        )
        self._ssl: ssl.SSLContext | None = None

    def is_idempotent(self, args: dict[str, Any]) -> bool:
        """A GET may be sent again (a durable run resumed mid-call); a POST may not."""
        return str(args.get("method") or "GET").upper() == "GET"

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        """Fetches ``args["url"]``; see the module docstring for the rules."""
        a = validate_arguments(NAME, FetchArgs, args)
        limit = min(timeout, self.config.timeout) if timeout else self.config.timeout
        try:
            return await asyncio.wait_for(self._fetch(a), limit)
        except asyncio.TimeoutError:
            raise ToolTimeout(NAME, f"the fetch did not finish within {limit:g}s") from None

    def _request_parts(self, a: FetchArgs) -> tuple[dict[str, str], bytes | None]:
        headers: dict[str, str] = {}
        for k, v in a.headers.items():
            if not _HEADER_NAME.fullmatch(k):
                raise ToolArgumentsInvalid(
                    NAME,
                    f"invalid header name {k!r}: use ASCII letters, digits and "
                    "!#$%&'*+-.^_`|~ only",
                )
            if not _HEADER_VALUE.fullmatch(v):
                bad = next(c for c in v if not _HEADER_VALUE.fullmatch(c))
                raise ToolArgumentsInvalid(
                    NAME,
                    f"invalid value for header {k!r}: only printable ASCII, spaces and tabs "
                    f"can be sent (found {bad!r}); percent- or base64-encode other text",
                )
            if k.lower() in FORBIDDEN_REQUEST_HEADERS or k.lower().startswith("proxy-"):
                raise ToolDenied(NAME, f"header {k!r} may not be set", rule="http.header")
            headers[k] = v
        if a.body is not None and a.json_body is not None:
            raise ToolArgumentsInvalid(NAME, "give either body or json, not both")
        content: bytes | None = None
        if a.body is not None:
            try:
                content = a.body.encode()
            except UnicodeEncodeError as exc:
                raise ToolArgumentsInvalid(
                    NAME, f"the body is not valid text ({exc.reason} at position {exc.start})"
                ) from None
        elif a.json_body is not None:
            content = json.dumps(a.json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if content is not None:
            if a.method != "POST":
                raise ToolArgumentsInvalid(NAME, "a body can only be sent with POST")
            if len(content) > self.config.max_request_bytes:
                raise ToolDenied(
                    NAME,
                    f"the request body is {len(content)} bytes; the limit is "
                    f"{self.config.max_request_bytes} ([tools.http] max_request_bytes)",
                    rule="http.request_size",
                )
        return headers, content

    async def _fetch(self, a: FetchArgs) -> dict[str, Any]:
        headers, content = self._request_parts(a)
        try:
            url = httpx.URL(a.url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ToolArgumentsInvalid(NAME, f"invalid URL {a.url!r}: {exc}") from None
        method: str = a.method
        rules = self.config.allow
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        for hop in range(self.config.max_redirects + 1):
            denial_rule = "http.redirect" if hop else ""
            target = check_url(url, rules, rule_prefix=denial_rule)
            addresses = await resolve(target.host, target.port)
            check_addresses(target, addresses, rules, denial_rule or "http.address")
            status, resp_headers, result = await self._send(
                target, addresses, method, headers, content
            )
            location = resp_headers.get("location")
            if status not in REDIRECT_STATUSES or not location:
                assert result is not None
                return result
            try:
                next_url = url.join(location)
            except (httpx.InvalidURL, ValueError) as exc:
                raise ToolFailed(NAME, f"invalid redirect location {location!r}: {exc}") from None
            log.debug("http:fetch %s -> %d -> %s", url, status, next_url)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, content = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if (next_url.scheme, next_url.host, next_url.port) != (url.scheme, url.host, url.port):
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            url = next_url
        raise ToolFailed(NAME, f"more than {self.config.max_redirects} redirects")

    async def _send(
        self,
        target: Target,
        addresses: Sequence[IPAddress],
        method: str,
        headers: Mapping[str, str],
        content: bytes | None,
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        """Sends one request to the checked addresses (not to a fresh DNS answer)."""
        url = target.url
        host_header = f"[{target.host}]" if ":" in target.host else target.host
        if url.port is not None:
            host_header += f":{url.port}"
        send_headers = {
            "User-Agent": USER_AGENT,
            **headers,
            "Host": host_header,
            "Accept-Encoding": "identity",
        }
        extensions: dict[str, Any] = {}
        if url.scheme == "https" and target.ip is None:
            # Connect to the IP, but present and verify the certificate for the name.
            extensions["sni_hostname"] = target.host
        last_error: Exception | None = None
        # No connection pooling: a pooled TLS connection made for one name must not
        # carry a request for another name that resolves to the same address.
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, verify=self._ssl or True, timeout=None
        ) as client:
            for addr in addresses[:MAX_ADDRESSES_TRIED]:
                pinned = url.copy_with(host=addr.compressed)
                try:
                    async with client.stream(
                        method, pinned, headers=send_headers, content=content, extensions=extensions
                    ) as resp:
                        resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                        if resp.status_code in REDIRECT_STATUSES and "location" in resp_headers:
                            return resp.status_code, resp_headers, None
                        return resp.status_code, resp_headers, await self._read(resp, url)
                except httpx.ConnectError as exc:
                    last_error = exc
                    continue
                except httpx.HTTPError as exc:
                    raise ToolFailed(NAME, f"{url}: {type(exc).__name__}: {exc}") from None
        raise ToolFailed(NAME, f"cannot connect to {url.host}:{target.port}: {last_error}")

    async def _read(self, resp: httpx.Response, url: httpx.URL) -> dict[str, Any]:
        cap = self.config.max_bytes
        data = bytearray()
        truncated = False
        async for chunk in resp.aiter_bytes():
            room = cap - len(data)
            if len(chunk) > room:
                data += chunk[:room]
                truncated = True
                break
            data += chunk
        decoded = await decode_body_off_loop(
            bytes(data), resp.headers.get("content-type", ""), truncated
        )
        return {
            "status": resp.status_code,
            "headers": {
                k.lower(): v for k, v in resp.headers.items() if k.lower() in SAFE_RESPONSE_HEADERS
            },
            **decoded,
            "truncated": truncated,
            "url": str(url),
        }


async def register(registry: ToolRegistry, host: ProjectHost) -> None:
    """Registers ``http:fetch`` when ``[tools.http] allow`` is non-empty.

    Raises:
        ConfigError: an invalid ``[tools.http]`` table.
    """
    project = host.project
    table = project.tools.get("http") if project is not None else None
    if not table:
        return
    if not isinstance(table, Mapping):
        raise ConfigError("[tools.http] must be a table", key="tools.http")
    config = parse_config(table, project)
    if not config.allow:
        return
    registry.register(HttpFetch(config))
    log.info("http:fetch allowed for %s", ", ".join(r.text for r in config.allow))


__all__ = [
    "FetchArgs",
    "HostRule",
    "HttpConfig",
    "HttpFetch",
    "check_addresses",
    "check_url",
    "is_public",
    "parse_config",
    "parse_rule",
    "register",
]
