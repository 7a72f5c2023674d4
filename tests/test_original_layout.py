"""Projects laid out the original way run (issue 15): a loom.toml whose ``[agents.x]``
tables hold only settings, top-level ``name``/``version``/``description``, and
``agents/*.py`` scripts that build ``Agent(...)`` themselves and call ``agent.run()``,
``asyncio.run(main())`` or define a zero-argument ``main()``. They run in the ``loom
run`` process on one shared runtime, so their events reach each other.

The scripts below are written the way the original docs and apps write them; no model
is needed (the agents answer by themselves).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loom import ConfigError, Runtime, load_project_config
from loom.app import run_project
from loom.config import AgentSpec, parse_project_config

LOOM = [sys.executable, "-m", "loom.cli"]

ORIGINAL_TOML = """\
name = "orig-app"
version = "0.3.0"
description = "written for the original Loom"

[agents]

[agents.echo-agent]
topics = ["ping"]
greeting = "hello from the settings table"
tags = ["a", "b"]

[agents.caller-agent]
topics = ["start"]

[bridge]
address = "127.0.0.1:50051"
"""

JOB = """
[job]
topic = "start"
timeout = 30
"""

# asyncio.run(main()) under the __main__ guard; the handler is not named on_event; its
# settings come from load_project_config().agents.get(...).get(...).
ECHO = """\
import asyncio
import json

from loom import Agent
from loom.runtime import load_project_config


async def handle_ping(ctx, topic, event):
    config = load_project_config()
    agent_config = config.agents.get("echo-agent", {})
    await ctx.reply(
        event,
        "pong",
        {
            "greeting": agent_config.get("greeting"),
            "missing": config.agents.get("nobody", {}).get("model", "default"),
            "as_json": json.dumps(agent_config),
            "project": [config.name, config.version],
        },
    )


async def main():
    agent = Agent(agent_id="echo-agent", topics=["ping"], on_event=handle_ping)
    await agent.start()
    try:
        await asyncio.Event().wait()
    finally:
        await agent.stop()


if __name__ == "__main__":
    asyncio.run(main())
"""

# A module-level Agent and agent.run() under the guard (blocking in the original).
CALLER = """\
from loom import Agent


async def on_start_job(ctx, topic, event):
    reply = await ctx.request("ping", "ping", {})
    await ctx.reply(event, "done", reply.payload)


agent = Agent("caller-agent", topics=["start"], on_event=on_start_job)

if __name__ == "__main__":
    agent.run()
