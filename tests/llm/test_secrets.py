"""The API key never appears in reprs, logs, errors or spans."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import respond, sse, text_chunks
from loom.llm import AuthenticationError, LLMConfig, LLMProvider, ServerError

KEY = "sk-live-SUPERSECRET-0123456789"
MSG = [{"role": "user", "content": "hi"}]


def test_not_in_config_repr_str_or_dump():
    cfg = LLMConfig(base_url="http://x", api_key=KEY, headers={"Authorization": "Bearer zz"})
    for text in (
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        json.dumps(cfg.model_dump(mode="json")),
    ):
        assert KEY not in text
    llm = LLMProvider(None, cfg)
    assert KEY not in repr(llm) and KEY not in str(vars(llm).get("config"))


async def test_key_sent_only_in_authorization_header(fault_server, make_provider):
    await make_provider(api_key=KEY).call(MSG)
    req = fault_server.requests[0]
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert KEY.encode() not in req.body


async def test_no_authorization_header_without_key(fault_server, make_provider):
    await make_provider().call(MSG)
    assert "authorization" not in fault_server.requests[0].headers


async def test_echoed_key_redacted_from_errors_and_logs(fault_server, make_provider, caplog, spans):
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    fault_server.push(respond(500, echo), respond(401, echo))
    llm = make_provider(api_key=KEY)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as ei:
        await llm.call(MSG)
    err = ei.value
    assert KEY not in str(err) and KEY not in repr(err) and KEY not in json.dumps(err.body)
    assert "***" in str(err)
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert caplog.records  # the retry was logged (and scrubbed)
    exported = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    assert "chat fake-model" in exported and KEY not in exported


async def test_key_from_env_not_in_spans(fault_server, make_provider, spans, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("MY_TEST_KEY", KEY)
    fault_server.push(sse(text_chunks(["x"])), respond(503, {}), respond(503, {}))
    llm = make_provider(api_key_env="MY_TEST_KEY", max_retries=1)
    [_ async for _ in llm.stream(MSG)]
    with pytest.raises(ServerError):
        await llm.call(MSG)
    exported = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    assert len(spans.get_finished_spans()) == 2
    assert KEY not in exported


async def test_not_in_internal_reprs(fault_server, make_provider):
    llm = make_provider(api_key=KEY)
    await llm.call(MSG)
    assert llm._endpoint is not None
    assert KEY not in repr(llm._endpoint) and KEY not in repr(llm)
