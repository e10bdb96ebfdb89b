"""A WAN-like link on this machine, for the tests and benchmarks that measure downloads: tc's token bucket (`tbf`,
100 Mbit/s, 400 ms of queue) on what the engines' build containers receive, and a host of its own for the package
caches (a network namespace behind a veth pair, its downloads shaped alike). What reaches a build from an origin,
or a cache from an origin, crosses the shaped link; what reaches a build from a cache (on its LAN) does not.

`netem` is not in this kernel, nor `prio`: the shaped and the unshaped traffic are two `htb` classes, the shaped
one's leaf a `tbf`, with a `u32` filter sending the caches' packets to the other."""

from __future__ import annotations

import ipaddress
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from devstack.services import listening

RATE, BURST, LATENCY = "100mbit", "32kbit", "400ms"
RATE_BITS_S = 100e6
LINE_RATE = "10gbit"  # the htb classes' own ceiling: only the tbf shapes
SHAPED, UNSHAPED = "1:20", "1:10"


def shape(device: str, unshaped_from: str | None = None) -> None:
    """Shape what `device` sends (so what the hosts behind it receive), except packets from `unshaped_from`."""
    _tc("qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", SHAPED.split(":")[1])
    for classid in (UNSHAPED, SHAPED):
        _tc("class", "replace", "dev", device, "parent", "1:", "classid", classid, "htb", "rate", LINE_RATE)
    _tc("qdisc", "replace", "dev", device, "parent", SHAPED, "handle", "20:", "tbf", "rate", RATE, "burst", BURST,
        "latency", LATENCY)
    if unshaped_from:
        _tc("filter", "replace", "dev", device, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
            "src", f"{unshaped_from}/32", "flowid", UNSHAPED)


def unshape(device: str) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", device, "root"], capture_output=True)


def describe() -> str:
    return f"tc tbf rate {RATE} burst {BURST} latency {LATENCY}"


@contextmanager
def shaped(devices: list[str], unshaped_from: str | None = None) -> Iterator[None]:
    """`devices` shaped for the duration, and left as they were after (even on an interrupt)."""
    try:
        for device in devices:
            shape(device, unshaped_from)
        yield
    finally:
        for device in devices:
            unshape(device)


def _tc(*args: str) -> None:
    done = subprocess.run(["tc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class CacheHost:
    """A network namespace with one veth pair to this host (`address` inside it), routed and masqueraded out, so
    that servers run in it (`wrap`) are another host on the LAN. What this host sends into it is shaped: the
    downloads of the caches it holds cross the WAN-like link, as they would on the Internet."""

    name: str = "ib-cachehost"
    network: str = "10.203.7.0/30"

    @property
    def outside(self) -> str:
        return f"ib-{self.name[-6:]}0"

    @property
    def inside(self) -> str:
        return f"ib-{self.name[-6:]}1"

    @property
    def address(self) -> str:
        return str(list(ipaddress.ip_network(self.network).hosts())[1])

    @property
    def gateway(self) -> str:
        return str(list(ipaddress.ip_network(self.network).hosts())[0])

    def wrap(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def start(self) -> CacheHost:
        self.stop()  # whatever an interrupted run left
        prefix = ipaddress.ip_network(self.network).prefixlen
        for command in (["ip", "netns", "add", self.name],
                        ["ip", "link", "add", self.outside, "type", "veth", "peer", "name", self.inside],
                        ["ip", "link", "set", self.inside, "netns", self.name],
                        ["ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", self.outside],
                        ["ip", "link", "set", self.outside, "up"],
                        self.wrap(["ip", "addr", "add", f"{self.address}/{prefix}", "dev", self.inside]),
                        self.wrap(["ip", "link", "set", self.inside, "up"]),
                        self.wrap(["ip", "link", "set", "lo", "up"]),
                        self.wrap(["ip", "route", "add", "default", "via", self.gateway]),
                        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                        *[["iptables", *rule] for rule in self._rules("-I")]):
            subprocess.run(command, check=True, capture_output=True)
        shape(self.outside)
        return self

    def _rules(self, verb: str) -> list[list[str]]:
        # Docker's FORWARD policy drops what it does not know: let this host's traffic through, both ways
        return [["-t", "nat", verb, "POSTROUTING", "-s", self.network, "!", "-o", self.outside, "-j", "MASQUERADE"],
                ["-w", verb, "FORWARD", "-i", self.outside, "-j", "ACCEPT"],
                ["-w", verb, "FORWARD", "-o", self.outside, "-j", "ACCEPT"]]

    def stop(self) -> None:
        for rule in self._rules("-D"):
            subprocess.run(["iptables", *rule], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def timed_download_rate(engine_host: str | None, image: str, url: str, size_bytes: int) -> float:
    """Bits per second a build container on the engine got fetching `url` (`size_bytes` long), timed inside it."""
    script = ("import time, urllib.request; start = time.monotonic(); "
              f"data = urllib.request.urlopen({url!r}).read(); "
              f"assert len(data) == {size_bytes}, len(data); print(time.monotonic() - start)")
    env = {"PATH": "/usr/bin:/bin", **({"DOCKER_HOST": engine_host} if engine_host else {})}
    done = subprocess.run(["docker", "run", "--rm", image, "python3", "-c", script], env=env, capture_output=True,
                          text=True, check=True)
    return size_bytes * 8 / float(done.stdout.strip().splitlines()[-1])


BLOB_SERVER = """import http.server, os, sys
blob = os.urandom(int(sys.argv[1]))
class Blob(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        self.wfile.write(blob)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Blob).serve_forever()
"""


@contextmanager
def served_blob(address: str, size_bytes: int, wrap: Callable[[list[str]], list[str]] = list) -> Iterator[str]:
    """The URL of `size_bytes` of random data served over HTTP on `address` (run through `wrap`: in the caches'
    host with CacheHost.wrap)."""
    port = random.randrange(28000, 30000)
    process = subprocess.Popen(wrap(["python3", "-c", BLOB_SERVER, str(size_bytes), address, str(port)]))
    try:
        deadline = time.monotonic() + 10
        while not listening(port, address) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        yield f"http://{address}:{port}/blob"
    finally:
        process.kill()
        process.wait()


def outward_address() -> str:
    """This host's address on its way out (not a bridge's): where a build container reaches it as an origin."""
    route = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True)
    words = route.stdout.split()
    return words[words.index("src") + 1]
