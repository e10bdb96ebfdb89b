"""10,000 stored specs, all due, bases unchanged: the time for one scheduling pass to decide all of them and
the manifest GETs it sent (must be 0), against rebuilding every spec's cached image through the raw docker CLI,
timed on a sample of 20 and extrapolated; prints the ratio last."""

import os
import time

import docker

from bench.harness import bench, timed
from core.app import create_app
from core.registry.client import registry_sessions
from core.schedule import parse_schedule
from core.spec import parse_spec
from core.stores.connection import redis_client
from core.stores.wiring import stores_on
from devstack.baseimage import BUSYBOX_IMAGE, push
from devstack.seeding import built_before
from devstack.stack import PULL_PASSWORD, PULL_USER
from worker.scheduling import SchedulingPass

SPECS = int(os.environ.get("BENCH_SPECS", "10000"))
SAMPLE = 20
PULL_AUTH = {"username": PULL_USER, "password": PULL_PASSWORD}


def main() -> None:
    with bench() as b:
        b.stop_default_worker()  # the pass only decides; with bases unchanged nothing is built
        settings = b.stack.settings()
        stores = stores_on(redis_client(settings), settings)
        base = f"{b.stack.private_registry.host}/bench/base:1"
        seed(stores, base, publish(base))
        log = b.stack.private_registry.process.log_path
        before = len(log.read_text())
        scheduling_pass = SchedulingPass(create_app(settings), settings, stores, registry_sessions(settings))
        start = time.perf_counter()
        outcomes = scheduling_pass.run(now=time.time() + 5)
        pass_s = time.perf_counter() - start
        requests = log.read_text()[before:]
        gets, heads = requests.count('"GET /v2/bench/base/manifests/'), requests.count('"HEAD /v2/bench/base/')
        assert outcomes == {"unchanged": SPECS}, outcomes
        print(f"one pass decided {SPECS} due specs in {pass_s:.2f} s {outcomes}: manifest GETs {gets}, HEADs {heads}")
        raw_s = raw_rebuilds(b) * SPECS / SAMPLE
        print(f"baseline: raw CLI cached rebuild-and-push, {SAMPLE} timed, extrapolated to {SPECS}: {raw_s:.1f} s")
        print(f"scheduling pass / raw CLI rebuild of every spec = {pass_s / raw_s:.5f} (manifest GETs: {gets})")


def publish(base: str) -> str:
    """Push a base image to the private registry; its digest."""
    engine = docker.from_env()
    engine.images.get(BUSYBOX_IMAGE).tag(base)
    push(engine, base, PULL_USER, PULL_PASSWORD)
    return engine.images.get_registry_data(base, auth_config=PULL_AUTH).id


def seed(stores, base: str, digest: str) -> None:
    """Store the specs, each with a last successful build on the current base digest, scheduled and due."""
    for i in range(SPECS):
        stored, _ = stores.specs.apply(parse_spec({"name": f"s{i}", "baseImage": base, "pullSecret": "private"}))
        built_before(stores, stored, f"seed-{i}", base_digest=digest)
        stores.schedules.set(parse_schedule(stored.spec.name, every_s=1))


def raw_rebuilds(b) -> float:
    """Seconds for the raw CLI to rebuild (cached) and push SAMPLE specs' images, built once beforehand."""
    jobs = []
    for i in range(SAMPLE):
        spec = parse_spec({"name": f"raw{i}", "baseImage": b.stack.debian_base, "pullSecret": "private",
                           "packages": {"apt": ["jq"]}})
        jobs.append((b.context_dir(spec), f"{b.stack.push_registry.host}/raw/raw{i}:latest"))
    for context, target in jobs:
        b.raw.pull_build_push(b.stack.debian_base, context, target, nocache=False)
    return timed(lambda: [b.raw.pull_build_push(b.stack.debian_base, context, target, nocache=False)
                          for context, target in jobs])


if __name__ == "__main__":
    main()
