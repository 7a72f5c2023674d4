"""A sandboxed process has no controlling terminal and a process group of its own, even
when the host process has a terminal: it cannot open ``/dev/tty`` (so no ``TIOCSTI``
into the user's shell), and it cannot signal the host's process or process group.

The host here is a child process whose controlling terminal is a fresh pty (a test
runner usually has none, which would prove nothing)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import termios
from pathlib import Path

import pytest

# Run by the sandboxed python3: what it can see of its terminal, group and session,
# and whether it can signal the host (pid and process group passed as arguments).
INNER = r"""
import json, os, sys
st = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
out = {"pgrp": int(st[2]), "sid": int(st[3]), "tty_nr": int(st[4])}
try:
    os.close(os.open("/dev/tty", os.O_RDONLY))
    out["dev_tty"] = "opened"
except OSError as e:
    out["dev_tty"] = e.errno
host_pid, host_pgrp = int(sys.argv[1]), int(sys.argv[2])
for name, send in [
    ("kill_host", lambda: os.kill(host_pid, 0)),
    ("killpg_host", lambda: os.killpg(host_pgrp, 0)),
]:
    try:
        send()
        out[name] = "delivered"
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out))
"""

# Run by the host process (which has the pty as its controlling terminal).
HOST = r"""
import json, os, sys
from loom import _core
st = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
os.close(os.open("/dev/tty", os.O_RDONLY))  # the control: the host has a terminal
cfg = {
    "workspace": {"root": sys.argv[1]},
    "sandbox": {},
    "tools": {"shell": {
        "allow": ["python3"],
        "allow_unsafe_binaries": True,
        "read_paths": ["/proc", "/dev/tty"],
    }},
}
tools = _core.NativeTools(json.dumps(cfg))
argv = ["python3", "-c", sys.argv[2], str(os.getpid()), str(os.getpgrp())]
result, error, _ = tools.call_sync("system:shell", {"argv": argv})
print(json.dumps({
    "host_tty_nr": int(st[4]), "host_pgrp": os.getpgrp(), "result": result, "error": repr(error)
}))
"""


def _make_pty_the_controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.skipif(not shutil.which("python3"), reason="needs python3 to run in the sandbox")
def test_no_controlling_terminal_and_no_signal_outside_the_group(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    master, slave = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", HOST, str(ws), INNER],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_make_pty_the_controlling_terminal,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["host_tty_nr"] != 0, "the host must have a controlling terminal"
    result = report["result"]
    assert result is not None, report["error"]
    assert result["exit_code"] == 0, result
    inner = json.loads(result["stdout"])
    assert inner["tty_nr"] == 0, inner  # no controlling terminal
    assert inner["dev_tty"] == errno.ENXIO, inner  # /dev/tty: "no such device"
    # A group of its own (its init's; /proc here shows host pids), not the host's.
    assert inner["pgrp"] != report["host_pgrp"], (inner, report)
    assert inner["kill_host"] in (errno.ESRCH, errno.EPERM), inner
    assert inner["killpg_host"] in (errno.ESRCH, errno.EPERM), inner
