"""``http:fetch``: what an allowed fetch returns, the allowlist (hosts, ports, IP
literals, userinfo tricks, schemes, non-public addresses) and redirects re-checked at
every hop. Each denial also checks that the server the URL pointed at received nothing."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from fetch_helpers import allow

from loom import (
    ConfigError,
    Runtime,
    ToolDenied,
    ToolFailed,
)
from loom.config import parse_project_config
from loom.tools.http import (
    HostRule,
    check_addresses,
    check_url,
    is_public,
    parse_config,
    parse_rule,
)

# -- allowed fetches and the result ----------------------------------------------------------


async def test_allowed_fetch_and_result_shape(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    r = await fetch(f"{a.base}/hello")
    assert r.pop("headers").pop("date")
    assert r == {
        "status": 200,
        "body": "hello",
        "body_encoding": "text",
        "truncated": False,
        "url": f"{a.base}/hello",
    }
    r = await fetch(f"{a.base}/hello")
    assert r["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert r["headers"]["content-length"] == "5"
    assert (await fetch(f"{a.base}/json"))["body"] == '{"ok": true}'
    assert (await fetch(f"{a.base}/latin1"))["body"] == "café"
    binary = await fetch(f"{a.base}/binary")
    assert binary["body_encoding"] == "base64"
    assert base64.b64decode(binary["body"]) == bytes(range(256))
    missing = await fetch(f"{a.base}/nope")
    assert missing["status"] == 404  # an HTTP error status is a result, not an exception


async def test_only_safe_response_headers_are_returned(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    headers = (await fetch(f"{a.base}/headers"))["headers"]
    assert headers["etag"] == '"v1"'
    assert "set-cookie" not in headers and "x-internal" not in headers


async def test_exact_host_name_entry_resolves_and_sends_the_name(
    fetch_with: Any, servers: Any
) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"localhost:{a.port}"))
    for host in ("localhost", "LOCALHOST", "localhost."):
        echo = json.loads((await fetch(f"http://{host}:{a.port}/echo"))["body"])
        assert echo["host"] == f"localhost:{a.port}"
        assert echo["accept_encoding"] == "identity"


async def test_proxy_settings_in_the_environment_are_ignored(
    fetch_with: Any, servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would see (and could answer) requests for any host; and it would make the
    connection go somewhere other than the checked address."""
    a, b, _ = servers
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, b.base)
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    assert (await fetch(f"{a.base}/hello"))["body"] == "hello"
    assert a.hits == ["/hello"] and b.hits == []


async def test_tool_is_absent_without_an_allowlist(tmp_path: Path) -> None:
    for source in ("", "[tools.http]\nallow = []\n"):
        rt = Runtime(parse_project_config(source, tmp_path / "loom.toml"))
        try:
            assert "http:fetch" not in await rt.get_tools()
        finally:
            await rt.stop(timeout=5)


# -- the allowlist -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "url", "rule"),
    [
        # scheme
        ("127.0.0.1:{a}", "file:///etc/passwd", "http.scheme"),
        ("127.0.0.1:{a}", "ftp://127.0.0.1:{a}/hello", "http.scheme"),
        ("127.0.0.1:{a}", "gopher://127.0.0.1:{a}/", "http.scheme"),
        # userinfo tricks: what a sloppy parser reads as the host is on the allowlist
        ("127.0.0.1:{a}", "http://127.0.0.1:{a}@127.0.0.1:{b}/hello", "http.userinfo"),
        ("127.0.0.1:{a}", "http://user:pw@127.0.0.1:{a}/hello", "http.userinfo"),
        ("127.0.0.1:{a}", "http://127.0.0.1:{a}\\@127.0.0.1:{b}/hello", "http.userinfo"),
        ("127.0.0.1:{a}", "http://@127.0.0.1:{b}/hello", "http.host"),
        # other ports, other hosts
        ("127.0.0.1:{a}", "http://127.0.0.1:{b}/hello", "http.host"),
        ("127.0.0.1:{a}", "http://localhost:{a}/hello", "http.host"),
        ("localhost", "http://localhost:{a}/hello", "http.host"),  # default port only
        # IP literals are only allowed when listed as such
        ("localhost:{a}", "http://127.0.0.1:{a}/hello", "http.host"),
        ("localhost:{a}", "http://[::ffff:127.0.0.1]:{a}/hello", "http.host"),
        ("localhost:{a}", "http://2130706433:{a}/hello", "http.host"),
        ("localhost:{a}", "http://0x7f.1:{a}/hello", "http.host"),
        ("127.0.0.1:{a}", "http://[::ffff:127.0.0.1]:{a}/hello", "http.host"),
        # look-alike and suffix tricks
        ("127.0.0.1:{a}", "http://127.0.0.1.nip.io:{a}/hello", "http.host"),
        ("localhost:{a}", "http://evil-localhost:{a}/hello", "http.host"),
        ("localhost:{a}", "http://localhost.evil:{a}/hello", "http.host"),
        ("localhost:{a}", "http://l\u043ecalhost:{a}/hello", "http.host"),  # Cyrillic o
    ],
)
async def test_denied_urls(fetch_with: Any, servers: Any, entry: str, url: str, rule: str) -> None:
    a, b, _ = servers
    fetch = await fetch_with(allow(entry.format(a=a.port, b=b.port)))
    with pytest.raises(ToolDenied) as info:
        await fetch(url.format(a=a.port, b=b.port))
    assert info.value.rule == rule, info.value
    assert info.value.tool == "http:fetch"
    assert a.hits == [] and b.hits == []


