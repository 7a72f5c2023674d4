"""The workspace may never hold what Loom loads or runs (loom.toml, .env, .loom/, agent
code, MCP server files, ...): such a layout is refused when the project is loaded, by
every entry point (``load_project_config``, ``Runtime(project)``, ``loom run``,
``loom tools``, ``loom chat``), with the file, line and key ``[workspace] root``.

The attack this closes: with ``root = "."``, ``fs:write_file loom.toml`` added an
``[mcp.x]`` server whose command ran unsandboxed at the next start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loom import ConfigError, Runtime
from loom.config import ProjectConfig, WorkspaceSpec, load_project_config


def project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "loom.toml").write_text(f"[project]\nname = 't'\n\n{body}")
    return tmp_path


def refused(tmp_path: Path, what: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_project_config(tmp_path)
    err = info.value
    assert err.path == str(tmp_path / "loom.toml")
    assert err.key == "workspace.root"
    assert what in err.message, err.message
    assert "point [workspace] root at a subdirectory that holds no project files" in str(err)
    return err


AGENT = "async def on_event(ctx, topic, event):\n    pass\n"


def test_root_dot_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    project(tmp_path, '[workspace]\nroot = "."\n')
    err = refused(tmp_path, "the project file loom.toml")
    assert err.line == 5  # the `root = "."` line
    assert str(err).startswith(f"{tmp_path / 'loom.toml'}:5 [workspace.root]: ")


@pytest.mark.parametrize("root", ["..", "../..", "./sub/..", "{abs_parent}", "{abs_self}"])
def test_the_project_directory_or_an_ancestor_is_refused(tmp_path: Path, root: str) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    root = root.format(abs_parent=tmp_path, abs_self=proj)
    project(proj, f'[workspace]\nroot = "{root}"\n')
    refused(proj, "the project file loom.toml")


def test_a_symlink_to_the_project_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(".")
    project(tmp_path, '[workspace]\nroot = "link"\n')
    refused(tmp_path, "loom.toml")


def test_an_agent_file_that_is_a_symlink_into_the_workspace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "a.py").write_text(AGENT)
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.py").symlink_to(tmp_path / "ws" / "a.py")
    project(tmp_path, '[workspace]\nroot = "ws"\n\n[agents.a]\ncode = "agents/a.py"\n')
    err = refused(tmp_path, "[agents.a] code = 'agents/a.py'")
    assert str(tmp_path / "ws" / "a.py") in err.message


def test_a_subdirectory_holding_an_agent_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.py").write_text(AGENT)
    project(tmp_path, '[workspace]\nroot = "agents"\n\n[agents.a]\ncode = "agents/a.py"\n')
    err = refused(tmp_path, "[agents.a] code = 'agents/a.py'")
    assert err.line == 5


def test_an_agent_file_that_does_not_exist_yet_is_refused_too(tmp_path: Path) -> None:
    # Otherwise the first agent to run could write it.
    project(tmp_path, '[workspace]\nroot = "ws"\n\n[agents.a]\ncode = "ws/later.py:main"\n')
    refused(tmp_path, "[agents.a] code = 'ws/later.py:main'")


def test_an_agent_module_by_name_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "agent.py").write_text(AGENT)
    project(tmp_path, '[workspace]\nroot = "mypkg"\n\n[agents.a]\ncode = "mypkg.agent"\n')
    refused(tmp_path, "[agents.a] code = 'mypkg.agent'")
    # ... and a workspace inside that package (its __path__ could be scanned) too.
    project(tmp_path, '[workspace]\nroot = "mypkg/data"\n\n[agents.a]\ncode = "mypkg.agent"\n')
    err = refused(tmp_path, "[agents.a] code = 'mypkg.agent'")
    assert "is inside" in err.message


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('[workspace]\nroot = ".loom"\n', "Loom's state directory .loom/"),
        ('[workspace]\nroot = ".loom/cache/x"\n', "Loom's state directory .loom/"),
        ('[workspace]\nroot = "ws"\n[telemetry]\ntrace_dir = "ws/traces"\n', "trace_dir"),
        ('[workspace]\nroot = "ws/t"\n[telemetry]\ntrace_dir = "ws"\n', "trace_dir"),
        (
            '[workspace]\nroot = "ws"\n[llm.x]\nbase_url = "http://h"\ncache_dir = "{p}/ws/c"\n',
            "[llm.x] cache_dir",
        ),
        ('[workspace]\nroot = "ws"\n[llm.local]\nserve = "{p}/ws/m.gguf"\n', "[llm.local] serve"),
    ],
)
def test_loom_state_and_loaded_files_inside_the_workspace_are_refused(
    tmp_path: Path, body: str, what: str
) -> None:
    project(tmp_path, body.replace("{p}", str(tmp_path)))
    refused(tmp_path, what)


@pytest.mark.parametrize(
    ("server", "what"),
    [
        ('command = "ws/server.sh"', "[mcp.x] command = 'ws/server.sh'"),
        ('command = "{p}/ws/server.sh"', "[mcp.x] command"),
        ('command = "python3"\nargs = ["ws/server.py"]', "[mcp.x] args: 'ws/server.py'"),
        ('command = "python3"\nargs = ["-u", "{p}/ws/s.py"]', "[mcp.x] args"),
        ('command = "node"\nargs = ["--require=ws/hook.js", "s.js"]', "[mcp.x] args"),
        ('command = "npx"\ncwd = "ws"', "[mcp.x] cwd"),
        ('command = "./run.sh"\ncwd = "ws/app"', "[mcp.x] cwd"),
        ('command = "python3"\nenv = {{ PYTHONPATH = "ws/lib" }}', "[mcp.x] env PYTHONPATH"),
        ('command = "python3"\nenv = {{ NODE_PATH = "/x:{p}/ws/n" }}', "[mcp.x] env NODE_PATH"),
    ],
)
def test_mcp_server_files_inside_the_workspace_are_refused(
    tmp_path: Path, server: str, what: str
) -> None:
    server = server.replace("{p}", str(tmp_path)).replace("{{", "{").replace("}}", "}")
    project(tmp_path, f'[workspace]\nroot = "ws"\n\n[mcp.x]\n{server}\n')
    refused(tmp_path, what)


def test_an_mcp_command_found_on_a_path_entry_inside_the_workspace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path / 'ws' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    project(tmp_path, '[workspace]\nroot = "ws"\n\n[mcp.x]\ncommand = "notes-mcp"\n')
    refused(tmp_path, "[mcp.x] command 'notes-mcp': the PATH entry")


def test_an_import_path_entry_inside_the_workspace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "ws" / "lib"))
    project(tmp_path, '[workspace]\nroot = "ws"\n')
    refused(tmp_path, "the Python import path entry")


def test_valid_layouts_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.py").write_text(AGENT)
    (tmp_path / ".env").write_text("X=1\n")
    project(
        tmp_path,
        '[workspace]\nroot = "workspace"\n\n[agents.a]\ncode = "agents/a.py"\n\n'
        '[telemetry]\ntrace_dir = ".loom/traces"\n\n'
        # A file server may be given the workspace itself, and data files beside it.
        '[mcp.files]\ncommand = "npx"\nargs = ["-y", "@modelcontextprotocol/server-filesystem",'
        ' "workspace", "--db=notes.db"]\n',
    )
    cfg = load_project_config(tmp_path)
    assert cfg.workspace_root == (tmp_path / "workspace").resolve()
    # The default root ("workspace", no [workspace] table) is fine too.
    project(tmp_path, "")
    assert load_project_config(tmp_path).workspace_root.name == "workspace"
    # A sibling tree outside the project is fine.
    (tmp_path / "p").mkdir()
    project(tmp_path / "p", '[workspace]\nroot = "../shared-ws"\n')
    load_project_config(tmp_path / "p")


async def test_a_runtime_built_from_a_config_object_refuses_too(tmp_path: Path) -> None:
    # Bypasses parse_project_config: the check runs again where the tools are set up.
    (tmp_path / "loom.toml").write_text("")
    cfg = ProjectConfig(path=tmp_path / "loom.toml", workspace=WorkspaceSpec(root="."))
    rt = Runtime(cfg)
    try:
        with pytest.raises(ConfigError, match=r"contains the project file loom\.toml"):
            await rt.get_tools()
    finally:
        await rt.stop(timeout=5)


def _loom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", [["run"], ["tools"], ["chat"]])
def test_the_cli_refuses_with_exit_2(tmp_path: Path, command: list[str]) -> None:
    project(tmp_path, '[workspace]\nroot = "."\n\n[mcp.x]\ncommand = "true"\n')
    r = _loom(*command, str(tmp_path / "loom.toml"), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{tmp_path / 'loom.toml'}:5 [workspace.root]" in r.stderr
    assert "contains the project file loom.toml" in r.stderr
    assert "point [workspace] root at a subdirectory" in r.stderr
