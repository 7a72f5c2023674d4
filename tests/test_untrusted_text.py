"""Model-chosen text shown to a human: approval prompts show what will run, and log
lines, ``loom run``, ``loom trace show`` and ``loom tools`` never pass control
characters or bidi overrides to the terminal (a newline would forge a log line)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loom._text import SafeFormatter, escape_block, escape_line, shorten
from loom.cli import chat
from loom.tools import ApprovalRequest
from loom.tools.render import MAX_ITEMS, describe_call

#: Everything that must never reach a terminal raw.
HOSTILE = (
    "ok\n12:00:00 ERROR   loom.sandbox: FORGED\r"
    "\x1b]0;pwned\x07\x1b[2J\x1b[31m\x9b31m\x85\x7f\x00\u202egnp.exe\u2066\u2069\u2028\ud800"
)
RAW = ["\x1b", "\x07", "\x9b", "\x85", "\x7f", "\x00", "\u202e", "\u2066", "\u2028", "\ud800"]


def assert_clean(text: str, *, lines_ok: bool = False) -> None:
    for c in RAW:
        assert c not in text, f"{c!r} reached the output"
    assert "\r" not in text
    if not lines_ok:
        assert "\n" not in text
    assert not any(line.startswith("12:00:00 ERROR") for line in text.splitlines())


# -- the one rule ---------------------------------------------------------------------------


def test_escaping_covers_every_class_and_keeps_ordinary_text() -> None:
    out = escape_line(HOSTILE)
    assert_clean(out)
    for shown in ("\\n", "\\r", "\\x1b", "\\x07", "\\x9b", "\\x85", "\\x7f", "\\x00", "\\u202e"):
        assert shown in out
    assert escape_line("tab\there") == "tab\\there"
    block = escape_block("line 1\n\tline 2\r\x1b[2J")
    assert block == "line 1\n\tline 2\\r\\x1b[2J"
    for fine in ("héllo wörld", "日本語", "emoji 🎉", "back\\slash", "Ünïcödé — “quotes”"):
        assert escape_line(fine) == fine and escape_block(fine) == fine


def test_shortening_always_says_so() -> None:
    assert shorten("x" * 10, 10) == "x" * 10
    cut = shorten("x" * 500, 10)
    assert cut == "x" * 10 + "… (500 chars)"
    assert_clean(shorten("\x1b" * 300, 20))


# -- approval: what will run ------------------------------------------------------------------


def test_the_reported_attack_shows_argv_first_and_in_full() -> None:
    """``{"cwd": "./"*100, "argv": ["rm","-rf","victim"]}`` showed only ``./././…``."""
    text = describe_call("system:shell", {"cwd": "./" * 100, "argv": ["rm", "-rf", "victim"]})
    lines = text.splitlines()
    assert lines[0] == "system:shell"
    assert lines[1] == '  argv: "rm" "-rf" "victim"'
    assert lines[2].startswith('  cwd: "./') and "… (200 chars)" not in lines[2]  # 200: fits
    huge = describe_call("system:shell", {"cwd": "./" * 5000, "argv": ["rm", "-rf", "victim"]})
    assert huge.splitlines()[1] == '  argv: "rm" "-rf" "victim"'
    assert "… (10000 chars)" in huge.splitlines()[2]


def test_key_order_is_ours_not_the_models() -> None:
    args = {"zeta": 1, "cwd": ".", "env": {"A": "1"}, "argv": ["ls"], "alpha": 2}
    reordered = dict(reversed(list(args.items())))
    a, b = describe_call("system:shell", args), describe_call("system:shell", reordered)
    assert a == b
    keys = [line.split(":")[0].strip() for line in a.splitlines()[1:]]
    assert keys == ["argv", "cwd", "alpha", "env", "zeta"]
    assert describe_call("fs:write_file", {"content": "x", "path": "a"}).splitlines()[1] == (
        '  path: "a"'
    )


def test_long_argv_elements_are_summarised_with_their_length_never_dropped() -> None:
    script = "echo hi; " + "x" * 1000 + "; rm -rf ~"
    text = describe_call("system:shell", {"argv": ["sh", "-c", script, "tail"]})
    argv = text.splitlines()[1]
    assert '"sh" "-c" "echo hi; ' in argv and f"… ({len(script)} chars)" in argv
    assert argv.endswith('"tail"')
    many = describe_call("system:shell", {"argv": ["x"] * (MAX_ITEMS + 50)})
    assert f"(+50 more, {MAX_ITEMS + 50} in all)" in many


def test_control_characters_in_keys_and_values_are_escaped() -> None:
    text = describe_call(
        "system:shell",
        {"argv": ["rm", HOSTILE], HOSTILE: HOSTILE, "cwd": {"nested": HOSTILE}},
    )
    lines = text.splitlines()
    assert all(line.startswith("  ") for line in lines[1:]), "a value started a line"
    for line in lines:
        assert_clean(line)
    assert len(lines) == 4


def test_many_arguments_are_counted() -> None:
    args = {f"k{i:04d}": i for i in range(MAX_ITEMS + 7)}
    text = describe_call("t:x", args)
    assert f"(+7 more arguments, {MAX_ITEMS + 7} in all)" in text
    assert describe_call("t:x", {}) == "t:x\n  (no arguments)"


def test_the_documented_example_is_what_describe_call_prints() -> None:
    import doctest
    import re

    doc = (Path(__file__).parent.parent / "docs" / "agents.md").read_text()
    block = re.search(r"```python\n(>>> from loom.tools import describe_call.*?)```", doc, re.S)
    assert block is not None
    test = doctest.DocTestParser().get_doctest(block.group(1), {}, "agents.md", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.failures == 0 and runner.tries == 3


def test_loom_chat_asks_with_the_whole_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prompt ``loom chat`` prints before a call that needs approval."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\ny\n"))
    req = ApprovalRequest(
        "system:shell",
        {"cwd": "./" * 100, "argv": ["rm", "-rf", "victim"], "note": HOSTILE},
        "chat",
        "call_1",
    )
    assert chat._ask_approval(req) is False
    out = capsys.readouterr().out
    assert '  argv: "rm" "-rf" "victim"' in out
    assert out.index("argv") < out.index("cwd")
    assert_clean(out, lines_ok=True)
    assert chat._ask_approval(req) is True


# -- logs -----------------------------------------------------------------------------------


def test_the_formatter_makes_every_record_one_safe_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("loom.test.untrusted")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("tool %s failed: %s", HOSTILE, {"path": HOSTILE})
        log.warning(HOSTILE)  # the message itself, no args
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            log.exception("call %r", HOSTILE)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert_clean(text, lines_ok=True)
    records = [ln for ln in text.splitlines() if ln.startswith(("WARNING", "ERROR"))]
    assert len(records) == 3
    assert sum(1 for ln in text.splitlines() if "FORGED" in ln) == 4  # 3 records + traceback


# -- the CLI end to end -------------------------------------------------------------------------

AGENT = f"""
import logging
from loom.tools import tool