async def test_wildcards_match_subdomains_only() -> None:
    rules = [parse_rule("*.example.org"), parse_rule("example.com"), parse_rule("[::1]:8080")]

    def ok(url: str) -> bool:
        import httpx

        try:
            check_url(httpx.URL(url), rules)
        except ToolDenied:
            return False
        return True

    assert ok("https://api.example.org/x") and ok("https://a.b.example.org/")
    assert ok("https://API.Example.ORG./") and ok("http://example.com/")
    assert ok("http://[::1]:8080/")
    assert not ok("https://example.org/")  # the wildcard needs a subdomain
    assert not ok("https://evilexample.org/") and not ok("https://example.org.evil.com/")
    assert not ok("https://example.com:8443/")  # no port in the entry: default ports only
    assert not ok("https://sub.example.com/")  # exact entries don't cover subdomains
    assert not ok("http://[::1]:8081/")


def test_non_public_addresses_need_an_explicit_entry() -> None:
    import httpx

    rules = [parse_rule("*.example.org"), parse_rule("10.0.0.7:443")]
    target = check_url(httpx.URL("https://api.example.org/"), rules)
    check_addresses(target, [ipaddress.ip_address("93.184.216.34")], rules, "http.address")
    for bad in (
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ):
        addr = ipaddress.ip_address(bad)
        assert not is_public(addr), bad
        with pytest.raises(ToolDenied) as info:
            # A rebinding answer mixes a public and a private address: refused.
            check_addresses(
                target, [ipaddress.ip_address("93.184.216.34"), addr], rules, "http.address"
            )
        assert info.value.rule == "http.address"
    # a private address listed explicitly (same port) is allowed
    check_addresses(target, [ipaddress.ip_address("10.0.0.7")], rules, "http.address")


@pytest.mark.parametrize(
    "entry",
    ["*", "*.org", "http://x.com", "ex ample.com", "a.*.com", "x.com:0", "x.com:99999", "u@x.com"],
)
def test_bad_allow_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError):
        parse_config({"allow": [entry]})


def test_config_limits_are_validated() -> None:
    for key, value in [("max_bytes", 0), ("timeout", -1), ("max_redirects", 50), ("nope", 1)]:
        with pytest.raises(ConfigError, match=key):
            parse_config({"allow": ["x.com"], key: value})
    cfg = parse_config({"allow": ["Bücher.de", "*.Example.ORG.", "[::1]:8080"]})
    assert [r.host for r in cfg.allow] == ["xn--bcher-kva.de", "example.org", "::1"]
    assert cfg.allow[1].wildcard and cfg.allow[2].port == 8080
    assert isinstance(cfg.allow[0], HostRule) and cfg.allow[0].port is None


# -- redirects -----------------------------------------------------------------------------


async def test_redirects_are_followed_and_rechecked(fetch_with: Any, servers: Any) -> None:
    a, b, c = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}", f"127.0.0.1:{c.port}"))
    r = await fetch(f"{a.base}/redirect?to=/hello")
    assert r["body"] == "hello" and r["url"] == f"{a.base}/hello"
    r = await fetch(f"{a.base}/redirect?to={c.base}/hello&code=301")
    assert r["url"] == f"{c.base}/hello" and c.hits == ["/hello"]

    for to in (f"{b.base}/hello", "file:///etc/passwd", f"http://x@127.0.0.1:{c.port}/hello"):
        with pytest.raises(ToolDenied) as info:
            await fetch(f"{a.base}/redirect?to={to}")
        assert info.value.rule == "http.redirect"
    assert b.hits == [], "the disallowed server was contacted"
    assert c.hits == ["/hello"]


async def test_redirect_chain_is_capped(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    with pytest.raises(ToolFailed, match="more than 5 redirects"):
        await fetch(f"{a.base}/loop")
    assert len(a.hits) == 6  # the first request and 5 redirects


async def test_redirect_methods_and_credentials(fetch_with: Any, servers: Any) -> None:
    a, _, c = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}", f"127.0.0.1:{c.port}"))
    auth = {"Authorization": "Bearer t0ken"}
    # 303 after POST: GET without the body
    r = await fetch(f"{a.base}/redirect?to=/echo&code=303", method="POST", body="x", headers=auth)
    echo = json.loads(r["body"])
    assert echo["method"] == "GET" and echo["body"] == ""
    assert echo["authorization"] == "Bearer t0ken"  # same origin keeps it
    # 307 keeps method and body
    r = await fetch(f"{a.base}/redirect?to=/echo&code=307", method="POST", body="keep")
    assert json.loads(r["body"])["method"] == "POST" and json.loads(r["body"])["body"] == "keep"
    # leaving the origin drops credentials
    r = await fetch(f"{a.base}/redirect?to={c.base}/echo", headers=auth)
    assert json.loads(r["body"])["authorization"] is None
