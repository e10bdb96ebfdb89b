"""Where Redis is, as every component's client takes it: one server named by IMAGEBUILDER_REDIS_URL, or the master
that Redis Sentinel names (IMAGEBUILDER_REDIS_SENTINELS), for redis-py, kombu's broker and result backend, and
celery-redbeat alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SOCKET_TIMEOUT_S = 2.0  # a sentinel that does not answer in this long is passed for the next one
# A dead master is noticed within this long on a connection that is waiting for it (a killed host sends no RST).
REDIS_SOCKET_TIMEOUT_S = 30.0
REDIS_CONNECT_TIMEOUT_S = 5.0
TLS_QUERY_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


@dataclass(frozen=True)
class RedisTarget:
    """IMAGEBUILDER_REDIS_URL names the server, the database, the password and TLS (`rediss://`); with sentinels,
    they say which server is the master named `master_name` now (the URL's host and port are not used)."""

    url: str = field(repr=False)  # may hold the password
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "imagebuilder"
    sentinel_password: str = field(default="", repr=False)
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    def server_options(self) -> dict[str, Any]:
        """The master's credentials, database and TLS, as redis-py's connection keywords."""
        parts = urlsplit(self.url)
        options = {"db": int(parts.path.strip("/") or 0), "password": _unquoted(parts.password),
                   "username": _unquoted(parts.username)}
        return {**{k: v for k, v in options.items() if v is not None}, **self.tls_options()}

    def tls_options(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        query = parse_qs(urlsplit(self.url).query)
        return {"ssl": True, **{name: query[name][0] for name in TLS_QUERY_OPTIONS if name in query}}

    def sentinel_options(self) -> dict[str, Any]:
        """How to talk to the sentinels themselves: their own password, the same TLS."""
        password = {"password": self.sentinel_password} if self.sentinel_password else {}
        return {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S, "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S,
                **password, **self.tls_options()}

    def celery_url(self) -> str:
        """The broker's and the result backend's URL: the server's, or one `sentinel://` per sentinel."""
        if not self.sentinel:
            return self.url
        parts = urlsplit(self.url)
        credentials = parts.netloc.rpartition("@")[0]
        userinfo = f"{credentials}@" if credentials else ""
        return ";".join(f"sentinel://{userinfo}{_host(host)}:{port}{parts.path or '/0'}"
                        for host, port in self.sentinels)

    def celery_transport_options(self) -> dict[str, Any]:
        if not self.sentinel:
            return {}
        return {"master_name": self.master_name, "sentinel_kwargs": self.sentinel_options()}

    def redbeat_options(self) -> dict[str, Any]:
        """celery-redbeat's `redbeat_redis_url` and `redbeat_redis_options`."""
        if not self.sentinel:
            return {"redbeat_redis_url": self.url}
        server = self.server_options()
        options = {"sentinels": list(self.sentinels), "service_name": self.master_name,
                   "sentinel_kwargs": self.sentinel_options(), "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
                   **{k: server[k] for k in ("db", "password", "username") if k in server}}
        tls = {"redbeat_redis_use_ssl": self.tls_options()} if self.tls else {}
        return {"redbeat_redis_url": "redis-sentinel://", "redbeat_redis_options": options, **tls}


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port[,host:port...]` (IPv6 in brackets); raises ValueError naming the entry's problem."""
    return tuple(_sentinel(item.strip()) for item in value.split(",") if item.strip())


def _sentinel(item: str) -> tuple[str, int]:
    parts = urlsplit(f"//{item}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.username or parts.path:
        raise ValueError("each sentinel must be host:port (an IPv6 address in brackets), separated by commas")
    return parts.hostname, port


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _unquoted(value: str | None) -> str | None:
    return unquote(value) if value else None
