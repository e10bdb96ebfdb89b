"""The baselines for dispatch benchmarks: a bare Celery app on the same Redis, with a no-op task and a task that
makes one manifest HEAD (a kept session, credentials sent up front), which is all a skipped build needs to do."""

import os

import requests
from celery import Celery

app = Celery("noop", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
# BENCH_ACKS_LATE=1: the delivery guarantee the service's workers keep (a task acknowledged when it ends, put back
# when its process is lost), which costs raw Celery itself about a tenth of its dispatch rate here
ACKS_LATE = bool(os.environ.get("BENCH_ACKS_LATE"))
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1,
                task_acks_late=ACKS_LATE, task_reject_on_worker_lost=ACKS_LATE)
_session = requests.Session()
# user:password for the HEAD, from the environment so that it never travels in a message
_AUTH = tuple(os.environ.get("BENCH_HEAD_AUTH", ":").split(":", 1))
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.head")
def head(url: str) -> str:
    response = _session.head(url, auth=_AUTH, headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]
