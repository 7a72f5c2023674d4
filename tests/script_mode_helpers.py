"""Running a plain script (no `loom run`) in a project directory, as the seed does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_script(
    code: str, cwd: Path, *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` as ``script.py`` in ``cwd`` with a clean ``LOOM_PROJECT``."""
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(code))
    base = {k: v for k, v in os.environ.items() if k != "LOOM_PROJECT"}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base,
    )


def project(dir: Path, toml: str, notes: str = "my notes") -> Path:
    """A project directory with a loom.toml and ``ws/notes.md``."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "loom.toml").write_text(textwrap.dedent(toml))
    (dir / "ws").mkdir(exist_ok=True)
    (dir / "ws" / "notes.md").write_text(notes)
    return dir
