"""The Celery task `imagebuilder.build`: re-validates the message, runs the Builder, records the outcome."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from config.celery_config import BUILD_QUEUE, BUILD_TASK_NAME, redis_client
from worker.app import ImageBuilderCelery
from worker.build import Builder
from worker.errors import BuildFailed, ImageBuilderError, InvalidSpec, RetryableError
from worker.logs import BuildLog
from worker.progress import Progress
from worker.records import BuildRecords
from worker.spec import parse_spec

logger = logging.getLogger(__name__)

MAX_RETRIES = 5
RETRY_BACKOFF_MAX_S = 300


def register_tasks(app: ImageBuilderCelery) -> Task:
    """Register `imagebuilder.build` on `app`, bound to the app's Settings."""

    @app.task(
        name=BUILD_TASK_NAME, bind=True, queue=BUILD_QUEUE, autoretry_for=(RetryableError,),
        retry_backoff=True, retry_backoff_max=RETRY_BACKOFF_MAX_S, retry_jitter=True, max_retries=MAX_RETRIES,
        throws=(BuildFailed,),
    )
    def build(self: Task, spec: Any = None, force: bool = False) -> dict[str, Any]:
        return run_build_task(self, spec, force)

    return build


def run_build_task(task: Task, spec: Any, force: bool) -> dict[str, Any]:
    settings = task.app.settings
    client = redis_client(settings)
    progress = Progress(
        task.request.id,
        BuildRecords(client, expires_s=settings.result_expires_s),
        BuildLog(client, max_lines=settings.log_max_lines, retention_s=settings.log_retention_s),
        on_state=lambda state, meta: task.update_state(state=state, meta=meta),
    )
    try:
        result = Builder(settings, progress).run(parse_spec(spec), force=_parse_force(force))
        return result.model_dump(mode="json")
    except RetryableError as e:
        _retry_or_fail(task, progress, e)
        raise
    except ImageBuilderError as e:
        _fail(progress, e.message)
    except SoftTimeLimitExceeded:
        _fail(progress, f"timed out after {settings.build_timeout_s} s")
    except Exception as e:  # a bug must still end the build, never leave it Running
        logger.exception("build %s crashed", task.request.id)
        _fail(progress, f"internal error: {type(e).__name__}: {e}")
    finally:
        client.close()


def _parse_force(force: Any) -> bool:
    """Messages from other languages are re-validated too: `"false"` must not mean True."""
    if not isinstance(force, bool):
        raise InvalidSpec(f"force: must be a JSON boolean, got {type(force).__name__}")
    return force


def _retry_or_fail(task: Task, progress: Progress, error: RetryableError) -> None:
    if task.request.retries >= task.max_retries:
        progress.fail(f"{error.message} (gave up after {task.request.retries + 1} attempts)")
    else:
        progress.line(f"transient failure, will retry: {error.message}")


def _fail(progress: Progress, message: str) -> None:
    progress.fail(message)
    raise BuildFailed(message) from None
