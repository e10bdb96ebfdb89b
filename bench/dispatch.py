"""Dispatch throughput of already-built specs (each submission ends Succeeded, skipped after a manifest HEAD),
end to end through the Python client and through POST /builds, against two baselines on the same Redis: a raw
Celery no-op task, and a raw Celery task that makes just the one manifest HEAD a skipped build needs, acknowledged
early (Celery's default) and late (the service's delivery guarantee, the honest floor for its workers). Then the
speed-up from 1 to 2 and 4 single-process workers, beside raw Celery's own from 1 to 2. Per build it counts the
Redis commands and the registry requests. The last line holds the ratios."""

import collections
import concurrent.futures
import functools
import os
import re
import statistics
import sys
import threading
import time

import httpx
import redis

from bench.harness import ROOT, bench
from core.reference import parse_reference
from core.spec import parse_spec
from devstack.services import Process, spawn, wait_until
from devstack.stack import API_TOKEN, PUSH_PASSWORD, PUSH_USER, start_api, start_worker

SPECS = int(os.environ.get("BENCH_SPECS", "60"))
BUILDS = int(os.environ.get("BENCH_BUILDS", "400"))  # per measurement: long enough to span several seconds
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))  # the paths take turns this often; medians are printed
CLIENTS = 8  # submitting threads, like several systems submitting at once


def throughput(submit_and_wait, count: int) -> float:
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(submit_and_wait, range(count)))
    return count / (time.perf_counter() - start)


def noop_worker(redis_url: str, concurrency: int, log, name: str = "noop", *, acks_late: bool = False) -> Process:
    """A raw Celery worker for bench.noop_app on its queue (`noop`, or `noop-late` acknowledging late); the HEAD's
    credentials come from the environment."""
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
           "BENCH_HEAD_AUTH": f"{PUSH_USER}:{PUSH_PASSWORD}", "BENCH_ACKS_LATE": "1" if acks_late else ""}
    process = spawn([sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q", _queue(acks_late), "-c",
                     str(concurrency), "-l", "INFO", "--hostname", f"{name}{concurrency}@%h"], log, env=env)
    wait_until(lambda: " ready." in log.read_text(errors="replace"), "the no-op worker")
    return process


def _queue(acks_late: bool) -> str:
    return "noop-late" if acks_late else "noop"


def main() -> None:
    with bench() as b:
        specs = [parse_spec({"name": f"dispatch-{i}", "baseImage": b.stack.busybox_base, "pullSecret": "private"})
                 for i in range(SPECS)]
        for spec in specs:  # built once, so every later submission is a skipped build
            b.build(spec, force=False)
        target = parse_reference(b.client.wait(b.client.submit(specs[0]).id, timeout_s=300).image)
        head_url = f"http://{target.api_host}/v2/{target.repository}/manifests/{target.manifest_reference}"

        def via_client(i):
            assert b.client.wait(b.client.submit(specs[i % SPECS]).id, timeout_s=300).skipped

        api, url = start_api(b.stack, "bench")
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60)

        def via_http(i):
            build_id = http.post("/builds", json=specs[i % SPECS].to_wire()).json()["id"]
            while http.get(f"/builds/{build_id}").json()["phase"] in ("Pending", "Running"):
                time.sleep(0.01)

        noop_app = _noop_app(b.stack.redis.url())
        noops = [noop_worker(b.stack.redis.url(), 2, b.workdir / "noop.log"),
                 noop_worker(b.stack.redis.url(), 2, b.workdir / "noop-late.log", "late", acks_late=True)]

        def via_raw_celery(i):
            noop_app.send_task("bench.noop", queue="noop").get(timeout=60)

        def via_raw_celery_head(i, acks_late=False):
            noop_app.send_task("bench.head", args=[head_url], queue=_queue(acks_late)).get(timeout=60)

        server = redis.Redis(port=b.stack.redis.port)
        raw_counts = counted(server, b, lambda: throughput(via_raw_celery, BUILDS))
        client_counts = counted(server, b, lambda: throughput(via_client, BUILDS))
        paths = {"raw Celery no-op": via_raw_celery, "raw Celery one HEAD": via_raw_celery_head,
                 "raw Celery one HEAD acked late": functools.partial(via_raw_celery_head, acks_late=True),
                 "client": via_client, "POST /builds": via_http}
        rounds = [taking_turns(paths, turn) for turn in range(ROUNDS)]
        for process in (api, *noops):
            process.stop()
        report(raw_counts, client_counts, rounds, scaling(b, via_client, noop_app))


def taking_turns(paths: dict, turn: int) -> dict[str, float]:
    """Each path's throughput, the paths run in an order rotated by `turn`, so that none always runs first."""
    names = list(paths)
    order = names[turn % len(names):] + names[:turn % len(names)]
    rates = {name: throughput(paths[name], BUILDS) for name in order}
    return {name: rates[name] for name in names}


