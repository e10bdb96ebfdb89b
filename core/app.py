"""The Celery app factory: configuration only, no tasks, so the producer can send without importing docker."""

from __future__ import annotations

from celery import Celery

from config.celery_config import celery_config
from config.settings import Settings
from core.stores import broker  # noqa: F401 - the `sentinel://` scheme names its transport from here on


class ImageBuilderCelery(Celery):
    """A Celery app that carries the Settings it was built from, for the tasks registered on it."""

    def __init__(self, settings: Settings, *, results: bool = True):
        super().__init__("imagebuilder", set_as_current=False)
        self.settings = settings
        self.wiring = None  # a worker's: what its processes make once (worker/wiring.py)
        config = celery_config(settings)
        if not results:
            config["result_backend"] = None
        self.config_from_object(config)


def create_app(settings: Settings) -> ImageBuilderCelery:
    return ImageBuilderCelery(settings)


def create_sender_app(settings: Settings) -> ImageBuilderCelery:
    """An app that only sends builds. Without a result backend of its own, a send is one LPUSH: the redis
    backend would otherwise SUBSCRIBE to every result it sends for, which the producer never reads (it follows
    the build's record). Workers still store each Celery result for Celery clients."""
    return ImageBuilderCelery(settings, results=False)
