"""`pip install '.[local]'` alone gives a working no-key default (issue 9 §3): a fresh
virtual environment, the package and its `local` extra installed by the ordinary client,
then `loom run` on the repository's loom.toml with no API key exits 0.

It builds the package (maturin, reusing the checkout's cargo target directory) and
installs llama-cpp-python from the wheel scripts/bootstrap.sh cached, if there is one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LOOM_CACHE", Path.home() / ".cache" / "loom")) / "wheels"


@pytest.mark.timeout(1500)
def test_pip_install_local_extra_then_loom_run(tmp_path: Path) -> None:
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.skip("uv is not in this environment (make test installs it)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    cmd = [str(uv), "pip", "install", "-q", "--python", str(py), f"{ROOT}[local]"]
    if CACHE.is_dir():
        cmd += ["--find-links", str(CACHE)]
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=OFF"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1400)
    assert r.returncode == 0, r.stderr[-4000:]
    # The installed copy alone: a PYTHONPATH naming a checkout would shadow it.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The dashboard's page ships inside the package (no build step, no npm).
    r = subprocess.run(
        [str(py), "-c", "import loom.dashboard.server as s; print(s.STATIC)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
    )
    assert r.returncode == 0, r.stderr
    static = Path(r.stdout.strip())
    assert not static.is_relative_to(ROOT), static  # the installed copy, not the checkout
    for name in ("index.html", "app.js", "style.css"):
        assert (static / name).stat().st_size > 500, name
    run_env = {
        k: v
        for k, v in clean.items()
        if not k.endswith("_API_KEY") and k not in ("LOOM_PROJECT", "VIRTUAL_ENV")
    }
    run_env["PATH"] = f"{venv / 'bin'}:{run_env.get('PATH', '')}"
    # The repository's own project, in a copy (the run writes its report and traces).
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "examples", proj / "examples")
    shutil.copytree(ROOT / "workspace" / "sources", proj / "workspace" / "sources")
    shutil.copy(ROOT / "loom.toml", proj / "loom.toml")
    r = subprocess.run(
        [str(venv / "bin" / "loom"), "run"],
        cwd=proj,
        capture_output=True,
        text=True,
        env=run_env,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "Model:    local" in r.stdout, r.stdout
    assert (proj / "workspace" / "report.md").is_file()