log = logging.getLogger("loom.agents.hostile")
TEXT = {HOSTILE!r}


@tool(name="text:fail", register=False)
def fail(text: str) -> str:
    \"\"\"Fails with the text.\"\"\"
    raise ValueError(text)


async def on_start(ctx):
    (await ctx.runtime.get_tools()).register(fail)


async def on_event(ctx, topic, event):
    log.warning("the model said %s", TEXT)
    try:
        await ctx.tool("text:fail", {{"text": TEXT}})
    except Exception as exc:
        log.error("tool failed: %s", exc)
    await ctx.reply(event, payload={{"answer": TEXT, "text": TEXT}})
"""


def loom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONIOENCODING"] = "utf-8:surrogateescape"  # let a raw surrogate through
    return subprocess.run(
        [sys.executable, "-m", "loom.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        errors="surrogateescape",
    )


def test_loom_run_and_trace_show_print_no_raw_control_characters(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "hostile.py").write_text(AGENT)
    (tmp_path / "loom.toml").write_text(
        textwrap.dedent(
            """
            [agents.hostile]
            code = "agents/hostile.py"
            topics = ["work.go"]

            [job]
            topic = "work.go"
            timeout = 20

            [telemetry]
            capture_content = true
            """
        )
    )
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the model said" in r.stderr and "tool failed" in r.stderr
    assert_clean(r.stderr, lines_ok=True)
    assert_clean(r.stdout, lines_ok=True)
    assert "\\x1b" in r.stderr  # escaped, visible
    shown = loom("trace", "show", "--attrs", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "text:fail" in shown.stdout and "ERROR" in shown.stdout
    assert_clean(shown.stdout, lines_ok=True)
    listed = loom("trace", "list", cwd=tmp_path)
    assert_clean(listed.stdout, lines_ok=True)


HOSTILE_MCP = """
import json, sys
TEXT = %r
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": TEXT, "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "evil", "description": TEXT,
                             "inputSchema": {"type": "object",
                                             "properties": {TEXT: {"type": "string"}}}}]}
    else:
        continue
    if mid is not None:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}) + "\\n")
        sys.stdout.flush()
"""


def test_loom_tools_escapes_what_an_mcp_server_says(tmp_path: Path) -> None:
    server = tmp_path / "hostile_server.py"
    server.write_text(HOSTILE_MCP % HOSTILE)
    (tmp_path / "loom.toml").write_text(
        f"[mcp.h]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(server))}]\n"
    )
    r = loom("tools", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "h:evil" in r.stdout
    assert_clean(r.stdout, lines_ok=True)
    lines = r.stdout.splitlines()
    assert sum("h:evil" in ln for ln in lines) == 1
    assert sum("FORGED" in ln for ln in lines) == 1  # the parameter (description: line 1)
