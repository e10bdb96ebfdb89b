"""A build's error reaches API and console users: when a worker's own file fails it, the error names the setting to
look at, never the file's path on the worker."""

from __future__ import annotations

import pytest

from core.errors import ConfigurationError
from worker.builders import BuildJob
from worker.builders.buildkit import BuildKitBuilder, DockerCli
from worker.dockerfile import build_context
from worker.engine import Engine


def test_a_ca_bundle_gone_since_the_worker_started_is_named_by_its_setting(tmp_path):
    # Given a CA bundle the worker was started with, removed since
    bundle = tmp_path / "private-ca" / "bundle.pem"
    # When a build context is made with it
    with pytest.raises(ConfigurationError) as problem:
        build_context("FROM scratch\n", bundle)
    # Then the error names the setting and why, not the path
    assert str(problem.value) == "the worker cannot read its IMAGEBUILDER_BUILD_CA_BUNDLE: No such file or directory"


def test_a_docker_client_gone_since_the_worker_started_is_named_by_its_setting(tmp_path):
    # Given the Docker client the worker chose at start, removed since
    client = DockerCli(str(tmp_path / "bin" / "docker"), "20.10.24")
    job = BuildJob(build_context("FROM scratch\n"), "example.test/x:1", force=False, timeout_s=60,
                   on_line=lambda line: None, check=lambda: None)
    # When a BuildKit build runs it (it fails to start before the engine is ever spoken to)
    with pytest.raises(ConfigurationError) as problem:
        BuildKitBuilder(client, frozenset({"linux/amd64"})).build(Engine(None, lambda line: None), job)
    # Then the error names the settings that choose the client, and not its path
    assert "IMAGEBUILDER_DOCKER_CLI" in str(problem.value) and "No such file or directory" in str(problem.value)
    assert str(tmp_path) not in str(problem.value)
