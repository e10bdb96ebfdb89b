"""What a worker process makes once and hands to every task it runs: its stores (one Redis connection pool) and its
registry sessions. Made on first use in the process that runs the task, so a prefork child never shares its
parent's sockets; registry sessions are per thread too, for a worker started with a thread pool."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from config.settings import Settings
from worker.registry import RegistrySessions
from worker.stores import Stores, open_stores


class ProcessWiring:
    """The stores and registry sessions of the current process, made once."""

    def __init__(self, settings: Settings, announce_rebuilt: Callable[[str], None] | None = None):
        self._settings = settings
        self._announce_rebuilt = announce_rebuilt
        self._pid: int | None = None
        self._stores: Stores | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def stores(self) -> Stores:
        with self._lock:
            if self._pid != os.getpid():
                self._stores = open_stores(self._settings, patient=True, announce_rebuilt=self._announce_rebuilt)
                self._pid = os.getpid()
            return self._stores

    def registries(self) -> RegistrySessions:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None or self._local.pid != os.getpid():
            sessions = RegistrySessions(insecure_registries=frozenset(self._settings.insecure_registries),
                                        timeout_s=self._settings.registry_timeout_s)
            self._local.sessions, self._local.pid = sessions, os.getpid()
        return sessions
