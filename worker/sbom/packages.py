"""What an image's package databases say is installed: Debian's dpkg status, Python distributions' metadata,
conda's records, and the distribution's os-release; parsed without running anything. A record that cannot be read
is skipped and counted, never raised: one corrupt entry must not cost the SBOM, or the worker, anything else."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email.parser import HeaderParser
from enum import Enum

from packageurl import PackageURL
from packaging.requirements import Requirement

MAX_FIELD_CHARS = 256  # a name or version longer than this is not one


class Ecosystem(str, Enum):
    """Where a package came from, as its package URL's type says."""

    DEB = "deb"
    PYPI = "pypi"
    CONDA = "conda"


@dataclass(frozen=True)
class Package:
    """One installed package, with its package URL."""

    ecosystem: Ecosystem
    name: str
    version: str
    purl: str


@dataclass(frozen=True)
class Distro:
    """The distribution, from os-release (ID, VERSION_ID, VERSION_CODENAME, PRETTY_NAME)."""

    id: str = ""
    version_id: str = ""
    codename: str = ""
    pretty_name: str = ""


@dataclass
class Inventory:
    """Every package found, and how many records of each database could not be read."""

    distro: Distro = field(default_factory=Distro)
    packages: list[Package] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, source: str) -> None:
        self.skipped[source] = self.skipped.get(source, 0) + 1

    def add(self, package: Package | None, source: str) -> None:
        if package is None:
            self.skip(source)
        else:
            self.packages.append(package)


def parse_os_release(text: str) -> Distro:
    """os-release's KEY=value lines (values maybe quoted); unknown keys ignored."""
    values = dict(_os_release_pairs(text))
    return Distro(id=values.get("ID", ""), version_id=values.get("VERSION_ID", ""),
                  codename=values.get("VERSION_CODENAME", ""), pretty_name=values.get("PRETTY_NAME", ""))


def _os_release_pairs(text: str):
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            yield key, value.strip().strip("\"'")


def dpkg_paragraphs(text: str) -> list[dict[str, str]]:
    """The paragraphs of a dpkg status file (RFC 822-like: `Field: value`, continuation lines indented)."""
    return [_paragraph(block) for block in re.split(r"\n\s*\n", text) if block.strip()]


def _paragraph(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = None
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and last is not None:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    return fields


def deb_package(fields: dict[str, str], distro: Distro) -> Package | None:
    """A Debian package from its paragraph; None if its name or version cannot be read."""
    name, version = fields.get("Package", ""), fields.get("Version", "")
    if not _plausible(name, version):
        return None
    qualifiers = {key: value for key, value in (("arch", fields.get("Architecture", "")),
                                                ("distro", distro.codename)) if value}
    purl = PackageURL(type="deb", namespace=distro.id or "debian", name=name, version=version,
                      qualifiers=qualifiers)
    return Package(Ecosystem.DEB, name, version, purl.to_string())


def installed_debs(text: str, distro: Distro) -> tuple[list[Package], int]:
    """The installed packages of a dpkg status file, and how many paragraphs could not be read (one dpkg knows
    but has not installed, removed or only configured, is neither)."""
    found, unreadable = [], 0
    for fields in dpkg_paragraphs(text):
        state = fields.get("Status", "").split()
        if state and state[-1] != "installed":
            continue
        package = deb_package(fields, distro) if state else None
        if package is None:
            unreadable += 1
        else:
            found.append(package)
    return found, unreadable


def normalise_pypi_name(name: str) -> str:
    """PEP 503: lower case, runs of `-`, `_` and `.` made one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_distribution(text: str) -> Package | None:
    """A Python distribution from its METADATA or PKG-INFO (email headers: Name, Version); None if unreadable."""
    try:
        headers = HeaderParser().parsestr(text, headersonly=True)
        name, version = str(headers.get("Name") or "").strip(), str(headers.get("Version") or "").strip()
    except Exception:  # email's parser is lenient, but a header it cannot decode must cost only this entry
        return None
    if not _plausible(name, version):
        return None
    normalised = normalise_pypi_name(name)
    return Package(Ecosystem.PYPI, normalised, version, PackageURL(type="pypi", name=normalised,
                                                                   version=version).to_string())


def conda_package(text: str) -> Package | None:
    """A conda package from its `conda-meta/*.json` record; None if unreadable."""
    try:
        record = json.loads(text)
        name, version = str(record["name"]), str(record["version"])
    except (ValueError, KeyError, TypeError):
        return None
    if not _plausible(name, version):
        return None
    subdir = str(record.get("subdir") or "")
    qualifiers = {key: value for key, value in (("build", str(record.get("build") or "")),
                                                ("channel", conda_channel(str(record.get("channel") or ""), subdir)),
                                                ("subdir", subdir)) if value}
    return Package(Ecosystem.CONDA, name, version, PackageURL(type="conda", name=name, version=version,
                                                              qualifiers=qualifiers).to_string())


def conda_channel(channel: str, subdir: str) -> str:
    """The channel's name: `https://conda.anaconda.org/conda-forge/linux-64` is `conda-forge`; another URL is
    kept (without its subdir), a bare name as it is."""
    channel = channel.rstrip("/")
    if subdir and channel.endswith(f"/{subdir}"):
        channel = channel[: -len(subdir) - 1]
    for host in ("https://conda.anaconda.org/", "https://repo.anaconda.com/pkgs/"):
        if channel.startswith(host):
            return channel[len(host):]
    return channel


def _plausible(name: str, version: str) -> bool:
    return bool(name and version) and len(name) <= MAX_FIELD_CHARS and len(version) <= MAX_FIELD_CHARS \
        and not any(c.isspace() for c in name + version)


def requested_names(apt: list[str], pip: list[str], conda: list[str]) -> set[tuple[Ecosystem, str]]:
    """The packages a spec asks for, as (ecosystem, name) in the form an inventory names them (the lists are
    checked by core/packages.py's grammars, so each item starts with its name)."""
    names = {(Ecosystem.DEB, _leading(r"[a-z0-9][a-z0-9+.-]+", item)) for item in apt}
    names |= {(Ecosystem.PYPI, normalise_pypi_name(Requirement(item).name)) for item in pip}
    names |= {(Ecosystem.CONDA, _leading(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", item.split("::")[-1]).lower())
              for item in conda if not item.startswith("-")}
    return names


def _leading(pattern: str, item: str) -> str:
    found = re.match(pattern, item.strip())
    return found.group() if found else item
