"""Security of the NATS connection, against real nats-server processes started with
configuration files: token, user/password (as keys and in the URL), NKey and TLS
(server-only and mutual) authentication; the first connection failing fast and
saying why; ``${VAR}`` credentials; and no secret in any log record, exception text,
span, repr or `loom run` output."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import ipaddress
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, BusError, ConfigError, Runtime
from loom.app import run_project
from loom.config import load_project_config
from loom.errors import MissingEnvironmentVariable
from loom.nats import NatsBridge, connect
from loom.nats.settings import BusSettings, bus_settings
from loom.project_check import check_project
from nats_servers import NatsServer, free_port

SRC = Path(__file__).resolve().parent.parent / "python"
HAS_NKEYS = importlib.util.find_spec("nkeys") is not None


def secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nats-auth")


def serve(config: str, workdir: Path) -> Iterator[NatsServer]:
    server = NatsServer(config=config, workdir=workdir).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Authed:
    server: NatsServer
    secret: str  # the token or the password
    user: str = "loom"

    @property
    def url(self) -> str:
        return self.server.url


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


# -- what every test checks: no secret in any text --------------------------------------


def all_texts(caplog: pytest.LogCaptureFixture, exc: BaseException | None = None) -> str:
    """Every log record (message and traceback) and the exception (str, repr, the
    formatted traceback with its chained causes)."""
    formatter = logging.Formatter()
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def assert_hidden(text: str, *hidden: str) -> None:
    for s in hidden:
        assert s not in text, f"a secret leaked: ...{text[max(0, text.find(s) - 200) :][:400]}"


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: nats-py's records too


async def exchange(a_settings: BusSettings, b_settings: BusSettings) -> None:
    """Two runtimes on the server, a request from one answered by the other."""
    a, b = Runtime(), Runtime()
    try:
        ba = await connect(a, settings=a_settings, name="a")
        bb = await connect(b, settings=b_settings, name="b")

        async def echo(ctx, topic, event):  # type: ignore[no-untyped-def]
            await ctx.reply(event, payload={"echo": event.payload})

        await Agent("server", topics=["svc.echo"], on_event=echo, runtime=b).start()
        client = Agent("client", runtime=a)
        await client.start()
        await settle(ba, bb)
        reply = await client.ctx.request("svc.echo", payload={"n": 1}, timeout=5)
        assert reply.payload == {"echo": {"n": 1}}
    finally:
        await a.stop(timeout=5)
        await b.stop(timeout=5)


async def settle(*bridges: NatsBridge) -> None:
    await asyncio.sleep(0.05)
    for br in bridges:
        await br.flush()


async def refused(settings: BusSettings) -> tuple[BusError, float]:
    started = time.monotonic()
    with pytest.raises(BusError) as info:
        await connect(Runtime(), settings=settings)
    return info.value, time.monotonic() - started


# -- token ------------------------------------------------------------------------------


async def test_token_works_and_a_wrong_one_fails_fast_without_showing_it(
    token_server: Authed, caplog: pytest.LogCaptureFixture
) -> None:
    right = BusSettings(nats=token_server.url, token=token_server.secret)
    await exchange(right, right)
    wrong = secret("badtok")
    exc, took = await refused(BusSettings(nats=token_server.url, token=wrong, connect_timeout=10))
    assert "authorization violation" in str(exc)
    assert took < 4, f"waited {took:.1f}s for an error retrying cannot fix"
    assert_hidden(all_texts(caplog, exc), token_server.secret, wrong)


async def test_a_token_in_the_url(token_server: Authed, caplog: pytest.LogCaptureFixture) -> None:
    port = token_server.server.port
    right = BusSettings(nats=f"nats://{token_server.secret}@127.0.0.1:{port}")
    await exchange(right, right)
    wrong = secret("urltok")
    exc, _ = await refused(BusSettings(nats=f"nats://{wrong}@127.0.0.1:{port}"))
    assert "authorization violation" in str(exc) and "nats://***@127.0.0.1" in str(exc)
    assert_hidden(all_texts(caplog, exc), token_server.secret, wrong)


# -- user and password ------------------------------------------------------------------


async def test_user_and_password_keys(
    password_server: Authed, caplog: pytest.LogCaptureFixture
) -> None:
    right = BusSettings(nats=password_server.url, user="loom", password=password_server.secret)
    await exchange(right, right)
    wrong = secret("badpw")
    exc, took = await refused(
        BusSettings(nats=password_server.url, user="loom", password=wrong, connect_timeout=10)
    )
    assert "authorization violation" in str(exc) and took < 4
    assert_hidden(all_texts(caplog, exc), password_server.secret, wrong)


async def test_user_and_password_in_cluster_urls(
    password_server: Authed, caplog: pytest.LogCaptureFixture
) -> None:
    """``nats://u:p@h1,nats://u:p@h2``: every server of the list, credentials and all,
    and a dead one among them does not stop the first connection."""
    port, pw = password_server.server.port, password_server.secret
    dead = free_port()
    cluster = f"nats://loom:{pw}@127.0.0.1:{dead},nats://loom:{pw}@127.0.0.1:{port}"
    right = BusSettings(nats=cluster, connect_timeout=8)
    await exchange(right, right)
    wrong = secret("badpw")
    exc, _ = await refused(
        BusSettings(nats=f"nats://loom:{wrong}@127.0.0.1:{port},nats://loom:{wrong}@[::1]:{port}")
    )
    assert "authorization violation" in str(exc)
    assert str(exc).count("nats://***@") == 2, str(exc)
    assert_hidden(all_texts(caplog, exc), pw, wrong)


async def test_after_the_first_connection_the_client_reconnects(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = secret("pw")
    for server in serve(f'authorization {{ user: "loom", password: "{password}" }}', workdir):
        settings = BusSettings(nats=server.url, user="loom", password=password)
        rt = Runtime()
        try:
            bridge = await connect(rt, settings=settings)
            server.restart()
            deadline = time.monotonic() + 15
            while not bridge.nc.is_connected or bridge.nc.stats["reconnects"] < 1:
                assert time.monotonic() < deadline, "did not reconnect"
                await asyncio.sleep(0.1)
        finally:
            await rt.stop(timeout=5)
    assert "connection lost; reconnecting" in caplog.text
    assert_hidden(all_texts(caplog), password)


async def test_revoked_credentials_are_retried_until_they_work_again(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once connected, a refusal is a warning and the client keeps trying: the
    credentials may be restored (or the server's configuration fixed)."""
    old, new = secret("pw"), secret("pw")
    for server in serve(f'authorization {{ user: "loom", password: "{old}" }}', workdir):
        rt = Runtime()
        try:
            settings = BusSettings(nats=server.url, user="loom", password=old)
            bridge = await connect(rt, settings=settings)
            server.reload(f'authorization {{ user: "loom", password: "{new}" }}')
            deadline = time.monotonic() + 10
            while "authorization violation" not in caplog.text:
                assert time.monotonic() < deadline, "the revocation went unnoticed"
                await asyncio.sleep(0.05)
            assert not bridge.nc.is_closed
            server.reload(f'authorization {{ user: "loom", password: "{old}" }}')
            deadline = time.monotonic() + 10
            while not bridge.nc.is_connected:
                assert time.monotonic() < deadline, "did not reconnect"
                await asyncio.sleep(0.05)
        finally:
            await rt.stop(timeout=5)
    assert_hidden(all_texts(caplog), old, new)


