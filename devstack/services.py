"""Start and stop real local servers: redis-server, dockerd and docker-registry with htpasswd auth."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import redis
import requests

START_TIMEOUT_S = 60
DOCKERD_SOCKET = Path("/var/run/docker.sock")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout_s} s")


@dataclass
class Process:
    """A server process we started; stopped with SIGTERM, then SIGKILL."""

    popen: subprocess.Popen
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the whole process group, as a machine crash would."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(args: list[str], log_path: Path, **kwargs) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
    return Process(popen, log_path)


DATABASES = 32  # each test module that runs its own worker takes a database of its own


@dataclass
class RedisServer:
    """redis-server on loopback with AOF on, data under `workdir`; optionally with a password and TLS only."""

    workdir: Path
    port: int = field(default_factory=free_port)
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    extra_args: tuple[str, ...] = ()  # more redis-server options (a replica's `--replicaof`)
    process: Process | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            ca = self.workdir / "tls" / "ca.pem"
            return f"rediss://{auth}127.0.0.1:{self.port}/{db}?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.workdir), "--appendonly", "yes",
                "--save", "", "--maxmemory-policy", "noeviction", "--databases", str(DATABASES)]
        if self.password:
            args += ["--requirepass", self.password]
        args += self._tls_args() if self.tls else ["--port", str(self.port)]
        args += self.extra_args
        self.process = spawn(args, self.workdir / "redis.log")
        wait_until(lambda: redis.Redis.from_url(self.url()).ping(), f"redis-server on port {self.port}")
        return self

    def _tls_args(self) -> list[str]:
        tls = self.workdir / "tls"
        if not (tls / "server.pem").exists():
            make_tls_certificates(tls)
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls / "server.pem"),
                "--tls-key-file", str(tls / "server.key"), "--tls-ca-cert-file", str(tls / "ca.pem"),
                "--tls-auth-clients", "no"]

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def make_tls_certificates(folder: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=imagebuilder-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")


@dataclass(frozen=True)
class TokenAuth:
    """A registry's `auth: token` section: where callers get tokens, and whose signatures it trusts."""

    realm: str
    service: str
    issuer: str
    root_certificates: Path

    def config(self) -> str:
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
                f"    issuer: {self.issuer}\n    rootcertbundle: {self.root_certificates}\n")


@dataclass(frozen=True)
class Notifications:
    """A registry's `notifications` section: one endpoint that gets each manifest push (not pulls, not blobs),
    with a bearer token header, as an operator would point a registry at `imagebuilder api`."""

    url: str
    token: str = field(repr=False)

    def config(self) -> str:
        return ("notifications:\n  endpoints:\n    - name: imagebuilder\n"
                f"      url: {self.url}\n      headers:\n        Authorization: [Bearer {self.token}]\n"
                "      timeout: 2s\n      threshold: 5\n      backoff: 1s\n"
                "      ignoredmediatypes: [application/octet-stream]\n"
                "      ignore:\n        actions: [pull]\n")


