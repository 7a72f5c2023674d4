"""Fixtures of the NATS security tests: real nats-server processes with token and
password authentication, shared by a module's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from auth_helpers import Authed, secret, serve


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nats-auth")


@pytest.fixture(scope="module")
def token_server(workdir: Path) -> Iterator[Authed]:
    token = secret("tok")
    for server in serve(f'authorization {{ token: "{token}" }}', workdir):
        yield Authed(server, token)


@pytest.fixture(scope="module")
def password_server(workdir: Path) -> Iterator[Authed]:
    password = secret("pw")
    for server in serve(f'authorization {{ user: "loom", password: "{password}" }}', workdir):
        yield Authed(server, password)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: nats-py's records too
