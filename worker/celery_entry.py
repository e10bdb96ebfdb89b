"""For the `celery` command itself: `celery -A worker.celery_entry worker -Q builds,checks`."""

from config.settings import load_settings
from worker.main import create_worker_app

app = create_worker_app(load_settings())
