"""Passwords never leak: after good and failed builds, no Redis byte, log line or result holds one."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import redis

from producer.client import BuildClient
from tests.integration.conftest import (
    PULL_PASSWORD,
    PULL_USER,
    PUSH_PASSWORD,
    PUSH_USER,
    WRONG_PUSH_DB,
    Stack,
)
from tests.integration.test_failures import cli

pytestmark = pytest.mark.integration
WRONG_PUSH_PASSWORD = "not-the-push-password"


def needles() -> list[str]:
    """Each secret as it is, and in the base64 `auth` form Docker configs carry."""
    pairs = [(PUSH_USER, PUSH_PASSWORD), (PULL_USER, PULL_PASSWORD), (PUSH_USER, WRONG_PUSH_PASSWORD)]
    return [p for _, p in pairs] + [base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in pairs]


def redis_dump(stack: Stack) -> str:
    """Every key and value of every database in use, whatever its type."""
    chunks = []
    for db in range(16):
        conn = redis.Redis(port=stack.redis.port, db=db)
        for key in conn.scan_iter():
            chunks.append(repr(key) + repr(_value(conn, key)))
        conn.close()
    return "\n".join(chunks)


def _value(conn: redis.Redis, key: bytes) -> object:
    kind = conn.type(key).decode()
    readers = {
        "string": conn.get, "list": lambda k: conn.lrange(k, 0, -1), "hash": conn.hgetall,
        "set": conn.smembers, "zset": lambda k: conn.zrange(k, 0, -1), "stream": lambda k: conn.xrange(k),
    }
    return readers.get(kind, lambda k: kind)(key)


def files_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode(errors="replace") for p in root.rglob("*") if p.is_file())


def test_no_password_appears_in_redis_logs_results_or_errors(stack, worker, wrong_push_worker, unique, tmp_path):
    # Given a successful build, a build with a wrong pull secret, and one with a wrong push password
    outputs = []
    for name, secret, db, env in (
        (f"{unique}-ok", "private", 0, {}),
        (f"{unique}-pull", "wrong", 0, {}),
        (f"{unique}-push", "private", WRONG_PUSH_DB, {"PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD": WRONG_PUSH_PASSWORD}),
    ):
        spec_file = tmp_path / f"{name}.json"
        spec_file.write_text(json.dumps({"name": name, "baseImage": stack.busybox_base, "pullSecret": secret}))
        done = cli(stack, "submit", str(spec_file), "--wait", "--json", redis_db=db, **env)
        logs = cli(stack, "logs", json.loads(done.stdout)["id"], redis_db=db, **env)
        outputs += [done.stdout, done.stderr, logs.stdout]
    assert [json.loads(o)["phase"] for o in outputs[0::3]] == ["Succeeded", "Failed", "Failed"]
    # And the objects that carry secrets in memory
    with BuildClient(stack.settings()) as client:
        outputs += [repr(client), repr(stack.settings()), str(stack.settings())]
    # When everything reachable is searched: Redis (live and its AOF files), worker logs, CLI output
    haystacks = {
        "redis": redis_dump(stack),
        "redis files": files_text(stack.redis.workdir),
        "main worker log": worker.log_text,
        "wrong-push worker log": wrong_push_worker.log_text,
        "every worker's, beat's and API's log": "\n".join(
            p.read_text(errors="replace") for pattern in ("worker-*.log", "beat-*.log", "api-*.log")
            for p in stack.workdir.glob(pattern)),
        "cli output": "\n".join(outputs),
    }
    # Then no secret appears anywhere
    leaks = [(where, n) for where, text in haystacks.items() for n in needles() if n in text]
    assert leaks == []
    assert all(haystacks.values())  # each place really had content to search
