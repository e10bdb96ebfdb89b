"""Celery's own result of a build's task, laid out for the build's end to write (core.stores.ending.TaskResult):
the task then stores none itself (ignore_result), and a success is one round trip, not two."""

from __future__ import annotations

import json

from celery import Task, states

from core.result import utcnow
from core.stores.ending import TaskResult

_RETURN_VALUE = "imagebuilder: the final record goes here"


def success_of(task: Task) -> TaskResult:
    """SUCCESS, as the task's result backend would encode it (the metadata Celery's Redis backend stores for a
    task), around the place of its return value."""
    request, backend = task.request, task.backend
    meta = {"status": states.SUCCESS, "result": _RETURN_VALUE, "traceback": None,
            "children": backend.current_task_children(request), "date_done": utcnow().isoformat(),
            "task_id": request.id}
    meta.update({name: value for name, value in (("group_id", request.group), ("parent_id", request.parent_id))
                 if value})
    before, after = _around(backend.encode(meta))
    return TaskResult(backend.get_key_for_task(request.id).decode(), before, after, backend.expires)


def _around(encoded: str | bytes) -> tuple[str, str]:
    """The encoded metadata before and after the return value's place (JSON, uncompressed, as celery_config sets)."""
    text = encoded.decode() if isinstance(encoded, bytes) else encoded
    before, found, after = text.partition(json.dumps(_RETURN_VALUE))
    if not found:
        raise ValueError("Celery's result is not encoded as JSON: result_serializer must be json, uncompressed")
    return before, after
