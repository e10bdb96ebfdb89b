"""For the `celery` command itself: `celery -A worker.celery_entry worker -Q builds,checks`."""

from config.settings import load_settings
from worker.builders import choose_builder
from worker.main import create_worker_app

settings = load_settings()
app = create_worker_app(settings, choose_builder(settings))
