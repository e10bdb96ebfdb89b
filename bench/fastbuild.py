"""First builds on a fresh host, on a WAN-like link (devstack/wan.py: tc tbf at 100 Mbit/s on every engine's build
network and on the package caches' own link to the origins; the caches, on their own host, reach builds unshaped):

1. a new spec on a fresh engine, whose packages a worker on another engine fetched before through the shared
   package caches, vs the raw `DOCKER_BUILDKIT=1 docker build` (pull, build, push) of the same Dockerfile on a fresh
   engine, from the origins; and that raw build again with its downloads unshaped (the floor: what no cache can
   take away, pulling, installing, pushing), which on this machine costs more than the goal allows;
2. a forced rebuild after a base change on the same worker (no shared caches: only its own download caches help)
   vs that worker's cold build of the spec on a fresh engine; and the floor: the raw build of the same Dockerfile
   on that engine after another base change, its downloads unshaped (what a rebuild cannot avoid with every
   download free: pulling the new base, running the install steps again from the engine's warm download caches,
   pushing the new layers beside the cold build's), over that cold build;
3. an ad-hoc resubmission with one more pip package on a fresh engine, importing the layers of the last image
   under its name (built on the other engine), vs the cold build of the same spec on a fresh engine through the
   same warm caches (so only the layers make the difference); and the floor: the raw build of the resubmitted
   Dockerfile on the engine emptied again, importing the same image's layers (`--cache-from`), its downloads
   unshaped (pulling the base and the reused layers, running the pip step, pushing its layer beside them), over
   that cold build.

Each figure's system time is also divided by its floor's. The link's rate is checked first with timed downloads
into a build container. The runs alternate; one line per run, then the median ratios, the first figure's on the
last line."""

import contextlib
import os
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.buildkit import build, forget, new_base, worker_at
from bench.harness import Bench, RawDocker, bench, timed
from core.spec import parse_spec
from core.tagging import target_for
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
MORE_APT, MORE_PIP = [*APT, ADDED_APT], [*PIP, ADDED_PIP]
PYPI = "https://pypi.org/simple/"
PROBE_BYTES = 16 << 20
DEFAULT_BRIDGE = "docker0"  # the machine's engine's, started without --bridge
RAW_TAG = "raw-floor"  # the floors' raw builds push beside the system's images, where their blobs already are
INLINE_CACHE = {"BUILDKIT_INLINE_CACHE": "1"}  # as the system's builds, so that both export the same
_APT_STEP_RE = re.compile(r"#(\d+) \[[^\]]+\] RUN .*apt_install")


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
        raw = RawBuildKit(b.stack, b.workdir / "raw-config", cli=find_buildkit_cli().path, buildkit=True,
                          host=engine2.host)
        with shaped([DEFAULT_BRIDGE, engine2.bridge], unshaped_from=host.address):
            print(link_report(b, raw, engine2, host))
            runs = [measure(b, raw, engine2, caches, host.address, run) for run in range(1, RUNS + 1)]
        report(runs)


class RawBuildKit(RawDocker):
    """The raw CLI with BuildKit, which may also import the layers of an image pushed with inline cache metadata."""

    def pull_build_push_from(self, cache_from: str, base: str, context_dir: Path, target: str) -> None:
        """pull_build_push (inline cache metadata in the image) with `--cache-from cache_from`; raises unless the
        apt step came from that image's layers (a floor built from scratch would be none)."""
        self.run("pull", base)
        done = subprocess.run([self._cli, "build", "--progress=plain", "--build-arg", "BUILDKIT_INLINE_CACHE=1",
                               "--cache-from", cache_from, "-t", target, str(context_dir)], env=self._env,
                              capture_output=True, text=True)
        if done.returncode != 0 or not apt_step_cached(done.stdout + done.stderr):
            raise RuntimeError(f"raw build from {cache_from} failed or reused no apt layer: {done.stderr[-3000:]}")
        self.run("push", target)


def apt_step_cached(progress: str) -> bool:
    """Whether BuildKit's plain progress says the apt step was CACHED."""
    lines = {line.strip() for line in progress.splitlines()}
    return any(f"#{step} CACHED" in lines for step in _APT_STEP_RE.findall(progress))


