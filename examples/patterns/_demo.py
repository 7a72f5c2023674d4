"""Shared by the pattern examples: pick the model (scripted by default, or a real one).

``python examples/patterns/<x>.py`` runs on a scripted model, so it works anywhere with
no key and no network; ``--provider NAME`` uses ``[llm.NAME]`` from ./loom.toml or a
built-in preset (``openai``, ``deepseek``, ``local``...) instead.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from loom.testing import FunctionModel, RecordedCall


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--provider",
        metavar="NAME",
        help="use this LLM provider (loom.toml [llm.NAME] or a preset) instead of the script",
    )
    return parser.parse_args()


def make_llm(args: argparse.Namespace, scripted: Any) -> Any:
    """A real provider when ``--provider`` is given, else ``FunctionModel(scripted)``."""
    if not args.provider:
        return FunctionModel(scripted, model="scripted-demo")
    from loom.config import load_project_config
    from loom.llm import LLMProvider

    project = load_project_config() if Path("loom.toml").exists() else None
    return LLMProvider.from_name(None, args.provider, project=project)


def schema_title(call: RecordedCall) -> str:
    """The name of the JSON schema a ``call_json`` asked for ("" for plain calls)."""
    first = call.messages[0].get("content") if call.messages else ""
    titles = re.findall(r'"title": "(\w+)"', str(first or ""))
    return titles[-1] if titles else ""


def system_prompt(call: RecordedCall) -> str:
    """The pattern's own system prompt (after call_json's schema instruction)."""
    systems = [m.get("content") or "" for m in call.messages if m.get("role") == "system"]
    return str(systems[-1]) if systems else ""
