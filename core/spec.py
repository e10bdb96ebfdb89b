"""The image spec: the wire contract shared by the CLI, the client, the task and the tests."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from core.errors import InvalidSpec
from core.packages import (
    MAX_ITEM_CHARS,
    MAX_ITEMS,
    check_apt,
    check_conda,
    check_fits_run_line,
    check_pip,
    conda_install_args,
)
from core.platforms import Platform, canonical, parse_platform
from core.reference import PATH_COMPONENT, parse_reference

MAX_NAME_LEN = 128
MAX_REFERENCE_CHARS = 1024  # a valid one is under 800: host, a 255-character path, a 128-character tag, a digest
CRD_API_GROUP = "primehub.io/"
CRD_KIND = "ImageSpec"
_NAME_RE = re.compile(PATH_COMPONENT)
# A Kubernetes secret name (DNS-1123 subdomain): safe as a file name, no '/' or '..'.
_SECRET_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
MAX_SECRET_NAME_LEN = 253
MAX_PLATFORM_CHARS = 32
_NAMES_ITS_FIELD = re.compile(r"[A-Za-z_][\w.\[\]]*: ")


def _check_name(name: str) -> str:
    if len(name) > MAX_NAME_LEN or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"a name is one Docker repository component of at most {MAX_NAME_LEN} characters: "
            "lowercase letters and digits, separated by '.', '_', '__' or '-'"
        )
    return name


def _check_base_image(text: str) -> str:
    parse_reference(text)
    return text


def _check_secret_name(name: str) -> str:
    if len(name) > MAX_SECRET_NAME_LEN or not _SECRET_RE.fullmatch(name):
        raise ValueError(
            "a pull secret is named like a Kubernetes secret: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return name


ImageName = Annotated[str, AfterValidator(_check_name)]
BaseImage = Annotated[str, Field(max_length=MAX_REFERENCE_CHARS), AfterValidator(_check_base_image)]
SecretName = Annotated[str, AfterValidator(_check_secret_name)]
AptPackage = Annotated[str, Field(max_length=MAX_ITEM_CHARS), AfterValidator(check_apt)]
PipRequirement = Annotated[str, Field(max_length=MAX_ITEM_CHARS), AfterValidator(check_pip)]
CondaSpec = Annotated[str, Field(max_length=MAX_ITEM_CHARS), AfterValidator(check_conda)]
PlatformName = Annotated[str, Field(max_length=MAX_PLATFORM_CHARS), AfterValidator(parse_platform)]


class Packages(BaseModel):
    """What to install, per package manager, in the order given (apt, then conda, then pip).

    `null` for a list (or for `packages`) means empty, as PrimeHub's controller reads it: the same tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apt: list[AptPackage] = Field(default_factory=list, max_length=MAX_ITEMS)
    pip: list[PipRequirement] = Field(default_factory=list, max_length=MAX_ITEMS)
    conda: list[CondaSpec] = Field(default_factory=list, max_length=MAX_ITEMS)

    @field_validator("apt", "pip", "conda", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("apt", "pip")
    @classmethod
    def _fits_run_line(cls, items: list[str]) -> list[str]:
        return check_fits_run_line(items)

    @field_validator("conda")
    @classmethod
    def _conda_fits_run_line(cls, items: list[str]) -> list[str]:
        check_fits_run_line(conda_install_args(items))
        return items


class ImageSpec(BaseModel):
    """An image to build: `<repo prefix>/<name>:<tag>` FROM `base_image` plus `packages`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    name: ImageName
    base_image: BaseImage
    pull_secret: SecretName | None = None
    packages: Packages = Field(default_factory=Packages)
    # None: the engine's own platform, and PrimeHub's tag; else one image index covering these, in canonical order
    platforms: tuple[PlatformName, ...] | None = None

    @field_validator("platforms", mode="before")
    @classmethod
    def _short_list(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, list | tuple):
            raise ValueError("must be a list of platforms, such as [linux/amd64, linux/arm64]")
        if value is not None and not 1 <= len(value) <= len(Platform):
            raise ValueError(f"names 1 to {len(Platform)} platforms, or is left out for the engine's own")
        return value

    @field_validator("platforms")
    @classmethod
    def _canonical_platforms(cls, platforms: tuple[Platform, ...] | None) -> tuple[Platform, ...] | None:
        return None if platforms is None else canonical(platforms)

    @field_validator("packages", mode="before")
    @classmethod
    def _null_packages_are_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="before")
    @classmethod
    def _unwrap_crd(cls, data: Any) -> Any:
        """Accept PrimeHub's `ImageSpec` custom resource exactly as `kubectl get -o yaml` prints it."""
        if not isinstance(data, dict) or "apiVersion" not in data and "kind" not in data:
            return data
        if data.get("kind") != CRD_KIND or not str(data.get("apiVersion", "")).startswith(CRD_API_GROUP):
            raise ValueError(f"a custom resource must be apiVersion {CRD_API_GROUP}v1alpha1, kind {CRD_KIND}")
        return _crd_fields(data)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body of the `spec` kwarg that the `imagebuilder.build` task takes (no `platforms` key unless it
        names some: the same message as before platforms existed)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"platforms"} if self.platforms is None else None)


