"""The fault matrix, over real sockets: every fault ends in a retry that succeeds or a
typed error, never a hang."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from conftest import (
    huge,
    huge_undeclared,
    reset_mid_body,
    respond,
    sse,
    stall,
    text_chunks,
)
from loom.llm import (
    AuthenticationError,
    BadRequestError,
    LLMConnectionError,
    LLMResponseError,
    LLMStatusError,
    LLMTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from loom.llm import retry as retry_mod

MSG = [{"role": "user", "content": "hi"}]

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep backoff real in shape but short, so the matrix runs in seconds.
    monkeypatch.setattr(retry_mod, "INITIAL_RETRY_DELAY", 0.01)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_429_with_retry_after_then_success(fault_server, make_provider, transport):
    fault_server.push(
        respond(429, {"error": {"message": "slow down"}}, headers={"retry-after": "0.2"})
    )
    llm = make_provider(transport=transport)
    t0 = time.monotonic()
    r = await llm.call(MSG)
    assert r.content == "hello"
    assert len(fault_server.requests) == 2
    assert time.monotonic() - t0 >= 0.2  # honoured Retry-After


async def test_retry_after_ms_wins_over_retry_after(fault_server, make_provider):
    fault_server.push(respond(429, {}, headers={"retry-after-ms": "50", "retry-after": "30"}))
    t0 = time.monotonic()
    await make_provider().call(MSG)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409])
async def test_retryable_statuses_then_success(fault_server, make_provider, status):
    fault_server.push(respond(status, {"error": {"message": "boom"}}))
    r = await make_provider().call(MSG)
    assert r.content == "hello"
    assert len(fault_server.requests) == 2


async def test_5xx_exhausts_retries_into_server_error(fault_server, make_provider):
    fault_server.push(
        *[respond(503, {"error": {"message": "down"}}, headers={"x-request-id": "req-42"})] * 3
    )
    with pytest.raises(ServerError) as ei:
        await make_provider(max_retries=2).call(MSG)
    assert ei.value.status_code == 503
    assert ei.value.request_id == "req-42"
    assert ei.value.body == {"error": {"message": "down"}}
    assert "down" in str(ei.value)
    assert len(fault_server.requests) == 3


async def test_429_exhausted_is_rate_limit_error(fault_server, make_provider):
    fault_server.push(*[respond(429, {"error": {"message": "quota"}})] * 2)
    with pytest.raises(RateLimitError):
        await make_provider(max_retries=1).call(MSG)
    assert len(fault_server.requests) == 2


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (422, BadRequestError),
        (418, LLMStatusError),
    ],
)
async def test_client_errors_are_typed_and_not_retried(fault_server, make_provider, status, cls):
    fault_server.push(respond(status, {"error": {"message": "nope"}}))
    with pytest.raises(cls) as ei:
        await make_provider().call(MSG)
    assert type(ei.value) is cls
    assert ei.value.status_code == status
    assert len(fault_server.requests) == 1


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_connection_refused(free_port, make_provider, transport):
    llm = make_provider(
        base_url=f"http://127.0.0.1:{free_port}/v1", max_retries=1, transport=transport
    )
    with pytest.raises(LLMConnectionError) as ei:
        await llm.call(MSG)
    assert not isinstance(ei.value, LLMTimeoutError)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_reset_mid_body_retried_then_success(fault_server, make_provider, transport):
    fault_server.push(reset_mid_body())
    r = await make_provider(transport=transport).call(MSG)
    assert r.content == "hello"
    assert len(fault_server.requests) == 2


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_reset_mid_body_every_time_is_connection_error(
    fault_server, make_provider, transport
):
    fault_server.push(reset_mid_body(), reset_mid_body())
    with pytest.raises(LLMConnectionError):
        await make_provider(max_retries=1, transport=transport).call(MSG)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_stall_past_timeout_is_timeout_error(fault_server, make_provider, transport):
    fault_server.push(stall(30), stall(30))
    llm = make_provider(timeout=0.3, max_retries=1, transport=transport)
    t0 = time.monotonic()
    with pytest.raises(LLMTimeoutError):
        await llm.call(MSG)
    assert time.monotonic() - t0 < 5
    assert len(fault_server.requests) == 2


async def test_stall_then_success(fault_server, make_provider):
    fault_server.push(stall(30))
    r = await make_provider(timeout=0.3).call(MSG)
    assert r.content == "hello"


async def test_stream_stall_after_headers_times_out(fault_server, make_provider):
    fault_server.push(stall(30, after_headers=True))
    llm = make_provider(timeout=0.3, max_retries=0)
    with pytest.raises(LLMTimeoutError):
        async for _ in llm.stream(MSG):
            pass


async def test_per_call_timeout_override(fault_server, make_provider):
    fault_server.push(stall(30))
    llm = make_provider(timeout=60, max_retries=0)
    with pytest.raises(LLMTimeoutError):
        await llm.call(MSG, timeout=0.2)


async def test_truncated_sse_is_response_error(fault_server, make_provider):
    # A clean end of the HTTP body, but no finish_reason and no [DONE].
    fault_server.push(sse(text_chunks(["a", "b"])[:3]))
    got = []
    with pytest.raises(LLMResponseError, match="before completion"):
        async for piece in make_provider().stream(MSG):
            got.append(piece)
    assert got == ["a", "b"]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_stream_connection_dropped_mid_stream_not_retried(
    fault_server, make_provider, transport
):
    fault_server.push(sse(text_chunks(["a", "b", "c"]), close_after=3))
    got = []
    with pytest.raises(LLMConnectionError):
        async for piece in make_provider(transport=transport).stream(MSG):
            got.append(piece)
    assert got == ["a", "b"]
    assert len(fault_server.requests) == 1  # never retried after the first chunk


async def test_stream_retried_before_first_chunk(fault_server, make_provider):
    fault_server.push(respond(503, {"error": {"message": "warming up"}}))
    pieces = [p async for p in make_provider().stream(MSG)]
    assert "".join(pieces) == "hello"  # the default action answers JSON; replayed
    assert len(fault_server.requests) == 2


async def test_invalid_json_body(fault_server, make_provider):
    fault_server.push(respond(200, "{not json"))
    with pytest.raises(LLMResponseError, match="JSON"):
        await make_provider().call(MSG)
    assert len(fault_server.requests) == 1


async def test_invalid_json_in_stream(fault_server, make_provider):
    fault_server.push(sse([text_chunks(["a"])[1], "{oops"]))
    with pytest.raises(LLMResponseError, match="invalid JSON"):
        async for _ in make_provider().stream(MSG):
            pass


async def test_json_without_choices(fault_server, make_provider):
    fault_server.push(respond(200, {"object": "chat.completion"}))
    with pytest.raises(LLMResponseError, match="choices"):
        await make_provider().call(MSG)


async def test_huge_declared_body_refused(fault_server, make_provider):
    fault_server.push(huge(64 * 1024 * 1024))
    with pytest.raises(LLMResponseError, match="exceeds"):
        await make_provider(max_response_bytes=1024 * 1024).call(MSG)


async def test_huge_chunked_body_refused(fault_server, make_provider):
    fault_server.push(huge_undeclared(8 * 1024 * 1024))
    t0 = time.monotonic()
    with pytest.raises(LLMResponseError, match="exceeds"):
        await make_provider(max_response_bytes=1024 * 1024).call(MSG)
    assert time.monotonic() - t0 < 10


async def test_wrong_content_type_html(fault_server, make_provider):
    fault_server.push(
        respond(200, "<html><body>captive portal</body></html>", content_type="text/html")
    )
    with pytest.raises(LLMResponseError, match="text/html"):
        await make_provider().call(MSG)


async def test_wrong_content_type_for_stream(fault_server, make_provider):
    fault_server.push(respond(200, "<html></html>", content_type="text/html"))
    with pytest.raises(LLMResponseError, match="text/event-stream"):
        async for _ in make_provider().stream(MSG):
            pass


async def test_error_object_inside_stream(fault_server, make_provider):
    fault_server.push(sse([{"error": {"message": "upstream overloaded"}}]))
    with pytest.raises(LLMResponseError, match="upstream overloaded"):
        async for _ in make_provider().stream(MSG):
            pass


async def test_every_retry_decision_logged_at_debug(fault_server, make_provider, caplog):
    fault_server.push(respond(500, {}), respond(400, {"error": {"message": "bad"}}))
    with caplog.at_level(logging.DEBUG, logger="loom.llm"), pytest.raises(BadRequestError):
        await make_provider().call(MSG)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("retrying in" in m for m in msgs)
    assert any("not retrying BadRequestError" in m for m in msgs)


async def test_giving_up_logged(fault_server, make_provider, caplog):
    fault_server.push(respond(500, {}), respond(500, {}))
    with caplog.at_level(logging.DEBUG, logger="loom.llm"), pytest.raises(ServerError):
        await make_provider(max_retries=1).call(MSG)
    assert any("giving up after 1 retries" in r.getMessage() for r in caplog.records)


async def test_many_faults_concurrently_never_hang(fault_server, make_provider):
    fault_server.push(
        respond(500, {}),
        reset_mid_body(),
        respond(429, {}),
        stall(30),
        respond(200, "{bad"),
        respond(502, {}),
    )
    llm = make_provider(timeout=0.5, max_retries=2)

    async def one() -> str:
        try:
            return (await llm.call(MSG)).content
        except (LLMConnectionError, LLMStatusError, LLMResponseError) as e:
            return type(e).__name__

    results = await asyncio.wait_for(asyncio.gather(*[one() for _ in range(8)]), 20)
    assert len(results) == 8
    assert results.count("hello") >= 6
