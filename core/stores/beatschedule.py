"""celery-redbeat's scheduler, riding out a Redis restart or failover: a tick that cannot reach Redis is tried
again shortly instead of ending beat (redbeat's own lock extension has no retry)."""

from __future__ import annotations

import logging

import redis
from redbeat import RedBeatScheduler

logger = logging.getLogger(__name__)

RETRY_TICK_S = 1.0  # about how often a beat that lost Redis asks again; the lock outlives a failover's few seconds


class PatientRedBeatScheduler(RedBeatScheduler):
    def tick(self, *args, **kwargs) -> float:
        try:
            return super().tick(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:  # its lock error (not ours any more) ends beat
            logger.warning("beat: Redis did not answer (%s); trying again in %s s", type(error).__name__,
                           RETRY_TICK_S)
            return RETRY_TICK_S
