"""call_json: schema-valid JSON, re-asking with the validation error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conftest import completion, respond
from loom.llm import StructuredOutputError

MSG = [{"role": "user", "content": "give me a city"}]


class City(BaseModel):
    name: str
    population: int


async def test_valid_first_time_with_fences(fault_server, make_provider):
    fault_server.push(
        respond(200, completion('Sure!\n```json\n{"name": "Oslo", "population": 700000}\n```'))
    )
    city = await make_provider().call_json(MSG, City)
    assert city == City(name="Oslo", population=700000)


async def test_reask_with_validation_error(fault_server, make_provider):
    fault_server.push(
        respond(200, completion('{"name": "Oslo", "population": "many"}')),
        respond(200, completion('{"name": "Oslo", "population": 7}')),
    )
    city = await make_provider().call_json(MSG, City)
    assert city.population == 7
    second = fault_server.requests[1].json()["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"name": "Oslo", "population": "many"}'}
    assert "population" in second[-1]["content"] and second[-1]["role"] == "user"


async def test_gives_up_with_last_raw_text(fault_server, make_provider):
    fault_server.default = respond(200, completion("no json here"))
    with pytest.raises(StructuredOutputError) as ei:
        await make_provider().call_json(MSG, City, max_attempts=2)
    assert ei.value.raw_text == "no json here" and ei.value.attempts == 2
    assert len(fault_server.requests) == 2


async def test_dict_schema_and_generate_json(fault_server, make_provider):
    fault_server.push(
        respond(200, completion('{"a": 1}')),
        respond(200, completion('{"name": "x", "population": 1}')),
    )
    llm = make_provider()
    assert await llm.call_json(MSG, {"type": "object", "required": ["a"]}) == {"a": 1}
    assert (await llm.generate_json("city?", City)).name == "x"


async def test_generate(fault_server, make_provider):
    assert await make_provider().generate("hi") == "hello"
    assert fault_server.requests[0].json()["messages"] == [{"role": "user", "content": "hi"}]


async def test_list_type_schema(fault_server, make_provider):
    fault_server.push(respond(200, completion("[1, 2, 3]")))
    assert await make_provider().call_json(MSG, list[int]) == [1, 2, 3]
