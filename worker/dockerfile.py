"""Dockerfile rendering and the build context: pure functions, every value shell-quoted."""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from config.settings import Settings
from core.errors import BuildStepFailed, ConfigurationError
from core.packages import conda_install_args, quoted_args
from core.result import utcnow
from core.spec import ImageSpec
from core.tagging import compute_tag

CA_CONTEXT_NAME = "imagebuilder-ca.pem"
CA_IMAGE_PATH = "/usr/local/share/imagebuilder/ca.pem"
TAG_LABEL = "io.imagebuilder.tag"
BASE_NAME_LABEL = "org.opencontainers.image.base.name"
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
CREATED_LABEL = "org.opencontainers.image.created"
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
APT_CLEANUP = "apt-get clean && rm -rf /var/lib/apt/lists/*"
REBUILD_ARG = "IMAGEBUILDER_REBUILD"  # a forced BuildKit build sets it: every step runs again, the caches stay
# BuildKit download caches, shared by every build on an engine; locked, as apt allows one user at a time. apt is
# pointed at them (Debian's docker-clean hook only empties the default folders), and the image's own apt folders
# are cleaned as the classic build cleans them, so both builders make the same image.
APT_ARCHIVES_CACHE = "/var/cache/imagebuilder/apt-archives"
APT_LISTS_CACHE = "/var/cache/imagebuilder/apt-lists"
APT_CACHE_MOUNTS = (f"--mount=type=cache,id=imagebuilder-apt-archives,target={APT_ARCHIVES_CACHE},sharing=locked "
                    f"--mount=type=cache,id=imagebuilder-apt-lists,target={APT_LISTS_CACHE},sharing=locked")
APT_CACHE_OPTIONS = f" -o Dir::Cache::Archives={APT_ARCHIVES_CACHE} -o Dir::State::Lists={APT_LISTS_CACHE}"
PIP_CACHE_DIR = "/root/.cache/pip"
# The shared package caches reach a BuildKit build as secrets (worker/packagecache.py writes them): a file in /tmp
# for the one RUN step, gone after it, in neither the image nor its history, nor in the step's cache key. A build
# given none, or whose cache fails on the way, installs from the origin; so the RUN line is the same either way,
# and layers are shared with workers that have no cache.
APT_PROXY_SECRET = "imagebuilder-apt-proxy"
APT_PROXY_FILE = f"/tmp/{APT_PROXY_SECRET}.conf"
PIP_MIRROR_SECRET = "imagebuilder-pip-mirror"
PIP_MIRROR_FILE = f"/tmp/{PIP_MIRROR_SECRET}.conf"
FALLBACK_NOTICE = "imagebuilder: {tool} through the package cache failed; installing from the origin instead"
CONDA_CACHE_DIR = "/var/cache/imagebuilder/conda"


@dataclass(frozen=True)
class BuildInputs:
    """What the Dockerfile needs beyond the spec: facts about the pulled base and the service's settings."""

    tag: str
    created: datetime
    base_user: str = ""
    base_digest: str = ""
    ca_bundle: bool = False
    pip_index_url: str = ""
    buildkit: bool = False  # download caches as cache mounts; a forced rebuild by REBUILD_ARG
    base_image: str = ""  # what FROM names, where not the spec's base (one platform's image, pinned by digest)

    @classmethod
    def of(cls, spec: ImageSpec, settings: Settings, *, buildkit: bool, base_user: str, base_digest: str,
           base_image: str = "") -> BuildInputs:
        """The inputs of a build of `spec` now, under the worker's settings."""
        return cls(tag=compute_tag(spec), created=utcnow(), base_user=base_user, base_digest=base_digest,
                   ca_bundle=settings.build_ca_bundle is not None, pip_index_url=settings.pip_index_url,
                   buildkit=buildkit, base_image=base_image)


def render_dockerfile(spec: ImageSpec, inputs: BuildInputs) -> str:
    """FROM base; USER root; apt, conda, pip; the base's USER again; OCI labels."""
    lines = [f"FROM {inputs.base_image or spec.base_image}", *([f"ARG {REBUILD_ARG}"] if inputs.buildkit else []),
             "USER root"]
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
    options = f" -o Acquire::https::CAInfo={CA_IMAGE_PATH}" if inputs.ca_bundle else ""
    install = "apt-get{o} update && DEBIAN_FRONTEND=noninteractive apt-get{o} install -y --no-install-recommends {p}"
    if not inputs.buildkit:
        return f"{install.format(o=options, p=quoted_args(items))} && {APT_CLEANUP}"
    # lists and archives come from, and stay in, the cache mounts
    options += APT_CACHE_OPTIONS + ' "$@"'
    return (f"{APT_CACHE_MOUNTS} {_secret_mount(APT_PROXY_SECRET, APT_PROXY_FILE)} "
            f"mkdir -p {APT_ARCHIVES_CACHE}/partial {APT_LISTS_CACHE}/partial && "
            f"apt_install() {{ {install.format(o=options, p=quoted_args(items))}; }} && "
            f"{_through_cache('apt', 'apt_install', f'-c {APT_PROXY_FILE}', APT_PROXY_FILE, '')} && {APT_CLEANUP}")


