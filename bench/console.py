"""The console's spec list over 10,000 stored specs (each with a last build, every other one scheduled): server time
per page of `/ui/specs` against `GET /specs` (JSON) for the same page, both served in this process by the same app
over the same Redis, taking turns. Prints the p95 of each, then the median ratio (goal: at most 1.5) last."""

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from config.settings import Settings  # noqa: E402
from core.spec import parse_spec  # noqa: E402
from core.stores.schedules import parse_schedule  # noqa: E402
from core.stores.wiring import open_stores  # noqa: E402
from devstack.seeding import built_before
from devstack.services import RedisServer  # noqa: E402
from producer.api import create_api  # noqa: E402
from producer.console.routes import SPECS_PER_PAGE  # noqa: E402

SPECS = int(os.environ.get("BENCH_SPECS", "10000"))
PAGES = int(os.environ.get("BENCH_PAGES", "300"))
TOKEN = "bench-token-0123456789"
FILTER = "-07"  # matches 1,000 of the 10,000 names


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imagebuilder-bench-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis").start()
        try:
            settings = bench_settings(redis_server.url())
            seed(settings)
            run(settings)
        finally:
            redis_server.stop()


def bench_settings(redis_url: str) -> Settings:
    os.environ.update({"IMAGEBUILDER_REDIS_URL": redis_url, "IMAGEBUILDER_API_TOKENS": TOKEN,
                       "PRIMEHUB_FEATURE_CUSTOM_IMAGE": "true",
                       "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": "registry.example:5000",
                       "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": "registry.example:5000/team"})
    return Settings()


def seed(settings: Settings) -> None:
    """10,000 specs, each with a succeeded build in its history; every other one on a cron schedule."""
    stores = open_stores(settings)
    for i in range(SPECS):
        spec = parse_spec({"name": f"spec-{i:05d}", "baseImage": "debian:bookworm",
                           "packages": {"apt": ["curl", "jq"], "pip": ["requests==2.32.3"]}})
        stored, _ = stores.specs.apply(spec)
        built_before(stores, stored, f"seed-{i}", digest="sha256:" + f"{i:064x}",
                     image=f"registry.example:5000/team/{spec.name}:{stored.tag}")
        if i % 2 == 0:
            stores.schedules.set(parse_schedule(spec.name, cron="0 3 * * *", tz="Europe/Berlin"))
    stores.close()


def run(settings: Settings) -> None:
    with TestClient(create_api(settings), base_url="http://127.0.0.1") as http:
        console = signed_in(http)
        offsets = [random.randrange(0, SPECS - SPECS_PER_PAGE) for _ in range(PAGES)]
        for offset in offsets[:20]:  # warm both paths (template compilation, connection pools)
            json_page(http, offset), console_page(console, offset)
        pairs = [(timed(lambda o=o: console_page(console, o)), timed(lambda o=o: json_page(http, o)))
                 for o in offsets]
        filtered = [timed(lambda: console_page(console, 0, FILTER)) for _ in range(PAGES // 3)]
    ui, api = [p[0] for p in pairs], [p[1] for p in pairs]
    print(f"{PAGES} pages of {SPECS_PER_PAGE} out of {SPECS} specs, at random offsets, taking turns")
    print(f"GET /ui/specs?name={FILTER} (name filter over all {SPECS}): median "
          f"{ms(statistics.median(filtered))}, p95 {ms(p95(filtered))}")
    print(f"GET /ui/specs: median {ms(statistics.median(ui))}, p95 {ms(p95(ui))}")
    print(f"GET /specs (JSON): median {ms(statistics.median(api))}, p95 {ms(p95(api))}")
    print(f"p95 ratio /ui/specs / GET /specs = {p95(ui) / p95(api):.2f}")
    print(f"console spec list / JSON API, same page: median ratio = {statistics.median(u / a for u, a in pairs):.2f}")


def signed_in(http: TestClient) -> TestClient:
    http.get("/ui/login")
    answer = http.post("/ui/login", data={"token": TOKEN, "csrftoken": http.cookies["csrftoken"]},
                       follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return http


def console_page(http: TestClient, offset: int, name: str = "") -> None:
    answer = http.get("/ui/specs", params={"offset": offset, "name": name})
    assert answer.status_code == 200 and answer.text.count("<th scope=\"row\">") == SPECS_PER_PAGE, answer.status_code


def json_page(http: TestClient, offset: int) -> None:
    answer = http.get("/specs", params={"offset": offset, "limit": SPECS_PER_PAGE},
                      headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and len(answer.json()) == SPECS_PER_PAGE, answer.status_code


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


if __name__ == "__main__":
    main()
