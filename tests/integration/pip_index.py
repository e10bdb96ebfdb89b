"""A PEP 503 package index on the engine's bridge, serving one wheel with the caching headers PyPI sends, and
counting what it is asked for: so a test can see whether pip downloaded the wheel or took it from its cache."""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROJECT, VERSION = "imagebuilder-probe", "1.0"
MODULE = PROJECT.replace("-", "_")
WHEEL_NAME = f"{MODULE}-{VERSION}-py3-none-any.whl"
IMMUTABLE = "public, max-age=365000000, immutable"  # what files.pythonhosted.org sends for a file


def probe_wheel() -> bytes:
    """A pure-Python wheel whose module says its version; RECORD holds the hashes pip checks."""
    dist_info = f"{MODULE}-{VERSION}.dist-info"
    files = {
        f"{MODULE}/__init__.py": f'VERSION = "{VERSION}"\n'.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {VERSION}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},sha256={_digest(data)},{len(data)}\n" for name, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class PackageIndex:
    """Serves /<prefix>/simple/imagebuilder-probe/ and the wheel on `address` (a port of its own); `requests` counts
    GETs by path. The prefix is new for each index: pip's HTTP cache, in the engine's BuildKit cache mount, outlives
    a test session, and an earlier session's index may have had this port (and another wheel, made at another
    time) under the same URL."""

    def __init__(self, address: str):
        self.requests: Counter[str] = Counter()
        self._prefix = f"/{secrets.token_hex(4)}"
        wheel = probe_wheel()
        self._server = ThreadingHTTPServer((address, 0), _handler(self.requests, wheel, self._prefix))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self._prefix}/simple"

    @property
    def wheel_path(self) -> str:
        return f"{self._prefix}/files/{WHEEL_NAME}"

    def __enter__(self) -> PackageIndex:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(requests: Counter, wheel: bytes, prefix: str) -> type[BaseHTTPRequestHandler]:
    page = (f'<!DOCTYPE html><html><body><a href="{prefix}/files/{WHEEL_NAME}#sha256='
            f'{hashlib.sha256(wheel).hexdigest()}">{WHEEL_NAME}</a></body></html>').encode()
    routes = {f"{prefix}/simple/{PROJECT}/": (page, "text/html", "max-age=600"),
              f"{prefix}/files/{WHEEL_NAME}": (wheel, "application/octet-stream", IMMUTABLE)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            requests[self.path] += 1
            if self.path not in routes:
                self.send_error(404)
                return
            body, kind, cache = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:  # the counts say what the test needs; keep stderr quiet
            pass

    return Handler
