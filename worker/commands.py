"""The worker's commands of `imagebuilder`, installed under the `imagebuilder.commands` entry points."""

from __future__ import annotations

import click

from config.settings import load_settings
from core.outcomes import exiting_on_errors

PASSED_ON = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=PASSED_ON)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker on the builds and checks queues; extra arguments go to `celery worker`."""
    from worker.main import run_worker  # imports docker: only this command needs it

    with exiting_on_errors():
        run_worker(load_settings(), celery_args)


@click.command(context_settings=PASSED_ON)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run the scheduler (Celery beat with celery-redbeat; several may run, one is active)."""
    from worker.beat import run_beat

    with exiting_on_errors():
        run_beat(load_settings(), celery_args)
