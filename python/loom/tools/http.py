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
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loom import __version__
from loom.errors import ConfigError, ToolArgumentsInvalid, ToolDenied, ToolFailed, ToolTimeout
from loom.tools.registry import ToolRegistry
from loom.tools.spec import ToolSpec

if TYPE_CHECKING:
    from loom.config import ProjectConfig
    from loom.runtime import Runtime

log = logging.getLogger("loom.tools.http")

NAME = "http:fetch"
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_REDIRECTS = 5
#: Addresses of a host tried in turn when connecting fails.
MAX_ADDRESSES_TRIED = 3

DEFAULT_PORTS = {"http": 80, "https": 443}
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
TEXTUAL_TYPES = ("application/json", "application/xml", "application/javascript")
TEXTUAL_SUFFIXES = ("+json", "+xml")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class HostRule:
    """One ``allow`` entry."""

    #: The normalised host (``xn--`` form), the suffix for a wildcard, or the IP.
    host: str
    #: ``*.example.org``: any host below ``example.org`` (not ``example.org`` itself).
    wildcard: bool = False
    ip: IPAddress | None = None
    #: ``None``: the scheme's default port; ``0``: any port.
    port: int | None = None
    text: str = ""

    def matches(self, host: str, ip: IPAddress | None, scheme: str, port: int) -> bool:
        """Whether a URL's normalised ``host`` (its IP when it is a literal) and
        effective ``port`` fall under this rule."""
        if self.port is None:
            if port != DEFAULT_PORTS[scheme]:
                return False
        elif self.port != 0 and self.port != port:
            return False
        if ip is not None or self.ip is not None:
            return ip is not None and self.ip is not None and ip == self.ip
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True)
class HttpConfig:
    """``[tools.http]``."""

    allow: tuple[HostRule, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    timeout: float = DEFAULT_TIMEOUT
    max_redirects: int = DEFAULT_MAX_REDIRECTS


def normalise_host(host: str) -> str:
    """Lowercase, IDNA (``xn--``) form, no trailing dot — as the request will use it.

    Raises:
        ValueError: not a valid host name.
    """
    raw = httpx.URL(f"http://{host}/").raw_host.decode("ascii")
    return raw.lower().removesuffix(".")


def _as_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_rule(entry: str) -> HostRule:
    """Parses ``host``, ``host:port``, ``host:*``, ``*.domain[:port]``, ``1.2.3.4[:port]``
    or ``[::1][:port]``.

    Raises:
        ValueError: the entry is malformed or too broad.
    """
    text = entry.strip()
    if not text or "/" in text or "@" in text or any(c.isspace() for c in text):
        raise ValueError(f"not a host[:port] entry: {entry!r}")
    port: int | None = None
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {entry!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"junk after ']' in {entry!r}")
            port = _parse_port(rest[1:], entry)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _parse_port(port_text, entry)
    elif text.count(":") > 1:
        # A bare IPv6 address (no port possible without brackets).
        host = text
    ip = _as_ip(host)
    if ip is not None:
        return HostRule(host=ip.compressed, ip=ip, port=port, text=entry)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        raise ValueError(f"'*' is only allowed as a leading '*.' label: {entry!r}")
    try:
        norm = normalise_host(host)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise ValueError(f"invalid host name in {entry!r}") from None
    if not norm or (wildcard and "." not in norm):
        raise ValueError(f"too broad: {entry!r} (use '*.example.org', not '*' or '*.org')")
    return HostRule(host=norm, wildcard=wildcard, port=port, text=entry)


def _parse_port(text: str, entry: str) -> int:
    if text == "*":
        return 0
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port in {entry!r}")
    return int(text)


def parse_config(table: Mapping[str, Any], project: ProjectConfig | None = None) -> HttpConfig:
    """Validates ``[tools.http]``.

    Raises:
        ConfigError: an invalid value (names the key and, with ``project``, the line).
    """

    def err(msg: str, *keys: str) -> ConfigError:
        if project is not None:
            return project.error(msg, "tools", "http", *keys)
        return ConfigError(msg, key=".".join(("tools", "http", *keys)))

    known = {"allow", "max_bytes", "max_request_bytes", "timeout", "max_redirects"}
    for key in table:
        if key not in known:
            raise err(f"unknown key {key!r} (allowed: {', '.join(sorted(known))})", key)
    allow = table.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise err(f"must be a list of host[:port] strings (got {allow!r})", "allow")
    rules = []
    for entry in allow:
        try:
            rules.append(parse_rule(entry))
        except ValueError as exc:
            raise err(str(exc), "allow") from None

    def positive(key: str, default: float, kind: type) -> Any:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise err(f"must be a positive number (got {value!r})", key)
        if kind is int and value != int(value):
            raise err(f"must be a whole number (got {value!r})", key)
        return kind(value)

    redirects = table.get("max_redirects", DEFAULT_MAX_REDIRECTS)
    if isinstance(redirects, bool) or not isinstance(redirects, int) or not 0 <= redirects <= 20:
        raise err(f"must be a whole number from 0 to 20 (got {redirects!r})", "max_redirects")
    return HttpConfig(
        allow=tuple(rules),
        max_bytes=positive("max_bytes", DEFAULT_MAX_BYTES, int),
        max_request_bytes=positive("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES, int),
        timeout=positive("timeout", DEFAULT_TIMEOUT, float),
        max_redirects=redirects,
    )


# -- the policy ------------------------------------------------------------------------


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address, looking through IPv6 forms that embed an
    IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4, Teredo)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(not is_public(v4) for v4 in embedded):
            return False
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    """A URL that passed the checks, and where to connect for it."""

    url: httpx.URL
    host: str
    port: int
    rule: HostRule
    ip: IPAddress | None


def check_url(url: httpx.URL, rules: Sequence[HostRule], *, rule_prefix: str = "") -> Target:
    """Checks scheme, userinfo, host and port (not yet the resolved addresses).

    Raises:
        ToolDenied: with ``rule`` ``http.scheme``, ``http.userinfo`` or ``http.host``
            (``http.redirect`` for all of them when ``rule_prefix`` says so).
    """

    def deny(rule: str, reason: str) -> ToolDenied:
        return ToolDenied(NAME, reason, rule=rule_prefix or rule)

    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise deny("http.scheme", f"scheme {scheme or '(none)'!r} is not allowed (http/https)")
    if url.userinfo:
        raise deny("http.userinfo", "URLs with credentials (user@host) are not allowed")
    try:
        host = url.raw_host.decode("ascii").lower().removesuffix(".")
    except UnicodeDecodeError:
        raise deny("http.host", "the host is not valid") from None
    if not host:
        raise deny("http.host", "the URL has no host")
    port = url.port or DEFAULT_PORTS[scheme]
    ip = _as_ip(host)
    for rule in rules:
        if rule.matches(host, ip, scheme, port):
            return Target(url=url, host=host, port=port, rule=rule, ip=ip)
    shown = f"[{host}]" if ip is not None and ip.version == 6 else host
    raise deny(
        "http.host",
        f"{shown}:{port} is not on the allowlist ([tools.http] allow)",
    )


def check_addresses(
    target: Target, addresses: Sequence[IPAddress], rules: Sequence[HostRule], rule: str
) -> None:
    """Refuses non-public addresses unless the host was listed explicitly.

    Raises:
        ToolDenied: an address is not allowed.
    """
    if target.ip is not None or not target.rule.wildcard:
        return  # an IP entry, or an exact host name the user listed: trusted as is
    for addr in addresses:
        if is_public(addr):
            continue
        scheme = target.url.scheme
        if any(
            r.ip is not None and r.matches(addr.compressed, addr, scheme, target.port)
            for r in rules
        ):
            continue
        raise ToolDenied(
            NAME,
            f"{target.host} resolves to {addr}, which is not a public address; list it "
            "explicitly in [tools.http] allow to reach it",
            rule=rule,
        )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, resolved once (IP literals as is).

    Raises:
        ToolFailed: the name does not resolve.
    """
    ip = _as_ip(host)
    if ip is not None:
        return [ip]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolFailed(NAME, f"cannot resolve {host}: {exc}") from None
    out: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    if not out:
        raise ToolFailed(NAME, f"{host} has no addresses")
    return out


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

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        """Fetches ``args["url"]``; see the module docstring for the rules."""
        try:
            a = FetchArgs.model_validate(args)
        except ValidationError as exc:
            errors = [
                {
                    "loc": ".".join(map(str, e["loc"])) or "(root)",
                    "msg": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors()
            ]
            summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
            raise ToolArgumentsInvalid(NAME, f"invalid arguments: {summary}", errors) from None
        limit = min(timeout, self.config.timeout) if timeout else self.config.timeout
        try:
            return await asyncio.wait_for(self._fetch(a), limit)
        except asyncio.TimeoutError:
            raise ToolTimeout(NAME, f"the fetch did not finish within {limit:g}s") from None

    def _request_parts(self, a: FetchArgs) -> tuple[dict[str, str], bytes | None]:
        headers: dict[str, str] = {}
        for k, v in a.headers.items():
            if any(c in k + v for c in "\r\n\0") or not k or ":" in k:
                raise ToolArgumentsInvalid(NAME, f"invalid header {k!r}")
            if k.lower() in FORBIDDEN_REQUEST_HEADERS or k.lower().startswith("proxy-"):
                raise ToolDenied(NAME, f"header {k!r} may not be set", rule="http.header")
            headers[k] = v
        if a.body is not None and a.json_body is not None:
            raise ToolArgumentsInvalid(NAME, "give either body or json, not both")
        content: bytes | None = None
        if a.body is not None:
            content = a.body.encode()
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
            "User-Agent": f"loom/{__version__}",
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
        body, encoding = _decode(bytes(data), resp.headers.get("content-type", ""), truncated)
        return {
            "status": resp.status_code,
            "headers": {
                k.lower(): v for k, v in resp.headers.items() if k.lower() in SAFE_RESPONSE_HEADERS
            },
            "body": body,
            "body_encoding": encoding,
            "truncated": truncated,
            "url": str(url),
        }


def _decode(data: bytes, content_type: str, truncated: bool) -> tuple[str, str]:
    """Text when the content type is textual (in its charset; a multi-byte character
    cut by truncation is dropped), else base64."""
    ctype, _, params = content_type.partition(";")
    ctype = ctype.strip().lower()
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    textual = (
        ctype.startswith("text/")
        or ctype in TEXTUAL_TYPES
        or ctype.endswith(TEXTUAL_SUFFIXES)
        or (not ctype and charset is not None)
    )
    if not ctype and charset is None:
        try:  # no content type: text if it is valid UTF-8
            strict = codecs.getincrementaldecoder("utf-8")("strict")
            return strict.decode(data, final=not truncated), "text"
        except UnicodeDecodeError:
            textual = False
    if not textual:
        return base64.b64encode(data).decode("ascii"), "base64"
    decoder: codecs.IncrementalDecoder
    try:
        decoder = codecs.getincrementaldecoder(charset or "utf-8")("replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(data, final=not truncated), "text"


async def register(registry: ToolRegistry, runtime: Runtime) -> None:
    """Registers ``http:fetch`` when ``[tools.http] allow`` is non-empty.

    Raises:
        ConfigError: an invalid ``[tools.http]`` table.
    """
    project = runtime.project
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
