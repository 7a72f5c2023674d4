"""`loom chat` in a subprocess against a scripted OpenAI-compatible server: the approval
prompt shows what will run (the reported ``cwd``-before-``argv`` attack), a denied call
does not run, and model or tool text never reaches the terminal raw."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import FaultServer, chunk, sse, text_chunks

pytestmark = pytest.mark.timeout(120)

HOSTILE = "ok\n12:00:00 ERROR forged\r\x1b]0;pwned\x07\x1b[2J\u202etxt.exe\x9b1m"


def tool_call_stream(calls: list[tuple[str, str, dict[str, Any]]]) -> Any:
    """One streamed assistant turn making ``calls`` (id, wire name, arguments)."""
    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    for i, (call_id, name, args) in enumerate(calls):
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                    ]
                }
            )
        )
    events += [chunk({}, "tool_calls"), "[DONE]"]
    return sse(events)


async def test_chat_approval_shows_argv_and_nothing_raw(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "victim").write_text("precious\n")
    (ws / "notes.txt").write_text(HOSTILE)
    (tmp_path / "loom.toml").write_text(
        f'[llm.fake]\nbase_url = "{fault_server.base_url}"\nmodel = "fake-model"\n'
        'api_key = "x"\n[workspace]\nroot = "ws"\n'
        '[tools]\nrequire_approval = ["system:shell"]\n'
    )
    fault_server.push(
        tool_call_stream(
            [("c1", "system__shell", {"cwd": "./" * 100, "argv": ["rm", "-rf", "victim"]})]
        ),
        tool_call_stream([("c2", "fs__read_file", {"path": "notes.txt"})]),
        sse(text_chunks(["done ", HOSTILE])),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loom.cli",
        "--log-level",
        "WARNING",
        "chat",
        "--provider",
        "fake",
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(b"go\nn\n/exit\n"), 90)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    # the prompt: the tool, then argv in full, before the long cwd
    prompt = out[out.index("approve this call?") :]
    lines = prompt.splitlines()
    assert lines[1] == "system:shell"
    assert lines[2] == '  argv: "rm" "-rf" "victim"'
    assert lines[3].startswith('  cwd: "./')
    # denied: it did not run, and the model was told
    assert (ws / "victim").read_text() == "precious\n"
    assert "ToolDenied" in out
    assert len(fault_server.requests) == 3
    assert "not approved" in json.dumps(fault_server.requests[1].json()["messages"])
    # the file's and the model's hostile text were shown escaped
    assert "\\x1b]0;pwned" in out
    for raw in ("\x1b", "\x07", "\r", "\u202e", "\x9b"):
        assert raw not in out and raw not in err
    # One record per log line; in the chat only the model's own answer may span lines
    # (it is prose); tool results and errors are one line each.
    assert not any(line.startswith("12:00:00 ERROR") for line in err.splitlines())
    assert sum(line.startswith("12:00:00 ERROR") for line in out.splitlines()) == 1
    result_line = next(ln for ln in out.splitlines() if "← fs:read_file:" in ln)
    assert "\\u202etxt.exe\\x9b1m" in result_line and "… (201 chars)" in result_line
