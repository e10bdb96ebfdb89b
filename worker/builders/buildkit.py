"""The BuildKit builder, through the Docker CLI (docker-py cannot drive BuildKit): which client can run it, the build
process with its plain progress read line by line, and stopping it. What a failure means is the engine's to say."""

from __future__ import annotations

import base64
import collections
import ctypes
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BuilderUnavailable, ConfigurationError
from core.platforms import Platform
from core.registry.credentials import RegistryCredentials
from worker.builders.base import BuildJob
from worker.dockerfile import REBUILD_ARG, build_context
from worker.engine import Engine
from worker.packagecache import PackageCaches

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60
PROBE_TAG = "imagebuilder-probe:buildkit"
PROBE_DOCKERFILE = "FROM scratch\nLABEL io.imagebuilder.probe=buildkit\n"
KILL_GRACE_S = 5
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: between fork and exec the child only calls into it
TAIL_LINES = 20
# Only what the client needs from the worker's environment: where the engine is and how to trust it. Nothing
# else (no credentials, no proxies meant for other tools) reaches the child.
CLI_ENVIRONMENT = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")
_VERTEX_RE = re.compile(r"#(\d+) (\[[^\]]+\] .*)")
_CACHED_RE = re.compile(r"#(\d+) CACHED")
_NOISE_RE = re.compile(r"#\d+ sha256:[0-9a-f]{64}$")


class BuildKitBuilder:
    """Builds with the engine's BuildKit through a Docker client found at worker start. Inline cache metadata goes
    into every image, so that another host can reuse its layers (`--cache-from`); `--force` rebuilds every layer
    (a build argument changes) but keeps the download caches. The shared package caches that answer reach each
    build as secrets."""

    cache_mounts = True
    imports_cache = True

    def __init__(self, cli: DockerCli, platforms: frozenset[Platform], caches: PackageCaches | None = None):
        self._cli = cli
        self._platforms = platforms
        self._caches = caches or PackageCaches([])

    def __str__(self) -> str:
        return f"BuildKit through {self._cli}; package caches: {self._caches.describe()}"

    def platforms(self) -> frozenset[Platform]:
        return self._platforms

    def build(self, engine: Engine, job: BuildJob) -> str:
        """A failing step is fatal, with the command and the client's last lines; an engine that went away is
        retryable; a cancel or timeout raises what the watch decided."""
        job.on_line(f"BuildKit through {self._cli}; importing cache from {', '.join(job.cache_from)}")
        build_args = {"BUILDKIT_INLINE_CACHE": "1"} | ({REBUILD_ARG: uuid.uuid4().hex} if job.force else {})
        run = BuildKitRun(self._cli, job.target, cache_from=job.cache_from, build_args=build_args,
                          platform=job.platform.value if job.platform else None)
        process = BuildKitProcess(self._reading(job.on_line), job.check)
        engine.tracking(process)
        image_id = self._run(process, run, job)
        job.check()  # killed on cancel or timeout: say that, not what the killed client printed
        if image_id:
            return image_id
        tail = run.tail or collections.deque()
        message = next((line for line in reversed(tail) if line and not line.startswith("-")),
                       f"the Docker client exited with status {run.returncode}")
        raise engine.failure(message, tail)

    def _reading(self, on_line: Callable[[str], None]) -> Callable[[str], None]:
        """`on_line`, the package caches reading along: a build that a cache failed has them ask it again."""
        def read(line: str) -> None:
            self._caches.notice(line)
            on_line(line)
        return read

    def _run(self, process: BuildKitProcess, run: BuildKitRun, job: BuildJob) -> str:
        with client_config(job.credentials) as config_dir:
            run.secrets = self._caches.write_secrets(Path(config_dir))
            try:
                return process.run(run, job.context, config_dir)
            except OSError as e:
                logger.error("cannot run the Docker client %s: %s", run.cli.path, e)
                raise ConfigurationError("the worker cannot run its Docker client (IMAGEBUILDER_DOCKER_CLI, or the "
                                         f"first `docker` on PATH): {e.strerror or type(e).__name__}") from None


@dataclass(frozen=True)
class DockerCli:
    """A Docker client that ran a BuildKit build here, and its version."""

    path: str
    version: str

    def __str__(self) -> str:
        return f"{self.path} (client {self.version})"


def find_buildkit_cli(explicit: str = "") -> DockerCli:
    """The given client, or the first `docker` on PATH, that builds with BuildKit against this engine. A newer
    client first on PATH may need the buildx plugin for that; an older one (Debian's 20.10) does not."""
    candidates = [explicit] if explicit else _docker_clients_on_path()
    failures = []
    for path in candidates:
        reason = _probe(path)
        if reason is None:
            return DockerCli(path, _client_version(path))
        failures.append(f"{path}: {reason}")
    raise BuilderUnavailable("no Docker client here runs BuildKit builds (" + ("; ".join(failures)
                                                                                 or "no `docker` on PATH") + ")")


