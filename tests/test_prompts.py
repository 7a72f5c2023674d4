"""loom.prompts: the seed's PromptLoader, confined to its directory, plus templates and
ctx.prompts from [prompts] dir (issue 9 §4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loom import Agent, LoomError, Runtime
from loom.config import parse_project_config
from loom.errors import ConfigError, PromptNotFound
from loom.prompts import Prompt, PromptError, PromptLoader


@pytest.fixture
def prompts(tmp_path: Path) -> PromptLoader:
    d = tmp_path / "prompts"
    (d / "v1").mkdir(parents=True)
    (d / "v2").mkdir()
    (d / "system_prompt.txt").write_text("You extract problems.")
    (d / "few_shot_examples.json").write_text(json.dumps([{"input": "a", "output": "b"}]))
    (d / "v1" / "ask.txt").write_text("old {topic}")
    (d / "v2" / "ask.txt").write_text("Summarise {topic} in {n} words. {{literal}}")
    (tmp_path / "outside.txt").write_text("SECRET")
    return PromptLoader(str(d))


def test_the_seed_methods(prompts: PromptLoader) -> None:
    system = prompts.load("system_prompt.txt")
    assert system == "You extract problems." and isinstance(system, str)
    assert isinstance(system, Prompt) and system.file == "system_prompt.txt"
    assert prompts.load_json("few_shot_examples.json") == [{"input": "a", "output": "b"}]
    v1 = prompts.load_versioned("v1", "ask.txt")
    assert v1 == "old {topic}" and v1.version == "v1"


def test_templates_fill_named_fields(prompts: PromptLoader) -> None:
    text = prompts.render("ask.txt", version="v2", topic="bees", n=5)
    assert text == "Summarise bees in 5 words. {literal}"
    with pytest.raises(PromptError, match=r"no value for field\(s\) n \(given: topic\)"):
        prompts.render("ask.txt", version="v2", topic="bees")


def test_a_missing_file_is_prompt_not_found(prompts: PromptLoader) -> None:
    with pytest.raises(PromptNotFound) as info:
        prompts.load("nope.txt")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LoomError)
    assert "nope.txt" in str(info.value)
    with pytest.raises(PromptNotFound):
        prompts.load_versioned("v9", "ask.txt")
    with pytest.raises(PromptNotFound, match="directory does not exist"):
        PromptLoader("/nonexistent/dir").load("x.txt")


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "v1/../../outside.txt", "/etc/passwd", "", "a\0b", "v1/.."],
)
def test_paths_stay_inside(prompts: PromptLoader, path: str) -> None:
    with pytest.raises(PromptError):
        prompts.load(path)


def test_symlinks_are_refused_anywhere_in_the_path(prompts: PromptLoader) -> None:
    d = prompts.dir
    os.symlink(d.parent / "outside.txt", d / "link.txt")
    os.symlink(d.parent, d / "up")
    os.symlink("system_prompt.txt", d / "inside-link.txt")
    for name in ("link.txt", "up/outside.txt", "inside-link.txt"):
        with pytest.raises(PromptError, match="symlink"):
            prompts.load(name)
    with pytest.raises(PromptError):
        prompts.load_versioned("..", "outside.txt")


def test_bad_json_names_the_file(prompts: PromptLoader) -> None:
    (prompts.dir / "bad.json").write_text("{nope")
    with pytest.raises(PromptError, match=r"bad.json: not valid JSON"):
        prompts.load_json("bad.json")


async def test_ctx_prompts_uses_the_project_prompt_dir(tmp_path: Path) -> None:
    (tmp_path / "my-prompts").mkdir()
    (tmp_path / "my-prompts" / "hello.txt").write_text("hi {name}")
    project = parse_project_config('[prompts]\ndir = "my-prompts"\n', tmp_path / "loom.toml")
    runtime = Runtime(project)
    try:
        async with Agent("a", runtime=runtime) as a:
            assert a.ctx.prompts.render("hello.txt", name="x") == "hi x"
    finally:
        await runtime.stop()


def test_an_unknown_prompts_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"loom.toml:2 \[prompts.dirr\]"):
        parse_project_config('[prompts]\ndirr = "p"\n', tmp_path / "loom.toml")
