"""``http:fetch`` over TLS: it connects to the checked address and verifies the
certificate for the name; docs/tools.md's config block is the default."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fetch_helpers import LocalServer, allow

from loom import (
    ToolFailed,
)
from loom.config import parse_project_config
from loom.tools.http import (
    parse_config,
)

# -- TLS: connect to the checked address, verify the certificate for the name -------------


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server whose certificate names ``localhost`` only (no IP), signed by a
    throwaway CA that OpenSSL is told to trust (``SSL_CERT_FILE``). Yields the port and
    the SNI names clients sent."""
    import datetime
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loom test CA")])
    ca_cert = cert("loom test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("localhost", key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    sni: list[str] = []
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")

    def on_sni(sock: Any, name: str | None, _ctx: Any) -> None:
        sni.append(name or "")

    ctx.sni_callback = on_sni
    server = LocalServer()
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server.port, sni
    server.shutdown()
    server.server_close()


async def test_https_connects_to_the_address_and_verifies_the_name(
    fetch_with: Any, tls_server: tuple[int, list[str]]
) -> None:
    port, sni = tls_server
    fetch = await fetch_with(allow(f"localhost:{port}", f"127.0.0.1:{port}"))
    r = await fetch(f"https://localhost:{port}/hello")
    assert r["body"] == "hello" and r["url"] == f"https://localhost:{port}/hello"
    assert sni == ["localhost"]  # SNI is the name even though we dialled 127.0.0.1
    # the certificate does not cover the IP: verification is on and uses the URL's host
    with pytest.raises(ToolFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        await fetch(f"https://127.0.0.1:{port}/hello")


def test_the_documented_config_block_is_the_default() -> None:
    """docs/tools.md's ``[tools.http]`` block shows the real defaults."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "tools.md").read_text()
    section = doc[doc.index("## http:fetch") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    table = parse_project_config(block.group(1)).tools["http"]
    documented = parse_config(table)
    default = parse_config({"allow": table["allow"]})
    assert documented == default
    assert [r.text for r in documented.allow] == ["example.com", "*.example.org", "127.0.0.1:8080"]
