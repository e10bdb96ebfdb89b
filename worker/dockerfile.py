"""Dockerfile rendering and the build context: pure functions, every value shell-quoted."""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from worker.errors import BuildStepFailed
from worker.packages import conda_install_args, quoted_args
from worker.spec import ImageSpec

CA_CONTEXT_NAME = "imagebuilder-ca.pem"
CA_IMAGE_PATH = "/usr/local/share/imagebuilder/ca.pem"
TAG_LABEL = "io.imagebuilder.tag"
BASE_NAME_LABEL = "org.opencontainers.image.base.name"
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
CREATED_LABEL = "org.opencontainers.image.created"
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
APT_CLEANUP = "apt-get clean && rm -rf /var/lib/apt/lists/*"


@dataclass(frozen=True)
class BuildInputs:
    """What the Dockerfile needs beyond the spec: facts about the pulled base and the service's settings."""

    tag: str
    created: datetime
    base_user: str = ""
    base_digest: str = ""
    ca_bundle: bool = False
    pip_index_url: str = ""


def render_dockerfile(spec: ImageSpec, inputs: BuildInputs) -> str:
    """FROM base; USER root; apt, conda, pip; the base's USER again; OCI labels."""
    lines = [f"FROM {spec.base_image}", "USER root"]
    if inputs.ca_bundle:
        lines.append(f"COPY {CA_CONTEXT_NAME} {CA_IMAGE_PATH}")
    packages = spec.packages
    if packages.apt:
        lines.append(f"RUN {_apt_command(packages.apt, inputs)}")
    if packages.conda:
        lines.append(f"RUN {_conda_command(packages.conda, inputs)}")
    if packages.pip:
        lines.append(f"RUN {_pip_command(packages.pip, inputs)}")
    lines.append(f"USER {_restorable_user(inputs.base_user)}")
    lines.append(_labels(spec, inputs))
    return "\n".join(lines) + "\n"


def _apt_command(items: list[str], inputs: BuildInputs) -> str:
    ca = f" -o Acquire::https::CAInfo={CA_IMAGE_PATH}" if inputs.ca_bundle else ""
    return (
        f"apt-get{ca} update && DEBIAN_FRONTEND=noninteractive apt-get{ca} install -y "
        f"--no-install-recommends {quoted_args(items)} && {APT_CLEANUP}"
    )


def _conda_command(items: list[str], inputs: BuildInputs) -> str:
    ca = f"CONDA_SSL_VERIFY={CA_IMAGE_PATH} " if inputs.ca_bundle else ""
    return f"{ca}conda install --yes {quoted_args(conda_install_args(items))} && conda clean --all --yes"


def _pip_command(items: list[str], inputs: BuildInputs) -> str:
    # PEP 668 bases (Debian's python3) refuse system installs unless told; older pips ignore the variable.
    options = " --no-cache-dir"
    if inputs.ca_bundle:
        options += f" --cert {CA_IMAGE_PATH}"
    if inputs.pip_index_url:
        options += f" --index-url {shlex.quote(inputs.pip_index_url)}"
    return (
        "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "
        f"python3 -m pip install{options} {quoted_args(items)}"
    )


def _restorable_user(user: str) -> str:
    if not user:
        return "root"
    if not _USER_RE.fullmatch(user):
        raise BuildStepFailed(f"the base image's USER {user!r} cannot be restored: not a user[:group] name or id")
    return user


def _labels(spec: ImageSpec, inputs: BuildInputs) -> str:
    labels = {
        BASE_NAME_LABEL: spec.base_image,
        BASE_DIGEST_LABEL: inputs.base_digest,
        CREATED_LABEL: inputs.created.isoformat(timespec="seconds"),
        TAG_LABEL: inputs.tag,
    }
    return "LABEL " + " \\\n      ".join(f"{key}={_dockerfile_string(value)}" for key, value in labels.items())


def _dockerfile_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def build_context(dockerfile: str, ca_bundle: Path | None = None) -> io.BytesIO:
    """An in-memory tar with the Dockerfile and, if configured, the CA bundle the install steps trust."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "Dockerfile", dockerfile.encode())
        if ca_bundle is not None:
            _add(tar, CA_CONTEXT_NAME, ca_bundle.read_bytes())
    buffer.seek(0)
    return buffer


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
