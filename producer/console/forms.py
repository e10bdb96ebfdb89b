"""The console's forms as PrimeHub's Image Builder had them (name, base image, pull secret, APT / Conda / pip
packages one per line): what was typed, the spec it makes, and each problem placed beside its own field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from core.errors import InvalidSpec
from core.platforms import Platform
from core.schedule import Policy, Schedule
from core.spec import CRD_KIND, ImageSpec, validation_problems
from producer.boundedyaml import load_one

PACKAGE_MANAGERS = ("apt", "conda", "pip")
# pydantic's location of a problem (its first part, or for packages its second) -> the form field that shows it
_FIELD_OF = {"name": "name", "baseImage": "base_image", "base_image": "base_image", "pullSecret": "pull_secret",
             "pull_secret": "pull_secret", "apt": "apt", "conda": "conda", "pip": "pip", "platforms": "platforms"}
GENERAL = "spec"
MAX_FIELD_CHARS = 4096
MAX_TEXT_CHARS = 512 * 1024
PLATFORM_CHOICES = tuple(p.value for p in Platform)  # the form's checkboxes


@dataclass
class SpecForm:
    """The spec form's fields as typed, and the problems found, by field."""

    name: str = ""
    base_image: str = ""
    pull_secret: str = ""
    apt: str = ""
    conda: str = ""
    pip: str = ""
    platforms: list[str] = field(default_factory=list)  # none ticked: the engine's own
    problems: dict[str, list[str]] = field(default_factory=dict)
    platform_choices = PLATFORM_CHOICES

    @classmethod
    def of(cls, spec: ImageSpec) -> SpecForm:
        packages = spec.packages
        return cls(name=spec.name, base_image=spec.base_image, pull_secret=spec.pull_secret or "",
                   apt="\n".join(packages.apt), conda="\n".join(packages.conda), pip="\n".join(packages.pip),
                   platforms=[p.value for p in spec.platforms or ()])

    def document(self) -> dict[str, Any]:
        """The spec these fields describe, in the plain shape; blank lines and `#` comments are not items."""
        return {"name": self.name.strip(), "baseImage": self.base_image.strip(),
                "pullSecret": self.pull_secret.strip() or None,
                "packages": {manager: _items(getattr(self, manager)) for manager in PACKAGE_MANAGERS},
                **({"platforms": self.platforms} if self.platforms else {})}

    def parsed(self) -> ImageSpec | None:
        """The spec, or None with every problem placed beside its field."""
        document = self.document()
        try:
            return ImageSpec.model_validate(document)
        except ValidationError as e:
            for location, message in validation_problems(e, document):
                self.problems.setdefault(field_of(location), []).append(message)
            return None


def _items(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def field_of(location: tuple[Any, ...]) -> str:
    """The form field a problem at `location` belongs to (GENERAL for the spec as a whole)."""
    parts = [part for part in location if isinstance(part, str) and part != "packages"]
    return _FIELD_OF.get(parts[0], GENERAL) if parts else GENERAL


def imported(text: str) -> SpecForm:
    """The form filled from a pasted spec (PrimeHub's ImageSpec resource, or the plain shape, in YAML or JSON);
    whatever is wrong with it is shown once it is checked."""
    try:
        document = load_one(text, "the pasted spec")
    except InvalidSpec as e:
        return SpecForm(problems={"import": [str(e).splitlines()[0]]})
    if not isinstance(document, dict):
        return SpecForm(problems={"import": ["expected one spec: a mapping with name, baseImage and packages"]})
    if document.get("kind") == CRD_KIND:
        metadata, spec = document.get("metadata"), document.get("spec")
        document = {**(spec if isinstance(spec, dict) else {}),
                    "name": metadata.get("name") if isinstance(metadata, dict) else None}
    return _form_from(document)


def _form_from(document: dict[str, Any]) -> SpecForm:
    packages = document.get("packages") if isinstance(document.get("packages"), dict) else {}
    return SpecForm(name=_text(document.get("name")),
                    base_image=_text(document.get("baseImage", document.get("base_image"))),
                    pull_secret=_text(document.get("pullSecret", document.get("pull_secret"))),
                    platforms=[_text(item) for item in _list(document.get("platforms"))][:len(PLATFORM_CHOICES) + 1],
                    **{manager: "\n".join(_text(item) for item in _list(packages.get(manager)))
                       for manager in PACKAGE_MANAGERS})


def _text(value: Any) -> str:
    """A scalar as typed; anything else is left blank (a nested alias would print exponentially long)."""
    return str(value) if isinstance(value, (str, int, float)) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class SpecFields(BaseModel):
    """The spec form as posted; `action` is the button pressed."""

    name: str = Field("", max_length=MAX_FIELD_CHARS)
    base_image: str = Field("", max_length=MAX_FIELD_CHARS)
    pull_secret: str = Field("", max_length=MAX_FIELD_CHARS)
    apt: str = Field("", max_length=MAX_TEXT_CHARS)
    conda: str = Field("", max_length=MAX_TEXT_CHARS)
    pip: str = Field("", max_length=MAX_TEXT_CHARS)
    platforms: list[Annotated[str, Field(max_length=MAX_FIELD_CHARS)]] = Field(
        default_factory=list, max_length=len(PLATFORM_CHOICES) + 1)
    paste: str = Field("", max_length=MAX_TEXT_CHARS)
    action: Literal["save", "preview", "import"] = "save"

    def form(self) -> SpecForm:
        return SpecForm(**self.model_dump(exclude={"paste", "action"}))


class ScheduleFields(BaseModel):
    """The schedule editor as posted: a cron expression in a time zone, or every N seconds."""

    mode: Literal["cron", "every"] = "cron"
    cron: str = Field("", max_length=MAX_FIELD_CHARS)
    tz: str = Field("UTC", max_length=MAX_FIELD_CHARS)
    every_s: str = Field("", max_length=32)
    policy: Policy = Policy.ON_BASE_CHANGE

    @classmethod
    def of(cls, schedule: Schedule | None) -> ScheduleFields:
        if schedule is None:
            return cls()
        return cls(mode="cron" if schedule.cron else "every", cron=schedule.cron or "", tz=schedule.tz,
                   every_s=str(schedule.every_s or ""), policy=schedule.policy)

    def timing(self) -> dict:
        """The keyword arguments of BuildClient.set_schedule; InvalidSpec for seconds that are not a number."""
        if self.mode == "cron":
            return {"cron": self.cron.strip(), "tz": self.tz.strip() or "UTC", "policy": self.policy.value}
        if not self.every_s.strip().isdigit():
            raise InvalidSpec(f"invalid schedule: every_s: {self.every_s!r} is not a whole number of seconds")
        return {"every_s": int(self.every_s), "policy": self.policy.value}
