"""``http:fetch``'s configuration: the ``[tools.http]`` table, parsed and checked.

See :mod:`loom.tools.http` for what each key means; :mod:`loom.tools._http_policy`
applies the rules to each URL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from loom.errors import ConfigError

if TYPE_CHECKING:
    from loom.config import ProjectConfig

NAME = "http:fetch"
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_REDIRECTS = 5

DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def as_ip(host: str) -> IPAddress | None:
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
    ip = as_ip(host)
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


__all__ = [
    "DEFAULT_PORTS",
    "NAME",
    "HostRule",
    "HttpConfig",
    "IPAddress",
    "as_ip",
    "normalise_host",
    "parse_config",
    "parse_rule",
]
