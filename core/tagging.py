"""Tags and targets: PrimeHub's tag formula, and where a spec's image is pushed."""

from __future__ import annotations

import dataclasses
import hashlib
import re

from config.settings import Settings
from core.errors import ConfigurationError, FeatureDisabled, InvalidSpec
from core.platforms import Platform
from core.reference import (
    ImageReference,
    is_valid_tag,
    normalise_registry,
    parse_reference,
)
from core.spec import ImageSpec

TAG_LEN = 8
STAGED_SUFFIX = "-staged"  # an image's tag until its required SBOM is attached (staged_target)
_SINGLE_REPO_TAG = re.compile(rf"(?P<name>.+)-[0-9a-f]{{{TAG_LEN}}}")  # target_for's `<name>-<tag>`


def compute_tag(spec: ImageSpec) -> str:
    """First 8 hex chars of SHA-1 over base image and non-empty package lists, joined by ';' (PrimeHub); the
    platforms, where a spec names them, are one more part (so a spec without them keeps PrimeHub's tag)."""
    parts = [spec.base_image]
    for manager in ("apt", "pip", "conda"):
        items = getattr(spec.packages, manager)
        if items:
            parts.append(f"{manager}:[{','.join(items)}]")
    if spec.platforms:
        parts.append(f"platforms:[{','.join(p.value for p in spec.platforms)}]")
    return hashlib.sha1(";".join(parts).encode()).hexdigest()[:TAG_LEN]


def target_for(spec: ImageSpec, *, repo_prefix: str | None, push_repo: str | None = None) -> ImageReference:
    """`<repo prefix>/<name>:<tag>`, or `<push repo>:<name>-<tag>` in single-repository mode."""
    tag = compute_tag(spec)
    if push_repo:
        return _reference(f"{push_repo}:{spec.name}-{tag}", "IMAGEBUILDER_PUSH_REPO", spec.name)
    if not repo_prefix:
        raise ConfigurationError(
            "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX is not set: set it to where images go, e.g. docker.io/<namespace>"
        )
    return _reference(f"{repo_prefix.rstrip('/')}/{spec.name}:{tag}", "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX", spec.name)


def platform_target(target: ImageReference, platform: Platform) -> ImageReference:
    """Where one platform's image of a multi-platform build is pushed before the index is tagged: the same
    repository (an index may only name manifests in its own), the target's tag with the platform after it."""
    return dataclasses.replace(target, tag=f"{target.tag}-{platform.slug}", digest=None)


def staged_target(target: ImageReference) -> ImageReference:
    """Where an image is pushed first when its SBOM is required: the target is tagged only once it is attached."""
    return dataclasses.replace(target, tag=f"{target.tag}{STAGED_SUFFIX}", digest=None)


def target_repository(name: str, *, repo_prefix: str | None, push_repo: str | None = None) -> str | None:
    """registry/path that spec `name`'s images go to, as target_for makes it; None for settings it refuses."""
    if push_repo:
        return _repository_of(push_repo)
    return _repository_of(f"{repo_prefix.rstrip('/')}/{name}") if repo_prefix else None


def builder_of(reference: ImageReference, *, repo_prefix: str | None, push_repo: str | None = None) -> str | None:
    """target_for turned round: the name of the spec whose images `reference` is among (stored or not), or None."""
    if push_repo:
        name = single_repository_name(reference.tag or "")
        return name if name and reference.name == _repository_of(push_repo) else None
    spec_n = target_repository("n", repo_prefix=repo_prefix)  # a spec named `n` pushes to <home>n
    if spec_n is None:
        return None
    home = spec_n[:-1]
    rest = reference.name[len(home):]
    return rest if reference.name.startswith(home) and "/" not in rest else None


def single_repository_name(tag: str) -> str | None:
    """The spec name in a single-repository mode tag (`<name>-<tag>`), or None if `tag` is not one."""
    found = _SINGLE_REPO_TAG.fullmatch(tag)
    return found["name"] if found else None


def _repository_of(text: str) -> str | None:
    """registry/path of a push setting's reference; None if invalid (building refuses it, naming the setting)."""
    try:
        return parse_reference(text).name
    except ValueError:
        return None


def _reference(text: str, setting: str, name: str) -> ImageReference:
    try:
        reference = parse_reference(text)
    except ValueError as e:
        if not is_valid_tag(text.rsplit(":", 1)[-1]):
            raise InvalidSpec(f"name: {name!r} is too long for a tag in single-repository mode") from None
        raise ConfigurationError(f"{setting} gives an invalid target {text!r}: it {e}") from None
    return reference


def ensure_enabled(settings: Settings) -> None:
    """Refuse every build unless PRIMEHUB_FEATURE_CUSTOM_IMAGE is `true`."""
    if not settings.feature_enabled:
        raise FeatureDisabled(
            "building custom images is disabled: set PRIMEHUB_FEATURE_CUSTOM_IMAGE=true to enable it"
        )


def resolve_target(spec: ImageSpec, settings: Settings) -> ImageReference:
    """Refuse unless building is enabled and configured; then the target of `spec` under `settings`."""
    ensure_enabled(settings)
    if not settings.registry_endpoint:
        raise ConfigurationError(
            "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT is not set: set it to the push registry, e.g. docker.io"
        )
    target = target_for(spec, repo_prefix=settings.repo_prefix, push_repo=settings.push_repo)
    endpoint = normalise_registry(settings.registry_endpoint)
    if target.registry != endpoint:
        raise ConfigurationError(
            f"images would go to registry {target.registry} but PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT is "
            f"{endpoint}: the push credentials are for the endpoint, so make the repo prefix start with it"
        )
    if settings.sbom == "required" and not is_valid_tag(staged_target(target).tag):
        raise InvalidSpec(f"name: {spec.name!r} is too long for the tag its image is staged under in "
                          "single-repository mode")
    for platform in spec.platforms or ():
        if not is_valid_tag(platform_target(target, platform).tag):
            raise InvalidSpec(f"name: {spec.name!r} is too long for the tag of its {platform.value} image in "
                              "single-repository mode")
    return target
