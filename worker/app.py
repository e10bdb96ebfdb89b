"""The Celery app factory: configuration only, no tasks, so the producer can send without importing docker."""

from __future__ import annotations

from celery import Celery

from config.celery_config import celery_config
from config.settings import Settings


class ImageBuilderCelery(Celery):
    """A Celery app that carries the Settings it was built from, for the tasks registered on it."""

    def __init__(self, settings: Settings):
        super().__init__("imagebuilder", set_as_current=False)
        self.settings = settings
        self.config_from_object(celery_config(settings))


def create_app(settings: Settings) -> ImageBuilderCelery:
    return ImageBuilderCelery(settings)
