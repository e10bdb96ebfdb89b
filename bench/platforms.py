"""Multi-platform builds (linux/amd64 and linux/arm64 under qemu-user-static) on one engine, in one run:

1. a two-platform build through the system vs the raw CLI doing the same by hand: `DOCKER_BUILDKIT=1 docker build
   --platform` and a push for each platform, then `docker manifest create` and `push` for the index; both forced
   (every layer rebuilt, the download caches kept), taking turns;
2. the same two-platform build's wall-clock vs its slowest platform (arm64, emulated) built alone.

Prints one line per run, then the two median ratios, the first on the last line."""

import os
import statistics
import uuid

import docker

from bench.harness import RawDocker, bench, timed
from core.spec import parse_spec
from devstack.baseimage import arm64_debian_rootfs_tar, push_two_platform_debian
from devstack.stack import PULL_PASSWORD, PULL_USER, start_worker
from producer.client import BuildClient
from worker.builders.buildkit import find_buildkit_cli
from worker.dockerfile import REBUILD_ARG

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DB = 1
PLATFORMS = ["linux/amd64", "linux/arm64"]
PACKAGES = {"apt": ["jq"]}


def main() -> None:
    with bench() as b:
        b.stop_default_worker()
        base = f"{b.stack.private_registry.host}/base/debian:two-platforms"
        push_two_platform_debian(docker.from_env(), base, PULL_USER, PULL_PASSWORD, arm64_debian_rootfs_tar())
        raw = RawDocker(b.stack, b.workdir / "raw-buildkit-config", cli=find_buildkit_cli().path, buildkit=True)
        worker = start_worker(b.stack, "platforms", DB, IMAGEBUILDER_BUILDER="buildkit")
        try:
            with BuildClient(b.stack.settings(DB)) as client:
                report(*measure(b, client, raw, base))
        finally:
            worker.process.stop()


def measure(b, client: BuildClient, raw: RawDocker, base: str) -> tuple[list, list]:
    both = parse_spec({"name": "bench-platforms", "baseImage": base, "pullSecret": "private",
                       "platforms": PLATFORMS, "packages": PACKAGES})
    alone = parse_spec({**both.to_wire(), "platforms": PLATFORMS[1:]})
    context = b.context_dir(parse_spec({**both.to_wire(), "platforms": None}), buildkit=True)
    raw_target = f"{b.stack.push_registry.host}/raw/bench-platforms"

    def by_hand() -> None:
        rebuild = uuid.uuid4().hex
        for platform in PLATFORMS:
            tag = f"{raw_target}:{platform.replace('/', '-')}"
            raw.run("build", "--platform", platform, "--build-arg", f"{REBUILD_ARG}={rebuild}", "-t", tag,
                    str(context))
            raw.run("push", tag)
        tags = [f"{raw_target}:{platform.replace('/', '-')}" for platform in PLATFORMS]
        raw.run("manifest", "create", "--insecure", "--amend", f"{raw_target}:latest", *tags)
        raw.run("manifest", "push", "--insecure", "--purge", f"{raw_target}:latest")

    build = lambda spec: timed_build(client, spec)  # noqa: E731
    build(both), by_hand(), build(alone)  # warm: base pulled, caches filled, images pushed once
    versus_raw, versus_alone = [], []
    for _ in range(RUNS):
        system = build(both)
        versus_raw.append((system, timed(by_hand)))
        versus_alone.append((build(both), build(alone)))
    return versus_raw, versus_alone


def timed_build(client: BuildClient, spec) -> float:
    """Seconds from submit to Succeeded, forced (every layer rebuilt)."""
    return timed(lambda: _succeeded(client.wait(client.submit(spec, force=True).id, timeout_s=3600)))


def _succeeded(result) -> None:
    if not result.succeeded:
        raise RuntimeError(f"benchmark build failed: {result.error}")


def report(versus_raw: list, versus_alone: list) -> None:
    for i, ((system, raw), (both, alone)) in enumerate(zip(versus_raw, versus_alone), 1):
        print(f"run {i}: two platforms {system:.1f} s, raw CLI by hand {raw:.1f} s, ratio {system / raw:.2f}; "
              f"two platforms {both:.1f} s, arm64 alone {alone:.1f} s, ratio {both / alone:.2f}")
    print("two platforms / slowest platform alone: median ratio = "
          f"{statistics.median(both / alone for both, alone in versus_alone):.2f}")
    print("two-platform build / raw CLI by hand: median ratio = "
          f"{statistics.median(system / raw for system, raw in versus_raw):.2f}")


if __name__ == "__main__":
    main()