def report(raw_counts: tuple, client_counts: tuple, rounds: list[dict[str, float]], scaled: str) -> None:
    """Commands and requests per build, each round's rates, the scaling, and (last) the median ratios."""
    _, raw_calls, raw_sent, _ = raw_counts
    _, client_calls, client_sent, registry_requests = client_counts
    print(f"per raw Celery no-op: {cost(raw_calls)}; sent: {cost(raw_sent)}")
    print(f"per skipped build through the client: {cost(client_calls)}; registry requests "
          f"{sum(registry_requests.values()) / BUILDS:.2f} "
          f"({', '.join(f'{k} {v / BUILDS:.2f}' for k, v in registry_requests.items())})")
    for i, rates in enumerate(rounds, 1):
        print(f"round {i}: " + "; ".join(f"{name} {rate:.1f}/s" for name, rate in rates.items()))
    print(scaled)

    def ratio(ours: str, baseline: str) -> float:
        return statistics.median(rates[ours] / rates[baseline] for rates in rounds)

    print(f"per skipped build through the client, sent by the client and the worker: {cost(client_sent)}")
    print(f"dispatch ratio (median of {ROUNDS} rounds) client/raw Celery = {ratio('client', 'raw Celery no-op'):.2f}; "
          f"HTTP/raw Celery = {ratio('POST /builds', 'raw Celery no-op'):.2f}; "
          f"client/raw Celery with one HEAD = {ratio('client', 'raw Celery one HEAD'):.2f}; "
          f"HTTP/that = {ratio('POST /builds', 'raw Celery one HEAD'):.2f}; raw Celery one HEAD acked late/acked "
          f"early = {ratio('raw Celery one HEAD acked late', 'raw Celery one HEAD'):.2f}; client/raw Celery one "
          f"HEAD acked late = {ratio('client', 'raw Celery one HEAD acked late'):.2f}")


def scaling(b, via_client, noop_app) -> str:
    """Client dispatch throughput with 1, 2 and 4 single-process workers (the session's worker stopped), and raw
    Celery's no-op throughput with 1 and 2 single-process workers, in the same run."""
    b.stop_default_worker()
    rates, raw_rates = {}, {}
    for count in (1, 2, 4):
        workers = [start_worker(b.stack, f"scale{count}-{i}", concurrency="1") for i in range(count)]
        try:
            rates[count] = throughput(via_client, BUILDS)
        finally:
            for worker in workers:
                worker.process.stop()
    for count in (1, 2):
        workers = [noop_worker(b.stack.redis.url(), 1, b.workdir / f"noop-scale{count}-{i}.log", f"scale{i}-")
                   for i in range(count)]
        try:
            raw_rates[count] = throughput(lambda i: noop_app.send_task("bench.noop", queue="noop").get(timeout=60),
                                          BUILDS * 2)
        finally:
            for worker in workers:
                worker.stop()
    print(", ".join(f"{n} worker(s): {rate:.1f}/s" for n, rate in rates.items()) + "; raw Celery " +
          ", ".join(f"{n} worker(s): {rate:.1f}/s" for n, rate in raw_rates.items()))
    ours, theirs = rates[2] / rates[1], raw_rates[2] / raw_rates[1]
    return (f"worker scaling speed-up: 1->2 = {ours:.2f}, 1->4 = {rates[4] / rates[1]:.2f}; raw Celery 1->2 = "
            f"{theirs:.2f}; ours / raw Celery's = {ours / theirs:.2f}")


def counted(server: redis.Redis, b, action):
    """What `action` returns, with the Redis commands it caused, as Redis ran them (by name, from INFO
    commandstats: each one a Lua script runs counted too) and as clients sent them (MONITOR, less Lua's own), and
    the push registry's requests (by method and route kind); each divided by BUILDS where printed."""
    log = b.stack.push_registry.process.log_path
    sent, listening = collections.Counter(), threading.Event()
    monitor = threading.Thread(target=_monitor, args=(server, sent, listening), daemon=True)
    monitor.start()
    listening.wait(10)
    before_calls, before_log = _calls(server), len(log.read_text())
    value = action()
    calls = _calls(server)
    server.execute_command("ECHO", _STOP)
    monitor.join(10)
    calls.subtract(before_calls)
    calls[_INFO] = 0  # our own reading of the figures
    requests = collections.Counter(f"{m} {kind}" for m, kind in _REQUEST.findall(log.read_text()[before_log:]))
    return value, +calls, +sent, requests


_STOP = "bench: enough"


def _monitor(server: redis.Redis, sent: collections.Counter, listening: threading.Event) -> None:
    """Count the commands clients send (not those Lua scripts run), until the stop word."""
    with redis.Redis(connection_pool=server.connection_pool).monitor() as monitor:
        listening.set()
        for entry in monitor.listen():
            if _STOP in entry["command"]:
                return
            if entry.get("client_type") != "lua" and not entry["command"].upper().startswith("INFO"):
                sent[entry["command"].split(" ", 1)[0].lower()] += 1


_INFO = "info"
_REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|PATCH) /v2/[^ ]*?/(manifests|blobs|tags)/')


def _calls(server: redis.Redis) -> collections.Counter:
    return collections.Counter({name.removeprefix("cmdstat_"): stats["calls"]
                                for name, stats in server.info("commandstats").items()})


def cost(calls: collections.Counter) -> str:
    """Redis commands per build (each one inside a Lua script, a pipeline or a transaction counted): the total,
    then the most frequent."""
    top = ", ".join(f"{name} {count / BUILDS:.1f}" for name, count in calls.most_common(8))
    return f"{sum(calls.values()) / BUILDS:.1f} Redis commands ({top})"


def _noop_app(url: str):
    from celery import Celery

    return Celery(broker=url, backend=url)


if __name__ == "__main__":
    main()
