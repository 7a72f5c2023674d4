"""The `[bus]` table of loom.toml: ${VAR} credentials, files, conflicting keys, reprs;
a refused run's spans and `loom run` output hold no secret; and the permission sets of
docs/nats-security.md are enough for a project and no more."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from auth_helpers import (
    HAS_NKEYS,
    SRC,
    Authed,
    all_texts,
    assert_hidden,
    secret,
    settle,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, BusError, ConfigError, Runtime
from loom.app import run_project
from loom.config import load_project_config
from loom.errors import MissingEnvironmentVariable
from loom.nats import connect
from loom.nats.settings import BusSettings, bus_settings
from loom.project_check import check_project
from nats_servers import NatsServer

# -- [bus] in loom.toml: ${VAR}, files, conflicts -----------------------------------


def project(tmp_path: Path, bus: str, dotenv: str | None = None) -> Path:
    path = tmp_path / "loom.toml"
    path.write_text(f'[project]\nname = "p"\n\n[bus]\n{textwrap.dedent(bus)}')
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    return path


def test_credentials_are_expanded_from_the_environment_over_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_T_PASSWORD", "from-env")
    monkeypatch.delenv("LOOM_T_USER", raising=False)
    monkeypatch.delenv("LOOM_T_HOST", raising=False)
    path = project(
        tmp_path,
        """
        nats = "nats://${LOOM_T_HOST:-127.0.0.1}:4222"
        user = "${LOOM_T_USER}"
        password = "${LOOM_T_PASSWORD}"
        """,
        dotenv="LOOM_T_USER=from-dotenv\nLOOM_T_PASSWORD=loses\n",
    )
    settings = bus_settings(load_project_config(path))
    assert settings.nats == "nats://127.0.0.1:4222"
    assert settings.user == "from-dotenv"
    assert settings.password is not None and settings.password.get_secret_value() == "from-env"


async def test_an_unset_variable_is_a_config_error_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token_server: Authed
) -> None:
    monkeypatch.delenv("LOOM_T_NO_SUCH_TOKEN", raising=False)
    path = project(tmp_path, f'nats = "{token_server.url}"\ntoken = "${{LOOM_T_NO_SUCH_TOKEN}}"\n')
    proj = load_project_config(path)
    with pytest.raises(MissingEnvironmentVariable) as info:
        check_project(proj)
    exc = info.value
    assert exc.variable == "LOOM_T_NO_SUCH_TOKEN" and exc.key == "bus.token"
    assert exc.path == str(path) and exc.line == 6
    assert "LOOM_T_NO_SUCH_TOKEN" in str(exc) and "nothing was connected" in str(exc)
    rt = Runtime(proj)
    with pytest.raises(MissingEnvironmentVariable):
        await rt.prepare()
    assert rt.jetstream is None and not rt.agents


@pytest.mark.parametrize(
    ("bus", "named"),
    [
        ('token = "t0k3n"\nuser = "u"\npassword = "p4ss"\n', ("token", "user/password")),
        ('user = "u"\n', ("user needs password",)),
        ('password = "p4ss"\n', ("password needs user",)),
        ('token = "t0k3n"\nnkey_seed = "seed.nk"\n', ("token", "nkey_seed")),
        ('nkey_seed = "seed.nk"\ncreds = "u.creds"\n', ("nkey_seed", "creds")),
        ('tls_key = "k.pem"\n', ("tls_key needs tls_cert",)),
    ],
)
def test_conflicting_keys_are_named(tmp_path: Path, bus: str, named: tuple[str, ...]) -> None:
    path = project(tmp_path, 'nats = "nats://127.0.0.1:4222"\n' + bus)
    with pytest.raises(ConfigError) as info:
        bus_settings(load_project_config(path))
    for word in named:
        assert word in str(info.value)
    assert str(path) in str(info.value)
    assert "t0k3n" not in str(info.value) and "p4ss" not in str(info.value)


def test_url_credentials_and_a_token_conflict(tmp_path: Path) -> None:
    path = project(tmp_path, 'nats = "nats://u:p4ssw0rd@127.0.0.1:4222"\ntoken = "t0k3n"\n')
    with pytest.raises(ConfigError, match="token and credentials in the nats URL") as info:
        bus_settings(load_project_config(path))
    assert "p4ssw0rd" not in str(info.value) and "t0k3n" not in str(info.value)
    path = project(tmp_path, 'nats = "nats://a:p4ssw0rd@h1:4222,nats://b:other@h2:4222"\n')
    with pytest.raises(ConfigError, match="different credentials") as info:
        bus_settings(load_project_config(path))
    assert "p4ssw0rd" not in str(info.value)


def test_files_are_relative_to_the_project_and_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not HAS_NKEYS:
        pytest.skip("the nkeys package (nats-py[nkeys]) is not installed")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "user.nk").write_text("seed file\n")
    path = project(tmp_path, 'nats = "nats://127.0.0.1:4222"\nnkey_seed = "keys/user.nk"\n')
    monkeypatch.chdir(tmp_path.parent)  # not the project directory
    settings = bus_settings(load_project_config(path))
    assert settings.nkey_seed == str(tmp_path / "keys" / "user.nk")
    path = project(tmp_path, 'nats = "nats://127.0.0.1:4222"\ncreds = "nope/u.creds"\n')
    with pytest.raises(ConfigError) as info:
        bus_settings(load_project_config(path))
    assert info.value.key == "bus.creds" and info.value.line == 6
    assert f"no such file: {tmp_path / 'nope' / 'u.creds'}" in str(info.value)


def test_a_seed_given_instead_of_its_path_is_not_repeated(tmp_path: Path) -> None:
    seed = "SUAEXAUINBK4YAGMUEFZM5AL7WFPXZCDMT5AJY4FM6TBHZ56GEDSEOJNII"
    path = project(tmp_path, f'nats = "nats://127.0.0.1:4222"\nnkey_seed = "{seed}"\n')
    with pytest.raises(ConfigError, match="path of a file, not its contents") as info:
        bus_settings(load_project_config(path))
    assert seed not in str(info.value) and info.value.key == "bus.nkey_seed"


def test_a_tls_file_that_cannot_be_loaded_is_named(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    path = project(tmp_path, 'nats = "tls://127.0.0.1:4222"\ntls_ca = "ca.pem"\n')
    with pytest.raises(ConfigError, match="cannot load the CA") as info:
        bus_settings(load_project_config(path))
    assert info.value.key == "bus.tls_ca"


def test_reprs_mask_every_secret(tmp_path: Path) -> None:
    pw, tok = secret("pw"), secret("tok")
    cluster = f"nats://loom:{pw}@h1:4222,nats://loom:{pw}@h2:4222"
    settings = BusSettings(nats=cluster, connect_timeout=3)
    for text in (repr(settings), str(settings)):
        assert pw not in text and "h1:4222" in text and "h2:4222" in text
    for s in (
        BusSettings(nats="nats://h:4222", token=tok),
        BusSettings(nats="nats://h:4222", user="loom", password=pw),
        BusSettings(nats=f"nats://{tok}@h:4222"),
    ):
        for text in (repr(s), str(s)):
            assert tok not in text and pw not in text, text
        if s.token or s.password:  # SecretStr: masked even in a dump
            assert tok not in repr(s.model_dump()) and pw not in s.model_dump_json()
    path = project(tmp_path, f'nats = "{cluster}"\n')
    proj = load_project_config(path)
    assert pw not in repr(proj) and pw not in str(proj)
    assert pw not in repr(bus_settings(proj))


# -- spans and `loom run` ---------------------------------------------------------------


async def test_spans_of_a_refused_run_hold_no_secret(
    tmp_path: Path, password_server: Authed, span_exporter: InMemorySpanExporter
) -> None:
    wrong = secret("badpw")
    path = project(
        tmp_path,
        f'nats = "nats://loom:{wrong}@127.0.0.1:{password_server.server.port}"\n',
    )
    with pytest.raises(BusError, match="authorization violation"):
        await run_project(load_project_config(path), install_signal_handlers=False)
    spans = span_exporter.get_finished_spans()
    assert spans
    dumped = "\n".join(s.to_json() for s in spans)
    assert "authorization violation" in dumped
    assert_hidden(dumped, wrong, password_server.secret)


def test_loom_run_with_a_wrong_password_exits_fast_and_shows_no_secret(
    tmp_path: Path, password_server: Authed
) -> None:
    """The password comes from the environment (${VAR}); the run fails at once (not
    after connect_timeout), exit 1, nothing secret in its output or in the trace file
    it wrote."""
    wrong = secret("badpw")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "echo.py").write_text(
        "async def on_event(ctx, topic, event):\n    await ctx.reply(event, payload='x')\n"
    )
    path = project(
        tmp_path,
        f"""
        nats = "nats://127.0.0.1:{password_server.server.port}"
        user = "loom"
        password = "${{LOOM_T_NATS_PASSWORD}}"
        connect_timeout = 20

        [agents.echo]
        code = "agents/echo.py"
        topics = ["svc.echo"]
        """,
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "LOOM_LOG_LEVEL": "DEBUG"}
    env.pop("LOOM_T_NATS_PASSWORD", None)

    def loom_run(**extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "loom.cli", "run", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **extra},
        )
        return r, time.monotonic() - started

    # Unset: a configuration error (exit 2) naming the variable, before connecting.
    unset, _ = loom_run()
    assert unset.returncode == 2, unset.stderr
    assert "LOOM_T_NATS_PASSWORD is not set" in unset.stderr
    assert "[bus.password]" in unset.stderr and "attempt" not in unset.stderr

    # What starting takes on this machine now (importing nats-py is most of it).
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import loom.app, loom.cli, nats.aio.client"], env=env, check=True
    )
    baseline = time.monotonic() - started
    r, took = loom_run(LOOM_T_NATS_PASSWORD=wrong)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "authorization violation" in r.stderr, r.stderr
    # Far less than connect_timeout: it neither looped nor waited for the timeout.
    assert took - baseline < 8, f"{took:.1f}s, of which {baseline:.1f}s to start"
    traces = "".join(p.read_text() for p in tmp_path.glob(".loom/traces/*.jsonl"))
    assert "authorization violation" in traces
    assert_hidden(r.stdout + r.stderr + traces, wrong, password_server.secret)


async def test_a_settings_object_given_to_connect_is_checked(token_server: Authed) -> None:
    with pytest.raises(ConfigError, match="token and user/password"):
        await connect(
            Runtime(),
            settings=BusSettings(nats=token_server.url, token="t", user="u", password="p"),
        )


# -- docs/nats-security.md: its server configurations give a project what it needs ----

DOC = SRC.parent / "docs" / "nats-security.md"


def doc_server_configs() -> list[str]:
    """The server configurations docs/nats-security.md marks as tested."""
    text = DOC.read_text()
    blocks = []
    for part in text.split("<!-- server-config:")[1:]:
        body = part.split("```text\n", 1)[1].split("```", 1)[0]
        blocks.append(body)
    assert len(blocks) == 2, "docs/nats-security.md lost a tested server configuration"
    return blocks


@pytest.mark.parametrize(
    ("index", "jetstream"),
    [(0, {}), (1, {"stream": "ORDERS", "dlq_prefix": "orders.dlq"})],
    ids=["account-per-project", "shared-account"],
)
async def test_the_documented_permissions_are_enough_and_no_more(
    index: int,
    jetstream: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from loom.nats import enable_jetstream
    from loom.nats.settings import JetStreamSettings

    password = secret("orders")
    monkeypatch.setenv("ORDERS_NATS_PASSWORD", password)  # the server reads it
    config = doc_server_configs()[index]
    assert '"/var/lib/nats"' in config
    config = config.replace('"/var/lib/nats"', f'"{tmp_path / "js"}"')
    server = NatsServer(config=config, workdir=tmp_path)
    server.start()
    settings = BusSettings(nats=server.url, user="orders", password=password)
    js = JetStreamSettings(**jetstream)  # type: ignore[arg-type]
    a, b = Runtime(), Runtime()
    try:
        # name: the project's name, as `loom run` passes it (its presence subject).
        ba = await connect(a, settings=settings, name="orders")
        bb = await connect(b, settings=settings, name="orders")
        await enable_jetstream(a, ba, js, ["orders.>"])
        await enable_jetstream(b, bb, js, ["orders.>"])
        got: list[str] = []

        async def work(ctx, topic, event):  # type: ignore[no-untyped-def]
            got.append(event.payload)

        async def quote(ctx, topic, event):  # type: ignore[no-untyped-def]
            await ctx.reply(event, payload={"price": 3})

        await Agent("worker", topics=["orders.new"], on_event=work, runtime=b).start()
        await Agent("quote", topics=["orders.quote"], on_event=quote, runtime=b).start()
        client = Agent("client", runtime=a)
        await client.start()
        await settle(ba, bb)
        await client.ctx.emit("orders.new", payload="o-1")  # stored: waits for the ack
        reply = await client.ctx.request("orders.quote", payload={}, timeout=10)
        assert reply.payload == {"price": 3}
        deadline = time.monotonic() + 10
        while got != ["o-1"]:
            assert time.monotonic() < deadline, f"reliable delivery failed: {got}"
            await asyncio.sleep(0.05)
        assert a.jetstream is not None and b.jetstream is not None
        other = Agent("other", runtime=b)
        await other.start()
        met = await asyncio.gather(
            client.ctx.barrier("orders.sync", 2, timeout=10),
            other.ctx.barrier("orders.sync", 2, timeout=10),
        )
        assert sorted(met[0]) == ["client", "other"]
        # The dashboard's question "who is on the bus" is allowed and answered by both.
        from loom.nats.presence import gather

        assert len(await gather(ba.nc, "orders")) == 2
        await asyncio.sleep(0.3)  # acks reach the server
        assert "permissions violation" not in caplog.text.lower(), caplog.text
        await client.ctx.emit("billing.x", payload="not ours")
        await ba.flush()
        deadline = time.monotonic() + 5
        while "permissions violation" not in caplog.text.lower():
            assert time.monotonic() < deadline, "a publish outside the permissions went through"
            await asyncio.sleep(0.05)
        assert 'permissions violation for publish to "billing.x"' in caplog.text.lower()
    finally:
        await a.stop(timeout=5)
        await b.stop(timeout=5)
        server.stop()
    assert_hidden(all_texts(caplog), password)
