"""What changed between two images, by their CycloneDX SBOMs: packages added, removed and changed, keyed by
ecosystem and name (a Debian package of another architecture is another package)."""

from __future__ import annotations

from packageurl import PackageURL

from core.result import PackageChange, PackageChanges, PackageVersion
from core.sbom import library_components

PackageKey = tuple[str, str, str]  # ecosystem, name, architecture (Debian's; "" elsewhere)


def package_versions(sbom: bytes) -> dict[PackageKey, str]:
    """Each library component's version, by its package URL's type, name and arch; those without one skipped
    (ValueError if the document is not JSON)."""
    found: dict[PackageKey, str] = {}
    for component in library_components(sbom):
        key = _key(component.get("purl"))
        if key is not None and isinstance(component.get("version"), str):
            found[key] = component["version"]
    return found


def _key(purl: object) -> PackageKey | None:
    try:
        parsed = PackageURL.from_string(purl) if isinstance(purl, str) else None
    except ValueError:
        return None
    if parsed is None or parsed.type == "oci":
        return None
    return parsed.type, parsed.name, str((parsed.qualifiers or {}).get("arch", ""))


def changes_between(before: bytes, after: bytes, since: str) -> PackageChanges:
    """The packages `after` added, removed and changed against `before`, in name order."""
    old, new = package_versions(before), package_versions(after)
    return PackageChanges(
        since=since,
        added=[_version(key, new[key]) for key in sorted(new.keys() - old.keys(), key=_order)],
        removed=[_version(key, old[key]) for key in sorted(old.keys() - new.keys(), key=_order)],
        changed=[PackageChange(ecosystem=key[0], name=_name(key), old=old[key], new=new[key])
                 for key in sorted(old.keys() & new.keys(), key=_order) if old[key] != new[key]])


def _version(key: PackageKey, version: str) -> PackageVersion:
    return PackageVersion(ecosystem=key[0], name=_name(key), version=version)


def _name(key: PackageKey) -> str:
    return key[1]


def _order(key: PackageKey) -> tuple[str, str, str]:
    return key[1], key[0], key[2]
