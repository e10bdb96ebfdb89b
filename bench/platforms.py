"""Multi-platform builds (linux/amd64 and linux/arm64 under qemu-user-static) on one engine, in one run:

1. a two-platform build through the system vs the raw CLI doing the same by hand: `DOCKER_BUILDKIT=1 docker build
   --platform` and a push for each platform, then `docker manifest create` and `push` for the index; both forced
   (every layer rebuilt, the download caches kept), taking turns;
2. the same two-platform build's wall-clock vs its slowest platform (arm64, emulated) built alone; and, as the floor
   of that ratio on this machine, the raw CLI building and pushing both platforms at the same time (two clients at
   once, then the index) vs the raw CLI's arm64 alone: the two builds share the machine's cores.

Prints one line per run, then the median ratios, the first figure on the last line."""

import concurrent.futures
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

    def one_by_hand(platform: str, rebuild: str) -> None:
        tag = f"{raw_target}:{platform.replace('/', '-')}"
        raw.run("build", "--platform", platform, "--build-arg", f"{REBUILD_ARG}={rebuild}", "-t", tag, str(context))
        raw.run("push", tag)

    def index_by_hand() -> None:
        tags = [f"{raw_target}:{platform.replace('/', '-')}" for platform in PLATFORMS]
        raw.run("manifest", "create", "--insecure", "--amend", f"{raw_target}:latest", *tags)
        raw.run("manifest", "push", "--insecure", "--purge", f"{raw_target}:latest")

    def by_hand() -> None:
        rebuild = uuid.uuid4().hex
        for platform in PLATFORMS:
            one_by_hand(platform, rebuild)
        index_by_hand()

    def at_once_by_hand() -> None:
        rebuild = uuid.uuid4().hex
        with concurrent.futures.ThreadPoolExecutor(len(PLATFORMS)) as pool:
            list(pool.map(lambda platform: one_by_hand(platform, rebuild), PLATFORMS))
        index_by_hand()

    build = lambda spec: timed_build(client, spec)  # noqa: E731
    build(both), by_hand(), build(alone)  # warm: base pulled, caches filled, images pushed once
    versus_raw, versus_alone, floor = [], [], []
    for _ in range(RUNS):
        system = build(both)
        versus_raw.append((system, timed(by_hand)))
        versus_alone.append((build(both), build(alone)))
        floor.append((timed(at_once_by_hand), timed(lambda: one_by_hand(PLATFORMS[1], uuid.uuid4().hex))))
    return versus_raw, versus_alone, floor


def timed_build(client: BuildClient, spec) -> float:
    """Seconds from submit to Succeeded, forced (every layer rebuilt)."""
    return timed(lambda: _succeeded(client.wait(client.submit(spec, force=True).id, timeout_s=3600)))


def _succeeded(result) -> None:
    if not result.succeeded:
        raise RuntimeError(f"benchmark build failed: {result.error}")


def report(versus_raw: list, versus_alone: list, floor: list) -> None:
    for i, ((system, raw), (both, alone), (raw_both, raw_alone)) in enumerate(zip(versus_raw, versus_alone, floor), 1):
        print(f"run {i}: two platforms {system:.1f} s, raw CLI by hand {raw:.1f} s, ratio {system / raw:.2f}; "
              f"two platforms {both:.1f} s, arm64 alone {alone:.1f} s, ratio {both / alone:.2f}; raw CLI both at "
              f"once {raw_both:.1f} s, its arm64 alone {raw_alone:.1f} s, ratio {raw_both / raw_alone:.2f}")
    print("raw CLI, both platforms at once / arm64 alone (the floor here): median ratio = "
          f"{statistics.median(both / alone for both, alone in floor):.2f}")
    print("two platforms / slowest platform alone: median ratio = "
          f"{statistics.median(both / alone for both, alone in versus_alone):.2f}")
    print("two-platform build / raw CLI by hand: median ratio = "
          f"{statistics.median(system / raw for system, raw in versus_raw):.2f}")


if __name__ == "__main__":
    main()
