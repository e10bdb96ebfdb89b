"""Running compose.yaml here, where Docker Hub cannot be reached: local stand-ins for `redis:7` and
`registry:2` (Debian's redis-server and docker-registry on the locally made Debian base), and that same base
as the project image's Python base."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import docker

from devstack.baseimage import DEBIAN_IMAGE, make_debian

ROOT = Path(__file__).resolve().parents[1]
PYTHON_BASE = DEBIAN_IMAGE
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STAND_INS = {
    "redis:7": f"""FROM {PYTHON_BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
WORKDIR /data
CMD ["redis-server"]
""",
    "registry:2": f"""FROM {PYTHON_BASE}
RUN apt-get update && apt-get install -y --no-install-recommends docker-registry wget \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/registry \\
 && printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /var/lib/registry\\nhttp:\\n  addr: :5000\\n' \\
    > /etc/docker/registry/config.yml
ENTRYPOINT ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
""",
}


def prepare_images(engine: docker.DockerClient) -> None:
    """Make the Debian base, and the stand-ins unless the engine already has images by those names."""
    make_debian(engine, PYTHON_BASE)
    for name, dockerfile in STAND_INS.items():
        try:
            engine.images.get(name)
        except docker.errors.ImageNotFound:
            engine.images.build(fileobj=_context(dockerfile), custom_context=True, tag=name, rm=True)


def _context(dockerfile: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    buffer.seek(0)
    return buffer


def trust_host_ca_in_project_build() -> None:
    """pip inside the project image build reaches PyPI only when it trusts this machine's CA bundle."""
    if HOST_CA_BUNDLE.is_file():
        shutil.copy(HOST_CA_BUNDLE, ROOT / "docker" / "ca-bundle.pem")


def compose(project: str, *args: str, env: dict[str, str], timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-p", project, "-f", str(ROOT / "compose.yaml"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