"""


def make(tmp_path: Path, scripts: dict[str, str], toml: str = ORIGINAL_TOML + JOB) -> Path:
    (tmp_path / "agents").mkdir(parents=True, exist_ok=True)
    for name, code in scripts.items():
        (tmp_path / "agents" / name).write_text(textwrap.dedent(code))
    (tmp_path / "loom.toml").write_text(toml)
    return tmp_path


def loom_run(project: Path, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOOM_PROJECT": "none"}  # what the test runner sets; loom run wins
    return subprocess.run(
        [*LOOM, "run", str(project)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def reply_of(stdout: str) -> dict[str, object]:
    start = stdout.index("{")
    payload: dict[str, object] = json.loads(stdout[start:])
    return payload


# -- loom run, as a subprocess -----------------------------------------------------------


def test_original_project_runs_with_loom_run(tmp_path: Path) -> None:
    proj = make(tmp_path / "app", {"echo.py": ECHO, "caller.py": CALLER})
    r = loom_run(proj, cwd=tmp_path)  # not from the project directory
    assert r.returncode == 0, r.stderr
    reply = reply_of(r.stdout)
    assert reply["greeting"] == "hello from the settings table"
    assert reply["missing"] == "default"
    assert json.loads(str(reply["as_json"]))["tags"] == ["a", "b"]
    assert reply["project"] == ["orig-app", "0.3.0"]
    assert "missing required key" not in r.stderr
    assert "unknown table [name]" not in r.stderr and "unknown top-level key" not in r.stderr
    assert "ignoring [bridge]" in r.stderr  # said, with the reason
    assert "TypeError" not in r.stderr


def test_zero_argument_main_sync_and_async_without_a_guard(tmp_path: Path) -> None:
    sync_main = """\
        from loom import Agent

        async def answer(ctx, topic, event):
            await ctx.reply(event, "pong", {"greeting": "sync main"})

        def main():
            Agent("echo-agent", topics=["ping"], on_event=answer).run()
        """
    async_main = """\
        import asyncio
        from loom import Agent

        async def forward(ctx, topic, event):
            reply = await ctx.request("ping", "ping", {})
            await ctx.reply(event, "done", reply.payload)

        async def main():
            agent = Agent("caller-agent", topics=["start"], on_event=forward)
            await agent.start()
            while True:
                await asyncio.sleep(3600)
        """
    proj = make(tmp_path, {"echo.py": sync_main, "caller.py": async_main})
    r = loom_run(proj, cwd=proj)
    assert r.returncode == 0, r.stderr
    assert reply_of(r.stdout) == {"greeting": "sync main"}
    assert "TypeError" not in r.stderr and "restarting" not in r.stderr


def test_sys_exit_asyncio_run_main_works(tmp_path: Path) -> None:
    echo = ECHO.replace(
        "    asyncio.run(main())", "    import sys\n    sys.exit(asyncio.run(main()))"
    )
    proj = make(tmp_path, {"echo.py": echo, "caller.py": CALLER})
    r = loom_run(proj, cwd=proj)
    assert r.returncode == 0, r.stderr


def test_reactive_original_project_stops_on_sigint(tmp_path: Path) -> None:
    ticker = """\
        import asyncio
        from loom import Agent

        async def main():
            agent = Agent("ticker", topics=[])
            await agent.start()
            for i in range(1000):
                await agent.ctx.emit("ticks", "tick", {"n": i})
                await asyncio.sleep(0.05)
        """
    listener = """\
        from loom import Agent

        seen = []

        async def on_tick(ctx, topic, event):
            seen.append(event.payload["n"])
            if len(seen) == 3:
                print("LISTENER GOT 3 TICKS", flush=True)

        agent = Agent("listener", topics=["ticks"], on_event=on_tick)

        if __name__ == "__main__":
            agent.run()
        """
    toml = 'name = "reactive"\n\n[agents.ticker]\n\n[agents.listener]\n'
    proj = make(tmp_path, {"ticker.py": ticker, "listener.py": listener}, toml)
    env = {**os.environ, "LOOM_PROJECT": "none"}
    proc = subprocess.Popen(
        [*LOOM, "run"], cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "LISTENER GOT 3 TICKS" in line or not line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "LISTENER GOT 3 TICKS" in line, err
    assert proc.returncode == 0, err


def test_a_script_that_starts_nothing_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    idle = """\
        async def on_event(ctx, topic, event):
            pass
        """
    proj = make(tmp_path, {"echo.py": ECHO, "idle.py": idle})
    r = loom_run(proj, cwd=proj)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert str(proj / "agents" / "idle.py") in r.stderr
    assert "starts nothing" in r.stderr
    assert 'code = "agents/idle.py"' in r.stderr  # how to run it as a module instead


def test_a_script_that_raises_names_file_and_line(tmp_path: Path) -> None:
    broken = "import asyncio\n\nvalue = {}['missing']\n"
    proj = make(tmp_path, {"broken.py": broken, "echo.py": ECHO})
    r = loom_run(proj, cwd=proj)
    assert r.returncode == 2, r.stderr
    assert f"{proj / 'agents' / 'broken.py'}:3" in r.stderr and "KeyError" in r.stderr


def test_helpers_with_a_leading_underscore_are_not_scripts(tmp_path: Path) -> None:
    helper = "GREETING = 'from a helper'\n"
    echo = ECHO.replace('agent_config.get("greeting")', "_helper.GREETING").replace(
        "import json\n", "import json\n\nimport _helper\n"
    )
    proj = make(tmp_path, {"_helper.py": helper, "echo.py": echo, "caller.py": CALLER})
    r = loom_run(proj, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert reply_of(r.stdout)["greeting"] == "from a helper"


def test_a_disabled_table_leaves_its_script_out(tmp_path: Path) -> None:
    proj = make(
        tmp_path,
        {"echo.py": ECHO, "caller.py": CALLER, "broken.py": "raise SystemExit(3)\n"},
        ORIGINAL_TOML + "\n[agents.broken]\nenabled = false\n" + JOB,
    )
    r = loom_run(proj, cwd=proj)
    assert r.returncode == 0, r.stderr


def test_top_level_name_conflicting_with_project_table(tmp_path: Path) -> None:
    toml = 'name = "one"\n\n[project]\nname = "two"\n\n[agents.a]\n'
    proj = make(tmp_path, {"echo.py": ECHO}, toml)
    r = loom_run(proj, cwd=proj)
    assert r.returncode == 2
    assert f"{proj / 'loom.toml'}:1 [name]" in r.stderr
    assert "conflicts with [project] name = 'two' (line 4)" in r.stderr


def test_a_table_without_code_and_no_scripts_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text('[project]\nname = "x"\n\n[agents.a]\ntopics = ["t"]\n')
    r = loom_run(tmp_path, cwd=tmp_path)
    assert r.returncode == 2
    assert f"{tmp_path / 'loom.toml'}:4 [agents.a]" in r.stderr
    assert "missing key 'code'" in r.stderr and "agents/*.py" in r.stderr


# -- in-process: run_project on one runtime ---------------------------------------------


async def test_scripts_and_code_agents_share_one_runtime_in_process(tmp_path: Path) -> None:
    """A new-style agent (``code =``) requests the original script's agent: one bus."""
    new_style = """\
        async def on_event(ctx, topic, event):
            reply = await ctx.request("ping", "ping", {})
            await ctx.reply(event, "done", {"via": "code agent", **reply.payload})
        """
    toml = ORIGINAL_TOML.replace(
        "[agents.caller-agent]\n", '[agents.caller-agent]\ncode = "caller_module.py"\n'
    )
    proj = make(tmp_path, {"echo.py": ECHO}, toml + JOB)
    (proj / "caller_module.py").write_text(textwrap.dedent(new_style))
    project = load_project_config(proj)
    assert [p.name for p in project.script_files()] == ["echo.py"]
    runtime = Runtime(project)
    cwd = Path.cwd()
    os.chdir(proj)  # the script's load_project_config() finds the project from here
    try:
        result = await run_project(project, runtime=runtime, telemetry=False)
    finally:
        os.chdir(cwd)
        Runtime.set_default(None)
    assert result.exit_code == 0, result.message
    assert result.reply is not None
    assert result.reply.payload["via"] == "code agent"
    assert result.reply.payload["greeting"] == "hello from the settings table"


