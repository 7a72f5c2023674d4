"""loom.toml → LLMConfig: the seed's keys, the original Loom's keys, ${VAR}, .env, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loom.errors import ConfigError
from loom.llm import PRESETS, LLMConfig, LLMProvider
from loom.llm.config import read_dotenv, resolve_config, validate_llm_tables


class Project:
    """Stands in for loom.config.ProjectConfig: the attributes the LLM client reads."""

    def __init__(
        self,
        llm: dict[str, Any],
        root: Path | None = None,
        lines: dict[tuple[str, ...], int] | None = None,
    ) -> None:
        self.llm = llm
        self.root = root
        self.path = root / "loom.toml" if root else None
        self._lines = lines or {}

    def line_of(self, *keys: str) -> int | None:
        return self._lines.get(keys)


def test_seed_keys():
    cfg = resolve_config(
        "deepseek",
        {
            "llm": {
                "deepseek": {
                    "base_url": "https://api.deepseek.com/v1",
                    "model": "deepseek-chat",
                    "api_key": "sk-x",
                    "temperature": 0.7,
                    "max_tokens": 8192,
                }
            }
        },
    )
    assert (cfg.base_url, cfg.model, cfg.temperature, cfg.max_tokens) == (
        "https://api.deepseek.com/v1",
        "deepseek-chat",
        0.7,
        8192,
    )


def test_original_loom_keys(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-from-env-123")
    cfg = resolve_config(
        "ds",
        {
            "llm": {
                "ds": {
                    "type": "http",
                    "api_base": "https://api.deepseek.com/v1",
                    "model": "deepseek-chat",
                    "api_key": "${DEEPSEEK_API_KEY}",
                    "timeout_sec": 12,
                }
            }
        },
    )
    assert cfg.base_url == "https://api.deepseek.com/v1"
    assert cfg.timeout == 12
    assert cfg.resolved_api_key() == "sk-from-env-123"


def test_timeout_ms_from_seed():
    assert LLMConfig(base_url="http://x", timeout_ms=30000).timeout == 30.0


def test_unset_var_is_config_error_naming_variable_and_provider(monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET_KEY", raising=False)
    project = Project(
        {
            "acme": {
                "base_url": "https://acme.example/v1",
                "model": "m",
                "api_key": "${NOPE_NOT_SET_KEY}",
            }
        },
        lines={("llm", "acme", "api_key"): 7},
    )
    with pytest.raises(ConfigError) as ei:
        LLMProvider.from_config(None, "acme", project)
    msg = str(ei.value)
    assert "NOPE_NOT_SET_KEY" in msg and "acme" in msg
    assert ei.value.key == "llm.acme.api_key"
    assert ei.value.line == 7


def test_var_default_syntax(monkeypatch):
    monkeypatch.delenv("MAYBE_URL", raising=False)
    cfg = resolve_config("x", {"llm": {"x": {"base_url": "${MAYBE_URL:-http://127.0.0.1:9/v1}"}}})
    assert cfg.base_url == "http://127.0.0.1:9/v1"


def test_api_key_env_unset_is_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"OPENAI_API_KEY.*'openai'"):
        LLMProvider.from_name(None, "openai")


def test_dotenv_loaded_without_overriding_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "# comment\nexport ACME_KEY='from-dotenv'\nOTHER_KEY=dot # trailing\n"
    )
    monkeypatch.delenv("ACME_KEY", raising=False)
    monkeypatch.setenv("OTHER_KEY", "from-environment")
    project = Project(
        {
            "a": {
                "base_url": "http://127.0.0.1:1/v1",
                "api_key": "${ACME_KEY}",
                "headers": {"X-Other": "${OTHER_KEY}"},
            }
        },
        root=tmp_path,
    )
    cfg = resolve_config("a", project)
    assert cfg.resolved_api_key() == "from-dotenv"
    assert cfg.headers["X-Other"] == "from-environment"
    import os

    assert "ACME_KEY" not in os.environ  # .env values are not exported to the process


def test_read_dotenv_quotes(tmp_path):
    p = tmp_path / ".env"
    p.write_text('A="x y"\nB=plain\n\nbad line\nC=\n')
    assert read_dotenv(p) == {"A": "x y", "B": "plain", "C": ""}


def test_bad_value_names_key_and_line():
    project = Project(
        {"p": {"base_url": "http://x/v1", "temperature": "hot"}},
        root=Path("/proj"),
        lines={("llm", "p", "temperature"): 12},
    )
    with pytest.raises(ConfigError) as ei:
        resolve_config("p", project)
    assert ei.value.key == "llm.p.temperature"
    assert ei.value.line == 12
    assert "/proj/loom.toml:12" in str(ei.value)


def test_unknown_key_rejected():
    with pytest.raises(ConfigError, match="unknown key 'temprature'") as ei:
        resolve_config("p", {"llm": {"p": {"base_url": "http://x", "temprature": 0.1}}})
    assert ei.value.key == "llm.p.temprature"


def test_bad_type_value():
    with pytest.raises(ConfigError, match="type"):
        resolve_config("p", {"llm": {"p": {"base_url": "http://x", "type": "grpc"}}})


def test_unknown_provider():
    with pytest.raises(ConfigError, match="unknown LLM provider 'nope'"):
        LLMProvider.from_name(None, "nope")


def test_missing_base_url():
    with pytest.raises(ConfigError, match="base_url"):
        resolve_config("p", {"llm": {"p": {"model": "m"}}})


def test_presets_present():
    assert set(PRESETS) >= {"openai", "deepseek", "openrouter", "ollama", "local"}
    local = resolve_config("local")
    assert local.serve == "smollm2" and local.max_concurrency == 1 and not local.api_key


def test_table_merges_over_preset(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-abc-123456")
    cfg = resolve_config("deepseek", {"llm": {"deepseek": {"model": "deepseek-reasoner"}}})
    assert cfg.base_url == "https://api.deepseek.com/v1"
    assert cfg.model == "deepseek-reasoner"


def test_local_with_base_url_does_not_serve():
    cfg = resolve_config(
        "local", {"llm": {"local": {"base_url": "http://127.0.0.1:8000/v1", "model": "qwen"}}}
    )
    assert cfg.serve is None


def test_from_name_uses_ctx_project(monkeypatch):
    class Ctx:
        agent_id = "a1"
        project = Project({"mine": {"base_url": "http://127.0.0.1:9/v1", "model": "m1"}})

    llm = LLMProvider.from_name(Ctx(), "mine")
    assert llm.model == "m1" and llm.base_url == "http://127.0.0.1:9/v1"


def test_runtime_shutdown_hook_registered():
    hooks = []

    class Runtime:
        def on_shutdown(self, cb):
            hooks.append(cb)

    class Ctx:
        agent_id = "a"
        project = None
        runtime = Runtime()

    llm = LLMProvider(Ctx(), LLMConfig(base_url="http://127.0.0.1:9/v1"))
    assert hooks == [llm.aclose]


def test_validate_llm_tables_reports_all(monkeypatch):
    monkeypatch.delenv("ZZ_UNSET", raising=False)
    problems = validate_llm_tables(
        {
            "llm": {
                "ok": {"base_url": "http://x"},
                "bad1": {"base_url": "http://x", "max_tokens": -1},
                "bad2": {"base_url": "http://x", "api_key": "${ZZ_UNSET}"},
            }
        }
    )
    keys = sorted(p.key or "" for p in problems)
    assert keys == ["llm.bad1.max_tokens", "llm.bad2.api_key"]


def test_with_options_copies_and_validates():
    llm = LLMProvider(None, LLMConfig(base_url="http://127.0.0.1:9/v1", model="a"))
    other = llm.with_options(model="b", temperature=0.1)
    assert (other.model, llm.model) == ("b", "a")
    with pytest.raises(ValueError):
        llm.with_options(temperature=9)
