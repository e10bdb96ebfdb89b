"""Docker Hub's token flow for real: a docker-registry with `auth: token` and a token service that signs short-lived
JWTs, met by the engine (pulls and pushes) and by the service's own manifest HEADs (skip checks, scheduling)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from core.errors import AuthFailed
from core.phases import BuildPhase
from core.reference import parse_reference
from core.registry.client import RegistryClient
from core.registry.credentials import RegistryCredentials
from core.stored import Trigger
from core.stores.connection import redis_client
from core.stores.wiring import stores_on
from devstack.baseimage import BUSYBOX_IMAGE, push
from devstack.services import Registry
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.token_issuer import ANONYMOUS, Rule, TokenIssuer

pytestmark = pytest.mark.integration
TOKEN_DB = 16
WAIT_S = 300
SHORT_TOKEN_LIFE_S = 2
PUSHER, PULLER = "hub-pusher", "hub-puller"
PASSWORDS = {PUSHER: f"HubPushPw-{secrets.token_hex(8)}", PULLER: f"HubPullPw-{secrets.token_hex(8)}"}
RULES = [Rule(PUSHER, "hub/*", ("pull", "push")), Rule(PUSHER, "public/*", ("pull", "push")),
         Rule(PULLER, "hub/*", ("pull",)), Rule(ANONYMOUS, "public/*", ("pull",))]


@dataclass
class Hub:
    """The token-auth registry, its token service, and where its pull secret lives."""

    registry: Registry
    issuer: TokenIssuer
    pull_secrets_dir: Path

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def base(self) -> str:
        return f"{self.host}/hub/base:1"

    def env(self) -> dict[str, str]:
        """Settings for a service that pushes here as PUSHER and pulls bases with the `hub` secret (PULLER)."""
        return {"PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": self.host,
                "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME": PUSHER,
                "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD": PASSWORDS[PUSHER],
                "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": f"{self.host}/hub",
                "IMAGEBUILDER_PULL_SECRETS_DIR": str(self.pull_secrets_dir)}

    def heads_and_gets(self, since: int) -> list[str]:
        """The manifest requests in the registry's access log after byte `since`: method and status."""
        lines = self.registry.process.log_path.read_text()[since:].splitlines()
        return [" ".join(line.split('"')[1].split()[:1] + line.split('"')[2].split()[:1]) for line in lines
                if '/manifests/' in line and line.startswith("127.0.0.1 - ")]

    def log_size(self) -> int:
        return len(self.registry.process.log_path.read_text())


def push_variant(hub: Hub, repository: str, marker: str) -> str:
    """Push a BusyBox variant (distinct by an ENV) to the hub as PUSHER; its manifest digest."""
    engine = docker.from_env()
    container = engine.containers.create(BUSYBOX_IMAGE, "true")
    container.commit(repository=f"{hub.host}/{repository}", tag="1", changes=[f"ENV VARIANT={marker}"])
    container.remove()
    push(engine, f"{hub.host}/{repository}:1", PUSHER, PASSWORDS[PUSHER])
    engine.images.remove(f"{hub.host}/{repository}:1")
    return RegistryClient(hub.host, RegistryCredentials(hub.host, PUSHER, PASSWORDS[PUSHER])).manifest_digest(
        parse_reference(f"{hub.host}/{repository}:1"))


@pytest.fixture(scope="module")
def hub(stack, tmp_path_factory) -> Hub:
    work = tmp_path_factory.mktemp("token-hub")
    issuer = TokenIssuer(work / "issuer", PASSWORDS, RULES)
    registry = Registry(work / "registry", token_auth=issuer.registry_auth).start()
    secrets_dir = work / "pull-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "hub.json").write_text(json.dumps({"auths": {registry.host: {
        "username": PULLER, "password": PASSWORDS[PULLER]}}}))
    running = Hub(registry, issuer, secrets_dir)
    push_variant(running, "hub/base", "first")
    push_variant(running, "public/busybox", "public")
    yield running
    registry.stop()
    issuer.close()


