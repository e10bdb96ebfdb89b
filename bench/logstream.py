"""Many followers of one build's live log: one `imagebuilder api` process on a Redis of its own; a build's log
written through the store at a steady rate, then ended; 500 followers (`GET /builds/{id}/logs?follow=true`) in a
separate client process; and meanwhile the p99 of other routes (`GET /builds/{id}`, `GET /readyz`) against the same
API, as a ratio to their p99 with no followers, measured first in the same run. Prints the followers served live
(every line, in order, before the end event, and the end event), the end-event delay p95 from the store's end write
to each follower's receipt, and the other routes' p99, last.

Everything runs on this machine: Redis, the API, the follower process (asyncio sockets speaking HTTP/1.1 with
chunked bodies, as a browser's EventSource does) and this process (the log writer and the probes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from config.settings import Settings
from core.phases import BuildPhase
from core.result import BuildResult, utcnow
from core.stores.wiring import Stores, open_stores
from devstack.services import Process, RedisServer, free_port, spawn, wait_until
from devstack.stack import IMAGEBUILDER

ROOT = Path(__file__).resolve().parents[1]
FOLLOWERS = int(os.environ.get("BENCH_FOLLOWERS", "500"))
LINES_PER_S = float(os.environ.get("BENCH_LINES_PER_S", "20"))
WRITE_S = float(os.environ.get("BENCH_WRITE_S", "25"))
BASELINE_S = 8.0
PROBE_GAP_S = 0.02  # between one probe's answer and the next request
LIVE_WITHIN_S = 2.0  # a line that reaches a follower later than this after its writing was not live
CONNECTING_AT_ONCE = FOLLOWERS  # all in the same moment: a burst the edge queues for Redis, never refuses
TOKEN = "bench-logstream-token-0123456789"
CONNECTED = "connected"  # the follower process's first line once every follower has its answer's head


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imagebuilder-bench-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis").start()
        try:
            run(Path(tmp), redis_server.url())
        finally:
            redis_server.stop()


def run(workdir: Path, redis_url: str) -> None:
    env = {"IMAGEBUILDER_REDIS_URL": redis_url, "IMAGEBUILDER_API_TOKENS": TOKEN,
           "PRIMEHUB_FEATURE_CUSTOM_IMAGE": "true", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": "registry.example:5000",
           "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": "registry.example:5000/team"}
    api, url = start_api(workdir, env)
    stores = open_stores(Settings(_env_file=None, **env))
    try:
        build = running_build(stores)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            idle = probe(http, build.id, time.monotonic() + BASELINE_S)
            cpu_before, started = cpu_s(api), time.monotonic()
            followers, ended_at, loaded = under_load(url, http, stores, build)
            api_cpu = (cpu_s(api) - cpu_before) / (time.monotonic() - started)
        report(followers, ended_at, idle, loaded, api_cpu)
    finally:
        stores.close()
        api.stop()


def start_api(workdir: Path, env: dict[str, str]) -> tuple[Process, str]:
    """`imagebuilder api` with its default IMAGEBUILDER_API_MAX_LOG_STREAMS, on a free loopback port."""
    port = free_port()
    process = spawn([str(IMAGEBUILDER), "api", "--port", str(port)], workdir / "api.log",
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, "imagebuilder api")
    return process, url


def cpu_s(process: Process) -> float:
    """The CPU time (user and system) the process has used so far."""
    fields = Path(f"/proc/{process.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def running_build(stores: Stores) -> BuildResult:
    build_id = str(uuid.uuid4())
    build = BuildResult(id=build_id, image=f"registry.example:5000/team/bench:{build_id[:8]}", submitted_at=utcnow(),
                        started_at=utcnow(), phase=BuildPhase.RUNNING)
    stores.builds.submit(build, {})
    return build


def under_load(url: str, http: httpx.Client, stores: Stores, build: BuildResult):
    """Connect the followers, then write the log while probing the other routes; what each follower received,
    when the end was written, and the probes' latencies."""
    follower_process = subprocess.Popen(
        [sys.executable, "-m", "bench.logstream", "--follow", url, build.id, str(FOLLOWERS)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert follower_process.stdout.readline().strip() == CONNECTED, "the followers could not all connect"
    ended: list[float] = []
    writer = threading.Thread(target=lambda: ended.append(write_log(stores, build)))
    writer.start()
    loaded = probe(http, build.id, until=lambda: not writer.is_alive())
    writer.join()
    output, _ = follower_process.communicate(timeout=120)
    return json.loads(output), ended[0], loaded


def write_log(stores: Stores, build: BuildResult) -> float:
    """Lines at LINES_PER_S for WRITE_S, each saying when it was written, then the end; when the end was written."""
    started = time.monotonic()
    for i in range(int(WRITE_S * LINES_PER_S)):
        time.sleep(max(0.0, started + i / LINES_PER_S - time.monotonic()))
        stores.log.append(build.id, f"step {i} written at {time.time():.6f}")
    ended_at = time.time()
    stores.lifecycle.end(build.model_copy(update={"phase": BuildPhase.SUCCEEDED, "finished_at": utcnow()}))
    return ended_at


def probe(http: httpx.Client, build_id: str, deadline: float | None = None, until=None) -> dict[str, list[float]]:
    """Take turns at `GET /builds/{id}` and `GET /readyz` until the deadline (or `until()`); seconds per answer."""
    timings: dict[str, list[float]] = {"GET /builds/{id}": [], "GET /readyz": []}
    while (until is None and time.monotonic() < deadline) or (until is not None and not until()):
        for route, path in (("GET /builds/{id}", f"/builds/{build_id}"), ("GET /readyz", "/readyz")):
            started = time.perf_counter()
            assert http.get(path).status_code == 200, route
            timings[route].append(time.perf_counter() - started)
            time.sleep(PROBE_GAP_S)
    return timings


def report(followers: list[dict], ended_at: float, idle: dict[str, list[float]],
           loaded: dict[str, list[float]], api_cpu: float) -> None:
    lines = int(WRITE_S * LINES_PER_S)
    live = [f for f in followers if f["lines"] == lines and f["in_order"] and f["end"] == "Succeeded"]
    end_delays = sorted(f["end_at"] - ended_at for f in followers if f["end"])
    line_delays = [f["line_delay_max_s"] for f in followers]
    print(f"{lines} lines at {LINES_PER_S:g}/s over {WRITE_S:g} s, then the end; {len(followers)} followers in a "
          f"separate process, all connecting at once; one API process, Redis, the followers and "
          f"the probes all on this {os.cpu_count()}-core machine; the API used {api_cpu:.0%} of a core meanwhile")
    for route in idle:
        print(f"{route}: p99 {ms(p99(idle[route]))} with no followers ({len(idle[route])} requests), "
              f"{ms(p99(loaded[route]))} with them ({len(loaded[route])} requests)")
    print(f"line delay (writing to receipt) worst per follower: median {statistics.median(line_delays):.3f} s, "
          f"max {max(line_delays):.3f} s; followers with every line within {LIVE_WITHIN_S:g} s: "
          f"{sum(d < LIVE_WITHIN_S for d in line_delays)}/{len(followers)}; end-event delay max {end_delays[-1]:.3f} s")
    idle_p99, loaded_p99 = p99(sum(idle.values(), [])), p99(sum(loaded.values(), []))
    print(f"followers live {len(live)}/{FOLLOWERS}, end-event delay p95 {percentile(end_delays, 95):.2f} s, "
          f"other routes p99 {ms(loaded_p99)} (ratio {loaded_p99 / idle_p99:.1f} to idle)")


def p99(values: list[float]) -> float:
    return percentile(values, 99)


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- the follower process ------------------------------------------------------------------------------------------
class Dechunked:
    """An HTTP/1.1 chunked body, decoded as it arrives."""

    def __init__(self):
        self._raw = b""

    def feed(self, data: bytes) -> bytes:
        self._raw += data
        body = []
        while (head_end := self._raw.find(b"\r\n")) >= 0:
            size = int(self._raw[:head_end].split(b";")[0], 16)
            start = head_end + 2
            if size == 0 or len(self._raw) < start + size + 2:
                break
            body.append(self._raw[start:start + size])
            self._raw = self._raw[start + size + 2:]
        return b"".join(body)


class Follower:
    """One follower's count of lines (in order or not), worst line delay, and end event with its arrival."""

    def __init__(self):
        self.lines = 0
        self.in_order = True
        self.line_delay_max_s = 0.0
        self.end: str | None = None
        self.end_at = 0.0

    def take(self, event: bytes, now: float) -> None:
        if event.startswith(b"event: end\ndata: "):
            self.end, self.end_at = event.removeprefix(b"event: end\ndata: ").decode(), now
        elif event.startswith(b"data: step ") and self.end is None:
            number, _, written_at = event.removeprefix(b"data: step ").partition(b" written at ")
            self.in_order &= int(number) == self.lines
            self.lines += 1
            self.line_delay_max_s = max(self.line_delay_max_s, now - float(written_at))


async def follow(url: str, build_id: str, connecting: asyncio.Semaphore, connected: list[int]) -> Follower:
    host, port = url.removeprefix("http://").split(":")
    async with connecting:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /builds/{build_id}/logs?follow=true HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream"
                     f"\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    connected.append(1)
    follower, body, buffer = Follower(), Dechunked(), b""
    while follower.end is None and (data := await reader.read(65536)):
        *events, buffer = (buffer + body.feed(data)).split(b"\n\n")
        now = time.time()
        for event in events:
            follower.take(event, now)
    writer.close()
    return follower


async def follow_all(url: str, build_id: str, count: int) -> list[Follower]:
    connecting, connected = asyncio.Semaphore(CONNECTING_AT_ONCE), []
    tasks = [asyncio.create_task(follow(url, build_id, connecting, connected)) for _ in range(count)]
    while len(connected) < count:
        await asyncio.sleep(0.05)
        if failed := [task for task in tasks if task.done() and task.exception()]:
            raise failed[0].exception()
    print(CONNECTED, flush=True)
    return await asyncio.gather(*tasks)


def follower_process(url: str, build_id: str, count: int) -> None:
    followers = asyncio.run(follow_all(url, build_id, count))
    print(json.dumps([vars(follower) for follower in followers]))


if __name__ == "__main__":
    arguments = argparse.ArgumentParser()
    arguments.add_argument("--follow", nargs=3, metavar=("URL", "BUILD_ID", "COUNT"))
    given = arguments.parse_args().follow
    if given:
        follower_process(given[0], given[1], int(given[2]))
    else:
        main()
