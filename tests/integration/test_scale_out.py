"""Scale-out: three worker processes on one Redis share 30 builds, each done exactly once."""

from __future__ import annotations

import collections

import pytest

from core.phases import BuildPhase
from core.spec import parse_spec
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.test_builds import WAIT_S

pytestmark = pytest.mark.integration
SCALE_DB = 11
WORKERS = 3
SPECS = 30


def test_thirty_specs_on_three_workers_are_each_built_once_and_spread_over_all(stack, unique):
    # Given three single-process workers on one Redis
    workers = [start_worker(stack, f"s{i}{unique}", SCALE_DB, concurrency="1") for i in range(WORKERS)]
    try:
        with BuildClient(stack.settings(SCALE_DB)) as client:
            # When 30 different specs are submitted
            ids = [client.submit(parse_spec({"name": f"{unique}-{i}", "baseImage": stack.busybox_base,
                                             "pullSecret": "private"})).id for i in range(SPECS)]
            results = [client.wait(build_id, timeout_s=WAIT_S) for build_id in ids]
            starts = [sum(line == "==> pulling" for line in client.logs(build_id)) for build_id in ids]
    finally:
        for worker in workers:
            worker.process.stop()
    # Then every build succeeded, ran exactly once on one worker, and all three workers took some
    assert [r.phase for r in results] == [BuildPhase.SUCCEEDED] * SPECS, [r.error for r in results]
    assert starts == [1] * SPECS
    per_worker = collections.Counter(r.worker for r in results)
    assert len(per_worker) == WORKERS and all(count >= 3 for count in per_worker.values()), per_worker
