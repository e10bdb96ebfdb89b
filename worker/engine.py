"""Docker engine adapter: pull, inspect, build, push with stream checks; only domain errors leave it."""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import platform
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import docker
import requests
import urllib3
from docker.errors import APIError, DockerException, NotFound

from core.errors import (
    BuildStepFailed,
    ConfigurationError,
    DaemonUnavailable,
    ImageBuilderError,
)
from core.reference import ImageReference
from core.registry.client import error_for_message
from core.registry.credentials import RegistryCredentials

logger = logging.getLogger(__name__)
LogSink = Callable[[str], None]
BUILD_TAIL_LINES = 20
KILL_TIMEOUT_S = 10
_RUNNING_IN_RE = re.compile(r"\s*---> Running in ([0-9a-f]{12,64})")
_STEP_IMAGE_RE = re.compile(r"\s*---> ([0-9a-f]{12,64})")
# The engine's and the kernel's names for a machine, as the OCI image spec's platform `architecture` says them
OCI_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "ppc64le": "ppc64le",
                     "s390x": "s390x", "i686": "386", "riscv64": "riscv64"}


class Killable(Protocol):
    def kill(self) -> None: ...


class Engine:
    """One Docker engine connection for one build; every line it reads goes to `on_line`.

    `check` is called for every stream chunk and raises to stop the build (cancel, timeout);
    `on_container` hears of each build container the moment the engine starts it."""

    def __init__(self, api: docker.APIClient, on_line: LogSink, *, check: Callable[[], None] = lambda: None,
                 on_container: Callable[[str], None] = lambda container_id: None):
        self._api = api
        self._on_line = on_line
        self._check = check
        self._on_container = on_container
        self._container: str | None = None
        self._tracked: Killable | None = None
        self.step_images: list[str] = []

    @classmethod
    def connect(cls, on_line: LogSink, *, timeout_s: int, **hooks) -> Engine:
        """Connect as the Docker CLI would (DOCKER_HOST, ...); DaemonUnavailable if it does not answer."""
        with daemon_errors("connect to the Docker engine"):
            api = engine_client(timeout_s)
            api.ping()
        return cls(api, on_line, **hooks)

    def kill_current(self) -> None:
        """Kill what builds now: a process a builder runs against this engine (BuildKit's client), or the build
        container (called from the watch thread; the container is killed on a connection of its own)."""
        if self._tracked is not None:
            self._tracked.kill()
        container = self._container
        if container:
            with contextlib.suppress(DockerException, *_CONNECTION_ERRORS):
                engine_client(KILL_TIMEOUT_S).kill(container)

    def remove_containers(self, container_ids: set[str]) -> set[str]:
        """Force-remove build containers; the ids that are gone now (removed, or already gone)."""
        gone = set()
        for container_id in container_ids:
            try:
                self._api.remove_container(container_id, force=True)
            except NotFound:
                pass
            except (DockerException, *_CONNECTION_ERRORS):
                continue
            gone.add(container_id)
        return gone

    def remove_step_images(self) -> None:
        """Drop the untagged layers a failed build left (a tagged or shared one is refused, and kept)."""
        for image_id in reversed(self.step_images):
            with contextlib.suppress(DockerException, *_CONNECTION_ERRORS):
                self._api.remove_image(image_id)

    def close(self) -> None:
        self._api.close()

    def pull(self, reference: ImageReference, credentials: RegistryCredentials | None, *,
             platform: str | None = None) -> str | None:
        """Pull `reference` (its image for `platform`, if given); the digest the registry served it by (from the
        stream), if it said one."""
        action = f"pull of {reference}" + (f" for {platform}" if platform else "")
        digest = reference.digest
        with _registry_errors(reference.registry, action):
            stream = self._api.pull(
                reference.name, tag=reference.manifest_reference, stream=True, decode=True, platform=platform,
                auth_config=credentials.auth_config() if credentials else None,
            )
            for chunk in self._checked(stream, lambda m: error_for_message(m, reference.registry, action)):
                status = chunk.get("status", "")
                if status.startswith("Digest: "):
                    digest = status.removeprefix("Digest: ").strip()
        return digest

    def image_user(self, image: str) -> str:
        """The USER the image's config sets ('' for root by default)."""
        with daemon_errors(f"inspect {image}"):
            return (self._api.inspect_image(image).get("Config") or {}).get("User") or ""

    def build(self, context: io.BytesIO, tag: str, *, nocache: bool, timeout_s: int) -> str:
        """Build from a tar context with the base already pulled; the new image id."""
        tail: collections.deque[str] = collections.deque(maxlen=BUILD_TAIL_LINES)
        image_id = ""
        with daemon_errors(f"build {tag}"):
            stream = self._api.build(
                fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False,
                nocache=nocache, decode=True, timeout=timeout_s,
            )
            for chunk in self._checked(stream, lambda m: self._build_error(m, tail), tail):
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
                self._follow_steps(chunk)
        if not image_id:
            raise BuildStepFailed(f"the engine finished building {tag} without reporting an image id")
        return image_id

    def tracking(self, killable: Killable) -> None:
        """Kill `killable` too on cancel or timeout: a process that builds against this engine."""
        self._tracked = killable

    def failure(self, message: str, tail: collections.deque[str]) -> ImageBuilderError:
        """What a failed build step means: the step's own failure, unless the engine itself went away."""
        return self._build_error(message, tail)

    @property
    def api(self) -> docker.APIClient:
        """The engine's API, for adapters of their own (the SBOM's image files)."""
        return self._api

    def tag(self, image: str, reference: ImageReference) -> None:
        """Give the local `image` another name, to push it under."""
        with daemon_errors(f"tag {image} as {reference}"):
            self._api.tag(image, reference.name, tag=reference.tag)

    def push(self, reference: ImageReference, credentials: RegistryCredentials | None) -> str:
        """Push `reference`; the manifest digest the registry stored (required, or the push failed)."""
        action = f"push of {reference}"
        digest = ""
        with _registry_errors(reference.registry, action):
            stream = self._api.push(
                reference.name, tag=reference.tag, stream=True, decode=True,
                auth_config=credentials.auth_config() if credentials else None,
            )
            for chunk in self._checked(stream, lambda m: error_for_message(m, reference.registry, action)):
                digest = (chunk.get("aux") or {}).get("Digest", digest)
        if not digest:
            raise error_for_message("the registry reported no digest for the pushed image", reference.registry, action)
        return digest

    def _build_error(self, message: str, tail: collections.deque[str]) -> ImageBuilderError:
        """A step failed, unless the engine itself went away (dockerd stopping reports odd errors first)."""
        if not _engine_answers():
            return DaemonUnavailable(f"the Docker engine went away during the build: {message}")
        return _build_failure(message, tail)

    def _follow_steps(self, chunk: dict) -> None:
        for line in _lines_of(chunk):
            if match := _RUNNING_IN_RE.fullmatch(line):
                self._container = match[1]
                self._on_container(match[1])
            elif match := _STEP_IMAGE_RE.fullmatch(line):
                self._container = None
                self.step_images.append(match[1])

    def _checked(
        self, stream: Iterable[dict], to_error: Callable[[str], ImageBuilderError], tail=None
    ) -> Iterator[dict]:
        """Yield each chunk after logging it; docker-py never raises for these, so `error` is checked here."""
        for chunk in stream:
            self._check()
            message = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
            if message:
                self._log(f"ERROR: {message}", tail)
                raise to_error(message.strip())
            for line in _lines_of(chunk):
                self._log(line, tail)
            yield chunk

    def _log(self, line: str, tail: collections.deque[str] | None) -> None:
        if tail is not None:
            tail.append(line)
        self._on_line(line)


