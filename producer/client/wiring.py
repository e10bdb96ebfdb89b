"""What a client makes once over its settings: the Celery app it sends with, its stores (one Redis pool), the
submitter and the image chains; and the one place Redis's and the broker's errors become StoreUnavailable for
every call a client part makes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from config.settings import Settings
from core.app import ImageBuilderCelery, create_sender_app
from core.imagechain import ImageChains
from core.stores.connection import redis_client, store_errors
from core.stores.wiring import Stores, stores_on
from core.submission import Submitter

T = TypeVar("T")


@dataclass(frozen=True)
class ClientWiring:
    settings: Settings
    app: ImageBuilderCelery
    stores: Stores
    submitter: Submitter
    chains: ImageChains

    @classmethod
    def of(cls, settings: Settings) -> ClientWiring:
        app, stores = create_sender_app(settings), stores_on(redis_client(settings), settings)
        return cls(settings, app, stores, Submitter(app, settings, stores), ImageChains(stores.specs, settings))

    def close(self) -> None:
        self.stores.close()
        self.app.close()


def translated(part: type[T]) -> type[T]:
    """Every public method of a client part, with Redis's and the broker's errors as StoreUnavailable (a method
    that returns an iterator is translated as it is read)."""
    for name, method in list(vars(part).items()):
        if not name.startswith("_") and inspect.isfunction(method):
            setattr(part, name, _translating(method))
    return part


def _translating(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with store_errors():
            found = method(*args, **kwargs)
        return _translated_items(found) if isinstance(found, Iterator) else found

    return call


def _translated_items(items: Iterator[T]) -> Iterator[T]:
    with store_errors():
        yield from items
