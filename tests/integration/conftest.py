"""One session of real services shared by every integration test: dockerd, Redis, two registries, a worker."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest
import redis

from config.settings import Settings
from devstack.stack import (  # noqa: F401 (re-exported for the tests)
    API_TOKEN,
    IMAGEBUILDER,
    PULL_PASSWORD,
    PULL_USER,
    PUSH_PASSWORD,
    PUSH_USER,
    Stack,
    WorkerProcess,
    local_stack,
    start_api,
    start_worker,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
RUNS_LAST = "runs_last"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked runs_last go after all others: they wait for what the session makes in the background."""
    items.sort(key=lambda item: item.get_closest_marker(RUNS_LAST) is not None)


@pytest.fixture(scope="session", autouse=True)
def arm64_debian_rootfs(request: pytest.FixtureRequest) -> Future[Path] | None:
    """An arm64 Debian takes minutes to make under emulation: begun with the session, in the background, when it
    holds multi-platform tests (which run last); None where this host does not run arm64 or no test needs it."""
    from devstack.baseimage import arm64_debian_rootfs_tar
    from worker.platforms import emulated_platforms

    wanted = any(item.get_closest_marker(RUNS_LAST) for item in request.session.items)
    if not wanted or not any(p.value == "linux/arm64" for p in emulated_platforms()):
        return None
    made: Future[Path] = Future()

    def make() -> None:
        try:
            made.set_result(arm64_debian_rootfs_tar())
        except BaseException as e:  # the tests that wait for it say what went wrong
            made.set_exception(e)

    threading.Thread(target=make, name="arm64-debian", daemon=True).start()  # never holds up the session's end
    return made


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def worker(stack: Stack) -> Iterator[WorkerProcess]:
    process = start_worker(stack, "main")
    yield process
    process.process.stop()


@pytest.fixture(scope="session")
def api(stack: Stack, worker: WorkerProcess) -> Iterator[httpx.Client]:
    """`imagebuilder api` on the main Redis database, and an HTTP client that sends a valid token."""
    process, url = start_api(stack, "main")
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        yield http
    process.stop()


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.settings()


@pytest.fixture
def client(settings: Settings, worker: WorkerProcess):
    from producer.client import BuildClient

    with BuildClient(settings) as build_client:
        yield build_client


@pytest.fixture
def redis_conn(stack: Stack) -> Iterator[redis.Redis]:
    conn = redis.Redis(port=stack.redis.port)
    yield conn
    conn.close()


@pytest.fixture
def unique() -> str:
    """A fresh image name per test, so targets never collide across tests or runs."""
    return f"t{secrets.token_hex(4)}"


WRONG_PUSH_DB = 1  # its own queue, so only builds meant for the wrong-credentials worker reach it


@pytest.fixture
def wrong_push_worker(stack: Stack):
    worker = start_worker(
        stack, "wrongpush", WRONG_PUSH_DB, PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD="not-the-push-password"
    )
    yield worker
    worker.process.stop()


CHROMIUM = "/usr/bin/chromium"
# As root, on a closed network: no sandbox, and none of Chromium's own calls home (they fail, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def playwright():
    """Playwright's one driver for the session: a second one may not start while it runs (its event loop holds
    the main thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright):
    """One headless Chromium (Debian's) for the whole session, driven by Playwright."""
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def hostile():
    """A misbehaving registry on loopback (tests/integration/hostile_registry.py)."""
    from tests.integration.hostile_registry import HostileRegistry

    server = HostileRegistry()
    yield server
    server.close()


@pytest.fixture(scope="session")
def engine_tls(tmp_path_factory):
    """A CA and certificates (openssl) for the second engine's TLS port and its clients."""
    from tests.integration.tls_certs import make_engine_tls

    return make_engine_tls(tmp_path_factory.mktemp("engine-tls"))


@pytest.fixture(scope="session")
def second_engine(stack, engine_tls, tmp_path_factory):
    """A second Docker engine standing in for another host (devstack.services.SecondDockerd), on a socket of its
    own and on a loopback TLS port that checks client certificates."""
    from devstack.services import SecondDockerd

    engine = SecondDockerd(tmp_path_factory.mktemp("engine2"),
                           tls=(engine_tls.ca, engine_tls.server_cert, engine_tls.server_key)).start()
    yield engine
    engine.stop()
