"""Throw-away certificates made by openssl: for a Docker engine serving TLS on loopback (a CA, the engine's
certificate for IP 127.0.0.1, a client's, and a client's signed by another CA, which the engine does not trust), and
for a web server on loopback (a CA and the server's certificate), with the hash browsers pin its key by."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


@dataclass(frozen=True)
class EngineTls:
    """The engine's side (CA, certificate, key) and three DOCKER_CERT_PATH folders for workers: a good one, one
    whose certificate the engine's CA never signed, and one with another CA (which cannot verify the engine)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client: Path
    untrusted_client: Path
    wrong_ca: Path


def make_engine_tls(root: Path) -> EngineTls:
    root.mkdir(parents=True, exist_ok=True)
    ca, other_ca = _ca(root, "ca"), _ca(root, "other-ca")
    server_cert, server_key = _signed(root, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    return EngineTls(ca[0], server_cert, server_key, client=_client_dir(root / "client", ca, ca),
                     untrusted_client=_client_dir(root / "untrusted-client", other_ca, ca),
                     wrong_ca=_client_dir(root / "wrong-ca", ca, other_ca))


@dataclass(frozen=True)
class ServerTls:
    """A web server's certificate for 127.0.0.1 and localhost, its key, and the CA that signed it."""

    ca: Path
    cert: Path
    key: Path

    def spki_sha256(self) -> str:
        """The base64 SHA-256 of the certificate's public key, as Chromium's --ignore-certificate-errors-spki-list
        and HPKP name a key."""
        public_pem = _openssl("x509", "-in", str(self.cert), "-noout", "-pubkey")
        der = _openssl("pkey", "-pubin", "-outform", "DER", stdin=public_pem)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


def make_server_tls(root: Path) -> ServerTls:
    root.mkdir(parents=True, exist_ok=True)
    ca = _ca(root, "web-ca")
    cert, key = _signed(root, "web-server", ca,
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    return ServerTls(ca[0], cert, key)


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    cert, key = root / f"{name}.pem", root / f"{name}-key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", DAYS,
             "-subj", f"/CN=imagebuilder test {name}")
    return cert, key


def _signed(root: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, request, extfile = (root / f"{name}{suffix}" for suffix in ("-cert.pem", "-key.pem", ".csr", ".ext"))
    extfile.write_text(extensions + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", DAYS, "-extfile", str(extfile))
    return cert, key


def _client_dir(folder: Path, signer: tuple[Path, Path], trusted_ca: tuple[Path, Path]) -> Path:
    """DOCKER_CERT_PATH as the Docker CLI reads it: ca.pem, cert.pem, key.pem."""
    folder.mkdir()
    cert, key = _signed(folder.parent, f"{folder.name}-client", signer, "extendedKeyUsage=clientAuth")
    for name, source in (("ca.pem", trusted_ca[0]), ("cert.pem", cert), ("key.pem", key)):
        (folder / name).write_bytes(source.read_bytes())
    return folder


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, check=True, capture_output=True).stdout
