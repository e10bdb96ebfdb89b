"""The baseline for dispatch benchmarks: a bare Celery app with a no-op task, on the same Redis."""

import os

from celery import Celery

app = Celery("noop", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1)


@app.task(name="bench.noop")
def noop() -> None:
    return None
