"""Worker entry points: the app with its task and reaper, and running a Celery worker on the builds queue."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from config.celery_config import BUILD_QUEUE, check_delivery_settings
from config.settings import Settings
from worker.app import ImageBuilderCelery, create_app
from worker.reaper import Reaper
from worker.tasks import register_tasks


def create_worker_app(settings: Settings) -> ImageBuilderCelery:
    """The worker's app; refuses settings under which Redis would hand a running build to a second worker."""
    check_delivery_settings(settings)
    app = create_app(settings)
    register_tasks(app)
    app.steps["worker"].add(Reaper)
    return app


def run_worker(settings: Settings, extra_args: Sequence[str] = ()) -> None:
    """`celery worker -Q builds` with this app; `extra_args` go to Celery as they are."""
    app = create_worker_app(settings)
    # Several workers on one host (compose --scale, host networking) need distinct node names.
    naming = [] if any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in extra_args) else [
        "--hostname", f"builder-{uuid.uuid4().hex[:8]}@%h"]
    app.worker_main(["worker", "--queues", BUILD_QUEUE, "--loglevel", "INFO", *naming, *extra_args])
