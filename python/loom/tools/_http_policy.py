"""``http:fetch``'s policy: the ``[tools.http]`` table and the checks every URL passes.

See :mod:`loom.tools.http` for the rules in order and why; this module holds the pure
parts (configuration, host matching, the public-address test, resolution) so that they
can be read and tested apart from the request machinery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from loom.errors import ConfigError, ToolDenied, ToolFailed

if TYPE_CHECKING:
    from loom.config import ProjectConfig

NAME = "http:fetch"
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_REDIRECTS = 5

DEFAULT_PORTS = {"http": 80, "https": 443}
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


__all__ = [
    "DEFAULT_PORTS",
    "NAME",
    "HostRule",
    "HttpConfig",
    "IPAddress",
    "Target",
    "check_addresses",
    "check_url",
    "is_public",
    "normalise_host",
    "parse_config",
    "parse_rule",
    "resolve",
]
