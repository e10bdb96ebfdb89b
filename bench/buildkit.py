"""BuildKit builds with shared caches, against cold builds, in one run:

1. one pip package added to a spec, built on a fresh engine (a second dockerd that never built it) importing the
   first build's layers from the registry, vs that spec's cold build on the same fresh engine;
2. a cold build through the system vs the raw `docker build` CLI (BuildKit) of the same Dockerfile, each after
   the engine's build cache was emptied;
3. a rebuild after the base changed, same packages, same worker (only the download caches can help), vs cold.

Prints one line per run, then the three median ratios, the first on the last line."""

import contextlib
import os
import statistics
import subprocess
import time

import docker

from bench.harness import RawDocker, bench, timed
from core.spec import parse_spec
from devstack.baseimage import DEBIAN_IMAGE, push
from devstack.services import SecondDockerd
from devstack.stack import PULL_PASSWORD, PULL_USER, start_worker
from producer.client import BuildClient
from worker.builders.buildkit import find_buildkit_cli

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
APT, PIP = ["jq", "tree", "file", "bc", "build-essential", "python3-dev"], ["six==1.17.0"]  # a long apt list
ADDED_PIP = "idna==3.10"
DB = 1
CLI_ENV = {"PATH": "/usr/bin:/bin"}  # the system's `docker` (Debian's), whatever else comes first on PATH


def main() -> None:
    with bench() as b:
        b.stop_default_worker()
        raw = RawDocker(b.stack, b.workdir / "raw-buildkit-config", cli=find_buildkit_cli().path, buildkit=True)
        engine2 = SecondDockerd(b.workdir / "engine2").start()
        try:
            report(*[measure(b, raw, engine2, run) for run in range(1, RUNS + 1)])
        finally:
            engine2.stop()


@contextlib.contextmanager
def worker_at(b, name: str, **env: str):
    """A BuildKit worker (the only one on its Redis database) and a client of it."""
    worker = start_worker(b.stack, name, DB, IMAGEBUILDER_BUILDER="buildkit", **env)
    try:
        with BuildClient(b.stack.settings(DB)) as client:
            yield client
    finally:
        worker.process.stop()


def measure(b, raw_docker: RawDocker, engine2, run: int) -> tuple[float, float, float]:
    name = f"bk{run}-{time.time_ns() % 10**8}"
    spec = {"name": name, "baseImage": b.stack.debian_base, "pullSecret": "private",
            "packages": {"apt": APT, "pip": PIP}}
    added = {**spec, "packages": {"apt": APT, "pip": [*PIP, ADDED_PIP]}}
    with worker_at(b, f"engine1-{run}") as client:
        build(client, spec, stored=True)  # the spec's first image, pushed with inline cache metadata
        forget()
        cold = build(client, {**spec, "name": f"{name}-c"}, force=True)
        context = b.context_dir(parse_spec(spec), buildkit=True)
        target = f"{b.stack.push_registry.host}/raw/{name}:latest"
        forget()
        # What an admin would type: pull, `DOCKER_BUILDKIT=1 docker build` of the system's Dockerfile, push
        raw = timed(lambda: raw_docker.pull_build_push(b.stack.debian_base, context, target, nocache=False,
                                                       build_args={"BUILDKIT_INLINE_CACHE": "1"}))
    forget(engine2.host, images=True)
    with worker_at(b, f"engine2-{run}", DOCKER_HOST=engine2.host) as client:
        cold_fresh = build(client, {**added, "name": f"{name}-f"}, force=True)
        forget(engine2.host, images=True)
        edit = build(client, added, stored=True)
    with worker_at(b, f"engine1-{run}-rebased") as client:
        new_base(b, run)  # a scheduled rebuild on a base change is forced: the tag stays the same
        rebased = build(client, {**spec, "name": f"{name}-c"}, force=True)
    print(f"run {run}: fresh engine cold {cold_fresh:.1f} s, after adding {ADDED_PIP} {edit:.1f} s; cold "
          f"{cold:.1f} s vs raw docker build {raw:.1f} s; after a base change {rebased:.1f} s")
    return edit / cold_fresh, cold / raw, rebased / cold


def build(client: BuildClient, spec: dict, *, force: bool = False, stored: bool = False) -> float:
    """Seconds from submission to Succeeded (a stored spec is applied, so that its history names its image)."""
    start = time.perf_counter()
    if stored:
        _, pending = client.specs.apply(spec)
    else:
        pending = client.submit(spec, force=force)
    result = client.wait(pending.id, timeout_s=1800)
    if not result.succeeded or result.skipped:
        raise RuntimeError(f"benchmark build did not run to success: {result.phase} {result.error}")
    return time.perf_counter() - start


def forget(host: str | None = None, *, images: bool = False) -> None:
    """Empty an engine's build cache (layers and download caches); with `images`, drop its images too, as an
    engine that never built anything would have none."""
    env = {**CLI_ENV, **({"DOCKER_HOST": host} if host else {})}
    command = ["system", "prune", "--all", "--force"] if images else ["builder", "prune", "--all", "--force"]
    subprocess.run(["docker", *command], env=env, check=True, capture_output=True)


def new_base(b, run: int) -> None:
    """Push a changed Debian base (an ENV differs) under the spec's base reference."""
    engine_env = CLI_ENV
    container = subprocess.run(["docker", "create", DEBIAN_IMAGE, "true"], env=engine_env, check=True,
                               capture_output=True, text=True).stdout.strip()
    subprocess.run(["docker", "commit", "--change", f"ENV BENCH_BASE={run}-{time.time_ns()}", container,
                    b.stack.debian_base], env=engine_env, check=True, capture_output=True)
    subprocess.run(["docker", "rm", container], env=engine_env, check=True, capture_output=True)
    push(docker.from_env(), b.stack.debian_base, PULL_USER, PULL_PASSWORD)


def report(*runs: tuple[float, float, float]) -> None:
    edit, cold, rebased = (statistics.median(values) for values in zip(*runs))
    print(f"cold build / raw docker build CLI (BuildKit) = {cold:.2f} (goal <= 1.03)")
    print(f"rebuild after a base change (download caches only) / cold = {rebased:.2f} (goal <= 0.8)")
    print(f"one pip package added, fresh engine, layers from the registry / cold there = {edit:.2f} (goal <= 0.35)")


if __name__ == "__main__":
    main()
