"""A ``nats-server`` on a free loopback port for the benchmarks (with JetStream when
given a store directory)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def start_nats(store: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Starts the server and waits until it accepts connections; exits with a message
    when it is not installed or does not start."""
    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not installed (make setup installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [binary, "-a", "127.0.0.1", "-p", str(port)]
    if store is not None:
        argv += ["-js", "-sd", str(store)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("nats-server did not start")