def _crd_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """The plain shape of a custom resource: its `metadata.name` and its `spec`."""
    metadata, spec = _mapping(resource, "metadata"), dict(_mapping(resource, "spec"))
    spec.pop("updateTime", None)  # PrimeHub's bookkeeping, not part of the image
    return {"name": metadata.get("name"), **spec}


def _mapping(resource: dict[str, Any], field: str) -> dict[str, Any]:
    value = resource.get(field)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{field}: must be an object in a custom resource")
    return value or {}


def spec_named(data: Any, name: str) -> Any:
    """`data` with `name` filled in where it names no spec (a PUT to /specs/{name}); InvalidSpec if it names
    another one. Whatever else is wrong with `data` is left for parse_spec to name."""
    if not isinstance(data, dict):
        return data
    is_resource = data.get("kind") == CRD_KIND
    holder = (data.get("metadata") or {}) if is_resource else data
    if not isinstance(holder, dict):
        return data
    given = holder.get("name", name)
    if given != name:
        raise InvalidSpec(f"name: the body names {given!r} but the path names {name!r}")
    named = {**holder, "name": name}
    return {**data, "metadata": named} if is_resource else named


def parse_spec(data: Any) -> ImageSpec:
    """Validate `data` in any accepted shape; raise InvalidSpec naming each bad field, item and rule."""
    try:
        return ImageSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e, data)) from None


def format_validation_error(error: ValidationError, data: Any = None) -> str:
    return "invalid image spec: " + "; ".join(message for _, message in validation_problems(error, data))


def validation_problems(error: ValidationError, data: Any = None) -> list[tuple[tuple[Any, ...], str]]:
    """Each problem's location in the spec (as pydantic gives it: ('packages', 'apt', 2)) and its message, which
    names the field, the item and the rule."""
    return [(err["loc"], _format_one(err, data)) for err in error.errors(include_input=False, include_url=False)]


def _format_one(err: dict[str, Any], data: Any) -> str:
    field = _field_path(err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"] and _NAMES_ITS_FIELD.match(message):  # a check on the whole spec that names its field
        return message
    item = _lookup(data, err["loc"]) if data is not None else None
    if isinstance(item, str) and err["type"] == "value_error":
        return f"{field}: {json.dumps(item)} is not allowed: {message}"
    return f"{field}: {message}"


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "spec"


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    """The offending value, found through both the plain and the CRD shape."""
    if isinstance(data, dict) and "spec" in data and "kind" in data:
        try:
            data = _crd_fields(data)
        except ValueError:
            return None
    for part in loc:
        try:
            data = data[part] if not isinstance(data, dict) else data.get(part, data.get(to_camel(str(part))))
        except (IndexError, KeyError, TypeError):
            return None
    return data
