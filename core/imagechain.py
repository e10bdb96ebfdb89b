"""Image chains: which stored spec builds a spec's base (its upstream), which specs build on its images
(downstream), the cycles `spec apply` refuses, and the platforms a spec inherits. A spec is upstream of another when
the other's base is in the repository its images are pushed to (and, in single-repository mode, under its
`<name>-<tag>` tags); a spec naming no platforms whose base is its upstream's current image (that very tag) is built
for the platforms that image has, which are its upstream's."""

from __future__ import annotations

from config.settings import Settings
from core.errors import ImageBuilderError, InvalidSpec
from core.platforms import Platform
from core.reference import ImageReference, parse_reference
from core.spec import ImageSpec
from core.stored import StoredSpec
from core.stores.specs import SpecReader, SpecStore, StoredForm, base_key
from core.tagging import (
    builder_of,
    single_repository_name,
    target_for,
    target_repository,
)


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

    def stored_form(self, spec: ImageSpec, read: SpecReader) -> StoredForm:
        """The spec as stored and built: with its upstream's platforms if it names none and is built on the
        upstream's current image; and the upstream's name when it takes them. InvalidSpec if it closes a cycle."""
        self.refuse_cycle(spec, read)
        inherited = None if spec.platforms is not None else self._platforms_of_base(spec, read)
        if inherited is None:
            return spec, None
        platforms, source = inherited
        return spec.model_copy(update={"platforms": platforms}), source

    def built_on_image_of(self, stored: StoredSpec) -> list[str]:
        """The stored specs whose base is `stored`'s current image (its target, that very tag)."""
        try:
            return self._specs.based_on([target_for(stored.spec, **self._targets)])
        except ImageBuilderError:  # settings that push nowhere: no spec is built on its images
            return []

    def _platforms_of_base(self, spec: ImageSpec, read: SpecReader) -> tuple[tuple[Platform, ...], str] | None:
        """The platforms of `spec`'s base, and the stored spec that made it with them: the upstream's, where the base
        is its current image; else those the spec took when it was applied on this same base (an older image of
        its upstream keeps the platforms it was built for, and so does one whose spec was deleted)."""
        upstream = self._upstream_image_of(spec, read)
        if upstream is not None:
            return (upstream.spec.platforms, upstream.spec.name) if upstream.spec.platforms else None
        before = read(spec.name)
        if before is not None and before.platforms_from and before.spec.base_image == spec.base_image:
            return before.spec.platforms, before.platforms_from
        return None

    def _upstream_image_of(self, spec: ImageSpec, read: SpecReader) -> StoredSpec | None:
        """The stored spec whose current image is `spec`'s base, if there is one."""
        base = parse_reference(spec.base_image)
        name = self.builder_of(base)
        upstream = read(name) if name is not None else None
        if upstream is None or base_key(base) != base_key(target_for(upstream.spec, **self._targets)):
            return None
        return upstream

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

