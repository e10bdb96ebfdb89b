"""One spec built cold (--force, no layer cache) through the whole system vs the same Dockerfile with the raw
`docker pull`/`build --no-cache`/`push` CLI, alternating runs; then the SBOM step: its time on an image of at least
500 MB, and (last line) its share of those cold builds, from the worker's step durations."""

import io
import os
import statistics
import tarfile
import time

import docker
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Bench, bench, report
from core.reference import parse_reference
from core.registry.client import registry_sessions
from core.spec import parse_spec
from devstack.baseimage import push
from devstack.stack import PUSH_PASSWORD, PUSH_USER
from worker.engine import Engine
from worker.sbom.step import SbomJob, SbomStep

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BIG_IMAGE_MB = 520  # the Debian base (~290 MB) and a 250 MB Python distribution
BIG_RUNS = 5
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
        share = (after[0] - before[0]) / sum(system for system, _ in pairs)
        print(f"sbom step: {after[1] - before[1]:.0f} steps; share of the cold builds' time = {100 * share:.1f} %")


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
                  "head -c 250000000 /dev/urandom > $d/big/_native.so\n").encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    engine = docker.from_env()
    engine.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, tag=reference, rm=True)
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


if __name__ == "__main__":
    main()
