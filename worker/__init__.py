"""The build side: the contract (spec, result, states), the Celery app and task, and the Docker/registry adapters."""
