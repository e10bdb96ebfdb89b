"""The build side: the Celery tasks, the pipeline a build runs through, its builders, the engine and registry
adapters."""
