"""Worker entry points: the app with its tasks and reaper, and running a Celery worker on the builds and checks
queues."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from config.celery_config import WORKER_QUEUES, check_delivery_settings
from config.settings import Settings
from worker.app import ImageBuilderCelery, create_app
from worker.buildkit import BuildKitUnavailable, DockerCli, find_buildkit_cli
from worker.engine import check_engine_settings
from worker.errors import ConfigurationError
from worker.reaper import Reaper
from worker.tasks import register_tasks

logger = logging.getLogger(__name__)


def create_worker_app(settings: Settings) -> ImageBuilderCelery:
    """The worker's app; refuses settings under which Redis would hand a running build to a second worker."""
    check_delivery_settings(settings)
    app = create_app(settings)
    register_tasks(app)
    app.steps["worker"].add(Reaper)
    return app


def choose_builder(settings: Settings) -> DockerCli | None:
    """The Docker client for BuildKit builds, or None for classic ones, as IMAGEBUILDER_BUILDER asks: by default
    BuildKit wherever a client here runs it; `buildkit` refuses to start without one."""
    if settings.builder == "classic":
        logger.info("builder: classic (the engine API through docker-py), as IMAGEBUILDER_BUILDER says")
        return None
    try:
        cli = find_buildkit_cli(settings.docker_cli)
    except BuildKitUnavailable as e:
        if settings.builder == "buildkit":
            raise ConfigurationError(f"IMAGEBUILDER_BUILDER=buildkit, but {e}") from None
        logger.warning("builder: classic (the engine API through docker-py), because %s", e)
        return None
    logger.info("builder: BuildKit through %s", cli)
    return cli


def run_worker(settings: Settings, extra_args: Sequence[str] = ()) -> None:
    """`celery worker -Q builds,checks` with this app; `extra_args` go to Celery as they are. The builder is chosen
    first, so the pool's processes inherit the choice."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/MainProcess] %(message)s")
    app = create_worker_app(settings)
    check_engine_settings()
    app.buildkit_cli = choose_builder(settings)
    # Several workers on one host (compose --scale, host networking) need distinct node names.
    naming = [] if any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in extra_args) else [
        "--hostname", f"builder-{uuid.uuid4().hex[:8]}@%h"]
    app.worker_main(["worker", "--queues", ",".join(WORKER_QUEUES), "--loglevel", "INFO", *naming, *extra_args])
