"""SSE decoding and tool-call delta accumulation, including the known server quirks."""

from __future__ import annotations

import pytest

from conftest import chunk, sse, text_chunks
from loom.llm import (
    FinishEvent,
    LLMResponseError,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageEvent,
)
from loom.llm.streaming import SSEDecoder, StreamAccumulator, parse_completion


def test_sse_decoder_splits_anywhere():
    raw = b'data: {"a":1}\n\n: keep-alive comment\n\ndata: {"b":2}\r\n\r\ndata: [DONE]\n\n'
    for step in (1, 3, 7, len(raw)):
        d = SSEDecoder()
        out = []
        for i in range(0, len(raw), step):
            out += d.feed(raw[i : i + step])
        out += d.close()
        assert out == [b'{"a":1}', b'{"b":2}', b"[DONE]"], step


def test_sse_decoder_multiline_and_fields():
    d = SSEDecoder()
    out = d.feed(b"event: message\nid: 7\ndata: line1\ndata:line2\nretry: 10\n\n")
    assert out == [b"line1\nline2"]


def test_sse_decoder_missing_final_blank_line():
    d = SSEDecoder()
    assert d.feed(b"data: last") == []
    assert d.close() == [b"last"]


def test_sse_decoder_lone_cr():
    d = SSEDecoder()
    assert d.feed(b"data: x\r\rdata: y\r\r") == [b"x", b"y"]


def _tc(index=None, id=None, name=None, args=None):
    tc = {"function": {}}
    if index is not None:
        tc["index"] = index
    if id is not None:
        tc["id"] = id
    if name is not None:
        tc["function"]["name"] = name
    tc["function"]["arguments"] = args
    return chunk({"tool_calls": [tc]})


def _run(chunks):
    acc = StreamAccumulator("t")
    events = []
    for c in chunks:
        events += acc.feed(c)
    events += acc.finish()
    return events


def test_tool_call_fragments_accumulate():
    events = _run(
        [
            _tc(0, "c1", "search", ""),
            _tc(0, None, None, '{"q'),
            _tc(0, None, None, 'uery": "lo'),
            _tc(0, None, None, 'om"}'),
            chunk({}, "tool_calls"),
        ]
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "ToolCallStart"
    assert kinds[-3:] == ["ToolCallComplete", "UsageEvent", "FinishEvent"]
    done = next(e for e in events if isinstance(e, ToolCallComplete))
    assert done.tool_call.name == "search" and done.tool_call.arguments == {"query": "loom"}
    assert done.tool_call.id == "c1"
    deltas = "".join(e.arguments_delta for e in events if isinstance(e, ToolCallDelta))
    assert deltas == '{"query": "loom"}'


def test_repeated_name_not_duplicated():
    # llama.cpp repeats the name in every delta.
    events = _run(
        [
            _tc(0, "c1", "get_weather", "{"),
            _tc(0, "c1", "get_weather", '"city": "P"'),
            _tc(0, "c1", "get_weather", "}"),
            chunk({}, "tool_calls"),
        ]
    )
    call = events[-1].response.tool_calls[0]
    assert call.name == "get_weather" and call.arguments == {"city": "P"}
    assert sum(isinstance(e, ToolCallStart) for e in events) == 1


def test_arguments_none_and_empty():
    events = _run([_tc(0, "c1", "ping", None), _tc(0, None, None, None), chunk({}, "tool_calls")])
    call = events[-1].response.tool_calls[0]
    assert call.arguments == {} and call.arguments_error is None


def test_empty_object_placeholder_then_real_arguments():
    events = _run(
        [_tc(0, "c1", "f", "{}"), _tc(0, None, None, '{"a": 1}'), chunk({}, "tool_calls")]
    )
    assert events[-1].response.tool_calls[0].arguments == {"a": 1}


def test_arguments_sent_as_object():
    events = _run([_tc(0, "c1", "f", {"a": 2}), chunk({}, "tool_calls")])
    assert events[-1].response.tool_calls[0].arguments == {"a": 2}


def test_parallel_calls_by_index_and_without_index():
    events = _run(
        [
            _tc(0, "c1", "a", '{"x":'),
            _tc(1, "c2", "b", '{"y":'),
            _tc(0, None, None, "1}"),
            _tc(1, None, None, "2}"),
            chunk({}, "tool_calls"),
        ]
    )
    calls = events[-1].response.tool_calls
    assert [(c.name, c.arguments) for c in calls] == [("a", {"x": 1}), ("b", {"y": 2})]
    events = _run(
        [
            _tc(None, "c1", "a", '{"x": 1}'),
            _tc(None, "c2", "b", ""),
            _tc(None, None, None, '{"y": 2}'),
            chunk({}, "tool_calls"),
        ]
    )
    calls = events[-1].response.tool_calls
    assert [(c.id, c.arguments) for c in calls] == [("c1", {"x": 1}), ("c2", {"y": 2})]


def test_invalid_arguments_kept_with_error():
    events = _run([_tc(0, "c1", "f", '{"a": '), chunk({}, "tool_calls")])
    call = events[-1].response.tool_calls[0]
    assert call.arguments == {} and call.raw_arguments == '{"a": '
    assert "not valid JSON" in (call.arguments_error or "")


def test_name_map_restores_namespaced_names():
    acc = StreamAccumulator("t", {"web__search": "web:search"})
    acc.feed(_tc(0, "c", "web__search", "{}"))
    acc.feed(chunk({}, "tool_calls"))
    assert acc.finish()[-1].response.tool_calls[0].name == "web:search"


def test_usage_and_reasoning():
    acc = StreamAccumulator("t")
    evs = acc.feed(chunk({"reasoning_content": "think"}))
    evs += acc.feed(chunk({"content": "x"}, "stop"))
    evs += acc.feed(
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 5,
                "total_tokens": 8,
                "prompt_tokens_details": {"cached_tokens": 2},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        }
    )
    acc.done = True
    evs += acc.finish()
    usage = next(e for e in evs if isinstance(e, UsageEvent)).usage
    assert (usage.cached_tokens, usage.reasoning_tokens, usage.estimated) == (2, 4, False)
    assert evs[-1].response.reasoning_content == "think"


