"""Every tool-configuration mistake stops `loom run` before any agent starts (exit 2,
file:line [key]), and `[tools] require_approval` can never be silently disabled."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from loom import Agent, Runtime
from loom.config import parse_project_config
from loom.errors import ConfigError, ToolDenied
from loom.tools.registry import ToolRegistry

# An agent whose start leaves a mark: none of these runs may get that far.
MARKING_AGENT = """
from pathlib import Path

async def on_start(ctx):
    Path("started").write_text("yes")

async def on_event(ctx, topic, event):
    await ctx.reply(event, payload="ok")
"""


WS = '[workspace]\nroot = "ws"\n'


def loom_run(tmp_path: Path, toml_extra: str, agent_extra: str = "") -> CompletedProcess[str]:
    """`loom run` on a one-agent project with a job, no API keys in the environment."""
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.py").write_text(textwrap.dedent(MARKING_AGENT))
    (tmp_path / "loom.toml").write_text(
        '[agents.a]\ncode = "agents/a.py"\ntopics = ["work.>"]\n'
        + agent_extra
        + '\n[job]\ntopic = "work.x"\n'
        + toml_extra
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k != "LOOM_TEST_UNSET_KEY"
    }
    return subprocess.run(
        [sys.executable, "-m", "loom.cli", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def run_bad(tmp_path: Path, toml_extra: str, agent_extra: str = "") -> str:
    r = loom_run(tmp_path, toml_extra, agent_extra)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert not (tmp_path / "started").exists(), "an agent started despite the bad config"
    return r.stderr


def test_a_string_require_approval_is_an_error_not_a_set_of_characters(tmp_path: Path) -> None:
    err = run_bad(tmp_path, WS + '[tools]\nrequire_approval = "system:shell"\n')
    assert "loom.toml:" in err and "tools.require_approval" in err, err
    assert "would not require approval" in err, err


def test_a_misspelt_tool_in_require_approval_names_the_closest_one(tmp_path: Path) -> None:
    err = run_bad(
        tmp_path, '[workspace]\nroot = "ws"\n[tools]\nrequire_approval = ["system:shel"]\n'
    )
    assert "tools.require_approval" in err and "did you mean 'system:shell'" in err, err


def test_a_pattern_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    err = run_bad(tmp_path, '[workspace]\nroot = "ws"\n[tools]\nrequire_approval = ["sytem:*"]\n')
    assert "'sytem:*'" in err, err


def test_an_unsafe_shell_allowlist_stops_the_run_before_any_agent(tmp_path: Path) -> None:
    err = run_bad(tmp_path, '[workspace]\nroot = "ws"\n[tools.shell]\nallow = ["python3"]\n')
    assert "tools.shell.allow" in err and "allow_unsafe_binaries" in err, err


def test_a_bad_tool_timeout_stops_the_run(tmp_path: Path) -> None:
    err = run_bad(tmp_path, '[workspace]\nroot = "ws"\n[tools]\ntimeout = -1\n')
    assert "tools.timeout" in err, err


def test_a_valid_tool_config_still_runs(tmp_path: Path) -> None:
    r = loom_run(tmp_path, WS + '[tools]\nrequire_approval = ["system:*", "fs:delete"]\n')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "started").exists()


def test_the_registry_refuses_a_string() -> None:
    with pytest.raises(ConfigError, match="not the string"):
        ToolRegistry(require_approval="system:shell")


@pytest.mark.parametrize("rule", ["system:shell", "system:*", "*:shell", "system:sh?ll"])
async def test_names_and_patterns_require_approval(tmp_path: Path, rule: str) -> None:
    (tmp_path / "ws").mkdir()
    project = parse_project_config(
        f'[workspace]\nroot = "ws"\n[tools]\nrequire_approval = ["{rule}"]\n',
        tmp_path / "loom.toml",
    )
    runtime = Runtime(project)
    try:
        async with Agent("a", runtime=runtime) as a:
            with pytest.raises(ToolDenied) as info:
                await a.ctx.tool("system:shell", {"argv": ["true"]})
            assert info.value.rule == "approval"
            # Another tool is not caught by the rule.
            await a.ctx.tool("fs:list_dir", {"path": "."})
    finally:
        await runtime.stop()


def test_an_unknown_bus_key_names_the_right_one(tmp_path: Path) -> None:
    err = run_bad(tmp_path, '[bus]\nnatz = "nats://127.0.0.1:4222"\n')
    assert "[bus.natz]" in err and "did you mean 'nats'" in err, err


def test_a_bus_url_that_is_not_a_string(tmp_path: Path) -> None:
    err = run_bad(tmp_path, "[bus]\nnats = 4222\n")
    assert "[bus.nats]" in err and "URL" in err, err


def test_an_unknown_llm_key_stops_the_run_with_its_line(tmp_path: Path) -> None:
    err = run_bad(tmp_path, '[llm.mine]\nbase_url = "http://127.0.0.1:9/v1"\nmodle = "x"\n')
    assert "loom.toml:" in err and "[llm.mine.modle]" in err and "unknown key" in err, err


def test_an_agent_naming_an_unknown_provider(tmp_path: Path) -> None:
    err = run_bad(tmp_path, "", 'llm = "nosuch"\n')
    assert "[agents.a.llm]" in err and "unknown LLM provider 'nosuch'" in err, err


def test_an_agent_naming_a_provider_whose_key_is_unset(tmp_path: Path) -> None:
    err = run_bad(tmp_path, "", 'llm = "openai"\n')
    assert "[agents.a.llm]" in err and "OPENAI_API_KEY is not set" in err, err


def test_an_unset_key_of_a_provider_nobody_names_is_a_warning(tmp_path: Path) -> None:
    r = loom_run(
        tmp_path,
        '[llm.paid]\nbase_url = "https://api.example.com/v1"\napi_key = "${LOOM_TEST_UNSET_KEY}"\n',
    )
    assert r.returncode == 0, r.stderr
    assert "LOOM_TEST_UNSET_KEY is not set" in r.stderr and "WARNING" in r.stderr, r.stderr
