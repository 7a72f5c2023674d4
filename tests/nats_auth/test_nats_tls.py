"""TLS to nats-server, server-only and mutual: the CA is checked, a required TLS is not
downgraded, reconnects keep it, and no password goes in clear."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from auth_helpers import (
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