async def test_code_module_with_a_zero_argument_main_runs_once(tmp_path: Path) -> None:
    """``code = "agents/x.py"`` naming an original script: its ``main()`` is its entry
    point, not a ``main(ctx)`` hook (no TypeError crash loop)."""
    proj = make(tmp_path, {"echo.py": ECHO, "caller.py": CALLER})
    toml = (
        '[project]\nname = "c"\n\n[agents.echo-agent]\ncode = "agents/echo.py"\n'
        'greeting = "hi"\n\n[agents.caller-agent]\ncode = "agents/caller.py"\n' + JOB
    )
    (proj / "loom.toml").write_text(toml)
    caller = CALLER.replace('if __name__ == "__main__":\n    agent.run()\n', "")
    (proj / "agents" / "caller.py").write_text(caller)
    project = load_project_config(proj)
    assert project.script_files() == []
    runtime = Runtime(project)
    cwd = Path.cwd()
    os.chdir(proj)
    try:
        result = await run_project(project, runtime=runtime, telemetry=False)
    finally:
        os.chdir(cwd)
        Runtime.set_default(None)
    assert result.exit_code == 0, result.message
    assert result.reply is not None and result.reply.payload["greeting"] == "hi"


# -- config objects ---------------------------------------------------------------------


def test_agent_tables_are_mappings_with_typed_attributes() -> None:
    cfg = parse_project_config(ORIGINAL_TOML)
    spec = cfg.agents["echo-agent"]
    assert isinstance(spec, AgentSpec) and isinstance(spec, dict)
    assert spec.get("greeting") == spec["greeting"] == spec.greeting
    assert spec.topics == ["ping"] and spec.code is None and spec.qos == "reliable"
    assert {"topics", "greeting", "tags"} <= set(spec.keys())
    assert dict(spec.items())["tags"] == ["a", "b"]
    assert json.loads(json.dumps(spec))["greeting"] == "hello from the settings table"
    assert cfg.agents.get("nobody", {}).get("model") is None
    assert spec.model_extra == {"greeting": "hello from the settings table", "tags": ["a", "b"]}
    with pytest.raises(TypeError, match="read-only"):
        spec["greeting"] = "changed"
    copy = dict(spec)
    copy["greeting"] = "changed"
    assert spec["greeting"] == "hello from the settings table"
    assert cfg.project.name == cfg.name == "orig-app" and cfg.version == "0.3.0"
    assert cfg.description == "written for the original Loom"


