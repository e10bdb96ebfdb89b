"""Dispatch throughput of already-built specs (each submission ends Succeeded, skipped after a manifest HEAD),
end to end through the Python client and through POST /builds, against a raw Celery no-op task on the same
Redis; then the same through the client with 1, 2 and 4 worker processes. Ratios are printed, the last line
being the 1 -> 4 worker speed-up."""

import collections
import concurrent.futures
import os
import re
import sys
import time

import httpx
import redis

from bench.harness import ROOT, bench
from devstack.services import Process, spawn, wait_until
from devstack.stack import API_TOKEN, start_api, start_worker
from worker.spec import parse_spec

SPECS = int(os.environ.get("BENCH_SPECS", "60"))
CLIENTS = 8  # submitting threads, like several systems submitting at once


def throughput(submit_and_wait, count: int) -> float:
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(submit_and_wait, range(count)))
    return count / (time.perf_counter() - start)


def noop_worker(redis_url: str, concurrency: int, log) -> Process:
    process = spawn([sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q", "noop", "-c",
                     str(concurrency), "-l", "INFO", "--hostname", f"noop{concurrency}@%h"], log,
                    env={**os.environ, "BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)})
    wait_until(lambda: " ready." in log.read_text(errors="replace"), "the no-op worker")
    return process


def main() -> None:
    with bench() as b:
        specs = [parse_spec({"name": f"dispatch-{i}", "baseImage": b.stack.busybox_base, "pullSecret": "private"})
                 for i in range(SPECS)]
        for spec in specs:  # built once, so every later submission is a skipped build
            b.build(spec, force=False)

        def via_client(i):
            assert b.client.wait(b.client.submit(specs[i]).id, timeout_s=300).skipped

        api, url = start_api(b.stack, "bench")
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60)

        def via_http(i):
            build_id = http.post("/builds", json=specs[i].to_wire()).json()["id"]
            while http.get(f"/builds/{build_id}").json()["phase"] in ("Pending", "Running"):
                time.sleep(0.01)

        noop_app = _noop_app(b.stack.redis.url())
        noop = noop_worker(b.stack.redis.url(), 2, b.workdir / "noop.log")

        def via_raw_celery(i):
            noop_app.send_task("bench.noop", queue="noop").get(timeout=60)

        server = redis.Redis(port=b.stack.redis.port)
        raw, raw_calls, _ = counted(server, b, lambda: throughput(via_raw_celery, SPECS))
        client, client_calls, registry_requests = counted(server, b, lambda: throughput(via_client, SPECS))
        over_http = throughput(via_http, SPECS)
        print(f"per raw Celery no-op: {cost(raw_calls)}")
        print(f"per skipped build through the client: {cost(client_calls)}; registry requests "
              f"{sum(registry_requests.values()) / SPECS:.2f} ({', '.join(f'{k} {v / SPECS:.2f}' for k, v in registry_requests.items())})")
        print(f"raw Celery no-op: {raw:.1f}/s; client: {client:.1f}/s; POST /builds: {over_http:.1f}/s")
        print(f"dispatch ratio client/raw Celery = {client / raw:.2f}; HTTP/raw Celery = {over_http / raw:.2f}")
        api.stop()
        noop.stop()
        print(scaling(b, via_client))


def scaling(b, via_client) -> str:
    """Client dispatch throughput with 1, 2 and 4 single-process workers (the session's worker stopped)."""
    b.stop_default_worker()
    rates = {}
    for count in (1, 2, 4):
        workers = [start_worker(b.stack, f"scale{count}-{i}", concurrency="1") for i in range(count)]
        try:
            rates[count] = throughput(via_client, SPECS)
        finally:
            for worker in workers:
                worker.process.stop()
    print(", ".join(f"{n} worker(s): {rate:.1f}/s" for n, rate in rates.items()))
    return f"worker scaling speed-up: 1->2 = {rates[2] / rates[1]:.2f}, 1->4 = {rates[4] / rates[1]:.2f}"


def counted(server: redis.Redis, b, action):
    """What `action` returns, with the Redis commands (by name, from INFO commandstats) and the push registry's
    requests (by method and route kind) it caused; each divided by SPECS where printed."""
    log = b.stack.push_registry.process.log_path
    before_calls, before_log = _calls(server), len(log.read_text())
    value = action()
    calls = _calls(server)
    calls.subtract(before_calls)
    calls[_INFO] = 0  # our own reading of the figures
    requests = collections.Counter(f"{m} {kind}" for m, kind in _REQUEST.findall(log.read_text()[before_log:]))
    return value, +calls, requests


_INFO = "info"
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|PATCH) /v2/[^ ]*?/(manifests|blobs|tags)/')


def _calls(server: redis.Redis) -> collections.Counter:
    return collections.Counter({name.removeprefix("cmdstat_"): stats["calls"]
                                for name, stats in server.info("commandstats").items()})


def cost(calls: collections.Counter) -> str:
    """Redis commands per build (each one inside a Lua script, a pipeline or a transaction counted): the total,
    then the most frequent."""
    top = ", ".join(f"{name} {count / SPECS:.1f}" for name, count in calls.most_common(8))
    return f"{sum(calls.values()) / SPECS:.1f} Redis commands ({top})"


def _noop_app(url: str):
    from celery import Celery

    return Celery(broker=url, backend=url)


if __name__ == "__main__":
    main()
