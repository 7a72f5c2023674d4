"""A real HTTP server on 127.0.0.1 for the ``http:fetch`` tests: it records every hit,
so a denial test can check that the server the URL pointed at received nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/hello":
            self._send(200, b"hello", "text/plain; charset=utf-8")
        elif url.path == "/json":
            self._send(200, b'{"ok": true}', "application/json")
        elif url.path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif url.path == "/binary":
            self._send(200, bytes(range(256)), "application/octet-stream")
        elif url.path == "/headers":
            self._send(
                200,
                b"h",
                "text/plain",
                Set_Cookie="session=s3cret",
                X_Internal="secret",
                ETag='"v1"',
            )
        elif url.path == "/big":
            self._send(200, b"a" * int(q["n"]))
        elif url.path == "/endless":
            # No Content-Length, never ends: the client has to stop reading.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"z" * 65536)
            except OSError:
                return
        elif url.path == "/slow":
            time.sleep(float(q.get("s", "5")))
            self._send(200, b"late")
        elif url.path == "/trickle":
            # Headers at once, then a byte every 0.1 s: only a total deadline stops it.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b".")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        elif url.path == "/redirect":
            self._send(int(q.get("code", "302")), b"", Location=q["to"])
        elif url.path == "/loop":
            self._send(302, b"", Location="/loop")
        elif url.path == "/echo":
            self._echo()
        elif url.path == "/charset":
            # ?cs=<charset>&text=<text> (encoded with cs when Python can, else UTF-8)
            text = q.get("text", "héllo wörld")
            try:
                body = text.encode(q["cs"])
            except (LookupError, TypeError, UnicodeError, ValueError):
                body = text.encode()
            if isinstance(body, str):
                body = body.encode()
            self._send(200, body, f"{q.get('type', 'text/plain')}; charset={q['cs']}")
        elif url.path == "/punycode":
            # Quadratic to decode as punycode: about 16 s for this body on a fast machine.
            n = int(q.get("n", "400000"))
            self._send(200, b"a" * n + b"-" + b"9" * n, "text/html; charset=punycode")
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        self.server.hits.append(self.path)
        url = urlsplit(self.path)
        if url.path == "/redirect":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            self._send(int(q.get("code", "302")), b"", Location=q["to"])
        else:
            self._echo()

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        info = {
            "method": self.command,
            "path": self.path,
            "body": body.decode(),
            "host": self.headers.get("Host"),
            "authorization": self.headers.get("Authorization"),
            "content_type": self.headers.get("Content-Type"),
            "accept_encoding": self.headers.get("Accept-Encoding"),
        }
        self._send(200, json.dumps(info).encode(), "application/json")


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[str] = []
        self.port = self.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"


Fetch = Callable[..., Awaitable[Any]]


def allow(*entries: str, **limits: Any) -> str:
    lines = ["[tools.http]", "allow = " + json.dumps(list(entries))]
    lines += [f"{k} = {json.dumps(v)}" for k, v in limits.items()]
    return "\n".join(lines) + "\n"