def _lines_of(chunk: dict) -> list[str]:
    """Human lines of a stream chunk; progress-bar updates are skipped so logs stay readable."""
    if "stream" in chunk:
        return [line for line in chunk["stream"].splitlines() if line.strip()]
    if chunk.get("progressDetail") or "status" not in chunk:
        return []
    return [f"{chunk['id']}: {chunk['status']}" if chunk.get("id") else chunk["status"]]


class EngineApi(docker.APIClient):
    """docker-py's engine client whose HTTP session never reads the environment, from its first request (the API
    version check) on: requests would let REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace the CA from DOCKER_CERT_PATH
    (psf/requests#3829), and a TLS engine behind a private CA would fail verification. Proxy variables do not
    apply to the engine either."""

    trust_env = property(lambda self: False, lambda self, value: None)  # requests.Session sets it True


def engine_client(timeout_s: int) -> EngineApi:
    """The engine the Docker CLI would use: DOCKER_HOST, with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for a remote
    one."""
    return EngineApi(timeout=timeout_s, **docker.utils.kwargs_from_env())


def check_engine_settings() -> None:
    """At worker start: ConfigurationError if the engine's TLS settings are unusable (files missing, a certificate
    either side refuses), so that such a worker never starts. An engine that is only away is left to the builds,
    which wait for it."""
    where = describe_engine()
    try:
        engine_client(KILL_TIMEOUT_S).close()  # its first request, the API version check, says whether TLS works
    except DockerException as e:
        refusal = _tls_refusal(e, where)
        if refusal is not None:
            raise refusal from None
        cause = e.__cause__ or e.__context__ or e
        logger.warning("the Docker engine at %s does not answer yet (%s): builds wait for it", where,
                       type(cause).__name__)


