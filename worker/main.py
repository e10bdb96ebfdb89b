"""Worker entry points: the app with its tasks and reaper, and running a Celery worker on the builds and checks
queues and a queue per platform it builds."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from config.celery_config import WORKER_QUEUES, check_delivery_settings
from config.settings import Settings
from core.app import ImageBuilderCelery, create_app
from core.events import IMAGE_CHANGED
from worker.basewatch import announcer
from worker.builders import Builder, choose_builder
from worker.engine import check_engine_settings
from worker.reaper import Reaper
from worker.tasks import register_tasks
from worker.wiring import ProcessWiring

logger = logging.getLogger(__name__)


def create_worker_app(settings: Settings, builder: Builder) -> ImageBuilderCelery:
    """The worker's app; refuses settings under which Redis would hand a running build to a second worker. Its
    builds go to `builder`; a stored spec's new image that others are built on queues their check."""
    check_delivery_settings(settings)
    app = create_app(settings)
    app.wiring = ProcessWiring(settings, builder)  # the reaper's too
    register_tasks(app, app.wiring)
    IMAGE_CHANGED.subscribe(announcer(app))
    app.steps["worker"].add(Reaper)
    return app


def run_worker(settings: Settings, extra_args: Sequence[str] = ()) -> None:
    """`celery worker -Q builds,checks` with this app; `extra_args` go to Celery as they are. The builder is chosen
    first, so the pool's processes inherit the choice."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/MainProcess] %(message)s")
    check_engine_settings()
    app = create_worker_app(settings, choose_builder(settings))
    # Several workers on one host (compose --scale, host networking) need distinct node names.
    naming = [] if any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in extra_args) else [
        "--hostname", f"builder-{uuid.uuid4().hex[:8]}@%h"]
    queues = [*WORKER_QUEUES, *platform_queues(app.wiring.builder)]
    # Workers need not know each other (a cancel is a Redis key, not a revoke): without gossip and mingle, a worker
    # back from a lost broker connection consumes at once, with nothing else to restart.
    app.worker_main(["worker", "--queues", ",".join(queues), "--loglevel", "INFO", "--without-gossip",
                     "--without-mingle", *naming, *extra_args])


def platform_queues(builder: Builder) -> list[str]:
    """A queue per platform the builder takes builds for, so that each platform's builds go where they can run."""
    return [platform.queue for platform in sorted(builder.platforms(), key=lambda p: p.value)]