def _die_with_parent() -> None:
    """In the child, before exec: be killed if the worker process dies (SIGKILL included), so that no client
    builds on for a delivery that is gone (the engine cancels a build whose client went away)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _docker_clients_on_path() -> list[str]:
    found, seen = [], set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder or ".") / "docker"
        if path.is_file() and os.access(path, os.X_OK) and (real := path.resolve()) not in seen:
            seen.add(real)
            found.append(str(path))
    return found


def _probe(path: str) -> str | None:
    """None if `path` builds a one-label image with BuildKit; else why not, in a few words."""
    try:
        done = subprocess.run([path, "build", "--progress=plain", "-t", PROBE_TAG, "-"],
                              input=build_context(PROBE_DOCKERFILE).getvalue(), env=cli_environment(),
                              capture_output=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return type(e).__name__
    if done.returncode == 0:
        return None
    words = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"]
    return words[0][:200]


def _client_version(path: str) -> str:
    done = subprocess.run([path, "version", "--format", "{{.Client.Version}}"], env=cli_environment(),
                          capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    return done.stdout.strip() or "unknown"


def cli_environment(config_dir: str | None = None) -> dict[str, str]:
    env = {name: os.environ[name] for name in CLI_ENVIRONMENT if name in os.environ}
    env["DOCKER_BUILDKIT"] = "1"
    if config_dir:
        env["DOCKER_CONFIG"] = config_dir
    return env


@contextmanager
def client_config(credentials: list[RegistryCredentials]) -> Iterator[str]:
    """A private DOCKER_CONFIG folder whose config.json holds `credentials`, for BuildKit to import caches from
    those registries; removed afterwards. Credentials go in this file (mode 0600), never on a command line or in
    the child's environment."""
    folder = tempfile.mkdtemp(prefix="imagebuilder-cli-")
    try:
        auths = {c.auth_config()["serveraddress"]: {"auth": base64.b64encode(
            f"{c.username}:{c.password}".encode()).decode()} for c in credentials}
        path = Path(folder) / "config.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps({"auths": auths}))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class BuildKitRun:
    """One `docker build` with BuildKit: its arguments, and, once run, its exit status and last lines."""

    cli: DockerCli
    tag: str
    cache_from: list[str]
    build_args: dict[str, str]
    platform: str | None = None
    secrets: dict[str, Path] = field(default_factory=dict)  # id -> file, of the package caches that answer
    returncode: int | None = None
    tail: collections.deque[str] | None = None

    def arguments(self, iidfile: str) -> list[str]:
        args = [self.cli.path, "build", "--progress=plain", "--iidfile", iidfile, "-t", self.tag]
        if self.platform:
            args += ["--platform", self.platform]
        for name, value in self.build_args.items():
            args += ["--build-arg", f"{name}={value}"]
        for reference in self.cache_from:
            args += ["--cache-from", reference]
        for secret_id, path in self.secrets.items():
            args += ["--secret", f"id={secret_id},src={path}"]
        return [*args, "-"]


class BuildKitProcess:
    """Runs a BuildKitRun: the context goes in on stdin, every progress line to `on_line` (digest-only lines
    dropped, CACHED steps named); `check` runs for each line and may raise to stop; `kill` stops it from
    another thread, and the engine cancels the build when its client goes away."""

    def __init__(self, on_line: Callable[[str], None], check: Callable[[], None]):
        self._on_line = on_line
        self._check = check
        self._process: subprocess.Popen | None = None
        self._steps: dict[str, str] = {}

    def run(self, build: BuildKitRun, context: io.BytesIO, config_dir: str) -> str:
        """The image id, or '' when the build failed (`build.returncode` and `build.tail` say how)."""
        build.tail = collections.deque(maxlen=TAIL_LINES)
        with tempfile.TemporaryDirectory(prefix="imagebuilder-iid-") as folder:
            iidfile = str(Path(folder) / "iid")
            self._process = subprocess.Popen(build.arguments(iidfile), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, env=cli_environment(config_dir),
                                             start_new_session=True, preexec_fn=_die_with_parent)
            try:
                self._feed(context.getvalue())
                self._follow(build.tail)
                build.returncode = self._process.wait()
            finally:
                self.kill()
            return Path(iidfile).read_text().strip() if build.returncode == 0 and Path(iidfile).exists() else ""

    def kill(self) -> None:
        """Stop the client and everything it started (its process group); safe to call from any thread."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        try:
            process.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("docker build (pid %s) did not exit after SIGKILL", process.pid)

    def _feed(self, context: bytes) -> None:
        def write() -> None:
            try:
                self._process.stdin.write(context)
                self._process.stdin.close()
            except OSError:  # the client died early: its exit status tells why
                pass

        threading.Thread(target=write, name="buildkit-context", daemon=True).start()

    def _follow(self, tail: collections.deque[str]) -> None:
        for raw in self._process.stdout:
            self._check()
            line = raw.decode(errors="replace").rstrip()
            if not line.strip() or _NOISE_RE.match(line):
                continue
            line = self._named(line)
            tail.append(line)
            self._on_line(line)

    def _named(self, line: str) -> str:
        """`#7 CACHED` says which step only in an earlier line: name it here, so the log reads on its own."""
        if match := _VERTEX_RE.match(line):
            self._steps[match[1]] = match[2]
        elif (match := _CACHED_RE.fullmatch(line)) and match[1] in self._steps:
            return f"{line} {self._steps[match[1]]}"
        return line
