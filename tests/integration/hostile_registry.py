"""A real HTTP server on loopback playing a hostile or broken registry. The first path component of a repository
chooses the misbehaviour, so one server serves every case: `127.0.0.1:PORT/<behaviour>/base:1`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# behaviour -> what the server does, and what the service should say about it
BEHAVIOURS = {
    "html": "the token endpoint answers an HTML page",
    "list": "the token endpoint answers a JSON list",
    "loop": "the token endpoint redirects to itself",
    "metadata": "the realm is the cloud metadata address",
    "file": "the realm is a file: URL",
    "tls": "the realm speaks https to a plain http server",
    "error": "the manifest HEAD answers 500",
    "slow": "the manifest HEAD answers after the client's timeout",
}
# An image's manifest, whose config blob GET is redirected: to this server's storage (safe: loopback), or to the cloud
# metadata address; or a manifest larger than any a registry may serve.
LABELS = {"labels-storage": "/storage/config", "labels-metadata": "http://169.254.169.254/latest/meta-data/iam"}
HUGE_MANIFEST = "labels-huge"
CONFIG_DIGEST = "sha256:" + "c" * 64
IMAGE_LABELS = {"org.opencontainers.image.base.digest": "sha256:" + "b" * 64}
# Not hostile: a registry whose tokens expire after TOKEN_LIFE_S and are checked on every HEAD, as Docker Hub's.
EXPIRING_TOKENS = "tokens"
SLOW_S = 6
TOKEN_LIFE_S = 2
TOKEN_DIGEST = "sha256:" + "7" * 64


class HostileRegistry:
    """ThreadingHTTPServer in a daemon thread; `host` is what specs put before the repository."""

    def __init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.requests: list[str] = []
        self.tokens: dict[str, float] = {}  # issued token -> when it expires (monotonic)
        self._server.hostile = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def base(self, behaviour: str) -> str:
        return f"{self.host}/{behaviour}/base:1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (the http.server naming)
        self.server.hostile.requests.append(f"HEAD {self.path}")  # type: ignore[attr-defined]
        behaviour = self.path.split("/")[2] if self.path.startswith("/v2/") else ""
        if behaviour == "error":
            return self._answer(500)
        if behaviour == "slow":
            threading.Event().wait(SLOW_S)
            return self._answer(200)
        if behaviour == EXPIRING_TOKENS and self._valid_token():
            return self._answer(200, {"Docker-Content-Digest": TOKEN_DIGEST})
        self._answer(401, {"WWW-Authenticate": f'Bearer realm="{self._realm(behaviour)}",service="hostile"'})

    def do_GET(self) -> None:  # noqa: N802
        self.server.hostile.requests.append(f"GET {self.path}")  # type: ignore[attr-defined]
        if self.path.startswith("/token/html"):
            return self._answer(200, {"Content-Type": "text/html"}, b"<html><body>Sign in to the portal</body></html>")
        if self.path.startswith("/token/list"):
            return self._answer(200, {"Content-Type": "application/json"}, b"[1, 2, 3]")
        if self.path.startswith("/token/loop"):
            return self._answer(302, {"Location": self.path})
        if self.path.startswith(f"/token/{EXPIRING_TOKENS}"):
            return self._issue_token()
        if self.path.startswith("/v2/"):
            return self._image(self.path.split("/")[2])
        if self.path == LABELS["labels-storage"]:
            return self._answer(200, {}, json.dumps({"config": {"Labels": IMAGE_LABELS}}).encode())
        self._answer(404)

    def _image(self, behaviour: str) -> None:
        """A manifest, or its config blob redirected as LABELS says; or a manifest past every bound."""
        if behaviour == HUGE_MANIFEST:
            return self._answer(200, {}, b"{" + b" " * (5 << 20) + b"}")
        if behaviour not in LABELS:
            return self._answer(404)
        if "/blobs/" in self.path:
            return self._answer(307, {"Location": LABELS[behaviour]})
        self._answer(200, {}, json.dumps({"schemaVersion": 2, "config": {"digest": CONFIG_DIGEST}}).encode())

    def _issue_token(self) -> None:
        hostile = self.server.hostile  # type: ignore[attr-defined]
        token = f"token-{len(hostile.tokens) + 1}"
        hostile.tokens[token] = time.monotonic() + TOKEN_LIFE_S
        body = json.dumps({"token": token, "expires_in": TOKEN_LIFE_S}).encode()
        self._answer(200, {"Content-Type": "application/json"}, body)

    def _valid_token(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        expires = self.server.hostile.tokens.get(token)  # type: ignore[attr-defined]
        return scheme == "Bearer" and expires is not None and time.monotonic() < expires

    def _realm(self, behaviour: str) -> str:
        host = f"127.0.0.1:{self.server.server_address[1]}"
        return {"metadata": "http://169.254.169.254/latest/meta-data/iam", "file": "file:///etc/passwd",
                "tls": f"https://{host}/token/tls"}.get(behaviour, f"http://{host}/token/{behaviour}")

    def _answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
