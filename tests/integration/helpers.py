"""Small helpers the integration tests share: following a build's log, looking into the engine and registry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import docker
import requests

from devstack.stack import PUSH_PASSWORD, PUSH_USER, Stack
from producer.client import BuildClient


def wait_for_line(client: BuildClient, build_id: str, wanted: Callable[[str], bool]) -> str:
    """Follow the build's log until a line matches; that line (AssertionError if the build ends first)."""
    for line in client.logs(build_id, follow=True):
        if wanted(line):
            return line
    raise AssertionError(f"build {build_id} ended without the expected log line: {client.status(build_id)}")


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float) -> float:
    """Poll until `condition()`; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.2)
    return time.monotonic() - start


def all_containers() -> set[str]:
    """Every container on the engine, running or not (by full id)."""
    engine = docker.from_env()
    try:
        return {c["Id"] for c in engine.api.containers(all=True)}
    finally:
        engine.close()


REFERRERS_TAG = re.compile(r"sha256-[0-9a-f]{64}")


def tags_in_push_registry(stack: Stack, repository: str) -> list[str]:
    """The repository's image tags (its referrers tags, `sha256-<hex>`, which list the SBOMs, aside)."""
    response = requests.get(f"http://{stack.push_registry.host}/v2/{repository}/tags/list",
                            auth=(PUSH_USER, PUSH_PASSWORD), timeout=10)
    tags = response.json().get("tags") or [] if response.ok else []
    return [tag for tag in tags if not REFERRERS_TAG.fullmatch(tag)]
