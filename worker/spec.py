"""The image spec: the wire contract shared by the CLI, the client, the task and the tests."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from worker.errors import InvalidSpec
from worker.packages import check_apt, check_conda, check_pip
from worker.reference import PATH_COMPONENT, parse_reference

MAX_NAME_LEN = 128
CRD_API_GROUP = "primehub.io/"
CRD_KIND = "ImageSpec"
_NAME_RE = re.compile(PATH_COMPONENT)
# A Kubernetes secret name (DNS-1123 subdomain): safe as a file name, no '/' or '..'.
_SECRET_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
MAX_SECRET_NAME_LEN = 253


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
BaseImage = Annotated[str, AfterValidator(_check_base_image)]
SecretName = Annotated[str, AfterValidator(_check_secret_name)]
AptPackage = Annotated[str, AfterValidator(check_apt)]
PipRequirement = Annotated[str, AfterValidator(check_pip)]
CondaSpec = Annotated[str, AfterValidator(check_conda)]


class Packages(BaseModel):
    """What to install, per package manager, in the order given (apt, then conda, then pip)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apt: list[AptPackage] = Field(default_factory=list)
    pip: list[PipRequirement] = Field(default_factory=list)
    conda: list[CondaSpec] = Field(default_factory=list)


class ImageSpec(BaseModel):
    """An image to build: `<repo prefix>/<name>:<tag>` FROM `base_image` plus `packages`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    name: ImageName
    base_image: BaseImage
    pull_secret: SecretName | None = None
    packages: Packages = Field(default_factory=Packages)

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
        """The JSON body of the `spec` kwarg that the `imagebuilder.build` task takes."""
        return self.model_dump(mode="json", by_alias=True)


def _crd_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """The plain shape of a custom resource: its `metadata.name` and its `spec`."""
    spec = dict(resource.get("spec") or {})
    spec.pop("updateTime", None)  # PrimeHub's bookkeeping, not part of the image
    return {"name": (resource.get("metadata") or {}).get("name"), **spec}


def parse_spec(data: Any) -> ImageSpec:
    """Validate `data` in any accepted shape; raise InvalidSpec naming each bad field, item and rule."""
    try:
        return ImageSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e, data)) from None


def format_validation_error(error: ValidationError, data: Any = None) -> str:
    lines = [_format_one(err, data) for err in error.errors(include_input=False, include_url=False)]
    return "invalid image spec: " + "; ".join(lines)


def _format_one(err: dict[str, Any], data: Any) -> str:
    field = _field_path(err["loc"])
    message = err["msg"].removeprefix("Value error, ")
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
        data = _crd_fields(data)
    for part in loc:
        try:
            data = data[part] if not isinstance(data, dict) else data.get(part, data.get(to_camel(str(part))))
        except (IndexError, KeyError, TypeError):
            return None
    return data
