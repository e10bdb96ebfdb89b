"""PrimeHub's tag formula and the push target in both modes."""

import hashlib

import pytest

from config.settings import Settings
from core.errors import ConfigurationError, InvalidSpec
from core.platforms import Platform
from core.reference import parse_reference
from core.spec import parse_spec
from core.tagging import (
    builder_of,
    compute_tag,
    platform_target,
    resolve_target,
    target_for,
    target_repository,
)

BASE = "registry.gitlab.com/infuseai/docker-stacks/scipy-notebook"


def spec(**packages):
    return parse_spec({"name": "test-build", "baseImage": BASE, "packages": packages})


def test_tag_matches_primehub_for_the_same_spec():
    # sha1("<base>;apt:[jq,curl];pip:[requests>=2.31,pandas[parquet]==2.2.3]")[:8], as PrimeHub's Go computes it
    packages = {"apt": ["jq", "curl"], "pip": ["requests>=2.31", "pandas[parquet]==2.2.3"], "conda": []}
    assert compute_tag(spec(**packages)) == "caa3311e"


def test_empty_lists_are_left_out_and_conda_comes_last():
    ubuntu = lambda **p: parse_spec({"name": "x", "baseImage": "ubuntu:22.04", "packages": p})  # noqa: E731
    assert compute_tag(ubuntu()) == "5bbe6e32"
    assert compute_tag(ubuntu(apt=["vim"], conda=["numpy=1.26"], pip=[])) == "6a2dd94e"


def test_order_matters_and_the_pull_secret_does_not():
    assert compute_tag(spec(apt=["jq", "curl"])) != compute_tag(spec(apt=["curl", "jq"]))
    with_secret = parse_spec({"name": "test-build", "baseImage": BASE, "pullSecret": "s", "packages": {"apt": ["jq"]}})
    assert compute_tag(with_secret) == compute_tag(spec(apt=["jq"]))


def test_platforms_are_one_more_part_of_the_tag_in_canonical_order():
    # Given a spec without platforms, and the same spec naming two in either order
    plain = spec(apt=["jq"])
    both = [parse_spec({"name": "test-build", "baseImage": BASE, "packages": {"apt": ["jq"]}, "platforms": order})
            for order in (["linux/arm64", "linux/amd64"], ["linux/amd64", "linux/arm64"])]
    # Then the plain tag is PrimeHub's, and the platforms give one other tag whatever their order
    assert compute_tag(plain) == hashlib.sha1(f"{BASE};apt:[jq]".encode()).hexdigest()[:8]
    assert compute_tag(both[0]) == compute_tag(both[1]) == hashlib.sha1(
        f"{BASE};apt:[jq];platforms:[linux/amd64,linux/arm64]".encode()).hexdigest()[:8]


def test_each_platforms_image_goes_to_the_targets_repository_under_the_tag_and_platform():
    target = parse_reference("registry.example/ns/x:ab12cd34")
    assert str(platform_target(target, Platform.LINUX_ARM_V7)) == "registry.example/ns/x:ab12cd34-linux-arm-v7"


def test_single_repository_mode_refuses_a_name_too_long_for_a_platforms_tag():
    named = parse_spec({"name": "n" * 110, "baseImage": BASE, "platforms": ["linux/arm/v7"]})
    with pytest.raises(InvalidSpec, match="too long for the tag of its linux/arm/v7 image"):
        resolve_target(named, settings(IMAGEBUILDER_PUSH_REPO="docker.io/acme/all"))


def test_target_under_prefix_and_in_single_repository_mode():
    s = spec(apt=["jq"])
    tag = compute_tag(s)
    assert str(target_for(s, repo_prefix="docker.io/acme/")) == f"docker.io/acme/test-build:{tag}"
    assert str(target_for(s, repo_prefix="x", push_repo="quay.io/acme/all")) == f"quay.io/acme/all:test-build-{tag}"


def test_single_repository_mode_refuses_names_too_long_for_a_tag():
    long = parse_spec({"name": "a" * 125, "baseImage": BASE})
    with pytest.raises(InvalidSpec, match="too long for a tag"):
        target_for(long, repo_prefix=None, push_repo="quay.io/acme/all")


def settings(**env):
    values = {"PRIMEHUB_FEATURE_CUSTOM_IMAGE": "true", "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": "docker.io",
              "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": "docker.io/acme"}
    return Settings(_env_file=None, **{**values, **env})


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PRIMEHUB_FEATURE_CUSTOM_IMAGE": "false"}, "PRIMEHUB_FEATURE_CUSTOM_IMAGE=true"),
        ({"PRIMEHUB_FEATURE_CUSTOM_IMAGE": "1"}, "PRIMEHUB_FEATURE_CUSTOM_IMAGE=true"),
        ({"PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT": ""}, "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT is not set"),
        ({"PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": ""}, "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX is not set"),
        ({"PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX": "quay.io/acme"}, "images would go to registry quay.io"),
    ],
)
def test_resolve_target_refuses_unless_enabled_and_configured(env, words):
    with pytest.raises(ConfigurationError, match=words.replace(".", r"\.")):
        resolve_target(spec(), settings(**env))


def test_docker_hub_endpoint_aliases_match_a_bare_namespace_prefix():
    target = resolve_target(spec(), settings(PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX="acme",
                                             PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT="https://index.docker.io/v1/"))
    assert target.registry == "docker.io" and target.repository == "acme/test-build"


@pytest.mark.parametrize("targets", [
    {"repo_prefix": "registry.example/team"}, {"repo_prefix": "myorg"}, {"repo_prefix": "docker.io"},
    {"repo_prefix": None, "push_repo": "registry.example/all/images"},
])
def test_builder_of_turns_target_for_round_and_target_repository_is_the_targets_repository(targets):
    # Given a spec's target under each kind of push setting
    target = target_for(spec(apt=["jq"]), **targets)
    # Then the target names the spec that builds it, and its repository is the spec's target repository
    assert builder_of(target, **targets) == "test-build"
    assert target_repository("test-build", **targets) == target.name


def test_builder_of_names_no_spec_for_other_repositories_or_tags():
    by_prefix, single = {"repo_prefix": "registry.example/team"}, {"repo_prefix": None,
                                                                  "push_repo": "registry.example/all/images"}
    assert builder_of(parse_reference("registry.example/team/sub/parent:1"), **by_prefix) is None
    assert builder_of(parse_reference("registry.example/other/parent:1"), **by_prefix) is None
    assert builder_of(parse_reference("registry.example/all/images:latest"), **single) is None
    assert builder_of(parse_reference("registry.example/team/parent:1"), repo_prefix=None) is None