def _secret_mount(secret: str, path: str) -> str:
    return f"--mount=type=secret,id={secret},target={path}"


def _through_cache(tool: str, install: str, through: str, config: str, origin: str) -> str:
    """Shell: `install through` when the build was given the cache's configuration, and `install origin` when not
    or when that failed (saying so in the build's log)."""
    # printf fills the tool in, so that the notice is in the build's output only when printed, never in its RUN line
    notice = f"printf {shlex.quote(FALLBACK_NOTICE.format(tool='%s') + chr(92) + 'n')} {tool}"
    direct = f"{install} {origin}".rstrip()
    return (f"if [ -s {config} ]; then {install} {through} || {{ {notice}; {direct}; }}; "
            f"else {direct}; fi")


def _conda_command(items: list[str], inputs: BuildInputs) -> str:
    ca = f"CONDA_SSL_VERIFY={CA_IMAGE_PATH} " if inputs.ca_bundle else ""
    install = f"{ca}conda install --yes {quoted_args(conda_install_args(items))} && conda clean --all --yes"
    if inputs.buildkit:  # packages are fetched into the cache mount; the clean-up then finds none in the image
        return (f"--mount=type=cache,id=imagebuilder-conda,target={CONDA_CACHE_DIR},sharing=locked "
                f"CONDA_PKGS_DIRS={CONDA_CACHE_DIR} {install}")
    return install


def _pip_command(items: list[str], inputs: BuildInputs) -> str:
    # PEP 668 bases (Debian's python3) refuse system installs unless told; older pips ignore the variable.
    environment = "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1"
    cert = f" --cert {CA_IMAGE_PATH}" if inputs.ca_bundle else ""
    if not inputs.buildkit:
        index = f" --index-url {shlex.quote(inputs.pip_index_url)}" + _trusted_if_plain(inputs.pip_index_url) \
            if inputs.pip_index_url else ""
        return f"{environment} python3 -m pip install --no-cache-dir{cert}{index} {quoted_args(items)}"
    # the origin is named in the environment, as the cache's configuration file names the mirror: on the command
    # line it would outrank that file
    install = (f'env "$@" {environment} python3 -m pip install --cache-dir {PIP_CACHE_DIR}{cert} '
               f"{quoted_args(items)}")
    through = _through_cache("pip", "pip_install", f"PIP_CONFIG_FILE={PIP_MIRROR_FILE}", PIP_MIRROR_FILE,
                             _origin_index(inputs.pip_index_url))
    return (f"--mount=type=cache,id=imagebuilder-pip,target={PIP_CACHE_DIR} "
            f"{_secret_mount(PIP_MIRROR_SECRET, PIP_MIRROR_FILE)} pip_install() {{ {install}; }} && {through}")


def _origin_index(index_url: str) -> str:
    """The pip index as environment assignments for `env`: the setting's, or none for PyPI."""
    if not index_url:
        return ""
    host = _plain_http_host(index_url)
    trusted = f" PIP_TRUSTED_HOST={shlex.quote(host)}" if host else ""
    return shlex.quote(f"PIP_INDEX_URL={index_url}") + trusted


def _trusted_if_plain(index_url: str) -> str:
    host = _plain_http_host(index_url)
    return f" --trusted-host {shlex.quote(host)}" if host else ""


def _plain_http_host(index_url: str) -> str:
    """pip ignores an index over plain http (bar localhost) unless its host is named trusted: that host, or ''."""
    parts = urlsplit(index_url)
    return parts.netloc if parts.scheme == "http" else ""


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
            _add(tar, CA_CONTEXT_NAME, _bundle_bytes(ca_bundle))
    buffer.seek(0)
    return buffer


def _bundle_bytes(ca_bundle: Path) -> bytes:
    """The CA bundle; if it went away since the worker started, an error naming the setting, not the path (a
    build's error is shown to API and console users)."""
    try:
        return ca_bundle.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"the worker cannot read its IMAGEBUILDER_BUILD_CA_BUNDLE: "
                                 f"{e.strerror or type(e).__name__}") from None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
