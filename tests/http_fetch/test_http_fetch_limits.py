"""``http:fetch``: size and time caps, bad arguments, and hostile bodies and headers —
typed errors, never a frozen loop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fetch_helpers import allow

from loom import (
    Agent,
    Runtime,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolTimeout,
)
from loom.config import parse_project_config

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