@dataclass
class Trial:
    """One run: its specs (named after it), the stack, the second engine and the raw CLI on it, the caches."""

    b: Bench
    raw: RawBuildKit
    engine2: SecondDockerd
    caches: dict[str, str]
    cache_address: str
    run: int
    name: str

    def spec(self, suffix: str, apt: list[str] = APT, pip: list[str] = PIP) -> dict:
        return {"name": f"{self.name}-{suffix}", "baseImage": self.b.stack.debian_base, "pullSecret": "private",
                "packages": {"apt": apt, "pip": pip}}

    def image(self, spec: dict, tag: str = "") -> str:
        """The system's image of `spec`; with `tag`, that tag in the same repository."""
        settings = self.b.stack.settings()
        target = target_for(parse_spec(spec), repo_prefix=settings.repo_prefix, push_repo=settings.push_repo or None)
        return f"{target.name}:{tag}" if tag else str(target)

    def context(self, spec: dict) -> Path:
        return self.b.context_dir(parse_spec(spec), buildkit=True)

    def forget_engine2(self) -> None:
        forget(self.engine2.host, images=True)

    @contextlib.contextmanager
    def unshaped(self) -> Iterator[None]:
        """The second engine's build downloads at this machine's LAN speed for the duration (a floor's)."""
        unshape(self.engine2.bridge)
        try:
            yield
        finally:
            shape(self.engine2.bridge, unshaped_from=self.cache_address)

    def raw_build(self, spec: dict, target: str) -> float:
        """Seconds of the raw CLI's pull, BuildKit build and push of `spec`'s Dockerfile on the second engine."""
        context = self.context(spec)
        return timed(lambda: self.raw.pull_build_push(self.b.stack.debian_base, context, target, nocache=False,
                                                      build_args=INLINE_CACHE))


class Timings(NamedTuple):
    """One run's seconds."""

    new_spec: float
    raw: float
    floor: float
    cold: float
    rebased: float
    rebase_floor: float
    resubmitted: float
    adhoc_cold: float
    adhoc_floor: float

    def ratios(self) -> tuple[float, ...]:
        return (self.new_spec / self.raw, self.rebased / self.cold, self.resubmitted / self.adhoc_cold,
                self.floor / self.raw, self.new_spec / self.floor, self.rebase_floor / self.cold,
                self.rebased / self.rebase_floor, self.adhoc_floor / self.adhoc_cold,
                self.resubmitted / self.adhoc_floor)

    def line(self, run: int) -> str:
        return (f"run {run}: new spec on a fresh engine through the caches {self.new_spec:.1f} s vs raw docker build "
                f"there {self.raw:.1f} s (with its downloads unshaped: {self.floor:.1f} s); cold from the origins "
                f"{self.cold:.1f} s, rebuilt after a base change {self.rebased:.1f} s; ad-hoc + {ADDED_PIP} on a "
                f"fresh engine {self.resubmitted:.1f} s vs its cold build there {self.adhoc_cold:.1f} s; floors, "
                f"downloads unshaped: raw docker build there after a base change {self.rebase_floor:.1f} s, raw "
                f"docker build of the ad-hoc + {ADDED_PIP} on a fresh engine from the same layers "
                f"{self.adhoc_floor:.1f} s")


def measure(b, raw: RawBuildKit, engine2, caches: dict[str, str], cache_address: str,
            run: int) -> tuple[float, ...]:
    trial = Trial(b, raw, engine2, caches, cache_address, run, f"fast{run}-{time.time_ns() % 10**8}")
    fill_caches(trial)
    new_spec, resubmitted, adhoc_cold = on_fresh_engine(trial)
    adhoc_floor = resubmission_floor(trial)
    raw_s, floor_s = new_spec_baselines(trial)
    cold, rebased, rebase_floor = rebuild(trial)
    timings = Timings(new_spec, raw_s, floor_s, cold, rebased, rebase_floor, resubmitted, adhoc_cold, adhoc_floor)
    print(timings.line(run))
    return timings.ratios()


