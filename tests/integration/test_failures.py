"""Failures end clearly: bad push credentials, bad input refused before queueing, the feature flag off."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis
import yaml

from core.phases import BuildPhase
from tests.integration.conftest import IMAGEBUILDER, WRONG_PUSH_DB, Stack
from tests.integration.test_builds import WAIT_S, target_digest

pytestmark = pytest.mark.integration
IDLE_DB = 2  # no worker listens here: anything queued by mistake stays visible


def cli(stack: Stack, *args: str, redis_db: int = 0, stdin: str | None = None, **env: str):
    return subprocess.run(
        [str(IMAGEBUILDER), *args], input=stdin, capture_output=True, text=True, timeout=WAIT_S,
        env=stack.process_env(redis_db, **env),
    )


def queued_and_recorded(stack: Stack, db: int) -> tuple[int, int]:
    conn = redis.Redis(port=stack.redis.port, db=db)
    try:
        return conn.llen("builds"), len(list(conn.scan_iter("imagebuilder:*")))
    finally:
        conn.close()


def test_wrong_push_credentials_end_failed_never_succeeded(stack, wrong_push_worker, unique, tmp_path):
    # Given a worker whose push password is wrong, and a spec that was never built
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"}))
    # When the spec is submitted and waited for
    done = cli(stack, "submit", str(spec_file), "--wait", "--json", redis_db=WRONG_PUSH_DB,
               PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD="not-the-push-password")
    # Then it ends Failed with an auth message, the CLI exits non-zero, and nothing is at the target
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert result["phase"] == BuildPhase.FAILED.value
    assert "rejected the credentials" in result["error"] and stack.push_registry.host in result["error"]
    assert target_digest(stack, result["image"]) is None


@pytest.mark.parametrize("item", ["jq; touch /x", "$(id)", "jq\ncurl", "--allow-unauthenticated"])
@pytest.mark.parametrize("manager", ["apt", "pip", "conda"])
def test_injection_attempts_are_refused_at_submit_and_nothing_is_queued(stack, tmp_path, manager, item):
    # Given a spec with a hostile package item
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "evil", "baseImage": stack.busybox_base, "packages": {manager: [item]}}))
    # When it is submitted
    done = cli(stack, "submit", str(spec_file), redis_db=IDLE_DB)
    # Then the CLI exits 2 naming the field and the item, and Redis holds no task and no record
    assert done.returncode == 2, done.stdout
    assert f"packages.{manager}[0]" in done.stderr and json.dumps(item) in done.stderr
    assert queued_and_recorded(stack, IDLE_DB) == (0, 0)


@pytest.mark.parametrize(
    ("env", "words"),
    [({"PRIMEHUB_FEATURE_CUSTOM_IMAGE": "false"}, "set PRIMEHUB_FEATURE_CUSTOM_IMAGE=true to enable it"),
     ({"PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": ""}, "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT is not set")],
)
def test_disabled_or_unconfigured_service_refuses_saying_what_to_set(stack, tmp_path, env, words):
    # Given the feature flag off, or no push registry configured
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"name: refused\nbaseImage: {stack.busybox_base}\n")
    # When a valid spec is submitted
    done = cli(stack, "submit", str(spec_file), redis_db=IDLE_DB, **env)
    # Then it is refused with a message naming the variable, and nothing is queued
    assert done.returncode == 2 and words in done.stderr
    assert queued_and_recorded(stack, IDLE_DB) == (0, 0)


def test_status_of_an_unknown_id_is_an_error_not_pending(stack):
    done = cli(stack, "status", "no-such-build", redis_db=IDLE_DB)
    assert done.returncode == 2 and "no build with id 'no-such-build'" in done.stderr


ACCEPTING_DB = 15  # no worker: what is accepted stays queued


def test_real_users_package_items_are_accepted_and_null_lists_mean_empty(stack, tmp_path):
    # Given items from public Dockerfiles, environment files and PrimeHub's docs, refused by earlier versions
    packages = {"apt": ["mesos=1.2*"],
                "conda": ["SQLAlchemy>=0.8.3", "BeautifulSoup=4.5.1*", "types-PyMySQL", "cartopy >= 0.20.0",
                          "r-base=3.3.1 1", "-c pytorch -c fastai fastai"]}
    results = {}
    for name, spec_packages in (("real", packages), ("null", None), ("nullapt", {"apt": None}), ("none", {})):
        spec_file = tmp_path / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump({"name": name, "baseImage": stack.busybox_base,
                                             "packages": spec_packages}))
        # When each is submitted
        done = cli(stack, "submit", str(spec_file), "--json", redis_db=ACCEPTING_DB)
        # Then it is accepted and queued
        assert done.returncode == 0, done.stderr
        results[name] = json.loads(done.stdout)
    assert queued_and_recorded(stack, ACCEPTING_DB)[0] == 4
    # And `packages: null` and `apt: null` give the tag of a spec without packages, as PrimeHub's controller does
    tags = {name: result["image"].rsplit(":", 1)[1] for name, result in results.items()}
    assert tags["null"] == tags["nullapt"] == tags["none"] != tags["real"]


@pytest.mark.parametrize(("item", "words"), [
    ("-c https://conda.example/private numpy", "a channel is a name"),
    ("-c conda-forge --override-channels numpy", "other options are not allowed"),
    ("https://conda.example/numpy-1.0.tar.bz2", "URLs and other options are not allowed"),
])
def test_conda_lines_with_urls_or_other_options_stay_refused(stack, tmp_path, item, words):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "evil", "baseImage": stack.busybox_base, "packages": {"conda": [item]}}))
    done = cli(stack, "submit", str(spec_file), redis_db=IDLE_DB)
    assert done.returncode == 2 and "packages.conda[0]" in done.stderr and words in done.stderr
    assert queued_and_recorded(stack, IDLE_DB) == (0, 0)