def test_no_usage_is_estimated():
    acc = StreamAccumulator("t")
    acc.feed(chunk({"content": "a"}))
    acc.feed(chunk({"content": "b"}, "stop"))
    u = acc.finish(estimate_prompt_tokens=4)[-2].usage
    assert (u.prompt_tokens, u.completion_tokens, u.estimated) == (4, 2, True)


def test_truncated_stream_raises():
    acc = StreamAccumulator("t")
    acc.feed(chunk({"content": "a"}))
    with pytest.raises(LLMResponseError, match="before completion"):
        acc.finish()


def test_parse_completion_content_parts_and_missing_name():
    r = parse_completion(
        {
            "choices": [
                {
                    "message": {
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
                    },
                    "finish_reason": "stop",
                }
            ]
        },
        "t",
    )
    assert r.content == "ab"
    with pytest.raises(LLMResponseError, match="no name"):
        parse_completion({"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}, "t")


async def test_stream_event_order_over_http(fault_server, make_provider):
    tool_events = [
        chunk({"role": "assistant"}),
        _tc(0, "c1", "lookup", '{"k": '),
        _tc(0, None, None, '"v"}'),
        chunk({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        "[DONE]",
    ]
    fault_server.push(sse(text_chunks(["Hel", "lo"]), crlf=True), sse(tool_events))
    llm = make_provider()
    events = [e async for e in llm.stream_events([{"role": "user", "content": "x"}])]
    assert [type(e) for e in events] == [TextDelta, TextDelta, UsageEvent, FinishEvent]
    assert events[-1].response.content == "Hello"
    assert events[-1].response.usage.completion_tokens == 2
    events = [e async for e in llm.stream_events([{"role": "user", "content": "x"}])]
    assert [type(e) for e in events] == [
        ToolCallStart,
        ToolCallDelta,
        ToolCallDelta,
        ToolCallComplete,
        UsageEvent,
        FinishEvent,
    ]
    assert events[-1].response.tool_calls[0].arguments == {"k": "v"}
    assert events[-1].finish_reason == "tool_calls"


async def test_stream_text_helper(fault_server, make_provider):
    fault_server.push(sse(text_chunks(["a", "b", "c"])))
    assert [p async for p in make_provider().stream([{"role": "user", "content": "x"}])] == [
        "a",
        "b",
        "c",
    ]


async def test_consumer_breaking_early_releases_the_connection(fault_server, make_provider):
    fault_server.push(sse(text_chunks([str(i) for i in range(50)], usage=False), delay=0.01))
    llm = make_provider(max_concurrency=1)
    async for _ in llm.stream([{"role": "user", "content": "x"}]):
        break
    # The slot and the connection were given back: the next call is not stuck.
    import asyncio

    r = await asyncio.wait_for(llm.call([{"role": "user", "content": "y"}]), 5)
    assert r.content == "hello"
