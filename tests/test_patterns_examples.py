"""The pattern examples run (so they cannot rot), on the scripted model and through
``--provider`` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "patterns"

EXPECTED = {
    "chain.py": [
        "ok: Team meeting with Alice and Bob, Tue 7 Jan at 14:00 (1 h).",
        "rejected at extract: confidence 0.20 is below 0.70",
    ],
    "router.py": [
        "new_event: created an event (0.95 sure)",
        "modify_event: updated the event (0.92 sure)",
        "reject: sorry, I can only manage calendar events (low_confidence: confidence 0.40 "
        "for 'modify_event' is below the threshold 0.70)",
        "reject: sorry, I can only manage calendar events (no_route: no route fits: not "
        "about the calendar)",
    ],
    "guardrails.py": [
        "passed ['calendar', 'security', 'short_enough']: Done: the meeting is on your calendar.",
        "blocked by security: tries to override the instructions (cancelled: calendar)",
    ],
    "orchestrator.py": [
        "plan: intro, example, conclusion",
        "round 0: score 0.55, approved False",
        "round 1: score 0.90, approved True",
        "approved: True after 1 revision(s) (approved)",
        "[intro section]",
        "",
        "[example section (revised)]",
        "",
        "[conclusion section]",
    ],
    "multi_agent.py": [
        "desk: created: Schedule lunch with Ann on Friday at noon.",
        "desk: moved: Move my 2pm meeting to Thursday.",
        "desk: refused (security: prompt injection)",
        "editor: approved=True revisions=1 score=0.90",
        "[intro]",
        "",
        "[body (revised)]",
    ],
}


def run_example(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_every_example_is_covered() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_on_the_scripted_model(name: str) -> None:
    r = run_example(name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == EXPECTED[name]


def test_provider_flag_is_documented_and_unknown_names_fail_clearly() -> None:
    r = run_example("chain.py", "--help")
    assert r.returncode == 0 and "--provider NAME" in r.stdout
    r = run_example("chain.py", "--provider", "no-such-provider")
    assert r.returncode != 0
    assert "unknown LLM provider 'no-such-provider'" in r.stderr


# -- --provider against an OpenAI-compatible server on 127.0.0.1 -------------------------


def load_responder(example: str) -> Any:
    """The example's own ``scripted`` function, so the server answers like the script."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(f"_example_{example}", EXAMPLES / example)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module.scripted


@pytest.fixture
def chat_server() -> Iterator[dict[str, Any]]:
    """A chat-completions server whose answers come from ``state["respond"]``."""
    from loom.testing import RecordedCall

    state: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append(body)
            call = RecordedCall(body["messages"], body.get("tools"))
            content = state["respond"](call)
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model", "stub"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["chain.py", "router.py"])
def test_example_through_a_real_provider(
    name: str, chat_server: dict[str, Any], tmp_path: Path
) -> None:
    chat_server["respond"] = load_responder(name)
    (tmp_path / "loom.toml").write_text(
        f'[llm.stub]\nbase_url = "{chat_server["url"]}"\nmodel = "stub-model"\n'
    )
    r = run_example(name, "--provider", "stub", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == EXPECTED[name]
    assert chat_server["requests"], "the provider really sent requests"
    assert all(req["model"] == "stub-model" for req in chat_server["requests"])
