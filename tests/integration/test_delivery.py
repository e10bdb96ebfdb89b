"""No duplicate work, cancel, timeouts, fail-fast on fatal errors, and no containers left behind."""

from __future__ import annotations

import concurrent.futures
import re

import docker
import pytest
import redis

from core.errors import AlreadyFinished
from core.phases import BuildPhase
from core.reference import parse_reference
from core.spec import parse_spec
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import (
    all_containers,
    tags_in_push_registry,
    wait_for,
    wait_for_line,
)
from tests.integration.test_builds import WAIT_S, target_digest

pytestmark = pytest.mark.integration
QUEUE_ONLY_DB = 4  # no worker listens until a test starts one
SHORT_TIMEOUT_DB = 5
STOP_WITHIN_S = 10


def slow_spec(stack, name, *, heavy=False):
    """A build that runs long enough to be caught in the middle (apt over the network, no layer cache);
    a heavy one installs a compiler toolchain and takes tens of seconds."""
    packages = ["tree", "file"] + (["python3-dev", "build-essential"] if heavy else [])
    return parse_spec({"name": name, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": packages}})


def push_count(stack, repository: str) -> int:
    """Image manifest uploads the push registry logged for `repository`: by tag, its referrers tags aside (an image's
    SBOM goes up by digest, and the `sha256-<hex>` tag's index lists it)."""
    log = stack.push_registry.process.log_path.read_text()
    return len(re.findall(rf'"PUT /v2/{re.escape(repository)}/manifests/(?!sha256[:-])', log))


def test_concurrent_submissions_of_one_spec_share_one_build_and_one_push(stack, client, unique):
    # Given one spec submitted 10 times at once, some forced
    spec = slow_spec(stack, unique)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        ids = set(pool.map(lambda i: client.submit(spec, force=i % 2 == 0).id, range(10)))
    # When the build ends
    assert len(ids) == 1
    result = client.wait(ids.pop(), timeout_s=WAIT_S)
    # Then it succeeded once and the registry received exactly one manifest
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert push_count(stack, parse_reference(result.image).repository) == 1


def test_force_while_building_attaches_to_the_running_build(stack, client, unique):
    spec = slow_spec(stack, unique)
    first = client.submit(spec, force=True)
    wait_for_line(client, first.id, lambda line: line == "==> building")
    assert client.submit(spec, force=True).id == first.id
    assert client.wait(first.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED


def test_a_queued_build_cancelled_never_starts_even_after_a_worker_restart(stack, unique):
    # Given a build queued while no worker serves its queue
    with BuildClient(stack.settings(QUEUE_ONLY_DB)) as client:
        spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
        queued = client.submit(spec)
        # When it is cancelled, and only then a worker starts
        assert client.cancel(queued.id).phase is BuildPhase.CANCELLED
        worker = start_worker(stack, f"late{unique}", QUEUE_ONLY_DB)
        try:
            queue = redis.Redis(port=stack.redis.port, db=QUEUE_ONLY_DB)
            wait_for(lambda: queue.llen("builds") == 0, "the worker to take the message", 30)
            # Then the build stays Cancelled, never ran, and nothing was pushed
            result = client.status(queued.id)
            assert result.phase is BuildPhase.CANCELLED and result.started_at is None
            assert target_digest(stack, result.image) is None
            # And a new submission of the spec is not attached to the cancelled build
            assert client.submit(spec).id != queued.id
        finally:
            worker.process.stop()


def test_a_running_build_cancelled_stops_within_10_s_and_pushes_nothing(stack, client, unique):
    # Given a build whose RUN step is running in a container
    before = all_containers()
    build_id = client.submit(slow_spec(stack, unique, heavy=True), force=True).id
    wait_for_line(client, build_id, lambda line: "Running in" in line)
    # When it is cancelled
    client.cancel(build_id)
    took_s = wait_for(lambda: client.status(build_id).phase.is_final, "the cancelled build to stop", STOP_WITHIN_S)
    # Then it ended Cancelled in time, nothing is at the target, and no build container is left
    result = client.status(build_id)
    assert result.phase is BuildPhase.CANCELLED, (result, took_s)
    assert target_digest(stack, result.image) is None
    assert all_containers() <= before


def test_cancelling_a_finished_build_says_so_and_changes_nothing(stack, client, unique):
    spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
    done = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    with pytest.raises(AlreadyFinished, match="already ended Succeeded"):
        client.cancel(done.id)
    assert client.status(done.id) == done


@pytest.fixture
def short_timeout_worker(stack, unique):
    worker = start_worker(stack, f"short{unique}", SHORT_TIMEOUT_DB, IMAGEBUILDER_BUILD_TIMEOUT_S="4")
    yield stack.settings(SHORT_TIMEOUT_DB, IMAGEBUILDER_BUILD_TIMEOUT_S="4")
    worker.process.stop()


def test_a_build_past_the_timeout_is_stopped_and_fails_saying_so(stack, short_timeout_worker, unique):
    # Given a worker whose builds may take 4 s, and a build that takes longer
    before = all_containers()
    with BuildClient(short_timeout_worker) as client:
        build_id = client.submit(slow_spec(stack, unique, heavy=True), force=True).id
        # When it runs past its time
        result = client.wait(build_id, timeout_s=WAIT_S)
    # Then it is Failed, timed out, with nothing pushed and no container left
    assert result.phase is BuildPhase.FAILED and result.error == "timed out after 4 s"
    assert target_digest(stack, result.image) is None
    assert all_containers() <= before


def test_a_failing_run_step_fails_at_once_naming_the_command_and_cleans_up(stack, client, unique):
    # Given a spec whose apt step cannot succeed
    before = all_containers()
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": ["no-such-package-imagebuilder"]}})
    # When it is built
    build_id = client.submit(spec, force=True).id
    result = client.wait(build_id, timeout_s=WAIT_S)
    # Then it failed without retries, naming the command and showing the last log lines
    assert result.phase is BuildPhase.FAILED
    assert "apt-get" in result.error and "returned a non-zero code" in result.error
    assert "Unable to locate package no-such-package-imagebuilder" in result.error
    assert not any("will retry" in line for line in client.logs(build_id))
    # And no container is left, the step images it made are gone, the base image is kept
    assert all_containers() <= before
    engine = docker.from_env()
    step_images = [line.split()[-1] for line in client.logs(build_id) if line.strip().startswith("---> ")
                   and len(line.split()) == 2]
    dangling = {image.id.removeprefix("sha256:")[:12] for image in engine.images.list(filters={"dangling": True})}
    assert step_images and not dangling.intersection(step_images)
    assert engine.images.get(stack.debian_base)
    assert tags_in_push_registry(stack, parse_reference(result.image).repository) == []


ENDING_DB = 11


def cancelled_count(client: BuildClient) -> float:
    """imagebuilder_builds_finished_total{phase="Cancelled"}, as Prometheus scrapes it."""
    for line in client.service.metrics_text().decode().splitlines():
        if line.startswith('imagebuilder_builds_finished_total{phase="Cancelled"}'):
            return float(line.split()[-1])
    return 0.0


def ended_alike(client: BuildClient, name: str, build_id: str, failures: int) -> None:
    """The record, the history, the schedule and the log all say the build ended Cancelled."""
    assert client.wait(build_id, timeout_s=WAIT_S).phase is BuildPhase.CANCELLED
    entry = next(e for e in client.specs.history(name) if e.id == build_id)
    assert entry.phase is BuildPhase.CANCELLED and entry.finished_at is not None
    schedule = client.schedules.get(name)
    assert schedule.consecutive_failures == failures and f"build {build_id} ended Cancelled" in schedule.last_error
    assert list(client.logs(build_id))[-1].startswith("cancelled")  # the whole log, read to its end marker


def test_a_queued_and_a_running_cancel_end_the_same_way(stack, unique):
    from core.stored import Trigger

    with BuildClient(stack.settings(ENDING_DB)) as client:
        # Given a stored spec with a schedule, and no worker yet
        _, first = client.specs.apply(slow_spec(stack, unique, heavy=True).to_wire())
        client.cancel(first.id)
        client.schedules.set(unique, every_s=3600, policy="always")
        before = cancelled_count(client)
        # When a scheduled build of it is cancelled while it is queued
        queued = client.specs.build(unique, force=True, trigger=Trigger.SCHEDULE)
        assert client.cancel(queued.id).phase is BuildPhase.CANCELLED
        # Then its end is counted once, in the metrics, the history, the schedule and the log
        ended_alike(client, unique, queued.id, failures=1)
        assert cancelled_count(client) == before + 1
        # When another is cancelled while a worker runs it
        worker = start_worker(stack, f"ending{unique}", ENDING_DB)
        try:
            running = client.specs.build(unique, force=True, trigger=Trigger.SCHEDULE)
            wait_for_line(client, running.id, lambda line: "Running in" in line)
            client.cancel(running.id)
            # Then it ends the same way, down to the counts
            ended_alike(client, unique, running.id, failures=2)
            assert cancelled_count(client) == before + 2
        finally:
            worker.process.stop()
