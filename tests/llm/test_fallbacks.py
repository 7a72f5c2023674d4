"""Fallbacks on connection errors, timeouts, 5xx and exhausted 429s."""

from __future__ import annotations

import pytest

from conftest import respond, sse, text_chunks
from loom.llm import BadRequestError, LLMConnectionError, LLMProvider

MSG = [{"role": "user", "content": "hi"}]


def _project(primary_url, backup_url, **primary):
    return {
        "llm": {
            "primary": {
                "base_url": primary_url,
                "model": "p",
                "max_retries": 0,
                "fallbacks": ["backup"],
                **primary,
            },
            "backup": {"base_url": backup_url, "model": "b"},
        }
    }


async def test_connection_refused_falls_back(fault_server, free_port):
    llm = LLMProvider.from_config(
        None, "primary", _project(f"http://127.0.0.1:{free_port}/v1", fault_server.base_url)
    )
    r = await llm.call(MSG)
    assert r.provider == "backup"
    assert fault_server.requests[0].json()["model"] == "b"  # the backup's own model
    await llm.aclose()


async def test_5xx_falls_back_but_400_does_not(fault_server):
    fault_server.push(respond(502, {}), respond(200))
    llm = LLMProvider.from_config(
        None, "primary", _project(fault_server.base_url, fault_server.base_url)
    )
    assert (await llm.call(MSG)).provider == "backup"
    fault_server.push(respond(400, {"error": {"message": "bad"}}))
    with pytest.raises(BadRequestError):
        await llm.call(MSG)
    await llm.aclose()


async def test_all_fail_raises_last(free_port):
    from loom.llm.local_server import free_port as fp

    llm = LLMProvider.from_config(
        None, "primary", _project(f"http://127.0.0.1:{free_port}/v1", f"http://127.0.0.1:{fp()}/v1")
    )
    with pytest.raises(LLMConnectionError):
        await llm.call(MSG)
    await llm.aclose()


async def test_stream_falls_back_before_first_chunk(fault_server, free_port):
    fault_server.push(sse(text_chunks(["from", " backup"])))
    llm = LLMProvider.from_config(
        None, "primary", _project(f"http://127.0.0.1:{free_port}/v1", fault_server.base_url)
    )
    assert "".join([p async for p in llm.stream(MSG)]) == "from backup"
    await llm.aclose()


async def test_stream_never_falls_back_after_first_chunk(fault_server):
    fault_server.push(sse(text_chunks(["a", "b", "c"]), close_after=2))
    llm = LLMProvider.from_config(
        None, "primary", _project(fault_server.base_url, fault_server.base_url)
    )
    got = []
    with pytest.raises(LLMConnectionError):
        async for p in llm.stream(MSG):
            got.append(p)
    assert got == ["a"] and len(fault_server.requests) == 1
    await llm.aclose()


async def test_unknown_fallback_ignored(fault_server, caplog):
    project = {
        "llm": {
            "primary": {"base_url": fault_server.base_url, "fallbacks": ["ghost"], "max_retries": 0}
        }
    }
    fault_server.push(respond(503, {}))
    llm = LLMProvider.from_config(None, "primary", project)
    with pytest.raises(Exception, match="503"):
        await llm.call(MSG)
    assert any("ghost" in r.getMessage() for r in caplog.records)
    await llm.aclose()


async def test_misconfigured_fallback_skipped_not_fatal(
    fault_server, free_port, monkeypatch, caplog
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    project = {
        "llm": {
            "primary": {
                "base_url": f"http://127.0.0.1:{free_port}/v1",
                "max_retries": 0,
                "fallbacks": ["openai", "backup"],
            },
            "backup": {"base_url": fault_server.base_url},
        }
    }
    fault_server.push(sse(text_chunks(["ok"])))
    llm = LLMProvider.from_config(None, "primary", project)
    assert "".join([p async for p in llm.stream(MSG)]) == "ok"
    assert (await llm.call(MSG)).provider == "backup"
    assert any("skipping fallback 'openai'" in r.getMessage() for r in caplog.records)
    await llm.aclose()
