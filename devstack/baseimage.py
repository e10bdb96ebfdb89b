"""Base images made on this machine (no Docker Hub here): Debian by debootstrap, BusyBox from busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagebuilder-devstack"
DEBIAN_MIRROR = os.environ.get("IMAGEBUILDER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SUITE = "bookworm"
# python3-pip makes the base PEP 668 "externally managed", as Debian's own images with pip are.
DEBIAN_PACKAGES = "python3-pip,python3-venv,ca-certificates"
# Named after its packages, so that changing them makes a new image rather than reusing a stale one.
DEBIAN_IMAGE = "imagebuilder-devstack/debian:bookworm-pip-venv"
BUSYBOX_IMAGE = "imagebuilder-devstack/busybox:1"
BUSYBOX = Path("/bin/busybox")


def ensure_image(client: docker.DockerClient, reference: str, make_rootfs_tar, changes: list[str]) -> None:
    """Import `reference` from a rootfs tarball unless the engine already has it."""
    try:
        client.images.get(reference)
        return
    except ImageNotFound:
        pass
    repository, tag = reference.rsplit(":", 1)
    client.api.import_image(src=str(make_rootfs_tar()), repository=repository, tag=tag, changes=changes)


def debian_rootfs_tar() -> Path:
    """A Debian minbase with python3-pip, cached as a tarball between runs."""
    tarball = CACHE_DIR / f"debian-{DEBIAN_SUITE}-{DEBIAN_PACKAGES.replace(',', '-')}.tar"
    if tarball.exists():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", DEBIAN_SUITE, str(rootfs),
             DEBIAN_MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )
        _tar(rootfs, tarball)
    return tarball


def busybox_rootfs_tar() -> Path:
    """A tiny image: static BusyBox and its applet links; enough for builds with no packages."""
    tarball = CACHE_DIR / "busybox.tar"
    if tarball.exists():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        rootfs = Path(work) / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        subprocess.run([str(rootfs / "bin" / "busybox"), "--install", "-s", str(rootfs / "bin")], check=True)
        _relink_applets(rootfs / "bin")
        _tar(rootfs, tarball)
    return tarball


def _relink_applets(bin_dir: Path) -> None:
    """`busybox --install -s` links to the absolute host path; make them relative to the image."""
    for link in bin_dir.iterdir():
        if link.is_symlink():
            link.unlink()
            link.symlink_to("busybox")


def _tar(rootfs: Path, tarball: Path) -> None:
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
    partial.rename(tarball)


def push(client: docker.DockerClient, reference: str, username: str | None, password: str | None) -> None:
    """Push a local image to its registry, raising on any error in the stream."""
    repository, tag = reference.rsplit(":", 1)
    registry = repository.split("/", 1)[0]
    auth = {"username": username, "password": password, "serveraddress": registry} if username else None
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in chunk or "errorDetail" in chunk:
            raise RuntimeError(f"push of {reference} failed: {chunk.get('error') or chunk['errorDetail']}")


def make_debian(client: docker.DockerClient, reference: str) -> None:
    ensure_image(client, reference, debian_rootfs_tar, ['CMD ["/bin/bash"]'])


def make_busybox(client: docker.DockerClient, reference: str) -> None:
    ensure_image(client, reference, busybox_rootfs_tar, ['CMD ["/bin/sh"]'])
