"""Real ``nats-server`` processes for tests: core NATS, JetStream with file storage,
servers with authentication, restarts on the same port and store."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_binary() -> str:
    binary = shutil.which("nats-server")
    if binary is None:
        print(
            "SKIP NATS tests: nats-server is not installed (make test installs it)", file=sys.stderr
        )
        pytest.skip("nats-server is not installed")
    return binary


class NatsServer:
    """One nats-server on 127.0.0.1. ``jetstream`` stores under ``store``; ``config`` is
    the text of a server configuration file (authorization, TLS, ...)."""

    def __init__(
        self,
        *,
        jetstream: bool = False,
        store: Path | None = None,
        config: str | None = None,
        workdir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.jetstream = jetstream
        self.store = store
        self.config = config
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [nats_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            argv.append("-js")
            if self.store is not None:
                argv += ["-sd", str(self.store)]
        if self.config is not None:
            assert self.workdir is not None, "a config file needs a workdir"
            path = self.workdir / f"nats-{self.port}.conf"
            path.write_text(self.config)
            argv += ["-c", str(path)]
        return argv

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"nats-server exited: {err[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("nats-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def reload(self, config: str) -> None:
        """Rewrites the configuration file and has the running server reload it."""
        assert self.proc is not None and self.workdir is not None, "a started config server"
        self.config = config
        (self.workdir / f"nats-{self.port}.conf").write_text(config)
        self.proc.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        """Stops the server and starts it again on the same port (and store)."""
        self.stop()
        self.start()
