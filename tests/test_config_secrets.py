"""Secrets in configuration never show: a real environment variable with a unique value,
a real loom.toml through the project loader, and every object built from it — its
``repr``, ``str``, the log lines of a run and the messages of the errors it raises."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, LoomError, Runtime
from loom.config import load_project_config
from loom.llm import LLMProvider
from loom.llm.config import resolve_config
from loom.llm.local_server import free_port
from loom.telemetry.setup import resolve_settings
from loom.tools.mcp import parse_server

NOTES = Path(__file__).parent / "mcp_servers" / "notes_server.py"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"sekrit-{uuid.uuid4().hex}"
    monkeypatch.setenv("LOOM_TEST_SECRET", value)
    return value


@pytest.fixture
def project_file(tmp_path: Path, secret: str) -> Path:
    dead = free_port()  # nothing listens: the errors below name these URLs
    literal = secret  # telemetry tables are not expanded: written as they would be
    (tmp_path / "loom.toml").write_text(
        f"""
[llm.corp]
base_url = "http://127.0.0.1:{dead}/v1?api_key=${{LOOM_TEST_SECRET}}"
model = "m"
api_key = "${{LOOM_TEST_SECRET}}"
max_retries = 0

[llm.corp.headers]
"X-Api-Key" = "${{LOOM_TEST_SECRET}}"
Authorization = "Bearer ${{LOOM_TEST_SECRET}}"

[llm.basic]
base_url = "http://user:${{LOOM_TEST_SECRET}}@127.0.0.1:{dead}/v1"
model = "m"
max_retries = 0

[llm.keyed]
base_url = "http://127.0.0.1:{dead}/v1"
model = "m"
api_key_env = "LOOM_TEST_SECRET"
max_retries = 0

[mcp.notes]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(NOTES))}]
env = {{ NOTES_TOKEN = "${{LOOM_TEST_SECRET}}" }}

[mcp.search]
url = "http://127.0.0.1:{dead}/mcp?token={literal}"
headers = {{ Authorization = "Bearer ${{LOOM_TEST_SECRET}}" }}

[telemetry]
exporters = ["none"]
endpoint = "https://me:{literal}@otlp.example.com:4318"
headers = {{ "x-honeycomb-team" = "{literal}" }}

[project]
# Not [bus] nats: agents would connect at start; the test connects itself below.
test_nats_url = "nats://me:{literal}@127.0.0.1:{dead}"
"""
    )
    return tmp_path / "loom.toml"


def shown(obj: Any) -> list[str]:
    return [repr(obj), str(obj), f"{obj}", f"{obj!r}"]


def test_no_config_object_shows_the_secret(project_file: Path, secret: str) -> None:
    project = load_project_config(project_file)
    corp = resolve_config("corp", project)
    keyed = resolve_config("keyed", project)
    basic = resolve_config("basic", project)
    assert corp.resolved_api_key() == secret == keyed.resolved_api_key()  # really loaded
    notes = parse_server("notes", project.mcp["notes"], project)
    search = parse_server("search", project.mcp["search"], project)
    assert notes is not None and notes.env["NOTES_TOKEN"] == secret  # type: ignore[union-attr]
    assert search is not None and secret in search.headers["Authorization"]  # type: ignore[union-attr]
    telemetry = resolve_settings(project, env={})
    assert telemetry.headers["x-honeycomb-team"] == secret
    objects: list[Any] = [
        project,
        corp,
        keyed,
        basic,
        notes,
        search,
        telemetry,
        [notes, search],
        {"cfg": corp},
        LLMProvider(None, corp),
        LLMProvider(None, keyed),
        LLMProvider(None, basic),
    ]
    for obj in objects:
        for text in shown(obj):
            assert secret not in text, f"{type(obj).__name__} shows the secret: {text[:300]}"
    # what is shown is still useful: names and hosts, with the values masked
    assert "NOTES_TOKEN" in repr(notes) and "***" in repr(notes)
    assert "127.0.0.1" in repr(corp) and "api_key=***" in repr(corp)
    assert "Authorization" in repr(search) and "token=***" in repr(search)
    assert "otlp.example.com" in repr(telemetry) and "x-honeycomb-team" in repr(telemetry)


def test_request_objects_hide_it(secret: str) -> None:
    from loom.llm._request import CallRequest

    req = CallRequest(messages=[], extra_headers={"Authorization": f"Bearer {secret}"})
    for text in shown(req):
        assert secret not in text


async def test_errors_and_logs_of_a_run_never_show_it(
    project_file: Path, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    project = load_project_config(project_file)
    messages: list[str] = []
    for name in ("corp", "keyed", "basic"):
        llm = LLMProvider.from_name(None, name, project)
        try:
            with pytest.raises(LoomError) as info:
                await llm.call([{"role": "user", "content": "hi"}])
        finally:
            await llm.aclose()
        messages += [str(info.value), repr(info.value), repr(info.value.args)]
        messages += shown(llm._endpoint)  # the client's per-provider request settings
        assert "127.0.0.1" in str(info.value)  # it still says where
    rt = Runtime(project)
    try:
        async with Agent("a", runtime=rt) as a:
            # the notes server started with the secret in its environment ...
            assert (await a.ctx.tool("notes:getenv", {"name": "NOTES_TOKEN"}))["value"] == secret
            # ... and the search server failed to start (nothing listens): logged
            with pytest.raises(LoomError) as tinfo:
                await a.ctx.tool("search:anything")
            messages.append(str(tinfo.value))
    finally:
        await rt.stop(timeout=10)
    from loom.nats import connect

    with pytest.raises(LoomError) as ninfo:
        await connect(Runtime(), str((project.project.model_extra or {})["test_nats_url"]))
    messages.append(str(ninfo.value))
    logged = [r.getMessage() for r in caplog.records] + [
        logging.Formatter().format(r) for r in caplog.records
    ]
    assert any("search" in m for m in logged), "the failed MCP server was not logged"
    for text in messages + logged:
        assert secret not in text, text[:400]


@pytest.mark.parametrize(
    "extra", [{"api_key": "x"}, {"headers": {"authorization": "Bearer x"}}], ids=["key", "header"]
)
def test_url_credentials_with_an_api_key_are_a_config_error(secret: str, extra: Any) -> None:
    """httpx refused the combination with a bare ValueError at the first call."""
    from loom import ConfigError
    from loom.llm import LLMConfig

    cfg = LLMConfig(name="both", base_url=f"http://u:{secret}@127.0.0.1:9/v1", model="m", **extra)
    with pytest.raises(ConfigError, match="credentials") as info:
        LLMProvider(None, cfg)
    assert secret not in str(info.value)
