"""A Redis Sentinel failover, timed: a master, two replicas and three sentinels on loopback (devstack/sentinel.py;
the sentinels call a silent master down after DOWN_AFTER_MS = 1 s, Sentinel's down-after-milliseconds, which is
the operator's setting: its default is 30 s), a worker, and the Python client submitting a build every
SUBMIT_EVERY_S, each accepted only once a replica holds it (IMAGEBUILDER_REDIS_WAIT_REPLICAS=1). The master is
SIGKILLed RUNS times (each old master restarted, rejoining as a replica, before the next kill). Per kill: seconds
from the kill to the first submission accepted and to the first build started on the new master (goal <= 15 s for
both). Then the dispatch throughput of already-built specs through the client (submit, wait for the end) with the
wait for a replica / without it, the two taking turns (goal >= 0.9), on the last line."""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field

from bench.dispatch import CLIENTS, throughput
from bench.harness import bench
from core.errors import StoreUnavailable
from devstack.sentinel import DOWN_AFTER_MS, SentinelRedis
from devstack.stack import start_worker
from producer.client import BuildClient

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))  # the throughput's turns, each way
BUILDS = int(os.environ.get("BENCH_BUILDS", "200"))  # per turn
SUBMIT_EVERY_S = 0.1
LOAD_BEFORE_KILL_S = 3
WAITED_DB, UNWAITED_DB = 1, 2
WAITED = {"IMAGEBUILDER_REDIS_WAIT_REPLICAS": "1", "IMAGEBUILDER_REDIS_WAIT_TIMEOUT_MS": "2000"}


@dataclass
class Stream:
    """Submissions at a steady pace: for each accepted one, when it was sent and answered, and its id."""

    client: BuildClient
    spec: dict
    accepted: list[tuple[float, float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            sent_at = time.time()
            try:
                build_id = self.client.submit(self.spec).id
                self.accepted.append((sent_at, time.time(), build_id))
            except StoreUnavailable:
                pass  # refused while no master answers, or no replica confirms: the next one tries again
            time.sleep(SUBMIT_EVERY_S)


def main() -> None:
    with bench() as b:
        b.stop_default_worker()
        group = SentinelRedis(b.workdir / "sentinel", replicas=2).start()
        workers = [start_worker(b.stack, f"failover-{db}", db, **group.env(db), **extra)
                   for db, extra in ((WAITED_DB, WAITED), (UNWAITED_DB, {}))]
        try:
            with BuildClient(b.stack.settings(WAITED_DB, **group.env(WAITED_DB), **WAITED)) as waited, \
                    BuildClient(b.stack.settings(UNWAITED_DB, **group.env(UNWAITED_DB))) as unwaited:
                spec = built_spec(b, waited, unwaited)
                timings = [one_failover(group, waited, spec, run) for run in range(1, RUNS + 1)]
                turns = [taking_turns(waited, unwaited, spec) for _ in range(ROUNDS)]
        finally:
            for worker in workers:
                worker.process.stop()
            group.stop()
        report(timings, turns)


def built_spec(b, *clients: BuildClient) -> dict:
    """A spec whose image each client's worker has built already: every later build of it is skipped."""
    spec = {"name": f"failover-{time.time_ns() % 10**8}", "baseImage": b.stack.busybox_base, "pullSecret": "private"}
    for client in clients:
        client.wait(client.submit(spec).id, timeout_s=300)
    return spec


def one_failover(group: SentinelRedis, client: BuildClient, spec: dict, run: int) -> tuple[float, float]:
    stream = Stream(client, spec)
    thread = threading.Thread(target=stream.run)
    thread.start()
    time.sleep(LOAD_BEFORE_KILL_S)
    killed_at = time.time()
    old = group.kill_master()
    try:
        group.wait_for_new_master(old)
        accepted_s = _first(lambda: [answered for sent, answered, _ in stream.accepted if sent > killed_at]) - killed_at
        started_s = _first(lambda: _started_after(client, stream, killed_at)) - killed_at
    finally:
        stream.stop.set()
        thread.join()
    group.rejoin(old)
    print(f"run {run}: master killed; first submission accepted after {accepted_s:.1f} s, first build started on "
          f"the new master after {started_s:.1f} s")
    return accepted_s, started_s


def _started_after(client: BuildClient, stream: Stream, moment: float) -> list[float]:
    """When the builds sent after `moment` started (on the new master, so), of those that have."""
    ids = {build_id for sent, _, build_id in stream.accepted if sent > moment}
    starts = (client.status(build_id).started_at for build_id in ids)
    return [s.timestamp() for s in starts if s and s.timestamp() > moment]


def _first(found, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if values := found():
            return min(values)
        time.sleep(0.1)
    raise RuntimeError(f"nothing within {timeout_s} s of the kill")


def taking_turns(waited: BuildClient, unwaited: BuildClient, spec: dict) -> tuple[float, float]:
    """Builds per second through the client (submit, then wait for the skipped end), with and without WAIT."""
    def dispatch(client: BuildClient):
        return lambda i: client.wait(client.submit(spec).id, timeout_s=60)

    return throughput(dispatch(waited), BUILDS), throughput(dispatch(unwaited), BUILDS)


def report(timings: list[tuple[float, float]], turns: list[tuple[float, float]]) -> None:
    accepted, started = (statistics.median(values) for values in zip(*timings))
    with_wait, without = (statistics.median(values) for values in zip(*turns))
    print(f"sentinels' down-after-milliseconds {DOWN_AFTER_MS} (a setting; Sentinel's default is 30000)")
    print(f"kill -> first submission accepted: median {accepted:.1f} s; -> first build started on the new master: "
          f"median {started:.1f} s (goal <= 15 s each)")
    print(f"dispatch of already-built specs, {CLIENTS} client threads: {with_wait:.0f}/s waiting for a replica, "
          f"{without:.0f}/s without")
    print(f"dispatch throughput with WAIT / without = {with_wait / without:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
