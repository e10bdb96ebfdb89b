"""First builds on a fresh host, on a WAN-like link (devstack/wan.py: tc tbf at 100 Mbit/s on every engine's build
network and on the package caches' own link to the origins; the caches, on their own host, reach builds unshaped):

1. a new spec on a fresh engine, whose packages a worker on another engine fetched before through the shared
   package caches, vs the raw `DOCKER_BUILDKIT=1 docker build` (pull, build, push) of the same Dockerfile on a fresh
   engine, from the origins; and that raw build again with its downloads unshaped (the floor: what no cache can
   take away, pulling, installing, pushing), which on this machine costs more than the goal allows;
2. a forced rebuild after a base change on the same worker (no shared caches: only its own download caches help)
   vs that worker's cold build of the spec on a fresh engine;
3. an ad-hoc resubmission with one more pip package on a fresh engine, importing the layers of the last image
   under its name (built on the other engine), vs the cold build of the same spec on a fresh engine through the
   same warm caches (so only the layers make the difference).

The link's rate is checked first with timed downloads into a build container. The runs alternate; one line per
run, then the median ratios, the first figure's on the last line."""

import contextlib
import os
import statistics
import time

from bench.buildkit import build, forget, new_base, worker_at
from bench.harness import RawDocker, bench, timed
from core.spec import parse_spec
from devstack.packagecaches import AptCache, PipMirror
from devstack.services import SecondDockerd
from devstack.wan import (
    RATE_BITS_S,
    CacheHost,
    describe,
    outward_address,
    served_blob,
    shape,
    shaped,
    timed_download_rate,
    unshape,
)
from worker.builders.buildkit import find_buildkit_cli

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
APT = ["build-essential", "python3-dev", "jq"]  # most of a build is downloading these, on this link
PIP = ["numpy==2.1.3"]
ADDED_APT, ADDED_PIP = "tree", "six==1.17.0"
PYPI = "https://pypi.org/simple/"
PROBE_BYTES = 16 << 20
DEFAULT_BRIDGE = "docker0"  # the machine's engine's, started without --bridge


def main() -> None:
    with bench() as b, contextlib.ExitStack() as stack:
        b.stop_default_worker()
        host = CacheHost().start()
        stack.callback(host.stop)
        apt = AptCache(b.workdir / "apt-cache", host.address, wrap=host.wrap).start()
        stack.callback(apt.stop)
        pip = PipMirror(b.workdir / "pip-cache", host.address, PYPI, wrap=host.wrap).start()
        stack.callback(pip.stop)
        engine2 = SecondDockerd(b.workdir / "engine2").start()
        stack.callback(engine2.stop)
        caches = {"IMAGEBUILDER_APT_PROXY": apt.url, "IMAGEBUILDER_PIP_MIRROR": pip.url}
        raw = RawDocker(b.stack, b.workdir / "raw-config", cli=find_buildkit_cli().path, buildkit=True,
                        host=engine2.host)
        with shaped([DEFAULT_BRIDGE, engine2.bridge], unshaped_from=host.address):
            print(link_report(b, raw, engine2, host))
            runs = [measure(b, raw, engine2, caches, host.address, run) for run in range(1, RUNS + 1)]
        report(runs)


