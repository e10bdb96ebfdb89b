"""An image's inventory: its distribution and every package its databases list, read through ImageFiles from the
paths each ecosystem keeps them in."""

from __future__ import annotations

import re

from core.errors import UnreadableImage
from worker.sbom.imagefiles import MAX_DATABASE_BYTES, ImageFiles
from worker.sbom.packages import (
    Distro,
    Inventory,
    conda_package,
    deb_package,
    dpkg_paragraphs,
    installed_debs,
    parse_os_release,
    python_distribution,
)

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")  # the first is a link to the second on Debian
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_DIR = "/var/lib/dpkg/status.d"  # one file per package, as distroless images keep them
DEBIAN_PYTHON_DIR = "/usr/lib/python3/dist-packages"  # Debian's python3-* packages
PYTHON_LIB_ROOTS = ("/usr/lib", "/usr/local/lib", "/opt/conda/lib", "/root/.local/lib")
PYTHON_VERSIONS = tuple(f"python3.{minor}" for minor in range(6, 15))
PYTHON_PACKAGE_DIRS = ("site-packages", "dist-packages")
CONDA_META_DIR = "/opt/conda/conda-meta"
# Member names are relative to the directory asked for, its own name first: `dist-packages/pip-23.0.1.dist-info/…`
_PYTHON_RECORD = re.compile(r"[^/]+/[^/]+(?:\.dist-info/METADATA|\.egg-info/PKG-INFO|\.egg-info)")
_CONDA_RECORD = re.compile(r"[^/]+/[^/]+\.json")


def read_inventory(files: ImageFiles) -> Inventory:
    """The image's distribution and packages; records that cannot be read are counted in `skipped`."""
    inventory = Inventory(distro=_distro(files))
    _read_debs(files, inventory)
    for directory in python_package_dirs(files):
        _read_python(files, directory, inventory)
    _read_conda(files, inventory)
    inventory.packages = list({package.purl: package for package in inventory.packages}.values())
    return inventory


def _distro(files: ImageFiles) -> Distro:
    for path in OS_RELEASE_PATHS:
        content = files.file(path)
        if content is not None:
            return parse_os_release(content.decode("utf-8", "replace"))
    return Distro()


def _read_debs(files: ImageFiles, inventory: Inventory) -> None:
    status = files.file(DPKG_STATUS, max_bytes=MAX_DATABASE_BYTES)
    if status is None and files.exists(DPKG_STATUS):
        raise UnreadableImage(f"{DPKG_STATUS} is in the image but is not a file of at most "
                              f"{MAX_DATABASE_BYTES >> 20} MiB: its Debian packages cannot be listed")
    if status is not None:
        found, unreadable = installed_debs(status.decode("utf-8", "replace"), inventory.distro)
        inventory.packages.extend(found)
        inventory.skipped["deb"] = unreadable
    for _, content in files.files(DPKG_STATUS_DIR):
        for fields in dpkg_paragraphs(content.decode("utf-8", "replace")):
            inventory.add(deb_package(fields, inventory.distro), "deb")


def python_package_dirs(files: ImageFiles) -> list[str]:
    """The site- and dist-packages directories the image has, of every Python 3 under the usual prefixes."""
    found = [DEBIAN_PYTHON_DIR] if files.exists(DEBIAN_PYTHON_DIR) else []
    for root in (root for root in PYTHON_LIB_ROOTS if files.exists(root)):
        for version in (v for v in PYTHON_VERSIONS if files.exists(f"{root}/{v}")):
            found += [f"{root}/{version}/{d}" for d in PYTHON_PACKAGE_DIRS if files.exists(f"{root}/{version}/{d}")]
    return found


def _read_python(files: ImageFiles, directory: str, inventory: Inventory) -> None:
    for _, content in files.files(directory, lambda name: _PYTHON_RECORD.fullmatch(name) is not None):
        inventory.add(python_distribution(content.decode("utf-8", "replace")), "pypi")


def _read_conda(files: ImageFiles, inventory: Inventory) -> None:
    for _, content in files.files(CONDA_META_DIR, lambda name: _CONDA_RECORD.fullmatch(name) is not None):
        inventory.add(conda_package(content.decode("utf-8", "replace")), "conda")
