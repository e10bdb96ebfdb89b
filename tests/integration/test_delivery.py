"""No duplicate work, cancel, timeouts, fail-fast on fatal errors, and no containers left behind."""

from __future__ import annotations

import concurrent.futures

import docker
import pytest

from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.helpers import all_containers, tags_in_push_registry, wait_for, wait_for_line
from tests.integration.test_builds import WAIT_S, target_digest
from worker.errors import AlreadyFinished
from worker.reference import parse_reference
from worker.spec import parse_spec
from worker.states import BuildPhase

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
    """Manifest uploads the push registry logged for `repository`."""
    return stack.push_registry.process.log_path.read_text().count(f'"PUT /v2/{repository}/manifests/')


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
            wait_for(lambda: client._redis.llen("builds") == 0, "the worker to take the message", 30)
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
