"""An image's inventory: its distribution and every package its databases list, read through ImageFiles from the
paths each ecosystem keeps them in."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

from core.errors import UnreadableImage
from worker.sbom.imagefiles import MAX_DATABASE_BYTES, ImageFiles
from worker.sbom.packages import (
    Distro,
    Inventory,
    Package,
    conda_package,
    deb_package,
    dpkg_paragraphs,
    installed_debs,
    parse_os_release,
    python_distribution,
)

OS_RELEASE_PATHS = ("/usr/lib/os-release", "/etc/os-release")  # the second is a link to the first on Debian
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_DIR = "/var/lib/dpkg/status.d"  # one file per package, as distroless images keep them
DEBIAN_PYTHON_DIR = "/usr/lib/python3/dist-packages"  # Debian's python3-* packages
PYTHON_LIB_ROOTS = ("/usr/lib", "/usr/local/lib", "/opt/conda/lib", "/root/.local/lib")
PYTHON_VERSIONS = tuple(f"python3.{minor}" for minor in range(6, 15))
PYTHON_PACKAGE_DIRS = ("site-packages", "dist-packages")
CONDA_META_DIR = "/opt/conda/conda-meta"
READS_AT_ONCE = 5
# Member names are relative to the directory asked for, its own name first: `dist-packages/pip-23.0.1.dist-info/…`
_PYTHON_RECORD = re.compile(r"[^/]+/[^/]+(?:\.dist-info/METADATA|\.egg-info/PKG-INFO|\.egg-info)")
_CONDA_RECORD = re.compile(r"[^/]+/[^/]+\.json")


def read_inventory(files: ImageFiles) -> Inventory:
    """The image's distribution and packages; records that cannot be read are counted in `skipped`. The reads
    run at once, on as many of the ImageFiles' lanes (each costs the engine a fixed ~50 ms, then its size)."""
    with ThreadPoolExecutor(READS_AT_ONCE) as pool:
        distro = pool.submit(_distro, files)
        status = pool.submit(files.file, DPKG_STATUS, MAX_DATABASE_BYTES)
        status_d = pool.submit(files.files, DPKG_STATUS_DIR)
        conda = pool.submit(files.files, CONDA_META_DIR, _is_conda_record)
        debian_python = pool.submit(files.files, DEBIAN_PYTHON_DIR, _is_python_record)  # the usual big one: now
        python = [debian_python, *(pool.submit(files.files, d, _is_python_record)
                                   for d in python_package_dirs(files, pool))]
        inventory = Inventory(distro=distro.result())
        _add_debs(inventory, files, status.result(), status_d.result())
        for records in (future.result() for future in python):
            _add(inventory, records, python_distribution, "pypi")
        _add(inventory, conda.result(), conda_package, "conda")
    inventory.packages = list({package.purl: package for package in inventory.packages}.values())
    return inventory


def _distro(files: ImageFiles) -> Distro:
    for path in OS_RELEASE_PATHS:
        content = files.file(path)
        if content is not None:
            return parse_os_release(content.decode("utf-8", "replace"))
    return Distro()


def _add_debs(inventory: Inventory, files: ImageFiles, status: bytes | None,
              status_d: list[tuple[str, bytes]]) -> None:
    if status is None and files.exists(DPKG_STATUS):
        raise UnreadableImage(f"{DPKG_STATUS} is in the image but is not a file of at most "
                              f"{MAX_DATABASE_BYTES >> 20} MiB: its Debian packages cannot be listed")
    if status is not None:
        found, unreadable = installed_debs(status.decode("utf-8", "replace"), inventory.distro)
        inventory.packages.extend(found)
        inventory.skipped["deb"] = unreadable
    for _, content in status_d:
        for fields in dpkg_paragraphs(content.decode("utf-8", "replace")):
            inventory.add(deb_package(fields, inventory.distro), "deb")


def _add(inventory: Inventory, records: list[tuple[str, bytes]], parse: Callable[[str], Package | None],
         source: str) -> None:
    for _, content in records:
        inventory.add(parse(content.decode("utf-8", "replace")), source)


def python_package_dirs(files: ImageFiles, pool: Executor) -> list[str]:
    """The site- and dist-packages directories the image has, of every Python 3 under the usual prefixes (the
    archive API's stat, a round of them at once for each level); Debian's own, DEBIAN_PYTHON_DIR, aside."""
    roots = _there(files, pool, PYTHON_LIB_ROOTS)
    versions = _there(files, pool, [f"{root}/{version}" for root in roots for version in PYTHON_VERSIONS])
    return _there(files, pool, [f"{v}/{d}" for v in versions for d in PYTHON_PACKAGE_DIRS])


def _there(files: ImageFiles, pool: Executor, paths: Sequence[str]) -> list[str]:
    return [path for path, there in zip(paths, pool.map(files.exists, paths)) if there]


def _is_python_record(name: str) -> bool:
    return _PYTHON_RECORD.fullmatch(name) is not None


def _is_conda_record(name: str) -> bool:
    return _CONDA_RECORD.fullmatch(name) is not None
