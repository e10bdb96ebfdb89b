"""Push-to-build-start latency through a real registry's notifications: a docker-registry notifies
`imagebuilder api` of a base push, the API queues the check, a worker HEADs the base and starts the spec's rebuild;
10,000 other stored specs sit on other bases. The median of several pushes, printed beside the scheduling pass
interval it replaces (the default IMAGEBUILDER_SCHEDULE_PASS_S) as a ratio; then the builds queued by 20 replays
of one unchanged push, the spec's last success being a skipped build (goal 0), on the last line."""

import json
import os
import re
import secrets
import statistics
import time

import docker
import httpx

from bench.harness import bench
from config.settings import Settings
from core.spec import parse_spec
from core.stored import Trigger
from core.stores.connection import redis_client
from core.stores.wiring import stores_on
from devstack.baseimage import BUSYBOX_IMAGE
from devstack.services import Notifications, Registry
from devstack.stack import PULL_PASSWORD, PULL_USER, start_api

PUSHES = int(os.environ.get("BENCH_PUSHES", "7"))
REPLAYS = int(os.environ.get("BENCH_REPLAYS", "20"))
OTHER_SPECS = int(os.environ.get("BENCH_SPECS", "10000"))
TOKEN = secrets.token_hex(16)
POLL_S = 0.01


def main() -> None:
    with bench() as b:
        api, url = start_api(b.stack, "webhook-bench", IMAGEBUILDER_WEBHOOK_TOKENS=TOKEN)
        registry = Registry(b.workdir / "notifying-registry", PULL_USER, PULL_PASSWORD,
                            notify=Notifications(f"{url}/hooks/registry", TOKEN)).start()
        try:
            latencies = measure(b, registry)
            queued = replays_queued(b, url, registry)
        finally:
            registry.stop()
            api.stop()
        report(latencies, Settings(_env_file=None).schedule_pass_s)
        print(f"builds queued by {REPLAYS} replays of one unchanged push: {queued} (goal 0)")


def measure(b, registry: Registry) -> list[float]:
    secret = b.stack.pull_secrets_dir / "notifying"
    secret.mkdir()
    (secret / ".dockerconfigjson").write_text(json.dumps(
        {"auths": {registry.host: {"username": PULL_USER, "password": PULL_PASSWORD}}}))
    seed_others(b)
    repository = f"{registry.host}/bench/base"
    push_variant(repository, "0")
    _, first = b.client.specs.apply({"name": "pushed", "baseImage": f"{repository}:1", "pullSecret": "notifying"})
    b.client.wait(first.id, timeout_s=300)
    return [push_and_time_start(b, repository, run) for run in range(1, PUSHES + 1)]


def seed_others(b) -> None:
    """Stored specs on 100 other bases (never built: applied to the store, not submitted)."""
    specs = stores_on(redis_client(b.stack.settings()), b.stack.settings()).specs
    for i in range(OTHER_SPECS):
        specs.apply(parse_spec({"name": f"other{i}", "baseImage": f"{b.stack.private_registry.host}/o{i % 100}:1"}))


def push_and_time_start(b, repository: str, run: int) -> float:
    """Seconds from a new base's push returning to its spec's rebuild starting; waits for that rebuild to end."""
    seen = {entry.id for entry in b.client.specs.history("pushed")}
    pushed_at = push_variant(repository, str(run))
    while not (rebuilds := [e for e in b.client.specs.history("pushed") if e.id not in seen and e.started_at]):
        if time.time() - pushed_at > 60:
            raise RuntimeError("no rebuild started within 60 s of the push")
        time.sleep(POLL_S)
    (rebuild,) = rebuilds
    assert rebuild.trigger is Trigger.BASE_PUSHED, rebuild.trigger
    latency = rebuild.started_at.timestamp() - pushed_at
    result = b.client.wait(rebuild.id, timeout_s=300)
    print(f"push {run}: rebuild {rebuild.id} started {latency:.3f} s after the push; {result.phase.value}")
    return latency


def push_variant(repository: str, marker: str) -> float:
    """A BusyBox image distinct by an ENV, pushed as `repository:1` (the registry then notifies the API); when
    the push was done: the engine reports the manifest's digest as soon as the registry took the manifest."""
    engine = docker.from_env()
    container = engine.containers.create(BUSYBOX_IMAGE, "true")
    container.commit(repository=repository, tag="1", changes=[f"ENV VARIANT={marker}-{time.time_ns()}"])
    container.remove()
    auth = {"username": PULL_USER, "password": PULL_PASSWORD, "serveraddress": repository.split("/", 1)[0]}
    done_at = None
    for chunk in engine.api.push(repository, tag="1", stream=True, decode=True, auth_config=auth):
        if "error" in chunk or "errorDetail" in chunk:
            raise RuntimeError(f"push of {repository}:1 failed: {chunk.get('error') or chunk['errorDetail']}")
        if done_at is None and "digest:" in chunk.get("status", ""):
            done_at = time.time()
    if done_at is None:
        raise RuntimeError(f"the push of {repository}:1 reported no digest")
    return done_at


def replays_queued(b, url: str, registry: Registry) -> int:
    """Send the last push's notification again REPLAYS times, as a registry retrying (or someone holding the token)
    would, after a build of the spec that was skipped (its image was there); the builds that queued."""
    skipped = b.client.wait(b.client.specs.build("pushed").id, timeout_s=300)
    assert skipped.skipped, skipped
    before, checked = len(b.client.specs.history("pushed")), checks_done(b)
    envelope = {"events": [{"action": "push", "target": {"repository": "bench/base", "tag": "1"},
                            "request": {"host": registry.host}}]}
    for _ in range(REPLAYS):
        httpx.post(f"{url}/hooks/registry", json=envelope, headers={"Authorization": f"Bearer {TOKEN}"})
    deadline = time.monotonic() + 120
    while checks_done(b) < checked + REPLAYS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not check {REPLAYS} notifications within 120 s")
        time.sleep(POLL_S)
    return len(b.client.specs.history("pushed")) - before


def checks_done(b) -> int:
    return len(re.findall(r"imagebuilder\.bases_pushed\[[^\]]+\] succeeded", b.worker.log_text))


def report(latencies: list[float], schedule_pass_s: float) -> None:
    median = statistics.median(latencies)
    print(f"{OTHER_SPECS} other stored specs; the scheduling pass this replaces runs every {schedule_pass_s:.0f} s "
          f"(IMAGEBUILDER_SCHEDULE_PASS_S): a pushed base waits {schedule_pass_s / 2:.0f} s for it on average")
    print(f"push-to-build-start median {median:.3f} s over {len(latencies)} pushes (goal <= 2 s); "
          f"/ schedule interval = {median / schedule_pass_s:.4f}")


if __name__ == "__main__":
    main()
