"""Documentation examples run, so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_example_runs_and_matches_the_readme() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{'echo': 'hi', 'from': 'echo'}"
    # The README shows the same code.
    readme = (ROOT / "README.md").read_text()
    code = (ROOT / "examples" / "quickstart.py").read_text()
    body = re.sub(r'^""".*?"""\n', "", code, flags=re.S)
    for line in body.splitlines():
        if line.strip() and not line.startswith(("async def main() -> None", "from loom")):
            assert line.strip() in readme, f"README lacks: {line.strip()}"


def test_readme_has_exactly_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands\n\n```sh\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
