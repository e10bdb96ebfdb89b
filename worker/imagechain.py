"""Image chains: which stored spec builds a spec's base (its upstream), which specs build on its images
(downstream), and the cycles `spec apply` refuses. A spec is upstream of another when the other's base is in the
repository its images are pushed to (and, in single-repository mode, under its `<name>-<tag>` tags)."""

from __future__ import annotations

import re

from config.settings import Settings
from worker.errors import InvalidSpec
from worker.reference import ImageReference, parse_reference
from worker.spec import ImageSpec
from worker.specstore import SpecStore
from worker.tagging import TAG_LEN

_SINGLE_REPO_TAG = re.compile(rf"(?P<name>.+)-[0-9a-f]{{{TAG_LEN}}}")


class ImageChains:
    """Upstream and downstream of stored specs, from the spec store's index by base and the push settings."""

    def __init__(self, specs: SpecStore, settings: Settings):
        self._specs = specs
        self._push_repo = _repository(settings.push_repo) if settings.push_repo else None
        # Where spec `n`'s images go, less `n`: "registry/prefix/" (a spec's repository is that plus its name)
        spec_n = _repository(f"{settings.repo_prefix.rstrip('/')}/n") if settings.repo_prefix else None
        self._home = spec_n[:-1] if spec_n else None

    def builder_of(self, base: ImageReference) -> str | None:
        """The name of the spec whose images `base` is among (whether or not such a spec is stored)."""
        if self._push_repo is not None:
            found = _SINGLE_REPO_TAG.fullmatch(base.tag or "") if base.name == self._push_repo else None
            return found["name"] if found else None
        if self._home is not None and base.name.startswith(self._home) and "/" not in base.name[len(self._home):]:
            return base.name[len(self._home):]
        return None

    def upstream(self, spec: ImageSpec) -> str | None:
        """The stored spec this one builds on, if its base is some stored spec's image."""
        name = self.builder_of(parse_reference(spec.base_image))
        return name if name is not None and self._specs.find(name) is not None else None

    def downstream(self, name: str) -> list[str]:
        """The stored specs built on `name`'s images, whichever of its tags they name."""
        if self._push_repo is not None:
            based = self._specs.based_on_repository(self._push_repo)
            return sorted(n for n, tag in based.items() if (m := _SINGLE_REPO_TAG.fullmatch(tag)) and m["name"] == name)
        if self._home is None:
            return []
        return sorted(self._specs.based_on_repository(f"{self._home}{name}"))

    def refuse_cycle(self, spec: ImageSpec) -> None:
        """InvalidSpec naming the cycle if storing `spec` would make its chain come back to it."""
        chain, base = [spec.name], spec.base_image
        while (name := self.builder_of(parse_reference(base))) is not None and name not in chain[1:]:
            chain.append(name)
            if name == spec.name:
                raise InvalidSpec(f"baseImage: {spec.base_image!r} would make a cycle of stored specs, each built "
                                  f"on the next: {' -> '.join(chain)}")
            stored = self._specs.find(name)
            if stored is None:
                return
            base = stored.spec.base_image


def _repository(text: str) -> str | None:
    """registry/path of a push setting; None if it is invalid (building refuses it, naming the setting)."""
    try:
        return parse_reference(text).name
    except ValueError:
        return None
