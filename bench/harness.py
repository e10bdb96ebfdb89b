"""Shared by the benchmarks: the local stack, a worker, and the raw `docker` CLI baseline on the same engine."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.result import utcnow  # noqa: E402
from core.spec import ImageSpec, parse_spec  # noqa: E402
from core.tagging import compute_tag  # noqa: E402
from devstack.stack import (  # noqa: E402
    PULL_PASSWORD,
    PULL_USER,
    PUSH_PASSWORD,
    PUSH_USER,
    Stack,
    WorkerProcess,  # noqa: E402
    local_stack,
    start_worker,
)
from producer.client import BuildClient  # noqa: E402
from worker.dockerfile import BuildInputs, build_context, render_dockerfile  # noqa: E402


class RawDocker:
    """The baseline: what an admin would type, `docker pull/build/push`, logged in to both registries (once, here).
    The classic builder by default; with `buildkit`, the given client's BuildKit builds; on the engine at `host`, or
    the default one."""

    def __init__(self, stack: Stack, config_dir: Path, *, cli: str = "docker", buildkit: bool = False,
                 host: str | None = None):
        self._cli = cli
        self._env = {**os.environ, "DOCKER_CONFIG": str(config_dir), "DOCKER_BUILDKIT": "1" if buildkit else "0",
                     **({"DOCKER_HOST": host} if host else {})}
        self.run("login", "-u", PULL_USER, "--password-stdin", stack.private_registry.host, stdin=PULL_PASSWORD)
        self.run("login", "-u", PUSH_USER, "--password-stdin", stack.push_registry.host, stdin=PUSH_PASSWORD)

    def run(self, *args: str, stdin: str | None = None) -> None:
        """`docker ARGS`, as this admin (quietly; raises if it fails)."""
        subprocess.run([self._cli, *args], input=stdin, text=True, env=self._env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def pull_build_push(self, base: str, context_dir: Path, target: str, *, nocache: bool,
                        build_args: dict[str, str] | None = None) -> None:
        self.run("pull", base)
        arguments = [item for name, value in (build_args or {}).items() for item in ("--build-arg", f"{name}={value}")]
        self.run("build", *(["--no-cache"] if nocache else []), *arguments, "-t", target, str(context_dir))
        self.run("push", target)


@dataclass
class Bench:
    stack: Stack
    client: BuildClient
    raw: RawDocker
    workdir: Path
    worker: WorkerProcess
    last_image: str = ""  # the image of the system's last build

    def stop_default_worker(self) -> None:
        self.worker.process.stop()

    def context_dir(self, spec: ImageSpec, *, buildkit: bool = False) -> Path:
        """The very Dockerfile (and CA bundle) the system renders for `spec` (for BuildKit, with its cache mounts),
        unpacked for `docker build`."""
        inputs = BuildInputs(tag=compute_tag(spec), created=utcnow(), buildkit=buildkit,
                             ca_bundle=self.stack.settings().build_ca_bundle is not None)
        context = self.workdir / f"context-{spec.name}{'-buildkit' if buildkit else ''}"
        context.mkdir(exist_ok=True)
        tar = build_context(render_dockerfile(spec, inputs), self.stack.settings().build_ca_bundle)
        subprocess.run(["tar", "-x", "-C", str(context)], input=tar.read(), check=True)
        return context

    def versus_raw(self, name: str, *, force: bool, runs: int) -> list[tuple[float, float]]:
        """Alternate the system's build of a small apt spec with the raw CLI's pull/build/push of its Dockerfile.

        One untimed round first, so that both sides start from a pulled base (and, unforced, a pushed image)."""
        spec = parse_spec({"name": name, "baseImage": self.stack.debian_base, "pullSecret": "private",
                           "packages": {"apt": ["jq"]}})
        context = self.context_dir(spec)
        raw_target = f"{self.stack.push_registry.host}/raw/{name}:latest"

        def raw() -> None:
            self.raw.pull_build_push(self.stack.debian_base, context, raw_target, nocache=force)

        self.build(spec, force=force)
        raw()
        return alternate(lambda: self.build(spec, force=force), raw, runs)

    def build(self, spec: ImageSpec, *, force: bool) -> float:
        """Seconds from submit to a final phase through the whole system; raises unless it Succeeded."""
        start = time.perf_counter()
        result = self.client.wait(self.client.submit(spec, force=force).id, timeout_s=1800)
        elapsed = time.perf_counter() - start
        if not result.succeeded:
            raise RuntimeError(f"benchmark build failed: {result.error}")
        self.last_image = result.image
        return elapsed


@contextmanager
def bench() -> Iterator[Bench]:
    # A benchmark stopped with SIGTERM (kill, timeout) still stops the services it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="imagebuilder-bench-") as tmp, local_stack(Path(tmp)) as stack:
        worker = start_worker(stack, "bench")
        try:
            with BuildClient(stack.settings()) as client:
                yield Bench(stack, client, RawDocker(stack, Path(tmp) / "docker-config"), Path(tmp), worker)
        finally:
            worker.process.stop()


def alternate(system: Callable[[], float], raw: Callable[[], object], runs: int) -> list[tuple[float, float]]:
    """`runs` pairs of (system seconds, raw CLI seconds), the two taking turns so drift hits both alike."""
    return [(system(), timed(raw)) for _ in range(runs)]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def report(name: str, pairs: list[tuple[float, float]]) -> None:
    """One line per run, then the median ratio (system / raw CLI) as the last line."""
    for i, (system, raw) in enumerate(pairs, 1):
        print(f"run {i}: system {system:.2f} s, raw docker CLI {raw:.2f} s, ratio {system / raw:.2f}")
    print(f"{name}: median ratio system/raw docker CLI = {statistics.median(s / r for s, r in pairs):.2f}")