@pytest.fixture(scope="module")
def hub_worker(stack, hub: Hub):
    worker = start_worker(stack, "tokenhub", TOKEN_DB, **hub.env())
    yield worker
    worker.process.stop()


@pytest.fixture
def hub_client(stack, hub: Hub, hub_worker):
    with BuildClient(stack.settings(TOKEN_DB, **hub.env())) as client:
        yield client


def test_a_build_pulls_and_pushes_with_credentials_through_tokens(hub, hub_client, hub_worker, unique):
    # Given a spec whose base is in the token registry, readable with the `hub` pull secret
    spec = {"name": unique, "baseImage": hub.base, "pullSecret": "hub"}
    # When it is built, then submitted again unchanged
    built = hub_client.wait(hub_client.submit(spec).id, timeout_s=WAIT_S)
    since = hub.log_size()
    again = hub_client.wait(hub_client.submit(spec).id, timeout_s=WAIT_S)
    # Then the engine pulled the base with a pull token for PULLER and pushed with a push token for PUSHER
    assert built.phase is BuildPhase.SUCCEEDED, built.error
    assert built.image.startswith(f"{hub.host}/hub/{unique}:") and built.digest.startswith("sha256:")
    assert any(("hub/base", ("pull",)) in issued.granted for issued in hub.issuer.tokens_for(PULLER))
    assert any((f"hub/{unique}", ("push", "pull")) in issued.granted or (f"hub/{unique}", ("pull", "push"))
               in issued.granted for issued in hub.issuer.tokens_for(PUSHER))
    # And the resubmission was skipped after one HEAD of the target, with no manifest GET
    assert again.skipped and again.phase is BuildPhase.SUCCEEDED and again.digest == built.digest
    assert [r for r in hub.heads_and_gets(since) if r.startswith("HEAD") and r.endswith("200")] == ["HEAD 200"]
    assert not [r for r in hub.heads_and_gets(since) if r.startswith("GET")]
    # And a user with pull rights pulls the image back through the engine
    engine = docker.from_env()
    pulled = engine.images.pull(built.image, auth_config={"username": PULLER, "password": PASSWORDS[PULLER]})
    assert pulled.attrs["RepoDigests"] and built.digest in pulled.attrs["RepoDigests"][0]
    engine.images.remove(built.image, force=True)
    # And neither password reached the worker's log
    assert not [password for password in PASSWORDS.values() if password in hub_worker.log_text]


def test_a_public_repository_is_pulled_and_checked_anonymously(hub):
    # Given a public repository, which the token service lets anyone pull, and the engine with no credentials
    public = f"{hub.host}/public/busybox:1"
    engine = docker.from_env()
    anonymous_before = len(hub.issuer.tokens_for(ANONYMOUS))
    # When the engine pulls it, and a client without credentials checks it and a private base
    pulled = engine.images.pull(public)
    digest = RegistryClient(hub.host).manifest_digest(parse_reference(public))
    with pytest.raises(AuthFailed) as refused:
        RegistryClient(hub.host).manifest_digest(parse_reference(hub.base))
    # Then both went through anonymous tokens, the digests agree, and the private base was refused as such
    assert len(hub.issuer.tokens_for(ANONYMOUS)) >= anonymous_before + 3
    assert f"{hub.host}/public/busybox@{digest}" in pulled.attrs["RepoDigests"]
    assert "rejected anonymous access" in str(refused.value) and "insufficient scope" in str(refused.value)
    engine.images.remove(public, force=True)


def test_a_token_is_reused_until_it_expires_then_renewed(hub):
    # Given a token service whose tokens last two seconds, and a client that has not asked for one yet
    hub.issuer.life_s = SHORT_TOKEN_LIFE_S
    try:
        client = RegistryClient(hub.host, RegistryCredentials(hub.host, PULLER, PASSWORDS[PULLER]))
        reference = parse_reference(hub.base)
        tokens_before, since = len(hub.issuer.tokens_for(PULLER)), hub.log_size()
        # When the base is checked three times at once
        digests = {client.manifest_digest(reference) for _ in range(3)}
        first_tokens, first_requests = len(hub.issuer.tokens_for(PULLER)), hub.heads_and_gets(since)
        # And once more after the token has expired
        time.sleep(SHORT_TOKEN_LIFE_S + 0.5)
        assert client.manifest_digest(reference) in digests
    finally:
        hub.issuer.life_s = 300
    # Then one token served the three checks (one challenge, then three accepted HEADs), and one more was fetched
    assert first_tokens == tokens_before + 1
    assert first_requests == ["HEAD 401", "HEAD 200", "HEAD 200", "HEAD 200"]
    assert len(hub.issuer.tokens_for(PULLER)) == tokens_before + 2


