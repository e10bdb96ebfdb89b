"""Base images made on this machine (no Docker Hub here): Debian by debootstrap, BusyBox from busybox-static, and a
two-platform BusyBox (amd64 and Debian's arm64 busybox-static) pushed with an image index, as Docker Hub's are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import requests
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
BACKGROUND = ("nice", "-n", "19", "ionice", "-c", "3")  # a command prefix: the lowest CPU and I/O priority
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


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
    def fill(rootfs: Path) -> None:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", DEBIAN_SUITE,
                        str(rootfs), DEBIAN_MIRROR], check=True, stdout=subprocess.DEVNULL)

    return _cached_rootfs_tar(f"debian-{DEBIAN_SUITE}-{DEBIAN_PACKAGES.replace(',', '-')}.tar", fill)


def arm64_debian_rootfs_tar() -> Path:
    """The same Debian minbase for arm64: debootstrap's first stage here, its second inside the rootfs under
    qemu-user-static's arm64 handler (F flag); cached like the amd64 one. Minutes of emulated work, made while
    other tests run (tests/integration/conftest.py): at the lowest CPU and I/O priority, so it only takes what they
    leave."""
    def fill(rootfs: Path) -> None:
        subprocess.run([*BACKGROUND, "debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
                        f"--include={DEBIAN_PACKAGES}", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*BACKGROUND, "chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
                       check=True, stdout=subprocess.DEVNULL)

    return _cached_rootfs_tar(f"debian-{DEBIAN_SUITE}-arm64-{DEBIAN_PACKAGES.replace(',', '-')}.tar", fill)


def busybox_rootfs_tar() -> Path:
    """A tiny image: static BusyBox and its applet links; enough for builds with no packages."""
    def fill(rootfs: Path) -> None:
        _busybox_rootfs(rootfs, BUSYBOX)
        subprocess.run([str(rootfs / "bin" / "busybox"), "--install", "-s", str(rootfs / "bin")], check=True)
        _relink_applets(rootfs / "bin")

    return _cached_rootfs_tar("busybox.tar", fill)


def arm64_busybox_rootfs_tar() -> Path:
    """BusyBox for arm64, from Debian's arm64 busybox-static (the bootstrap adds the architecture); its applet links
    are the host BusyBox's list (the same version), so nothing arm64 runs here."""
    def fill(rootfs: Path) -> None:
        download = rootfs.parent / "download"
        download.mkdir()
        subprocess.run(["apt-get", "download", "busybox-static:arm64"], cwd=download, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        package = next(download.glob("busybox-static_*_arm64.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(download / "deb")], check=True)
        _busybox_rootfs(rootfs, download / "deb" / "bin" / "busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")

    return _cached_rootfs_tar("busybox-arm64.tar", fill)


def _cached_rootfs_tar(name: str, fill: Callable[[Path], None]) -> Path:
    """The tarball `name` in the cache, made once from a root file system that `fill` writes."""
    tarball = CACHE_DIR / name
    if tarball.exists():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        rootfs = Path(work) / "rootfs"
        fill(rootfs)
        _tar(rootfs, tarball)
    return tarball


def _busybox_rootfs(rootfs: Path, busybox: Path) -> None:
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "tmp").mkdir()
    shutil.copy2(busybox, rootfs / "bin" / "busybox")


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


def push_two_platform_busybox(client: docker.DockerClient, reference: str, username: str, password: str) -> None:
    """`reference` as an index of a linux/amd64 and a linux/arm64 BusyBox."""
    push_two_platform_image(client, reference, {"amd64": busybox_rootfs_tar, "arm64": arm64_busybox_rootfs_tar},
                            'CMD ["/bin/sh"]', username, password)


def push_two_platform_debian(client: docker.DockerClient, reference: str, username: str, password: str,
                             arm64_tar: Path) -> None:
    """`reference` as an index of a linux/amd64 and a linux/arm64 Debian with python3-pip."""
    push_two_platform_image(client, reference, {"amd64": debian_rootfs_tar, "arm64": lambda: arm64_tar},
                            'CMD ["/bin/bash"]', username, password)


def push_two_platform_image(client: docker.DockerClient, reference: str, rootfs_tars: dict, change: str,
                            username: str, password: str) -> None:
    """`reference` in its registry as an image index of one image per architecture (`rootfs_tars` makes each
    one's root file system), each pushed under its own tag first (`<tag>-arm64`), as a multi-platform base on
    Docker Hub is."""
    images = {}
    for architecture, make_tar in rootfs_tars.items():
        tagged = f"{reference}-{architecture}"
        subprocess.run(["docker", "import", "--platform", f"linux/{architecture}", "-c", change, str(make_tar()),
                        tagged], check=True, stdout=subprocess.DEVNULL)
        push(client, tagged, username, password)
        client.images.remove(tagged)
        images[architecture] = _descriptor(tagged, username, password)
    _put_index(reference, images, username, password)


def _manifest_url(reference: str) -> str:
    repository, tag = reference.rsplit(":", 1)
    host, path = repository.split("/", 1)
    return f"http://{host}/v2/{path}/manifests/{tag}"


def _descriptor(reference: str, username: str, password: str) -> dict:
    answer = requests.head(_manifest_url(reference), auth=(username, password), timeout=30,
                           headers={"Accept": DOCKER_MANIFEST})
    answer.raise_for_status()
    return {"mediaType": answer.headers["Content-Type"], "digest": answer.headers["Docker-Content-Digest"],
            "size": int(answer.headers["Content-Length"])}


def _put_index(reference: str, images: dict[str, dict], username: str, password: str) -> None:
    index = {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {**descriptor, "platform": {"architecture": architecture, "os": "linux"}}
        for architecture, descriptor in images.items()]}
    answer = requests.put(_manifest_url(reference), data=json.dumps(index), auth=(username, password), timeout=30,
                          headers={"Content-Type": DOCKER_LIST})
    answer.raise_for_status()
