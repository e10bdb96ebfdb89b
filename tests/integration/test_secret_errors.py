"""A pull secret the worker cannot use fails its build with an error that names the secret and the registry, and
shows API users nothing of where the worker keeps its secrets."""

from __future__ import annotations

import pytest

from core.phases import BuildPhase
from tests.integration.test_builds import WAIT_S

pytestmark = pytest.mark.integration


def write_malformed(path) -> None:
    path.write_text('{"auths": {')


def write_unreadable(path) -> None:
    path.symlink_to("/proc/self/mem")  # a file even root cannot read: EIO at offset 0


def write_without_auths(path) -> None:
    path.write_text('{"credsStore": "desktop"}')


@pytest.mark.parametrize(("write", "why"), [
    (write_malformed, "is unreadable on the worker: not Docker config JSON (JSONDecodeError)"),
    (write_unreadable, "is unreadable on the worker: Input/output error"),
    (write_without_auths, "has no 'auths' object"),
], ids=["malformed", "unreadable", "without-auths"])
def test_a_pull_secret_the_worker_cannot_use_fails_the_build_naming_it_and_no_path(stack, client, api, unique,
                                                                                    write, why):
    # Given a pull secret file on the worker that is malformed, unreadable, or has no `auths`
    write(stack.pull_secrets_dir / f"{unique}.json")
    spec = {"name": unique, "baseImage": stack.busybox_base, "pullSecret": unique}
    # When a spec whose base needs it is built
    build_id = client.submit(spec).id
    ended = client.wait(build_id, timeout_s=WAIT_S)
    # Then it fails naming the secret, the base's registry and what is wrong, in the API's answer too,
    # and neither says where the worker keeps its pull secrets
    answer = api.get(f"/builds/{build_id}")
    assert ended.phase is BuildPhase.FAILED
    assert ended.error == f"pull secret {unique!r} (for registry {stack.private_registry.host!r}) {why}"
    assert answer.json()["error"] == ended.error
    assert str(stack.pull_secrets_dir) not in answer.text and str(stack.workdir) not in answer.text
