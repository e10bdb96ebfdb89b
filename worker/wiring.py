"""What a worker process makes once and hands to every task it runs: its builder, its stores (one Redis connection
pool) and its registry sessions. Stores and sessions are made on first use in the process that runs the task, so a
prefork child never shares its parent's sockets; registry sessions are per thread too, for a thread pool."""

from __future__ import annotations

import os
import threading

from celery import Celery

from config.settings import Settings
from core.registry.client import RegistrySessions, ThreadRegistrySessions
from core.stores.wiring import Stores, open_stores
from worker.builders import Builder
from worker.parts import PartRunner
from worker.platformbuild import PlatformWiring
from worker.sbom.step import SbomStep


class ProcessWiring:
    """The stores and registry sessions of the current process, made once."""

    def __init__(self, settings: Settings, builder: Builder):
        self._settings = settings
        self.builder = builder  # chosen once, in the worker's main process, before its pool starts
        self._pid: int | None = None
        self._stores: dict[bool, Stores] = {}
        self._lock = threading.Lock()
        self._registries = ThreadRegistrySessions(settings)

    def stores(self, *, patient: bool = True) -> Stores:
        """The process's stores: patient ones ride out a Redis restart of up to a minute (a build's), impatient
        ones fail fast (the reaper's rounds, on the worker's event loop)."""
        with self._lock:
            if self._pid != os.getpid():
                self._stores, self._pid = {}, os.getpid()
            if patient not in self._stores:
                self._stores[patient] = open_stores(self._settings, patient=patient)
            return self._stores[patient]

    def platform_wiring(self, app: Celery, worker: str | None) -> PlatformWiring:
        """What this process's multi-platform builds share (made on each call: cheap, and only such builds ask)."""
        stores = self.stores()
        registries = self.registries()
        runner = PartRunner(self._settings, self.builder, stores.parts, stores.builds, stores.log, worker,
                            SbomStep(self._settings, registries))
        return PlatformWiring(self._settings, registries, stores.parts, runner, self.builder.platforms(), app)

    def registries(self) -> RegistrySessions:
        return self._registries.get()