async def test_an_unreachable_server_fails_within_connect_timeout() -> None:
    exc, took = await refused(
        BusSettings(nats=f"nats://127.0.0.1:{free_port()}", connect_timeout=1.5)
    )
    assert "connection refused" in str(exc), str(exc)
    assert 1.4 < took < 5, took


# -- NKey -------------------------------------------------------------------------------


def nkey_seed() -> tuple[bytes, str]:
    """A new user seed and its public key."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(bytearray(seed)).public_key.decode()


@pytest.mark.skipif(not HAS_NKEYS, reason="the nkeys package (nats-py[nkeys]) is not installed")
async def test_nkey_seed_file(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    seed, public = nkey_seed()
    other, _ = nkey_seed()
    good, bad = workdir / "user.nk", workdir / "other.nk"
    good.write_bytes(seed + b"\n")
    bad.write_bytes(other)
    for server in serve(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}', workdir):
        right = BusSettings(nats=server.url, nkey_seed=str(good))
        await exchange(right, right)
        exc, took = await refused(BusSettings(nats=server.url, nkey_seed=str(bad)))
        assert "authorization violation" in str(exc) and took < 4
    assert_hidden(all_texts(caplog, exc), seed.decode(), other.decode())


def operator_mode(directory: Path) -> tuple[str, Path, Path]:
    """A trusted operator, an account and two users of it, as ``nsc`` makes them: the
    server's configuration, a user's ``.creds`` file, and one of a user of another
    (unknown) account."""
    import base64
    import hashlib
    import json

    import nkeys

    def pair(prefix: int) -> tuple[bytes, nkeys.KeyPair]:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return seed, nkeys.from_seed(bytearray(seed))

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def jwt(claims: dict[str, object], signer: nkeys.KeyPair) -> str:
        header = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        claims = {**claims, "iat": int(time.time()), "jti": ""}
        digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
        claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
        body = b64(json.dumps(claims).encode())
        return f"{header}.{body}.{b64(signer.sign(f'{header}.{body}'.encode()))}"

    def key(k: nkeys.KeyPair) -> str:
        return str(k.public_key.decode())

    unlimited = {"subs": -1, "data": -1, "payload": -1, "conn": -1, "leaf": -1}
    _, operator = pair(nkeys.PREFIX_BYTE_OPERATOR)
    op_jwt = jwt(
        {"iss": key(operator), "sub": key(operator), "nats": {"type": "operator", "version": 2}},
        operator,
    )

    def account() -> tuple[nkeys.KeyPair, str]:
        _, acc = pair(nkeys.PREFIX_BYTE_ACCOUNT)
        claims = {
            "limits": {**unlimited, "imports": -1, "exports": -1, "wildcards": True},
            "type": "account",
            "version": 2,
        }
        return acc, jwt({"iss": key(operator), "sub": key(acc), "nats": claims}, operator)

    def creds(acc: nkeys.KeyPair, path: Path) -> Path:
        seed, user = pair(nkeys.PREFIX_BYTE_USER)
        claims = {"pub": {}, "sub": {}, **unlimited, "type": "user", "version": 2}
        user_jwt = jwt({"iss": key(acc), "sub": key(user), "nats": claims}, acc)
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
        )
        return path

    known, known_jwt = account()
    unknown, _ = account()
    config = (
        f"operator: {op_jwt}\nresolver: MEMORY\nresolver_preload: {{ {key(known)}: {known_jwt} }}\n"
    )
    return config, creds(known, directory / "u.creds"), creds(unknown, directory / "x.creds")


@pytest.mark.skipif(not HAS_NKEYS, reason="the nkeys package (nats-py[nkeys]) is not installed")
async def test_creds_file(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    config, good, bad = operator_mode(workdir)
    for server in serve(config, workdir):
        right = BusSettings(nats=server.url, creds=str(good))
        await exchange(right, right)
        exc, took = await refused(BusSettings(nats=server.url, creds=str(bad)))
        assert "authorization violation" in str(exc) and took < 4
    seeds = [
        line for p in (good, bad) for line in p.read_text().splitlines() if line.startswith("SU")
    ]
    assert len(seeds) == 2
    assert_hidden(all_texts(caplog, exc), *seeds)


# -- TLS --------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A self-signed CA, a server certificate for 127.0.0.1/localhost and a client
    certificate, both signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("loom test CA"))
        .issuer_name(name("loom test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        cn: str, usage: x509.ObjectIdentifier, server: bool
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, True)
    client_cert, client_key = leaf("loom client", ExtendedKeyUsageOID.CLIENT_AUTH, False)
    return Pki(
        ca=write_cert(ca, directory / "ca.pem"),
        server_cert=write_cert(server_cert, directory / "server.pem"),
        server_key=write_key(server_key, directory / "server-key.pem"),
        client_cert=write_cert(client_cert, directory / "client.pem"),
        client_key=write_key(client_key, directory / "client-key.pem"),
    )


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Pki:
    pytest.importorskip("cryptography", reason="the cryptography package makes the test CA")
    return make_pki(workdir)


@pytest.fixture(scope="module")
def tls_server(workdir: Path, pki: Pki) -> Iterator[Authed]:
    password = secret("tlspw")
    config = textwrap.dedent(
        f"""
        tls {{
          cert_file: "{pki.server_cert}"
          key_file: "{pki.server_key}"
          timeout: 2
        }}
        authorization {{ user: "loom", password: "{password}" }}
        """
    )
    for server in serve(config, workdir):
        yield Authed(server, password)


async def test_tls_with_the_ca_works_and_without_it_fails(
    tls_server: Authed, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    tls = BusSettings(
        nats=f"tls://127.0.0.1:{tls_server.server.port}",
        user="loom",
        password=tls_server.secret,
        tls_ca=str(pki.ca),
    )
    await exchange(tls, tls)
    exc, took = await refused(
        BusSettings(
            nats=tls_server.url, user="loom", password=tls_server.secret, connect_timeout=10
        )
    )
    assert "TLS handshake failed" in str(exc) and "certificate verify failed" in str(exc)
    assert "tls_ca" in str(exc) and took < 4
    assert_hidden(all_texts(caplog, exc), tls_server.secret)


async def test_tls_reconnects_after_a_server_restart(tls_server: Authed, pki: Pki) -> None:
    settings = BusSettings(
        nats=tls_server.url, user="loom", password=tls_server.secret, tls_ca=str(pki.ca)
    )
    rt = Runtime()
    try:
        bridge = await connect(rt, settings=settings)
        tls_server.server.restart()
        deadline = time.monotonic() + 15
        while not bridge.nc.is_connected or bridge.nc.stats["reconnects"] < 1:
            assert time.monotonic() < deadline, "did not reconnect over TLS"
            await asyncio.sleep(0.1)
    finally:
        await rt.stop(timeout=5)


async def test_required_tls_is_not_downgraded_and_no_password_goes_in_clear(
    password_server: Authed, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """[bus] tls_ca and a plain-text server: refused before the credentials are sent
    (were they sent, this server would accept them)."""
    exc, took = await refused(
        BusSettings(
            nats=password_server.url,
            user="loom",
            password=password_server.secret,
            tls_ca=str(pki.ca),
            connect_timeout=10,
        )
    )
    assert "does not offer TLS" in str(exc) and "no credentials were sent" in str(exc)
    assert took < 4
    assert_hidden(all_texts(caplog, exc), password_server.secret)


async def test_mutual_tls_needs_the_client_certificate(workdir: Path, pki: Pki) -> None:
    config = textwrap.dedent(
        f"""
        tls {{
          cert_file: "{pki.server_cert}"
          key_file: "{pki.server_key}"
          ca_file: "{pki.ca}"
          verify: true
          timeout: 2
        }}
        """
    )
    for server in serve(config, workdir):
        mtls = BusSettings(
            nats=server.url,
            tls_ca=str(pki.ca),
            tls_cert=str(pki.client_cert),
            tls_key=str(pki.client_key),
        )
        await exchange(mtls, mtls)
        exc, _ = await refused(BusSettings(nats=server.url, tls_ca=str(pki.ca), connect_timeout=2))
        assert "cannot connect to NATS" in str(exc)


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
