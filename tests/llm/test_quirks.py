"""One test per row of the quirks table (loom/llm/quirks.py)."""

from __future__ import annotations

import pytest

from conftest import completion, respond, sse, text_chunks
from loom.llm import BadRequestError, Message, ToolCall
from loom.llm.quirks import QUIRKS, detect, serialize_message

MSG = [{"role": "user", "content": "hi"}]


def test_detect_by_url():
    assert detect("https://api.deepseek.com/v1").name == "deepseek"
    assert detect("https://openrouter.ai/api/v1").name == "openrouter"
    assert detect("https://api.openai.com/v1").name == "openai"
    assert detect("http://127.0.0.1:11434/v1").name == "ollama"
    assert detect("http://127.0.0.1:8080/v1").name == "generic"
    assert detect("", serve="smollm2").name == "llamacpp"
    assert detect("https://api.openai.com/v1", override="llamacpp").name == "llamacpp"


def _assistant_with_tools(reasoning="because"):
    return Message(
        role="assistant",
        content=None,
        reasoning_content=reasoning,
        tool_calls=[ToolCall(id="c1", name="f", arguments={"a": 1})],
    )


def test_deepseek_reasoning_kept_on_tool_turns_only():
    ds = QUIRKS["deepseek"]
    out = serialize_message(_assistant_with_tools(), ds)
    assert out["reasoning_content"] == "because"
    plain = serialize_message(Message(role="assistant", content="x", reasoning_content="r"), ds)
    assert "reasoning_content" not in plain


def test_other_servers_never_get_reasoning_content():
    for name in ("openai", "openrouter", "llamacpp", "generic", "ollama"):
        assert "reasoning_content" not in serialize_message(_assistant_with_tools(), QUIRKS[name])


def test_llamacpp_gets_empty_string_not_null_content():
    out = serialize_message(_assistant_with_tools(), QUIRKS["llamacpp"])
    assert out["content"] == ""
    assert out["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert serialize_message(_assistant_with_tools(), QUIRKS["openai"])["content"] is None


def test_dict_tool_calls_with_object_arguments_become_strings():
    msg = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"x": 1}}}],
    }
    out = serialize_message(msg, QUIRKS["llamacpp"])
    assert out["tool_calls"][0] == {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": '{"x": 1}'},
    }
    assert out["content"] == ""


async def test_stream_options_sent_where_supported(fault_server, make_provider):
    fault_server.push(sse(text_chunks(["a"])), sse(text_chunks(["a"])))
    [_ async for _ in make_provider(quirks="openai").stream(MSG)]
    [_ async for _ in make_provider(quirks="llamacpp").stream(MSG)]
    first, second = (r.json() for r in fault_server.requests)
    assert first["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second


async def test_openrouter_attribution_headers(fault_server, make_provider):
    await make_provider(quirks="openrouter").call(MSG)
    h = fault_server.requests[0].headers
    assert h["x-title"] == "Loom" and h["http-referer"].startswith("https://")


async def test_user_headers_override_quirk_headers(fault_server, make_provider):
    await make_provider(quirks="openrouter", headers={"X-Title": "MyApp"}).call(MSG)
    assert fault_server.requests[0].headers["x-title"] == "MyApp"


async def test_namespaced_tool_names_round_trip(fault_server, make_provider):
    fault_server.push(
        respond(
            200,
            completion(
                None,
                finish_reason="tool_calls",
                tool_calls=[
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "web__search", "arguments": '{"q": "x"}'},
                    }
                ],
            ),
        )
    )
    tools = [
        {
            "name": "web:search",
            "description": "d",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    r = await make_provider().call(MSG, tools=tools, tool_choice="web:search")
    sent = fault_server.requests[0].json()
    assert sent["tools"][0]["function"]["name"] == "web__search"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "web__search"}}
    assert r.tool_calls[0].name == "web:search" and r.tool_calls[0].arguments == {"q": "x"}
    # ...and the assistant turn sent back uses the wire name again.
    await make_provider().call(
        [*MSG, r.message, Message.tool_result(r.tool_calls[0].id, "ok")], tools=tools
    )
    back = fault_server.requests[1].json()["messages"][1]
    assert back["tool_calls"][0]["function"]["name"] == "web__search"


async def test_llamacpp_500_validation_error_is_bad_request_not_retried(
    fault_server, make_provider
):
    body = {
        "error": {
            "message": "[{'type': 'literal_error', 'msg': 'Input should be...'}]",
            "type": "internal_server_error",
        }
    }
    # What llama-cpp-python's server sends for a request it failed to validate.
    body["error"]["message"] = "1 validation error for CreateChatCompletionRequest"
    fault_server.push(respond(500, body))
    with pytest.raises(BadRequestError):
        await make_provider(quirks="llamacpp").call(MSG)
    assert len(fault_server.requests) == 1


async def test_json_schema_response_format_per_quirk(fault_server, make_provider):
    from pydantic import BaseModel

    class P(BaseModel):
        n: int

    fault_server.push(*[respond(200, completion('{"n": 1}'))] * 3)
    for quirk in ("openai", "llamacpp", "deepseek"):
        assert (await make_provider(quirks=quirk).call_json(MSG, P)).n == 1
    fmts = [r.json().get("response_format") for r in fault_server.requests]
    assert fmts[0]["type"] == "json_schema" and fmts[0]["json_schema"]["name"] == "P"
    assert fmts[1]["type"] == "json_object" and fmts[1]["schema"]["properties"]["n"]
    assert fmts[2] is None  # instructions only


def test_llamacpp_tool_schemas_lose_length_bounds() -> None:
    """llama-cpp-python turns maxLength: 4096 into a grammar its parser rejects, and the
    server process exits; the quirk strips such bounds for that server only."""
    from loom.llm._request import CallRequest, build_body
    from loom.llm.config import LLMConfig
    from loom.llm.quirks import QUIRKS

    tool = {
        "type": "function",
        "function": {
            "name": "fs:read_file",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "maxLength": 4096, "minLength": 1},
                    "tags": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 9},
                        "maxItems": 3,
                    },
                },
            },
        },
    }
    cfg = LLMConfig(base_url="http://127.0.0.1:1/v1", model="m")
    req = CallRequest(messages=[{"role": "user", "content": "hi"}], tools=[tool])
    llama, _ = build_body(cfg, QUIRKS["llamacpp"], req, stream=False, stream_usage=False)
    params = llama["tools"][0]["function"]["parameters"]
    assert "maxLength" not in params["properties"]["path"]  # 4096: dropped
    assert params["properties"]["path"]["minLength"] == 1  # small bounds stay
    assert params["properties"]["tags"]["items"]["maxLength"] == 9
    assert params["properties"]["tags"]["maxItems"] == 3
    openai, _ = build_body(cfg, QUIRKS["openai"], req, stream=False, stream_usage=False)
    assert openai["tools"][0]["function"]["parameters"]["properties"]["path"]["maxLength"] == 4096
