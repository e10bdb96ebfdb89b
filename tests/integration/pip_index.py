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
EXTRA_PROJECT = "imagebuilder-probe-extra"  # a second project, for a spec that adds one
IMMUTABLE = "public, max-age=365000000, immutable"  # what files.pythonhosted.org sends for a file


def module_of(project: str) -> str:
    return project.replace("-", "_")


def wheel_name(project: str) -> str:
    return f"{module_of(project)}-{VERSION}-py3-none-any.whl"


def probe_wheel(project: str = PROJECT) -> bytes:
    """A pure-Python wheel whose module says its version; RECORD holds the hashes pip checks."""
    module = module_of(project)
    dist_info = f"{module}-{VERSION}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{VERSION}"\n'.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {VERSION}\n".encode(),
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
    """Serves /<prefix>/simple/<project>/ and its wheel for each of `projects` (imagebuilder-probe by default) on
    `address` (a port of its own); `requests` counts GETs by path. The prefix is new for each index: pip's HTTP
    cache, in the engine's BuildKit cache mount, outlives
    a test session, and an earlier session's index may have had this port (and another wheel, made at another
    time) under the same URL."""

    def __init__(self, address: str, projects: tuple[str, ...] = (PROJECT,)):
        self.requests: Counter[str] = Counter()
        self._prefix = f"/{secrets.token_hex(4)}"
        self._server = ThreadingHTTPServer((address, 0), _handler(self.requests, projects, self._prefix))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self._prefix}/simple"

    @property
    def wheel_path(self) -> str:
        return self.wheel_path_of(PROJECT)

    def wheel_path_of(self, project: str) -> str:
        return f"{self._prefix}/files/{wheel_name(project)}"

    def __enter__(self) -> PackageIndex:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(requests: Counter, projects: tuple[str, ...], prefix: str) -> type[BaseHTTPRequestHandler]:
    routes = {f"{prefix}/simple/": ("".join(f'<a href="{prefix}/simple/{p}/">{p}</a>' for p in projects).encode(),
                                    "text/html", "max-age=600")}
    for project in projects:
        wheel, name = probe_wheel(project), wheel_name(project)
        page = (f'<!DOCTYPE html><html><body><a href="{prefix}/files/{name}#sha256='
                f'{hashlib.sha256(wheel).hexdigest()}">{name}</a></body></html>').encode()
        routes[f"{prefix}/simple/{project}/"] = (page, "text/html", "max-age=600")
        routes[f"{prefix}/files/{name}"] = (wheel, "application/octet-stream", IMMUTABLE)

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
