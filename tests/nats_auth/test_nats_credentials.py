"""Authenticating to nats-server: token, user/password (as keys and in the URL), NKey
seed files and `.creds` files; the first connection failing fast and saying why; and no
secret in any log record, exception text or repr."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from auth_helpers import (
    HAS_NKEYS,
    Authed,
    all_texts,
    assert_hidden,
    exchange,
    refused,
    secret,
    serve,
)

from loom import Runtime
from loom.nats import connect
from loom.nats.settings import BusSettings
from nats_servers import free_port

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
