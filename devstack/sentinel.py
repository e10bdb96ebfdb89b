"""A Redis that fails over, on loopback: a master, a replica and three `redis-sentinel`s (quorum 2), all with
passwords, as the failover tests and bench.failover run it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from devstack.services import Process, RedisServer, free_port, spawn, wait_until

MASTER_NAME = "imagebuilder"
QUORUM = 2
SENTINELS = 3
# How long the sentinels wait for a silent master before they agree it is down: short here, so a test's failover
# takes seconds (Sentinel's own default is 30 s; production settings are the operator's).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
FAILOVER_WITHIN_S = 30
TILT_S = 30  # Sentinel's TILT period


def knows_the_group(sentinel: redis.Redis, replicas: int) -> bool:
    """Whether a sentinel knows the other sentinels and `replicas` replicas of MASTER_NAME: only then can a quorum
    of them fail the master over."""
    view = sentinel.sentinel_master(MASTER_NAME)
    return int(view["num-other-sentinels"]) == SENTINELS - 1 and int(view["num-slaves"]) == replicas


@dataclass
class Sentinel:
    """One `redis-sentinel` watching MASTER_NAME; its config file is its own (Sentinel rewrites it)."""

    workdir: Path
    master_port: int
    redis_password: str = field(repr=False)
    password: str = field(repr=False)
    port: int = field(default_factory=free_port)
    process: Process | None = None

    def start(self) -> Sentinel:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "sentinel.conf"
        if not config.exists():
            config.write_text(self._config())
        self.process = spawn(["redis-sentinel", str(config)], self.workdir / "sentinel.log")
        wait_until(lambda: self.client().ping(), f"redis-sentinel on port {self.port}")
        return self

    def _config(self) -> str:
        return "\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.workdir}", f"requirepass {self.password}",
            f"sentinel sentinel-pass {self.password}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {QUORUM}",
            f"sentinel auth-pass {MASTER_NAME} {self.redis_password}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}", "",
        ])

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2, decode_responses=True)

    def master_port_now(self) -> int | None:
        address = self.client().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(address[1]) if address else None

    def tilted(self) -> bool:
        return bool(int(self.client().info("sentinel")["sentinel_tilt"]))

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@dataclass
class SentinelRedis:
    """The group: `servers[0]` starts as master, the others (`replicas` of them) as its replicas."""

    workdir: Path
    replicas: int = 1
    password: str = field(default_factory=lambda: f"RedisPw-{secrets.token_hex(8)}", repr=False)
    sentinel_password: str = field(default_factory=lambda: f"SentinelPw-{secrets.token_hex(8)}", repr=False)
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[Sentinel] = field(default_factory=list)

    def start(self) -> SentinelRedis:
        master = self._server("redis-0", ()).start()
        follows = ("--replicaof", "127.0.0.1", str(master.port))
        self.servers = [master, *(self._server(f"redis-{n}", follows).start() for n in range(1, self.replicas + 1))]
        wait_until(lambda: self._replicas_of(master) == self.replicas, "the replicas to sync with the master")
        self.sentinels = [Sentinel(self.workdir / f"sentinel-{n}", master.port, self.password,
                                   self.sentinel_password).start() for n in range(SENTINELS)]
        wait_until(self._sentinels_see_each_other, "the sentinels to find each other and the replica")
        return self

    def _server(self, name: str, replica_of: tuple[str, ...]) -> RedisServer:
        # Each also authenticates to the master it may follow later: the old master rejoins as a replica.
        return RedisServer(self.workdir / name, password=self.password,
                           extra_args=("--masterauth", self.password, *replica_of))

    def _replicas_of(self, server: RedisServer) -> int:
        """The replicas in sync with `server` (state online: they acknowledge writes, so WAIT counts them)."""
        info = redis.Redis.from_url(server.url()).info("replication")
        return sum(1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online")

    def _sentinels_see_each_other(self) -> bool:
        return all(knows_the_group(s.client(), self.replicas) for s in self.sentinels)

    def env(self, db: int = 0) -> dict[str, str]:
        """The service's settings that name this group."""
        return {"IMAGEBUILDER_REDIS_URL": f"redis://:{self.password}@localhost/{db}",
                "IMAGEBUILDER_REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
                "IMAGEBUILDER_REDIS_MASTER_NAME": MASTER_NAME,
                "IMAGEBUILDER_REDIS_SENTINEL_PASSWORD": self.sentinel_password}

    def master(self) -> RedisServer:
        port = self.sentinels[0].master_port_now()
        return next(server for server in self.servers if server.port == port)

    def kill_master(self) -> RedisServer:
        """SIGKILL the master, as a machine crash would; the server that was it. Not while a sentinel is in TILT
        mode (entered when its timer stalls for two seconds, a loaded machine's hiccup): for its 30 s it would not
        notice, and then find the replicas away from the master too long to promote one (DOWN_AFTER_MS * 10)."""
        self.wait_out_tilt()
        master = self.master()
        master.process.kill()
        return master

    @contextmanager
    def noticing_after(self, down_after_ms: int) -> Iterator[None]:
        """For a while, the sentinels call the master down (and so fail over) only after `down_after_ms`."""
        self._down_after(down_after_ms)
        try:
            yield
        finally:
            self._down_after(DOWN_AFTER_MS)

    def _down_after(self, milliseconds: int) -> None:
        for sentinel in self.sentinels:
            sentinel.client().execute_command("SENTINEL", "SET", MASTER_NAME, "down-after-milliseconds", milliseconds)

    def wait_out_tilt(self) -> None:
        wait_until(lambda: not any(s.tilted() for s in self.sentinels), "the sentinels out of TILT mode",
                   TILT_S + FAILOVER_WITHIN_S)

    def wait_for_new_master(self, old: RedisServer) -> RedisServer:
        wait_until(lambda: all(s.master_port_now() not in (None, old.port) for s in self.sentinels),
                   "the sentinels to promote the replica", FAILOVER_WITHIN_S)
        return self.master()

    def rejoin(self, old: RedisServer) -> None:
        """Restart a killed master (its AOF as it was) as a replica of the new one, as a supervisor that asks the
        sentinels first does (deploy/kubernetes/overlays/sentinel's start script): the sentinels would make it one
        too, after their next look at it, up to ten seconds later."""
        old.extra_args = ("--masterauth", self.password, "--replicaof", "127.0.0.1", str(self.master().port))
        old.start()
        wait_until(lambda: self._replicas_of(self.master()) == self.replicas, "the old master to rejoin as a replica",
                   FAILOVER_WITHIN_S)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()