def test_load_project_config_without_a_path_finds_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loom.toml").write_text(ORIGINAL_TOML)
    sub = tmp_path / "agents"
    sub.mkdir()
    monkeypatch.chdir(sub)
    monkeypatch.delenv("LOOM_PROJECT", raising=False)
    assert load_project_config().name == "orig-app"
    monkeypatch.setenv("LOOM_PROJECT", "none")
    assert load_project_config().name == "orig-app"  # "none" is for the default runtime
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("LOOM_PROJECT", str(tmp_path))
    assert load_project_config().name == "orig-app"


def test_the_seed_import_path() -> None:
    from loom.config import load_project_config as from_config
    from loom.runtime import load_project_config as from_runtime

    assert from_runtime is from_config


def test_a_bad_value_in_a_settings_table_still_names_line_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_project_config('name = "x"\n\n[agents.a]\nmax_concurrency = 0\n')
    assert info.value.key == "agents.a.max_concurrency" and info.value.line == 4


# -- loom chat and an agent's original settings -----------------------------------------


def test_loom_chat_uses_the_agents_llm_provider_and_says_what_it_ignores(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text(
        'name = "chat-app"\n\n[llm.test]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n\n'
        '[agents.assistant]\nllm_provider = "test"\nmax_iterations = 2\n'
        'thinking_strategy = "react"\n'
    )
    r = subprocess.run(
        [*LOOM, "chat", "--agent", "assistant", "--no-tools"],
        cwd=tmp_path,
        input="/exit\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "loom chat — test (m)" in r.stdout
    from loom.cognitive import CognitiveConfig

    if "thinking_strategy" not in CognitiveConfig.model_fields:
        assert "thinking_strategy is not supported by loom chat" in r.stdout


def test_loom_chat_settings_command_line_first() -> None:
    import argparse

    from loom.cli.chat import DEFAULT_MAX_ITERATIONS, _agent_settings

    table = {"llm_provider": "deepseek", "max_iterations": 3}
    none = argparse.Namespace(provider=None, max_iterations=None)
    assert _agent_settings(table, none)["provider"] == "deepseek"
    assert _agent_settings(table, none)["max_iterations"] == 3
    assert _agent_settings({"llm": "openai", **table}, none)["provider"] == "openai"
    given = argparse.Namespace(provider="local", max_iterations=9)
    assert _agent_settings(table, given)["provider"] == "local"
    assert _agent_settings(table, given)["max_iterations"] == 9
    assert _agent_settings({}, none) == {
        "provider": "auto",
        "max_iterations": DEFAULT_MAX_ITERATIONS,
        "extra": {},
        "unsupported": [],
    }
