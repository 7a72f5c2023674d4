"""``http:fetch``'s policy: the checks every URL and every resolved address passes.

See :mod:`loom.tools.http` for the rules in order and why; this module holds the pure
parts (host matching, the public-address test, resolution) so that they can be read and
tested apart from the request machinery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from loom.errors import ToolDenied, ToolFailed
from loom.tools._http_config import (
    DEFAULT_PORTS,
    NAME,
    HostRule,
    IPAddress,
    as_ip,
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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
    ip = as_ip(host)
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
    ip = as_ip(host)
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


__all__ = ["Target", "check_addresses", "check_url", "is_public", "resolve"]
