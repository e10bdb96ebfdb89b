"""Image chains: which stored spec builds a spec's base (its upstream), which specs build on its images
(downstream), and the cycles `spec apply` refuses. A spec is upstream of another when the other's base is in the
repository its images are pushed to (and, in single-repository mode, under its `<name>-<tag>` tags)."""

from __future__ import annotations

from config.settings import Settings
from core.errors import InvalidSpec
from core.reference import ImageReference, parse_reference
from core.spec import ImageSpec
from core.stores.specs import SpecReader, SpecStore
from core.tagging import builder_of, single_repository_name, target_repository


class ImageChains:
    """Upstream and downstream of stored specs, from the spec store's index by base and the push settings (the
    target formula and its inverse are tagging.py's)."""

    def __init__(self, specs: SpecStore, settings: Settings):
        self._specs = specs
        self._targets = {"repo_prefix": settings.repo_prefix, "push_repo": settings.push_repo}

    def builder_of(self, base: ImageReference) -> str | None:
        """The name of the spec whose images `base` is among (whether or not such a spec is stored)."""
        return builder_of(base, **self._targets)

    def upstream(self, spec: ImageSpec) -> str | None:
        """The stored spec this one builds on, if its base is some stored spec's image."""
        name = self.builder_of(parse_reference(spec.base_image))
        return name if name is not None and self._specs.find(name) is not None else None

    def downstream(self, name: str) -> list[str]:
        """The stored specs built on `name`'s images, whichever of its tags they name."""
        repository = target_repository(name, **self._targets)
        based = self._specs.based_on_repository(repository) if repository else {}
        if self._targets["push_repo"]:  # one repository for every spec: theirs are the `<name>-<tag>` tags
            return sorted(child for child, tag in based.items() if single_repository_name(tag) == name)
        return sorted(based)

    def refuse_cycle(self, spec: ImageSpec, read: SpecReader) -> None:
        """InvalidSpec naming the cycle if storing `spec` would make its chain come back to it. The stored specs
        are read through `read`, so that SpecStore.apply can make this check and its write one atomic step."""
        chain, base = [spec.name], spec.base_image
        while (name := self.builder_of(parse_reference(base))) is not None and name not in chain[1:]:
            chain.append(name)
            if name == spec.name:
                raise InvalidSpec(f"baseImage: {spec.base_image!r} would make a cycle of stored specs, each built "
                                  f"on the next: {' -> '.join(chain)}")
            stored = read(name)
            if stored is None:
                return
            base = stored.spec.base_image