def _tls_refusal(error: DockerException, where: str) -> ConfigurationError | None:
    """What is wrong with the engine's TLS settings, if that is why docker-py failed: the certificate files are not
    there, or either side refused the other's certificate (docker-py wraps the version check's error)."""
    cause = error.__cause__ or error.__context__
    if isinstance(cause, requests.exceptions.SSLError):
        return ConfigurationError(
            f"TLS with the Docker engine at {where} failed ({_tls_reason(cause)}): DOCKER_CERT_PATH must hold ca.pem "
            "(the CA that signed the engine's certificate) and this worker's cert.pem and key.pem (signed by a CA "
            "the engine trusts)")
    if isinstance(error, docker.errors.TLSParameterError):
        folder = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
        missing = [name for name in ("ca.pem", "cert.pem", "key.pem") if not (folder / name).is_file()]
        return ConfigurationError(f"cannot use the Docker engine at {where}: DOCKER_CERT_PATH must hold ca.pem, "
                                  f"cert.pem and key.pem; missing: {', '.join(missing) or 'none (unreadable?)'}")
    return None


def describe_engine() -> str:
    """DOCKER_HOST and its TLS settings, as a worker's errors name them (no secret is in any)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    if os.environ.get("DOCKER_TLS_VERIFY"):
        host += f" with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH={os.environ.get('DOCKER_CERT_PATH') or '~/.docker'}"
    return host


def engine_on_this_host() -> bool:
    """Whether the engine runs on this host (a Unix socket), so that this host's binfmt handlers are its own."""
    return (os.environ.get("DOCKER_HOST") or "unix://").startswith("unix://")


def _tls_reason(error: requests.exceptions.SSLError) -> str:
    """The innermost SSL error's own words (certificate verify failed, unknown ca, ...), bounded."""
    words = str(error)
    found = re.search(r"\[SSL: [A-Z0-9_]+\] ([^(]+)", words) or re.search(r"SSLError\((.+?)\)", words)
    return (found.group(1).strip() if found else type(error).__name__)[:200]


def engine_platform() -> str:
    """The platform the engine builds for natively (`linux/amd64`, ...); the host's, while the engine is away."""
    try:
        client = engine_client(KILL_TIMEOUT_S)
        try:
            info = client.info()
        finally:
            client.close()
        system, machine = info.get("OSType") or "linux", info.get("Architecture") or platform.machine()
    except (DockerException, *_CONNECTION_ERRORS):
        system, machine = "linux", platform.machine()
    return f"{system}/{OCI_ARCHITECTURES.get(machine, machine)}"


def _engine_answers() -> bool:
    try:
        client = engine_client(KILL_TIMEOUT_S)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (DockerException, *_CONNECTION_ERRORS):
        return False


def _build_failure(message: str, tail: collections.deque[str]) -> BuildStepFailed:
    lines = "\n".join(tail)
    return BuildStepFailed(f"build step failed: {message}\nlast log lines:\n{lines}")


# docker-py reads build, pull and push streams from the raw urllib3 response, so a connection cut mid-stream
# surfaces as urllib3's own error (ProtocolError: IncompleteRead), never wrapped by requests.
_CONNECTION_ERRORS = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
)


@contextlib.contextmanager
def daemon_errors(action: str) -> Iterator[None]:
    """The engine's errors, as the domain's: away or failing (retryable), or refusing (the step fails)."""
    try:
        yield
    except ImageBuilderError:
        raise
    except _CONNECTION_ERRORS as e:
        raise DaemonUnavailable(f"the Docker engine stopped answering during {action}: {type(e).__name__}") from None
    except APIError as e:
        if e.status_code and e.status_code >= 500:
            raise DaemonUnavailable(f"the Docker engine failed to {action}: {e.explanation}") from None
        raise BuildStepFailed(f"the Docker engine refused to {action}: {e.explanation}") from None
    except DockerException as e:
        raise DaemonUnavailable(f"cannot {action}: {e}") from None


@contextlib.contextmanager
def _registry_errors(registry: str, action: str) -> Iterator[None]:
    """The daemon's API errors for a pull or push carry the registry's own words: map those."""
    with daemon_errors(action):
        try:
            yield
        except APIError as e:
            raise error_for_message(e.explanation or str(e), registry, action) from None