def measure(b, raw: RawDocker, engine2, caches: dict[str, str], cache_address: str,
            run: int) -> tuple[float, ...]:
    name = f"fast{run}-{time.time_ns() % 10**8}"
    spec_a = _spec(b, f"{name}-a", APT, PIP)
    spec_b = _spec(b, f"{name}-b", [*APT, ADDED_APT], PIP)
    adhoc, adhoc_more = _spec(b, f"{name}-adhoc", APT, PIP), _spec(b, f"{name}-adhoc", APT, [*PIP, ADDED_PIP])
    with worker_at(b, f"fast-engine1-{run}", **caches) as client:
        build(client, spec_a, force=True)  # another engine fetches the packages, through the caches
        build(client, adhoc)  # the ad-hoc image under its name, pushed with its layers' cache metadata
    forget(engine2.host, images=True)
    with worker_at(b, f"fast-engine2-{run}", DOCKER_HOST=engine2.host, **caches) as client:
        new_spec = build(client, spec_b, force=True)
        forget(engine2.host, images=True)
        resubmitted = build(client, adhoc_more)
        forget(engine2.host, images=True)
        adhoc_cold = build(client, {**adhoc_more, "name": f"{name}-adhoc-cold"}, force=True)
    context = b.context_dir(parse_spec(spec_b), buildkit=True)
    target = f"{b.stack.push_registry.host}/raw/{name}-b:latest"

    def raw_build() -> float:
        forget(engine2.host, images=True)
        return timed(lambda: raw.pull_build_push(b.stack.debian_base, context, target, nocache=False,
                                                 build_args={"BUILDKIT_INLINE_CACHE": "1"}))

    raw_s = raw_build()
    unshape(engine2.bridge)  # the floor: the same, its downloads at this machine's LAN speed
    try:
        floor_s = raw_build()
    finally:
        shape(engine2.bridge, unshaped_from=cache_address)
    forget(engine2.host, images=True)
    with worker_at(b, f"fast-origin-{run}", DOCKER_HOST=engine2.host) as client:  # no shared caches
        cold = build(client, {**spec_a, "name": f"{name}-own"}, force=True)
        new_base(b, run)
        rebased = build(client, {**spec_a, "name": f"{name}-own"}, force=True)
    print(f"run {run}: new spec on a fresh engine through the caches {new_spec:.1f} s vs raw docker build there "
          f"{raw_s:.1f} s (with its downloads unshaped: {floor_s:.1f} s); cold from the origins {cold:.1f} s, "
          f"rebuilt after a base change {rebased:.1f} s; ad-hoc + {ADDED_PIP} on a fresh engine {resubmitted:.1f} s "
          f"vs its cold build there {adhoc_cold:.1f} s")
    return new_spec / raw_s, rebased / cold, resubmitted / adhoc_cold, floor_s / raw_s, new_spec / floor_s


def _spec(b, name: str, apt: list[str], pip: list[str]) -> dict:
    return {"name": name, "baseImage": b.stack.debian_base, "pullSecret": "private",
            "packages": {"apt": apt, "pip": pip}}


def link_report(b, raw: RawDocker, engine2, host: CacheHost) -> str:
    """The rates a build container on the second engine gets from an origin (across the shaped link) and from the
    caches' host (on its LAN), each timed inside the container."""
    image = b.stack.debian_base
    raw.run("pull", image)
    with served_blob(outward_address(), PROBE_BYTES) as origin, served_blob(host.address, PROBE_BYTES,
                                                                              host.wrap) as lan:
        wan_bits = timed_download_rate(engine2.host, image, origin, PROBE_BYTES)
        lan_bits = timed_download_rate(engine2.host, image, lan, PROBE_BYTES)
    return (f"link: {describe()} on the engines' build bridges (docker0, {engine2.bridge}) and the caches' host; "
            f"a {PROBE_BYTES >> 20} MiB download from an origin ran at {wan_bits / 1e6:.1f} Mbit/s "
            f"({wan_bits / RATE_BITS_S:.2f} of the rate), from the caches' host at {lan_bits / 1e6:.0f} Mbit/s")


def report(runs: list[tuple[float, ...]]) -> None:
    new_spec, rebased, resubmitted, floor, over_floor = (statistics.median(values) for values in zip(*runs))
    print(f"rebuild after a base change on the same worker / its cold build = {rebased:.2f} (goal <= 0.6)")
    print(f"ad-hoc resubmission + one pip package on a fresh engine / its cold build there = {resubmitted:.2f} "
          f"(goal <= 0.35)")
    print(f"the floor: raw docker build on a fresh engine with its downloads unshaped / shaped = {floor:.2f}; the "
          f"new spec through the caches / that floor = {over_floor:.2f}")
    print(f"new spec on a fresh engine through the shared caches / raw docker build on a fresh engine = "
          f"{new_spec:.2f} (goal <= 0.5)")


if __name__ == "__main__":
    main()
