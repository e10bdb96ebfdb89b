"""The BuildKit client's pure parts: its argument list, the progress lines it logs, and its credentials file."""

import collections
import io
import json
import os
from pathlib import Path

from core.registry.credentials import RegistryCredentials
from worker.builders.buildkit import (
    BuildKitProcess,
    BuildKitRun,
    DockerCli,
    cli_environment,
    client_config,
)

CLI = DockerCli("/usr/bin/docker", "20.10.24")


def test_arguments_carry_build_args_and_cache_sources_and_read_the_context_from_stdin():
    run = BuildKitRun(CLI, "r.example/team/x:1", cache_from=["r.example/team/x:1", "r.example/team/x:0"],
                      build_args={"BUILDKIT_INLINE_CACHE": "1"})
    assert run.arguments("/tmp/iid") == [
        "/usr/bin/docker", "build", "--progress=plain", "--iidfile", "/tmp/iid", "-t", "r.example/team/x:1",
        "--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", "r.example/team/x:1",
        "--cache-from", "r.example/team/x:0", "-"]


def test_cached_steps_are_named_and_digest_lines_dropped():
    # Given BuildKit's plain progress for a step that came from the cache
    logged = []
    process = BuildKitProcess(logged.append, check=lambda: None)
    process._process = type("Fake", (), {"stdout": io.BytesIO(
        b"#5 [2/3] RUN apt-get update\n#5 sha256:" + b"a" * 64 + b"\n#5 CACHED\n\n#6 DONE 0.1s\n")})()
    tail = collections.deque(maxlen=5)
    # When it is followed
    process._follow(tail)
    # Then the CACHED line says which step, and the digest-only and empty lines are gone
    assert logged == ["#5 [2/3] RUN apt-get update", "#5 CACHED [2/3] RUN apt-get update", "#6 DONE 0.1s"]
    assert list(tail) == logged


def test_credentials_go_to_a_private_file_that_is_removed_afterwards_never_to_the_environment():
    credentials = RegistryCredentials("r.example", "bot", "s3cret-pw")
    with client_config([credentials]) as folder:
        config = Path(folder) / "config.json"
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        assert json.loads(config.read_text())["auths"]["r.example"]["auth"] == "Ym90OnMzY3JldC1wdw=="
        env = cli_environment(folder)
        assert env["DOCKER_CONFIG"] == folder and env["DOCKER_BUILDKIT"] == "1"
        assert "s3cret-pw" not in json.dumps(env)
    assert not os.path.exists(folder)


def test_the_client_gets_only_the_engine_variables_from_the_worker_environment(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://engine.example:2376")
    monkeypatch.setenv("PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD", "never-passed-on")
    env = cli_environment()
    assert env["DOCKER_HOST"] == "tcp://engine.example:2376"
    assert "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD" not in env
