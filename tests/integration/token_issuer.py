"""A registry token service of the kind Docker Hub runs at auth.docker.io, for a docker-registry configured with
`auth: token`: it signs short-lived JWTs (RS256, with an x5c chain to a root the registry trusts) that grant each
account, or anonymous callers, only the scopes it allows them."""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devstack.services import TokenAuth

SERVICE = "imagebuilder-test-registry"
ISSUER = "imagebuilder-test-token-issuer"
DEFAULT_TOKEN_LIFE_S = 300
ANONYMOUS = ""


@dataclass(frozen=True)
class Rule:
    """Who may do what to the repositories matching a glob; `account` ANONYMOUS is anyone, signed in or not."""

    account: str
    repositories: str
    actions: tuple[str, ...]


@dataclass(frozen=True)
class Issued:
    """One token the service signed: for whom, what was asked and what it granted."""

    account: str
    asked: tuple[str, ...]
    granted: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass
class TokenIssuer:
    """The token service on a loopback port. `life_s` may be changed while it runs; `issued` lists every token."""

    workdir: Path
    users: dict[str, str] = field(repr=False)
    rules: list[Rule]
    life_s: float = DEFAULT_TOKEN_LIFE_S
    issued: list[Issued] = field(default_factory=list)
    refusals: int = 0

    def __post_init__(self) -> None:
        self._key, chain = _signing_key_and_chain(self.workdir / "root.pem")
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode() for cert in chain]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def registry_auth(self) -> TokenAuth:
        """What the registry's `auth: token` section needs to send callers here and to trust what this signs."""
        realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        return TokenAuth(realm, SERVICE, ISSUER, self.workdir / "root.pem")

    def tokens_for(self, account: str) -> list[Issued]:
        with self._lock:
            return [issued for issued in self.issued if issued.account == account]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict]:
        """The status and JSON body for a token request, as Docker Hub's service answers it."""
        account = self._account(authorization)
        if account is None:
            with self._lock:
                self.refusals += 1
            return 401, {"details": "incorrect username or password"}
        if query.get("service", [""])[0] != SERVICE:
            return 400, {"details": "unknown service"}
        asked = tuple(query.get("scope", []))
        granted = tuple(self._granted(account, scope) for scope in asked)
        with self._lock:
            self.issued.append(Issued(account, asked, granted))
        return 200, self._token(account, granted)

    def _account(self, authorization: str | None) -> str | None:
        if not authorization:
            return ANONYMOUS
        scheme, _, encoded = authorization.partition(" ")
        name, _, password = base64.b64decode(encoded).decode().partition(":") if scheme == "Basic" else ("", "", "")
        known = self.users.get(name)
        return name if known is not None and secrets.compare_digest(known, password) else None

    def _granted(self, account: str, scope: str) -> tuple[str, tuple[str, ...]]:
        """One scope `repository:<name>:<actions>` cut down to what the rules allow (possibly nothing at all,
        which is how Docker Hub answers for a repository the caller may not touch)."""
        _, name, actions = (scope.split(":", 2) + ["", ""])[:3]
        allowed = {action for rule in self.rules if rule.account in (ANONYMOUS, account)
                   and fnmatch.fnmatchcase(name, rule.repositories) for action in rule.actions}
        return name, tuple(action for action in actions.split(",") if action in allowed)

    def _token(self, account: str, granted: tuple[tuple[str, tuple[str, ...]], ...]) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": account, "aud": SERVICE, "iat": now, "nbf": now - 1,
                  "exp": now + int(self.life_s), "jti": secrets.token_hex(8),
                  "access": [{"type": "repository", "name": name, "actions": list(actions)}
                             for name, actions in granted]}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": self._x5c})
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
        return {"token": token, "access_token": token, "expires_in": int(self.life_s), "issued_at": issued_at}


def _handler_for(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, body = (issuer.answer(parse_qs(url.query), self.headers.get("Authorization"))
                            if url.path == "/token" else (404, {"details": "not found"}))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:  # the test reads `issued`, not stderr
            pass

    return Handler


def _signing_key_and_chain(root_path: Path) -> tuple[rsa.RSAPrivateKey, list[x509.Certificate]]:
    """A throw-away root CA (written to `root_path` for the registry to trust) and a signing certificate it
    issued; the key signs tokens and the chain travels in each token's x5c header."""
    root_key, key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    root = _certificate("imagebuilder test token root", root_key, root_key.public_key(), None, is_ca=True)
    signer = _certificate("imagebuilder test token signer", root_key, key.public_key(), root, is_ca=False)
    root_path.parent.mkdir(parents=True, exist_ok=True)
    root_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return key, [signer]


def _certificate(name: str, signing_key, public_key, issuer: x509.Certificate | None, *, is_ca: bool):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(issuer.subject if issuer else subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .sign(signing_key, hashes.SHA256()))
