"""One spec built cold (--force, no layer cache) through the whole system vs the same Dockerfile with the raw
`docker pull`/`build --no-cache`/`push` CLI, alternating runs; then the SBOM step: its time on an image of at least
500 MB, its floor on the cold build's image (the engine's archive reads of the same paths, all at once, nothing
parsed), its share of those small cold builds, and (last line) its share of a typical cold build (a long apt list
and a pip package), from the worker's step durations."""

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import docker
from prometheus_client.parser import text_string_to_metric_families

from bench.buildkit import APT, PIP
from bench.harness import Bench, bench, report
from core.reference import parse_reference
from core.registry.client import registry_sessions
from core.spec import parse_spec
from devstack.baseimage import push
from devstack.stack import PUSH_PASSWORD, PUSH_USER
from worker.dockerfile import build_context
from worker.engine import Engine
from worker.sbom.imagefiles import ImageFiles
from worker.sbom.inventory import (
    DEBIAN_PYTHON_DIR,
    DPKG_STATUS,
    OS_RELEASE_PATHS,
    READS_AT_ONCE,
    python_package_dirs,
)
from worker.sbom.step import SbomJob, SbomStep

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BIG_IMAGE_MB = 520  # the Debian base (~290 MB) and a 250 MB Python distribution
BIG_RUNS = 5
TYPICAL_RUNS = 3
STEP_METRIC = "imagebuilder_step_duration_seconds"


def main() -> None:
    with bench() as b:
        before = sbom_seconds(b)
        pairs = b.versus_raw("bench-cold", force=True, runs=RUNS)
        after = sbom_seconds(b)
        report("cold build", pairs)
        image = big_image(b)
        print(f"sbom step on a {image_mb(image):.0f} MB image: median {big_image_step_s(b, image):.2f} s "
              f"over {BIG_RUNS} runs")
        step_s = (after[0] - before[0]) / (after[1] - before[1])  # the untimed first build's step counts too
        build_s = statistics.mean(system for system, _ in pairs)
        floor_s = archive_floor_s(b, b.last_image)
        print(f"sbom step: mean {step_s:.3f} s; its floor, the engine's archive reads of the same paths at once, "
              f"{floor_s:.3f} s ({100 * floor_s / build_s:.1f} % of a cold build); step / floor = "
              f"{step_s / floor_s:.2f}")
        print(f"sbom step: share of this small cold build's time = {100 * step_s / build_s:.1f} %")
        typical_s, share = typical_share(b)
        print(f"sbom step: share of a typical cold build's time (apt: {' '.join(APT)}; pip: {' '.join(PIP)}; "
              f"median {typical_s:.1f} s over {TYPICAL_RUNS} runs) = {100 * share:.1f} %")


def typical_share(b: Bench) -> tuple[float, float]:
    """A cold build of a spec with a long apt list and a pip package: its median seconds, and the median share of
    its SBOM step (one untimed build first, for the base and the apt and pip caches)."""
    spec = parse_spec({"name": "bench-typical", "baseImage": b.stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": APT, "pip": PIP}})
    b.build(spec, force=True)
    builds, shares = [], []
    for _ in range(TYPICAL_RUNS):
        before = sbom_seconds(b)
        builds.append(b.build(spec, force=True))
        shares.append((sbom_seconds(b)[0] - before[0]) / builds[-1])
    return statistics.median(builds), statistics.median(shares)


def sbom_seconds(b: Bench) -> tuple[float, float]:
    """The worker's SBOM step durations so far: their sum in seconds, and how many."""
    for family in text_string_to_metric_families(b.client.service.metrics_text().decode()):
        if family.name == STEP_METRIC:
            found = {s.name.rsplit("_", 1)[-1]: s.value for s in family.samples if s.labels.get("step") == "sbom"}
            return found.get("sum", 0.0), found.get("count", 0.0)
    return 0.0, 0.0


def big_image(b: Bench) -> str:
    """The Debian base with a 250 MB Python distribution in dist-packages, built and pushed once."""
    reference = f"{b.stack.push_registry.host}/bench/sbom-big:1"
    dockerfile = (f"FROM {b.stack.debian_base}\n"
                  "RUN d=/usr/local/lib/python3.11/dist-packages && mkdir -p $d/big $d/big-1.0.dist-info && "
                  "printf 'Metadata-Version: 2.1\\nName: big\\nVersion: 1.0\\n' > $d/big-1.0.dist-info/METADATA && "
                  "head -c 250000000 /dev/urandom > $d/big/_native.so\n")
    engine = docker.from_env()
    engine.images.build(fileobj=build_context(dockerfile), custom_context=True, tag=reference, rm=True)
    push(engine, reference, PUSH_USER, PUSH_PASSWORD)
    return reference


def image_mb(reference: str) -> float:
    return docker.from_env().images.get(reference).attrs["Size"] / 1e6


def big_image_step_s(b: Bench, reference: str) -> float:
    """The SBOM step (inventory, document, attach) on the big image, as a worker runs it, median of runs."""
    settings = b.stack.settings()
    digest = docker.from_env().images.get(reference).attrs["RepoDigests"][0].split("@")[1]
    step = SbomStep(settings, registry_sessions(settings))
    spec = parse_spec({"name": "sbom-big", "baseImage": b.stack.debian_base})
    job = SbomJob(spec, reference, parse_reference(reference), digest, None)
    engine = Engine.connect(lambda line: None, timeout_s=settings.docker_timeout_s)
    times = []
    for _ in range(BIG_RUNS):
        start = time.perf_counter()
        made = step.run(engine, job)
        times.append(time.perf_counter() - start)
        if made is None or made.report.digest is None:
            raise RuntimeError(f"the SBOM step failed: {made}")
    return statistics.median(times)




def archive_floor_s(b: Bench, image: str) -> float:
    """What the engine alone takes to send the paths the SBOM step reads from `image` (found as the step finds
    them), each from its own container and all at once, read to the end and nothing parsed: median of runs."""
    api = docker.APIClient()
    with ImageFiles.of(api, image, lanes=READS_AT_ONCE) as files, ThreadPoolExecutor(READS_AT_ONCE) as pool:
        paths = [path for path in (OS_RELEASE_PATHS[0], DPKG_STATUS, DEBIAN_PYTHON_DIR) if files.exists(path)]
        paths += python_package_dirs(files, pool)
    containers = [api.create_container(image, command=["/never"], entrypoint=[])["Id"] for _ in paths]
    try:
        times = []
        for _ in range(BIG_RUNS):
            start = time.perf_counter()
            list(ThreadPoolExecutor(len(paths)).map(lambda pair: _drain(api, *pair), zip(containers, paths)))
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        for container in containers:
            api.remove_container(container, force=True)


def _drain(api: docker.APIClient, container: str, path: str) -> int:
    chunks, _ = api.get_archive(container, path)
    return sum(len(chunk) for chunk in chunks)


if __name__ == "__main__":
    main()