@dataclass
class Registry:
    """The CNCF distribution registry (Debian's docker-registry) on loopback: htpasswd auth if a user is given,
    or tokens from a token service as Docker Hub does it; with `notify`, it notifies an endpoint of pushes."""

    workdir: Path
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int = field(default_factory=free_port)
    process: Process | None = None
    token_auth: TokenAuth | None = None
    notify: Notifications | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(self._config())
        self.process = spawn(["docker-registry", "serve", str(config)], self.workdir / "registry.log")
        wait_until(
            lambda: requests.get(f"http://{self.host}/v2/", timeout=2).status_code in (200, 401),
            f"docker-registry on {self.host}",
        )
        return self

    def _config(self) -> str:
        auth = self.token_auth.config() if self.token_auth else ""
        if self.username:
            htpasswd = self.workdir / "htpasswd"
            entry = subprocess.run(
                ["htpasswd", "-Bbn", self.username, self.password or ""], check=True, capture_output=True, text=True
            ).stdout.strip()
            htpasswd.write_text(entry + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: imagebuilder-test\n    path: {htpasswd}\n"
        return (
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}{self.notify.config() if self.notify else ''}"
        )

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@dataclass
class Dockerd:
    """The machine's Docker engine: reused when one answers, else started here (as root) and stopped after."""

    workdir: Path
    process: Process | None = None

    def start(self) -> Dockerd:
        if _docker_answers():
            return self
        if not shutil.which("dockerd"):
            raise RuntimeError("dockerd is not installed: run scripts/bootstrap.sh (apt-get install docker.io)")
        self.process = spawn(["dockerd"], self.workdir / "dockerd.log", env={**os.environ})
        wait_until(_docker_answers, "dockerd")
        return self

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@dataclass
class SecondDockerd:
    """Another Docker engine on this machine, standing in for another host: its own data root, exec root (so its
    own containerd), socket and bridge network; nothing built on the first engine is in its stores. With `tls`
    (CA, certificate, key), it also serves the API over TLS on a loopback port, verifying clients' certificates."""

    workdir: Path
    bridge: str = "ib-engine2"
    gateway: str = "172.30.7.1/24"
    process: Process | None = None
    tls: tuple[Path, Path, Path] | None = None
    tls_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        # containerd's socket lives under the exec root: keep its path far below the 108 bytes a socket may use
        self._run_dir = Path(tempfile.mkdtemp(prefix="ib-engine2-"))

    @property
    def host(self) -> str:
        """Its DOCKER_HOST."""
        return f"unix://{self._run_dir / 'docker.sock'}"

    @property
    def tls_host(self) -> str:
        """Its DOCKER_HOST over TLS (with DOCKER_TLS_VERIFY=1 and a DOCKER_CERT_PATH the CA signed)."""
        return f"tcp://127.0.0.1:{self.tls_port}"

    def start(self) -> SecondDockerd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], capture_output=True)  # may exist
        subprocess.run(["ip", "addr", "replace", self.gateway, "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        self.process = spawn(["dockerd", "--data-root", str(self.workdir / "data"), "--exec-root",
                              str(self._run_dir / "exec"), "--pidfile", str(self._run_dir / "pid"), "-H", self.host,
                              "--bridge", self.bridge, *self._tls_args()], self.workdir / "dockerd.log")
        wait_until(lambda: _docker_answers(self.host), f"the second dockerd on {self.host}")
        return self

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        ca, cert, key = self.tls
        return ["--tlsverify", "--tlscacert", str(ca), "--tlscert", str(cert), "--tlskey", str(key),
                "-H", self.tls_host]

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        subnet = str(ipaddress.ip_interface(self.gateway).network)
        subprocess.run(["iptables", "-t", "nat", "-D", "POSTROUTING", "-s", subnet, "!", "-o", self.bridge, "-j",
                        "MASQUERADE"], capture_output=True)  # dockerd leaves its masquerading rule behind
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self._run_dir, ignore_errors=True)


def _docker_answers(host: str | None = None) -> bool:
    try:
        client = docker.DockerClient(base_url=host, timeout=5) if host else docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


NGINX = "/usr/sbin/nginx"
# A build step may print nothing for minutes. The live log sends keep-alives, but the proxy should never be what
# ends a stream a build still feeds: an hour, IMAGEBUILDER_BUILD_TIMEOUT_S's default.
PROXY_READ_TIMEOUT_S = 3600


@dataclass
class Nginx:
    """Debian's nginx terminating TLS on a loopback port in front of `upstream` (an http:// URL), as an operator's
    proxy or the shipped Ingress does: X-Forwarded-For and -Proto set, HTTP/1.1 upstream, nothing buffered (the
    live log is server-sent events). Config, pid, logs and temp files all live under `workdir`, in the foreground:
    nothing of the package's own server (/etc/nginx, /run/nginx.pid, port 80) is used or touched."""

    workdir: Path
    upstream: str
    certificate: Path
    key: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        if not Path(NGINX).exists():
            raise RuntimeError("nginx is not installed: run scripts/bootstrap.sh (apt-get install nginx)")
        (self.workdir / "temp").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "nginx.conf"
        config.write_text(self._config())
        # -e: the error log nginx opens before it has read the config (the package's is under /var/log/nginx)
        self.process = spawn([NGINX, "-p", str(self.workdir), "-c", str(config), "-e", str(self.workdir / "error.log")],
                             self.workdir / "nginx.log")
        wait_until(lambda: self.process.popen.poll() is not None or listening(self.port), f"nginx on {self.url}")
        if self.process.popen.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{(self.workdir / 'error.log').read_text(errors='replace')}")
        return self

    def _config(self) -> str:
        work = self.workdir
        temp_paths = "\n".join(f"  {kind}_temp_path {work / 'temp' / kind};"
                                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root, nginx runs its workers as `nobody`, who cannot reach temp paths inside a private workdir
        user = "user root;" if os.geteuid() == 0 else ""
        return f"""daemon off;
{user}
worker_processes 1;
pid {work / 'nginx.pid'};
error_log {work / 'error.log'} info;
events {{
  worker_connections 256;
}}
http {{
  access_log {work / 'access.log'};
{temp_paths}
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {self.certificate};
    ssl_certificate_key {self.key};
    location / {{
      proxy_pass {self.upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout {PROXY_READ_TIMEOUT_S}s;
    }}
  }}
}}
"""

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def listening(port: int, address: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on `address`:`port`."""
    try:
        socket.create_connection((address, port), timeout=2).close()
    except OSError:
        return False
    return True
