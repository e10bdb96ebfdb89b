"""Tags and targets: PrimeHub's tag formula, and where a spec's image is pushed."""

from __future__ import annotations

import hashlib

from config.settings import Settings
from worker.errors import ConfigurationError, FeatureDisabled, InvalidSpec
from worker.reference import ImageReference, is_valid_tag, normalise_registry, parse_reference
from worker.spec import ImageSpec

TAG_LEN = 8


def compute_tag(spec: ImageSpec) -> str:
    """First 8 hex chars of SHA-1 over base image and non-empty package lists, joined by ';' (PrimeHub)."""
    parts = [spec.base_image]
    for manager in ("apt", "pip", "conda"):
        items = getattr(spec.packages, manager)
        if items:
            parts.append(f"{manager}:[{','.join(items)}]")
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
    return target
