"""Each fault is real: the worker is SIGKILLed, Redis restarts, the registry and dockerd stop mid-build."""

from __future__ import annotations

import os
import signal
import time

import pytest

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
from tests.integration.test_builds import WAIT_S
from tests.integration.test_delivery import slow_spec

pytestmark = pytest.mark.integration
KILL_DB, CHILD_DB, REDIS_DB, GIVE_UP_DB, CAP_DB = 6, 7, 8, 9, 14
TAKEOVER_WITHIN_S = 60


def build_and_kill_the_pool_mid_run(stack, client: BuildClient, worker, unique: str) -> tuple[str, float]:
    """Start a build and SIGKILL the worker's pool processes once its RUN step runs; (build id, when)."""
    build_id = client.submit(slow_spec(stack, unique), force=True).id
    wait_for_line(client, build_id, lambda line: "Running in" in line)
    for child in worker.pool_children():
        os.kill(child, signal.SIGKILL)
    return build_id, time.time()


def restarted(client: BuildClient, build_id: str, after: float) -> bool:
    started = client.status(build_id).started_at
    return started is not None and started.timestamp() > after


def test_sigkill_of_the_whole_worker_mid_build_is_taken_over_by_another(stack, unique):
    # Given a build running on worker A, and worker B on the same Redis
    first = start_worker(stack, f"a{unique}", KILL_DB)
    second = None
    try:
        with BuildClient(stack.settings(KILL_DB)) as client:
            build_id = client.submit(slow_spec(stack, unique), force=True).id
            wait_for_line(client, build_id, lambda line: "Running in" in line)
            second = start_worker(stack, f"b{unique}", KILL_DB)
            # When worker A dies at once, main process and pool together
            first.process.kill()
            killed_at = time.time()
            # Then B starts the build again within 60 s, long before the visibility timeout
            wait_for(lambda: restarted(client, build_id, killed_at), "another worker to take over", TAKEOVER_WITHIN_S)
            result = client.wait(build_id, timeout_s=WAIT_S)
        # And it ends Succeeded with exactly one image at the target
        assert result.phase is BuildPhase.SUCCEEDED, result.error
        assert tags_in_push_registry(stack, parse_reference(result.image).repository) == [result.image.rsplit(":")[-1]]
    finally:
        for worker in (first, second):
            if worker:
                worker.process.stop()


def test_sigkill_of_the_pool_child_mid_build_is_redelivered(stack, unique):
    # Given a build running in worker C's only pool process
    worker = start_worker(stack, f"c{unique}", CHILD_DB, concurrency="1")
    try:
        with BuildClient(stack.settings(CHILD_DB)) as client:
            # When that pool process is killed
            build_id, killed_at = build_and_kill_the_pool_mid_run(stack, client, worker, unique)
            # Then the build is delivered again within 60 s and succeeds, once
            wait_for(lambda: restarted(client, build_id, killed_at), "the build to be redelivered", TAKEOVER_WITHIN_S)
            result = client.wait(build_id, timeout_s=WAIT_S)
            assert result.phase is BuildPhase.SUCCEEDED, result.error
            assert any("was lost; starting again" in line for line in client.logs(build_id))
    finally:
        worker.process.stop()


def test_builds_queued_across_a_redis_restart_all_complete(stack, unique):
    # Given three accepted builds waiting in Redis (AOF on) with no worker yet
    with BuildClient(stack.settings(REDIS_DB)) as client:
        ids = [client.submit(parse_spec({"name": f"{unique}-{i}", "baseImage": stack.busybox_base,
                                         "pullSecret": "private"})).id for i in range(3)]
        time.sleep(1.5)  # appendfsync everysec: let the last second reach the AOF
        # When Redis restarts
        stack.redis.stop()
        stack.redis.start()
        # Then a worker finds every one of them and builds it
        worker = start_worker(stack, f"r{unique}", REDIS_DB)
        try:
            results = [client.wait(build_id, timeout_s=WAIT_S) for build_id in ids]
        finally:
            worker.process.stop()
    assert [r.phase for r in results] == [BuildPhase.SUCCEEDED] * 3, [r.error for r in results]


def test_push_registry_down_during_the_push_is_retried_until_it_returns(stack, client, unique):
    # Given a build that has pulled its base and is building
    build_id = client.submit(slow_spec(stack, unique), force=True).id
    wait_for_line(client, build_id, lambda line: line == "==> building")
    # When the push registry goes away before the push, and comes back after a failed attempt
    stack.push_registry.process.kill()
    try:
        wait_for_line(client, build_id, lambda line: "will retry" in line)
    finally:
        stack.push_registry.start()
    result = client.wait(build_id, timeout_s=WAIT_S)
    # Then the build completes
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert any(stack.push_registry.host in line and "will retry" in line for line in client.logs(build_id))


def test_push_registry_down_past_the_attempts_fails_naming_it(stack, unique):
    # Given a worker allowed two attempts with short backoff, and the push registry down
    worker = start_worker(stack, f"g{unique}", GIVE_UP_DB, IMAGEBUILDER_MAX_ATTEMPTS="2",
                          IMAGEBUILDER_RETRY_BACKOFF_S="0.5")
    stack.push_registry.process.kill()
    try:
        with BuildClient(stack.settings(GIVE_UP_DB)) as client:
            spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
            result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    finally:
        stack.push_registry.start()
        worker.process.stop()
    # Then it ends Failed, naming the registry and the attempts
    assert result.phase is BuildPhase.FAILED
    assert stack.push_registry.host in result.error and "gave up after 2 attempts" in result.error


def test_dockerd_stopped_mid_build_is_retried_and_leaves_no_orphan_container(stack, client, unique):
    if not stack.dockerd.started_here:
        pytest.skip("dockerd was already running before the tests: they do not stop an engine they did not start")
    # Given a build whose RUN step is running
    before = all_containers()
    build_id = client.submit(slow_spec(stack, unique), force=True).id
    wait_for_line(client, build_id, lambda line: "Running in" in line)
    # When dockerd stops, and starts again a little later
    stack.dockerd.stop()
    time.sleep(3)
    stack.dockerd.start()
    # Then the build is retried and succeeds, and no container is left over from the interrupted attempt
    result = client.wait(build_id, timeout_s=WAIT_S)
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert any("will retry" in line for line in client.logs(build_id))
    assert all_containers() <= before


def test_a_build_whose_worker_keeps_dying_ends_failed_after_the_delivery_cap(stack, unique):
    # Given a worker that allows one delivery per build
    worker = start_worker(stack, f"cap{unique}", CAP_DB, concurrency="1", IMAGEBUILDER_MAX_DELIVERIES="1")
    try:
        with BuildClient(stack.settings(CAP_DB)) as client:
            # When its pool process dies mid-build
            build_id, _ = build_and_kill_the_pool_mid_run(stack, client, worker, unique)
            # Then the next delivery does not build again: it ends Failed, saying why
            result = client.wait(build_id, timeout_s=WAIT_S)
        assert result.phase is BuildPhase.FAILED
        assert "delivered 2 times" in result.error and "IMAGEBUILDER_MAX_DELIVERIES is 1" in result.error
    finally:
        worker.process.stop()
