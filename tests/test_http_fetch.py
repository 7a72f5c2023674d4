"""``http:fetch`` against real HTTP servers on 127.0.0.1: the allowlist (hosts, ports,
IP literals, userinfo tricks, schemes), redirects re-checked at every hop, size and time
caps, and what the result looks like. Each denial test also checks that the server the
URL pointed at received nothing."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from loom import (
    Agent,
    ConfigError,
    Runtime,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolFailed,
    ToolTimeout,
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

# -- a real HTTP server ------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/hello":
            self._send(200, b"hello", "text/plain; charset=utf-8")
        elif url.path == "/json":
            self._send(200, b'{"ok": true}', "application/json")
        elif url.path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif url.path == "/binary":
            self._send(200, bytes(range(256)), "application/octet-stream")
        elif url.path == "/headers":
            self._send(
                200,
                b"h",
                "text/plain",
                Set_Cookie="session=s3cret",
                X_Internal="secret",
                ETag='"v1"',
            )
        elif url.path == "/big":
            self._send(200, b"a" * int(q["n"]))
        elif url.path == "/endless":
            # No Content-Length, never ends: the client has to stop reading.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"z" * 65536)
            except OSError:
                return
        elif url.path == "/slow":
            time.sleep(float(q.get("s", "5")))
            self._send(200, b"late")
        elif url.path == "/trickle":
            # Headers at once, then a byte every 0.1 s: only a total deadline stops it.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b".")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        elif url.path == "/redirect":
            self._send(int(q.get("code", "302")), b"", Location=q["to"])
        elif url.path == "/loop":
            self._send(302, b"", Location="/loop")
        elif url.path == "/echo":
            self._echo()
        elif url.path == "/charset":
            # ?cs=<charset>&text=<text> (encoded with cs when Python can, else UTF-8)
            text = q.get("text", "héllo wörld")
            try:
                body = text.encode(q["cs"])
            except (LookupError, TypeError, UnicodeError, ValueError):
                body = text.encode()
            if isinstance(body, str):
                body = body.encode()
            self._send(200, body, f"{q.get('type', 'text/plain')}; charset={q['cs']}")
        elif url.path == "/punycode":
            # Quadratic to decode as punycode: about 16 s for this body on a fast machine.
            n = int(q.get("n", "400000"))
            self._send(200, b"a" * n + b"-" + b"9" * n, "text/html; charset=punycode")
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        self.server.hits.append(self.path)
        url = urlsplit(self.path)
        if url.path == "/redirect":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            self._send(int(q.get("code", "302")), b"", Location=q["to"])
        else:
            self._echo()

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        info = {
            "method": self.command,
            "path": self.path,
            "body": body.decode(),
            "host": self.headers.get("Host"),
            "authorization": self.headers.get("Authorization"),
            "content_type": self.headers.get("Content-Type"),
            "accept_encoding": self.headers.get("Accept-Encoding"),
        }
        self._send(200, json.dumps(info).encode(), "application/json")


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[str] = []
        self.port = self.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"


@pytest.fixture
def servers() -> Iterator[tuple[LocalServer, LocalServer, LocalServer]]:
    """Three servers: ``a`` and ``c`` allowed, ``b`` not."""
    made = [LocalServer() for _ in range(3)]
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in made
    ]
    for t in threads:
        t.start()
    yield made[0], made[1], made[2]
    for s in made:
        s.shutdown()
        s.server_close()


Fetch = Callable[..., Awaitable[Any]]


@pytest.fixture
async def fetch_with(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Fetch]]]:
    """``fetch = await fetch_with('[tools.http] ...')``; ``await fetch(url, **args)``."""
    made: list[tuple[Runtime, Agent]] = []

    async def make(table: str) -> Fetch:
        rt = Runtime(parse_project_config(table, tmp_path / "loom.toml"))
        Runtime.set_default(rt)
        agent = Agent("fetcher", runtime=rt)
        await agent.start()
        made.append((rt, agent))

        async def fetch(url: str, timeout: float | None = None, **args: Any) -> Any:
            return await agent.ctx.tool("http:fetch", {"url": url, **args}, timeout=timeout)

        return fetch

    yield make
    for rt, agent in made:
        await agent.stop()
        await rt.stop(timeout=5)
    Runtime.set_default(None)


def allow(*entries: str, **limits: Any) -> str:
    lines = ["[tools.http]", "allow = " + json.dumps(list(entries))]
    lines += [f"{k} = {json.dumps(v)}" for k, v in limits.items()]
    return "\n".join(lines) + "\n"


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


# -- caps ------------------------------------------------------------------------------------


async def test_response_body_is_capped(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    r = await fetch(f"{a.base}/big?n={1024 * 1024}")
    assert not r["truncated"] and len(r["body"]) == 1024 * 1024
    r = await fetch(f"{a.base}/big?n={5 * 1024 * 1024}")
    assert r["truncated"] and len(r["body"]) == 1024 * 1024
    start = time.monotonic()
    r = await fetch(f"{a.base}/endless", timeout=10)
    assert r["truncated"] and len(r["body"]) == 1024 * 1024
    assert time.monotonic() - start < 5

    small = await fetch_with(allow(f"127.0.0.1:{a.port}", max_bytes=10))
    r = await small(f"{a.base}/hello")
    assert r["body"] == "hello" and not r["truncated"]
    r = await small(f"{a.base}/big?n=11")
    assert r["body"] == "a" * 10 and r["truncated"]


async def test_slow_server_times_out(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    start = time.monotonic()
    with pytest.raises(ToolTimeout):
        await fetch(f"{a.base}/slow?s=5", timeout=0.5)
    assert time.monotonic() - start < 2.5
    # the [tools.http] timeout caps the total, also for a body that keeps trickling
    capped = await fetch_with(allow(f"127.0.0.1:{a.port}", timeout=0.7))
    start = time.monotonic()
    with pytest.raises(ToolTimeout):
        await capped(f"{a.base}/trickle", timeout=30)
    assert time.monotonic() - start < 3
    assert (await fetch(f"{a.base}/hello"))["body"] == "hello"


async def test_request_body_is_capped(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}", max_request_bytes=1000))
    r = await fetch(f"{a.base}/echo", method="POST", body="b" * 1000)
    assert json.loads(r["body"])["body"] == "b" * 1000
    with pytest.raises(ToolDenied) as info:
        await fetch(f"{a.base}/echo", method="POST", body="b" * 1001)
    assert info.value.rule == "http.request_size"
    with pytest.raises(ToolDenied):
        await fetch(f"{a.base}/echo", method="POST", json={"k": "v" * 1000})
    assert a.hits == ["/echo"]
    r = await fetch(f"{a.base}/echo", method="POST", json={"k": 1})
    echo = json.loads(r["body"])
    assert json.loads(echo["body"]) == {"k": 1} and echo["content_type"] == "application/json"


# -- arguments -------------------------------------------------------------------------------


async def test_bad_arguments_and_forbidden_headers(fetch_with: Any, servers: Any) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    with pytest.raises(ToolArgumentsInvalid):
        await fetch(f"{a.base}/hello", method="DELETE")
    with pytest.raises(ToolArgumentsInvalid, match="POST"):
        await fetch(f"{a.base}/hello", body="x")
    with pytest.raises(ToolArgumentsInvalid):
        await fetch(f"{a.base}/hello", headers={"X-A": "1\r\nX-Injected: 1"})
    for name in ("Host", "Transfer-Encoding", "Content-Length", "Proxy-Authorization"):
        with pytest.raises(ToolDenied) as info:
            await fetch(f"{a.base}/hello", headers={name: "x"})
        assert info.value.rule == "http.header"
    with pytest.raises(ToolArgumentsInvalid):
        await fetch("http://[::1/")
    with pytest.raises(ToolArgumentsInvalid, match="IDNA"):  # roman numeral fifty
        await fetch(f"http://\u217cocalhost:{a.port}/hello")
    assert a.hits == []


# -- hostile bodies and headers: typed errors, never a frozen loop -------------------------------

#: Charsets a server may name that are not text encodings (bytes-to-bytes, str-to-str),
#: are quadratic to decode (punycode), interpret escapes, are stateful 7-bit tricks
#: (UTF-7, HZ) or do not exist. The body is decoded as UTF-8 instead.
REFUSED_CHARSETS = [
    "punycode",
    "rot13",
    "rot_13",
    "zlib",
    "zip",
    "base64",
    "base_64",
    "hex",
    "bz2",
    "uu",
    "quopri",
    "idna",
    "unicode_escape",
    "raw_unicode_escape",
    "utf-7",
    "hz",
    "undefined",
    "charmap",
    "no-such-charset",
]


@pytest.mark.parametrize("charset", REFUSED_CHARSETS)
async def test_only_text_charsets_are_used_to_decode(
    fetch_with: Any, servers: Any, charset: str
) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    text = "héllo wörld \\x1b"
    r = await fetch(f"{a.base}/charset?cs={charset}&text={text}")
    assert r["body_encoding"] == "text" and r["charset_ignored"] == charset
    assert isinstance(r["body"], str)
    if charset not in ("base64", "base_64", "hex", "uu", "bz2", "zlib", "zip", "quopri"):
        # (text codecs Python could encode with were sent encoded: not UTF-8, replaced)
        assert r["body"] == text or "\ufffd" in r["body"] or r["body"].isascii()
    json.dumps(r)  # always JSON


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("utf-8", "héllo"),
        ("UTF-8", "héllo"),
        ('"utf-8"', "héllo"),
        ("iso-8859-1", "café"),
        ("latin1", "café"),
        ("windows-1252", "café €"),
        ("utf-16", "日本語"),
        ("utf-16-le", "日本語"),
        ("shift_jis", "日本語"),
        ("euc-jp", "日本語"),
        ("gb18030", "中文"),
        ("big5", "中文"),
        ("koi8-r", "привет"),
        ("euc-kr", "한국어"),
        ("us-ascii", "plain"),
    ],
)
async def test_real_text_charsets_still_decode(
    fetch_with: Any, servers: Any, charset: str, text: str
) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    name = charset.strip('"')
    r = await fetch(f"{a.base}/charset?cs={name}&text={text}")
    assert r["body"] == text and r["body_encoding"] == "text"
    assert "charset_ignored" not in r


def test_the_charset_allowlist_names_real_text_codecs() -> None:
    import codecs

    from loom.tools._http_body import TEXT_CHARSETS, text_codec

    for name in TEXT_CHARSETS:
        info = codecs.lookup(name)
        assert info.name == name and info._is_text_encoding  # type: ignore[attr-defined]
    assert text_codec("Windows-874") == "cp874" and text_codec("latin1") == "iso8859-1"
    assert text_codec("x" * 100) is None and text_codec("") is None


async def test_a_quadratic_charset_cannot_freeze_the_loop(fetch_with: Any, servers: Any) -> None:
    """Decoding this body as punycode took 9 s past a 2 s timeout, with the event loop
    blocked all along."""
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    try:
        r = await fetch(f"{a.base}/punycode", timeout=2)
    finally:
        stop.set()
        await task
    assert time.monotonic() - start < 2.5
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f}s"
    assert r["charset_ignored"] == "punycode" and r["body"].startswith("aaa")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Naïve": "1"},
        {"X-A": "café"},
        {"X-A": "日本"},
        {"Ключ": "v"},
        {"X-A": "\u2028"},
        {"X-A": "\udcff"},
        {"X A": "1"},
        {"X-A": "tab\tok\x7f"},
        {"X-A": "\x1b[31m"},
        {"X-A\x00": "1"},
    ],
)
async def test_headers_that_cannot_be_sent_are_arguments_invalid(
    fetch_with: Any, servers: Any, headers: dict[str, str]
) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    with pytest.raises(ToolArgumentsInvalid, match="header") as info:
        await fetch(f"{a.base}/echo", headers=headers)
    assert info.value.tool == "http:fetch"
    assert a.hits == []


async def test_bodies_that_cannot_be_encoded_are_arguments_invalid(
    fetch_with: Any, servers: Any
) -> None:
    a, _, _ = servers
    fetch = await fetch_with(allow(f"127.0.0.1:{a.port}"))
    with pytest.raises(ToolArgumentsInvalid, match="body"):
        await fetch(f"{a.base}/echo", method="POST", body="lone \udcff surrogate")
    assert a.hits == []
    # printable ASCII headers, tabs in values and non-ASCII bodies are fine
    r = await fetch(f"{a.base}/echo", method="POST", body="héllo", headers={"X-Ok": "a\tb ~!"})
    assert json.loads(r["body"])["body"] == "héllo"


async def test_a_cognitive_run_sees_fetch_errors_as_tool_errors(
    tmp_path: Path, servers: Any
) -> None:
    """What a model asks ``http:fetch`` for never ends the run: bad headers are a tool
    error shown to the model, a refused charset a result."""
    from loom.cognitive import CognitiveAgent
    from loom.testing import ScriptedModel, tool_call

    a, _, _ = servers
    rt = Runtime(parse_project_config(allow(f"127.0.0.1:{a.port}"), tmp_path / "loom.toml"))
    llm = ScriptedModel(
        [
            tool_call("http:fetch", url=f"{a.base}/echo", headers={"X-Ä": "1"}),
            tool_call("http:fetch", url=f"{a.base}/echo", headers={"X-A": "é"}),
            tool_call("http:fetch", url=f"{a.base}/charset?cs=rot13"),
            tool_call("http:fetch", url=f"{a.base}/charset?cs=base64"),
            tool_call("http:fetch", url=f"{a.base}/echo", method="POST", body="\ud800"),
            "done",
        ]
    )
    try:
        async with Agent("researcher", runtime=rt) as agent:
            result = await CognitiveAgent(agent.ctx, llm, tools=["http:fetch"]).run("go")
    finally:
        await rt.stop(timeout=5)
    assert result.success and result.answer == "done", result.error
    steps = result.tool_calls
    for bad in (steps[0], steps[1], steps[4]):
        assert bad.error and "ToolArgumentsInvalid" in bad.error
    assert steps[2].result["charset_ignored"] == "rot13"
    assert steps[3].result["charset_ignored"] == "base64"
    seen = [m["content"] for m in llm.calls[1].messages if m["role"] == "tool"]
    assert "ToolArgumentsInvalid" in seen[0]


# -- TLS: connect to the checked address, verify the certificate for the name -------------


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server whose certificate names ``localhost`` only (no IP), signed by a
    throwaway CA that OpenSSL is told to trust (``SSL_CERT_FILE``). Yields the port and
    the SNI names clients sent."""
    import datetime
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loom test CA")])
    ca_cert = cert("loom test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("localhost", key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    sni: list[str] = []
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")

    def on_sni(sock: Any, name: str | None, _ctx: Any) -> None:
        sni.append(name or "")

    ctx.sni_callback = on_sni
    server = LocalServer()
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server.port, sni
    server.shutdown()
    server.server_close()


async def test_https_connects_to_the_address_and_verifies_the_name(
    fetch_with: Any, tls_server: tuple[int, list[str]]
) -> None:
    port, sni = tls_server
    fetch = await fetch_with(allow(f"localhost:{port}", f"127.0.0.1:{port}"))
    r = await fetch(f"https://localhost:{port}/hello")
    assert r["body"] == "hello" and r["url"] == f"https://localhost:{port}/hello"
    assert sni == ["localhost"]  # SNI is the name even though we dialled 127.0.0.1
    # the certificate does not cover the IP: verification is on and uses the URL's host
    with pytest.raises(ToolFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        await fetch(f"https://127.0.0.1:{port}/hello")


def test_the_documented_config_block_is_the_default() -> None:
    """docs/tools.md's ``[tools.http]`` block shows the real defaults."""
    import re

    doc = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    section = doc[doc.index("## http:fetch") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    table = parse_project_config(block.group(1)).tools["http"]
    documented = parse_config(table)
    default = parse_config({"allow": table["allow"]})
    assert documented == default
    assert [r.text for r in documented.allow] == ["example.com", "*.example.org", "127.0.0.1:8080"]
