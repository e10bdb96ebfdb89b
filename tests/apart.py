"""Running a coroutine on an event loop of its own, in a thread of its own: the browser tests' Playwright keeps a
loop running in the main thread for the whole session, and asyncio.run refuses to start beside it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