def fill_caches(trial: Trial) -> None:
    """Another engine fetches the packages, through the caches, and pushes the ad-hoc image under its name with
    its layers' cache metadata."""
    with worker_at(trial.b, f"fast-engine1-{trial.run}", **trial.caches) as client:
        build(client, trial.spec("a"), force=True)
        build(client, trial.spec("adhoc"))


def on_fresh_engine(trial: Trial) -> tuple[float, float, float]:
    """Seconds of the system's builds on the second engine, emptied before each: the new spec (figure 1); the
    ad-hoc resubmission with one more pip package, and that spec's cold build under another name (figure 3)."""
    more = trial.spec("adhoc", pip=MORE_PIP)
    trial.forget_engine2()
    with worker_at(trial.b, f"fast-engine2-{trial.run}", DOCKER_HOST=trial.engine2.host, **trial.caches) as client:
        new_spec = build(client, trial.spec("b", apt=MORE_APT), force=True)
        trial.forget_engine2()
        resubmitted = build(client, more)
        trial.forget_engine2()
        return new_spec, resubmitted, build(client, {**more, "name": f"{trial.name}-adhoc-cold"}, force=True)


def resubmission_floor(trial: Trial) -> float:
    """Figure 3's floor: the raw build of the resubmitted Dockerfile on the emptied engine, importing the layers of
    the image the system imported, its downloads unshaped, pushed beside that image."""
    more = trial.spec("adhoc", pip=MORE_PIP)
    context, last, target = trial.context(more), trial.image(trial.spec("adhoc")), trial.image(more, RAW_TAG)
    trial.forget_engine2()
    with trial.unshaped():
        return timed(lambda: trial.raw.pull_build_push_from(last, trial.b.stack.debian_base, context, target))


def new_spec_baselines(trial: Trial) -> tuple[float, float]:
    """Figure 1's: the raw build of the new spec's Dockerfile on the emptied engine, then again with its
    downloads unshaped (the floor)."""
    spec, target = trial.spec("b", apt=MORE_APT), f"{trial.b.stack.push_registry.host}/raw/{trial.name}-b:latest"
    trial.forget_engine2()
    raw_s = trial.raw_build(spec, target)
    trial.forget_engine2()
    with trial.unshaped():
        return raw_s, trial.raw_build(spec, target)


def rebuild(trial: Trial) -> tuple[float, float, float]:
    """Figure 2 on the emptied engine, by a worker without the shared caches: its cold build, its forced rebuild
    after a base change; then the floor, the raw build of the same Dockerfile there after another base change,
    its downloads unshaped, pushed beside the system's image."""
    own = trial.spec("own")
    trial.forget_engine2()
    with worker_at(trial.b, f"fast-origin-{trial.run}", DOCKER_HOST=trial.engine2.host) as client:
        cold = build(client, own, force=True)
        new_base(trial.b, trial.run)
        rebased = build(client, own, force=True)
    new_base(trial.b, trial.run)
    with trial.unshaped():
        return cold, rebased, trial.raw_build(own, trial.image(own, RAW_TAG))


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
    (new_spec, rebased, resubmitted, floor, over_floor, rebase_floor, over_rebase_floor, adhoc_floor,
     over_adhoc_floor) = (statistics.median(values) for values in zip(*runs))
    print(f"rebuild after a base change on the same worker / its cold build = {rebased:.2f} (goal <= 0.6); the "
          f"floor: raw docker build there after a base change with its downloads unshaped / that cold build = "
          f"{rebase_floor:.2f}; the rebuild / that floor = {over_rebase_floor:.2f}")
    print(f"ad-hoc resubmission + one pip package on a fresh engine / its cold build there = {resubmitted:.2f} "
          f"(goal <= 0.35); the floor: raw docker build there from the same layers with its downloads unshaped / "
          f"that cold build = {adhoc_floor:.2f}; the resubmission / that floor = {over_adhoc_floor:.2f}")
    print(f"the floor: raw docker build on a fresh engine with its downloads unshaped / shaped = {floor:.2f}; the "
          f"new spec through the caches / that floor = {over_floor:.2f}")
    print(f"new spec on a fresh engine through the shared caches / raw docker build on a fresh engine = "
          f"{new_spec:.2f} (goal <= 0.5)")


if __name__ == "__main__":
    main()
