"""Settings read once from the environment and `.env`, and the Celery configuration derived from them."""
