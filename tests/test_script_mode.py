"""A script's default runtime loads its project like `loom run` (issue 9 §1): the nearest
loom.toml upward, `LOOM_PROJECT` first, `LOOM_PROJECT=none` or `Runtime(project=None)` to
opt out; without a project the native-tool error says why and how to fix it."""

from __future__ import annotations

from pathlib import Path

from tests.script_mode_helpers import project, run_script

READ_NOTES = """
import asyncio
from loom import Agent

async def main():
    agent = Agent(agent_id="researcher", topics=["tasks"])
    await agent.start()
    try:
        result = await agent.ctx.tool("fs:read_file", {"path": "notes.md"})
        print("NOTES:", result["content"])
    except Exception as exc:
        print("ERROR:", type(exc).__name__, exc)
    finally:
        await agent.stop()

asyncio.run(main())
"""

WS = '[workspace]\nroot = "ws"\n'


def test_a_script_in_a_subdirectory_finds_the_parent_project(tmp_path: Path) -> None:
    proj = project(tmp_path / "proj", WS)
    sub = proj / "scripts" / "deeper"
    sub.mkdir(parents=True)
    code = "import logging\nlogging.basicConfig(level=logging.INFO)\n" + READ_NOTES
    r = run_script(code, sub)
    assert r.returncode == 0, r.stderr
    assert "NOTES: my notes" in r.stdout, (r.stdout, r.stderr)
    assert f"project: {proj / 'loom.toml'}" in r.stderr, "the loaded file is logged (INFO)"


def test_loom_project_wins_over_the_nearest_file(tmp_path: Path) -> None:
    here = project(tmp_path / "a", WS, notes="from a")
    other = project(tmp_path / "b", WS, notes="from b")
    for value in (str(other), str(other / "loom.toml")):
        r = run_script(READ_NOTES, here, env={"LOOM_PROJECT": value})
        assert "NOTES: from b" in r.stdout, (value, r.stdout, r.stderr)


def test_loom_project_naming_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    r = run_script(READ_NOTES, tmp_path, env={"LOOM_PROJECT": str(tmp_path / "nope.toml")})
    assert r.returncode != 0
    assert "ConfigError" in r.stderr and "nope.toml" in r.stderr and "LOOM_PROJECT" in r.stderr


def test_opting_out_with_loom_project_none(tmp_path: Path) -> None:
    proj = project(tmp_path / "p", WS)
    r = run_script(READ_NOTES, proj, env={"LOOM_PROJECT": "none"})
    assert "ERROR: ToolNotFound" in r.stdout, r.stdout
    assert "LOOM_PROJECT=none" in r.stdout and "[workspace] root" in r.stdout, r.stdout


def test_opting_out_with_an_explicit_runtime(tmp_path: Path) -> None:
    proj = project(tmp_path / "p", WS)
    code = READ_NOTES.replace(
        'Agent(agent_id="researcher", topics=["tasks"])',
        'Agent(agent_id="researcher", topics=["tasks"], runtime=Runtime(project=None))',
    ).replace("from loom import Agent", "from loom import Agent, Runtime")
    r = run_script(code, proj)
    assert "ERROR: ToolNotFound" in r.stdout, r.stdout


def test_no_project_anywhere_still_runs_and_says_how_to_get_tools(tmp_path: Path) -> None:
    assert not any((d / "loom.toml").exists() for d in (tmp_path, *tmp_path.parents))
    r = run_script(READ_NOTES, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ERROR: ToolNotFound" in r.stdout, r.stdout
    assert "no loom.toml in" in r.stdout and "[workspace] root" in r.stdout, r.stdout


def test_a_bad_project_is_a_config_error_at_start_with_file_and_line(tmp_path: Path) -> None:
    proj = project(tmp_path / "p", WS + '[tools]\nrequire_approval = "system:shell"\n')
    code = """
    import asyncio
    from loom import Agent
    from loom.errors import ConfigError

    async def main():
        agent = Agent(agent_id="a")   # creating it does not fail
        print("CREATED")
        try:
            await agent.start()
        except ConfigError as exc:
            print("START FAILED:", exc)

    asyncio.run(main())
    """
    r = run_script(code, proj)
    assert "CREATED" in r.stdout, (r.stdout, r.stderr)
    assert "START FAILED:" in r.stdout and "loom.toml:4 [tools.require_approval]" in r.stdout, (
        r.stdout
    )