def test_a_refused_scope_or_password_is_a_clear_auth_failure(hub, hub_client, unique):
    # Given a repository PULLER may not read, and a wrong password
    forbidden = parse_reference(f"{hub.host}/private/{unique}:1")
    puller = RegistryClient(hub.host, RegistryCredentials(hub.host, PULLER, PASSWORDS[PULLER]))
    wrong = RegistryClient(hub.host, RegistryCredentials(hub.host, PULLER, "not-the-password"))
    refusals_before = hub.issuer.refusals
    # When each is checked
    with pytest.raises(AuthFailed) as refused_scope:
        puller.manifest_digest(forbidden)
    with pytest.raises(AuthFailed) as refused_password:
        wrong.manifest_digest(parse_reference(hub.base))
    # Then the first names the registry, the image and the reason; the second was refused by the token service
    assert hub.host in str(refused_scope.value) and str(forbidden) in str(refused_scope.value)
    assert "insufficient scope" in str(refused_scope.value)
    assert "HTTP 401" in str(refused_password.value) and hub.issuer.refusals == refusals_before + 1
    # And a build whose base the pull secret may not read fails with the engine's refusal as an auth error
    failed = hub_client.wait(hub_client.submit({"name": unique, "baseImage": str(forbidden), "pullSecret": "hub"}).id,
                             timeout_s=WAIT_S)
    assert failed.phase is BuildPhase.FAILED and "rejected the credentials" in failed.error, failed.error
    assert PASSWORDS[PULLER] not in failed.error


def test_the_scheduling_pass_checks_bases_with_heads_through_tokens(stack, hub, hub_client, unique):
    from core.app import create_app
    from core.registry.client import registry_sessions
    from worker.scheduling import SchedulingPass

    # Given two stored specs built on the hub's base, both scheduled to rebuild when it changes
    for name in (f"{unique}-a", f"{unique}-b"):
        _, build = hub_client.specs.apply({"name": name, "baseImage": hub.base, "pullSecret": "hub"})
        assert hub_client.wait(build.id, timeout_s=WAIT_S).phase is BuildPhase.SUCCEEDED
        hub_client.schedules.set(name, every_s=1)
    settings = stack.settings(TOKEN_DB, **hub.env())
    stores = stores_on(redis_client(settings), settings)
    scheduling_pass = SchedulingPass(create_app(settings), settings, stores, registry_sessions(settings))
    tokens_before, since = len(hub.issuer.tokens_for(PULLER)), hub.log_size()
    # When a pass runs with the base unchanged
    unchanged = scheduling_pass.run(now=time.time() + 5)
    # Then both were decided by one HEAD of the base with one pull token, and nothing was rebuilt
    assert unchanged == {"unchanged": 2}
    assert hub.heads_and_gets(since) == ["HEAD 401", "HEAD 200"]
    assert len(hub.issuer.tokens_for(PULLER)) == tokens_before + 1
    # When the base is pushed anew and the next pass runs
    new_base = push_variant(hub, "hub/base", unique)
    changed = scheduling_pass.run(now=time.time() + 10)
    # Then both specs are rebuilt on the new base
    assert changed == {"base-changed": 2}
    for name in (f"{unique}-a", f"{unique}-b"):
        (rebuild,) = [e for e in hub_client.specs.history(name) if e.trigger is not Trigger.SPEC_CHANGED]
        result = hub_client.wait(rebuild.id, timeout_s=WAIT_S)
        assert result.phase is BuildPhase.SUCCEEDED and result.base_digest == new_base, result
