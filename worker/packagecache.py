"""The shared package caches a worker's BuildKit builds go through (IMAGEBUILDER_APT_PROXY, IMAGEBUILDER_PIP_MIRROR):
whether each answers, said in the worker's log once each time that changes, and the build secrets that point a
build's apt and pip at those that answer. A build given none installs from the origin (worker/dockerfile.py)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from config.settings import Settings
from worker.dockerfile import APT_PROXY_SECRET, FALLBACK_NOTICE, PIP_MIRROR_SECRET

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
RECHECK_S = 15.0  # how long an answer (or its absence) is believed before the cache is asked again
APT_TIMEOUT_S = 15  # a cache that stalls mid-way fails the attempt, then the origin is asked
PIP_TIMEOUT_S = 30  # longer than the mirror waits for a file before it sends the build to the origin
DEFAULT_PORTS = {"http": 80, "https": 443}
UNSAID = -1

Probe = Callable[[str, int], str | None]  # (host, port) -> None when it answers, else why not


@dataclass(frozen=True)
class PackageCache:
    """One configured cache: what it is for, where it is, and the configuration a build's installer reads."""

    tool: str
    url: SecretStr
    secret_id: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url.get_secret_value())
        return parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme]

    @property
    def shown(self) -> str:
        """The URL for logs: scheme, host and port, never credentials or path."""
        host, port = self.address
        return f"{urlsplit(self.url.get_secret_value()).scheme}://{host}:{port}"

    def config(self) -> str:
        url = self.url.get_secret_value()
        if self.tool == "apt":
            # a list the cache failed to fetch fails the update (apt >= 2.1; older ones ignore the key), so that
            # the origin is asked, rather than old lists used
            return (f'Acquire::http::Proxy "{url}";\nAcquire::http::Timeout "{APT_TIMEOUT_S}";\n'
                    'APT::Update::Error-Mode "any";\n')
        trusted = f"trusted-host = {self.address[0]}\n" if url.startswith("http:") else ""
        return f"[global]\nindex-url = {url}\n{trusted}timeout = {PIP_TIMEOUT_S}\nretries = 1\n"


class PackageCaches:
    """The worker's caches, and which of them answer now: asked at most every RECHECK_S by all the worker's pool
    processes together (their state in memory shared from the main process, where this is made before the pool
    forks), so that a change is said once per worker, not once per process."""

    def __init__(self, caches: list[PackageCache], probe: Probe | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._caches = caches
        self._probe = probe or _answers
        self._clock = clock  # CLOCK_MONOTONIC: one clock for every process of the machine
        self._lock = multiprocessing.Lock()
        self._asked_at = multiprocessing.RawArray("d", len(caches))  # when each was asked (0: never, or forgotten)
        self._answered = multiprocessing.RawArray("b", len(caches))  # whether it answered then
        self._said = multiprocessing.RawArray("b", [UNSAID] * len(caches))  # whether it answers, as last logged

    @classmethod
    def of(cls, settings: Settings) -> PackageCaches:
        configured = [PackageCache("apt", settings.apt_proxy, APT_PROXY_SECRET),
                      PackageCache("pip", settings.pip_mirror, PIP_MIRROR_SECRET)]
        return cls([cache for cache in configured if cache.url.get_secret_value()])

    def __bool__(self) -> bool:
        return bool(self._caches)

    def describe(self) -> str:
        return ", ".join(f"{cache.tool} {cache.shown}" for cache in self._caches) or "none"

    def answering(self) -> list[PackageCache]:
        return [cache for index, cache in enumerate(self._caches) if self._answers(index)]

    def notice(self, line: str) -> None:
        """A build's line: one saying a cache failed it makes the next build ask that cache again."""
        for index, cache in enumerate(self._caches):
            if FALLBACK_NOTICE.format(tool=cache.tool) in line:
                with self._lock:
                    self._asked_at[index] = 0.0

    def write_secrets(self, folder: Path) -> dict[str, Path]:
        """Each answering cache's configuration in a file of `folder` readable only by this user: secret id ->
        file, for `docker build --secret`."""
        written = {}
        for cache in self.answering():
            path = folder / cache.secret_id
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(cache.config())
            written[cache.secret_id] = path
        return written

    def _answers(self, index: int) -> bool:
        with self._lock:
            if self._asked_at[index] and self._clock() - self._asked_at[index] < RECHECK_S:
                return bool(self._answered[index])
            cache = self._caches[index]
            why_not = self._probe(*cache.address)
            self._asked_at[index], self._answered[index] = self._clock(), why_not is None
            if self._said[index] != (why_not is None):
                _say(cache, why_not, first=self._said[index] == UNSAID)
                self._said[index] = why_not is None
            return why_not is None


def _say(cache: PackageCache, why_not: str | None, *, first: bool) -> None:
    if why_not is not None:
        logger.warning("the %s package cache at %s does not answer (%s): builds install from the origin until it "
                       "does", cache.tool, cache.shown, why_not)
    elif not first:
        logger.warning("the %s package cache at %s answers again: builds go through it", cache.tool, cache.shown)


def _answers(host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None
