"""The broker's transport for a Sentinel-managed Redis: kombu's own, made to ride out a failover with builds in
flight. When the connection drops, Celery collects the transport and then closes the connection; closing a channel
that still holds unacknowledged deliveries asks for a pool on the collected transport, and kombu's AttributeError
there ends the worker. Here that is the connection error it is, which Celery's reconnection passes by; such a
delivery stays in the broker's unacknowledged set, and if it is handed out again after the visibility timeout,
it finds its build ended and is ignored (worker/tasks.py).

kombu finds a transport by its URL's scheme, also each time it moves on to the next sentinel's URL, so the
`sentinel` scheme itself names this transport once this module is imported (core/app.py does)."""

from __future__ import annotations

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import SentinelChannel, SentinelTransport

SENTINEL_SCHEME = "sentinel"


class FailoverSentinelChannel(SentinelChannel):
    def _get_pool(self, asynchronous: bool = False):
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection was closed after it was lost")
        return super()._get_pool(asynchronous)


class FailoverSentinelTransport(SentinelTransport):
    Channel = FailoverSentinelChannel


TRANSPORT_ALIASES[SENTINEL_SCHEME] = f"{__name__}:{FailoverSentinelTransport.__name__}"
