"""The shared package caches, run for real on this machine: Debian's apt-cacher-ng and proxpi (a PyPI caching mirror
from PyPI), each on an address the engines' build containers reach, with what each fetched from its origin and
served counted from its own log."""

from __future__ import annotations

import errno
import random
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devstack.services import Process, free_port, listening, spawn, wait_until

APT_CACHER_NG = "/usr/sbin/apt-cacher-ng"
APT_CACHER_SUPPORT = "/usr/lib/apt-cacher-ng"
APT_CACHER_PORTS = range(20000, 32000)  # apt-cacher-ng 3.7 cannot listen on a port above 32767
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # an origin behind this machine's TLS-intercepting proxy
_TRANSFER_RE = re.compile(r"^\d+\|([IO])\|(\d+)\|[^|]*\|(.*)$", re.MULTILINE)


@dataclass
class AptCache:
    """apt-cacher-ng as a plain caching proxy (no remapping: a file is fetched from the host the client names),
    with a config, cache and log of its own under `workdir`, in the foreground."""

    workdir: Path
    address: str
    port: int = 0  # 0: a free one it can use
    process: Process | None = None
    wrap: Callable[[list[str]], list[str]] = list  # how to run it elsewhere (devstack.wan.CacheHost.wrap)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> AptCache:
        if not Path(APT_CACHER_NG).exists():
            raise RuntimeError("apt-cacher-ng is not installed: run scripts/bootstrap.sh")
        self.port = self.port or _free_low_port(self.address)
        for folder in ("conf", "cache", "log"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)
        (self.workdir / "conf" / "acng.conf").write_text(self._config())
        self.process = spawn(self.wrap([APT_CACHER_NG, "-c", str(self.workdir / "conf")]),
                             self.workdir / "apt-cacher-ng.out")
        wait_until(lambda: self.process.popen.poll() is not None or listening(self.port, self.address),
                   f"apt-cacher-ng on {self.url}")
        if self.process.popen.poll() is not None:
            raise RuntimeError(f"apt-cacher-ng exited: {self.process.log_path.read_text(errors='replace')}")
        return self

    def _config(self) -> str:
        work = self.workdir
        return (f"CacheDir: {work / 'cache'}\nLogDir: {work / 'log'}\nSupportDir: {APT_CACHER_SUPPORT}\n"
                f"Port: {self.port}\nBindAddress: {self.address}\nForeGround: 1\nPidFile: {work / 'pid'}\n"
                f"SocketPath: {work / 'socket'}\nExThreshold: 4\n")

    def transfers(self, direction: str, suffix: str = ".deb") -> dict[str, int]:
        """Bytes per file name ending in `suffix`: 'I' fetched from the origin, 'O' served to builds."""
        log = self.workdir / "log" / "apt-cacher.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        totals: dict[str, int] = {}
        for kind, size, path in _TRANSFER_RE.findall(text):
            if kind == direction and path.endswith(suffix):
                name = path.rsplit("/", 1)[-1]
                totals[name] = totals.get(name, 0) + int(size)
        return totals

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def _free_low_port(address: str) -> int:
    for port in random.sample(APT_CACHER_PORTS, 50):
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:  # another host's address (the caches' own): all its ports are free
                    return port
                continue
            return port
    raise RuntimeError(f"no free port for apt-cacher-ng on {address}")


@dataclass
class PipMirror:
    """proxpi in front of `origin` (a PEP 503 index URL), serving /index/ on `address`."""

    workdir: Path
    address: str
    origin: str
    port: int = field(default_factory=free_port)
    process: Process | None = None
    wrap: Callable[[list[str]], list[str]] = list

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/index/"

    def start(self) -> PipMirror:
        (self.workdir / "cache").mkdir(parents=True, exist_ok=True)
        # A file not fetched within PROXPI_DOWNLOAD_TIMEOUT would be fetched by the build from the origin too
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PROXPI_INDEX_URL": self.origin,
               "PROXPI_CACHE_SIZE": str(1 << 30), "PROXPI_CACHE_DIR": str(self.workdir / "cache"),
               "PROXPI_DOWNLOAD_TIMEOUT": "10", "REQUESTS_CA_BUNDLE": HOST_CA_BUNDLE}
        self.process = spawn(self.wrap([sys.executable, "-m", "flask", "--app", "proxpi.server", "run", "--host",
                                        self.address, "--port", str(self.port), "--with-threads"]),
                             self.workdir / "proxpi.log", env=env)
        wait_until(lambda: requests.get(f"http://{self.address}:{self.port}/health", timeout=2).ok,
                   f"proxpi on {self.url}")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()
