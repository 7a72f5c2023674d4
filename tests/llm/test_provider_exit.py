"""A provider made outside a runtime and never closed leaves no "Unclosed client
session" warning at exit, and still works from a second event loop (issue 9 §5)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from asyncio.subprocess import PIPE

from conftest import completion, respond

SCRIPT = """
import asyncio, gc
from loom.llm import LLMConfig, LLMProvider

llm = LLMProvider(None, LLMConfig(name="x", base_url="{url}", model="m", max_retries=0))

async def main():
    r = await llm.call(messages=[{{"role": "user", "content": "hi"}}])
    print("ANSWER", r.content)

asyncio.run(main())
asyncio.run(main())  # a second loop: a fresh pool, the provider still works
gc.collect()
"""


async def test_no_unclosed_session_warning_and_a_second_loop_works(fault_server) -> None:
    fault_server.push(respond(200, completion("one")), respond(200, completion("two")))
    env = {**os.environ, "LOOM_PROJECT": "none", "PYTHONWARNINGS": "always"}
    code = textwrap.dedent(SCRIPT.format(url=fault_server.base_url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=PIPE, stderr=PIPE, env=env
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    assert "ANSWER one" in out and "ANSWER two" in out, out
    assert "Unclosed" not in err and "never awaited" not in err, err
