"""Docker engine adapter: pull, inspect, build, push with stream checks; only domain errors leave it."""

from __future__ import annotations

import collections
import contextlib
import io
from collections.abc import Callable, Iterable, Iterator

import docker
import requests
from docker.errors import APIError, DockerException

from worker.credentials import RegistryCredentials
from worker.errors import BuildStepFailed, DaemonUnavailable, ImageBuilderError
from worker.reference import ImageReference
from worker.registry import error_for_message

LogSink = Callable[[str], None]
BUILD_TAIL_LINES = 20


class Engine:
    """One Docker engine connection for one build; every line it reads goes to `on_line`."""

    def __init__(self, api: docker.APIClient, on_line: LogSink):
        self._api = api
        self._on_line = on_line

    @classmethod
    def connect(cls, on_line: LogSink, *, timeout_s: int) -> Engine:
        """Connect as the Docker CLI would (DOCKER_HOST, ...); DaemonUnavailable if it does not answer."""
        with _daemon_errors("connect to the Docker engine"):
            client = docker.from_env(timeout=timeout_s)
            client.ping()
        return cls(client.api, on_line)

    def close(self) -> None:
        self._api.close()

    def pull(self, reference: ImageReference, credentials: RegistryCredentials | None) -> str | None:
        """Pull `reference`; the digest the registry served it by (from the stream), if it said one."""
        action = f"pull of {reference}"
        digest = reference.digest
        with _registry_errors(reference.registry, action):
            stream = self._api.pull(
                reference.name, tag=reference.manifest_reference, stream=True, decode=True,
                auth_config=credentials.auth_config() if credentials else None,
            )
            for chunk in self._checked(stream, lambda m: error_for_message(m, reference.registry, action)):
                status = chunk.get("status", "")
                if status.startswith("Digest: "):
                    digest = status.removeprefix("Digest: ").strip()
        return digest

    def image_user(self, image: str) -> str:
        """The USER the image's config sets ('' for root by default)."""
        with _daemon_errors(f"inspect {image}"):
            return (self._api.inspect_image(image).get("Config") or {}).get("User") or ""

    def build(self, context: io.BytesIO, tag: str, *, nocache: bool, timeout_s: int) -> str:
        """Build from a tar context with the base already pulled; the new image id."""
        tail: collections.deque[str] = collections.deque(maxlen=BUILD_TAIL_LINES)
        image_id = ""
        with _daemon_errors(f"build {tag}"):
            stream = self._api.build(
                fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False,
                nocache=nocache, decode=True, timeout=timeout_s,
            )
            for chunk in self._checked(stream, lambda m: _build_failure(m, tail), tail):
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
        if not image_id:
            raise BuildStepFailed(f"the engine finished building {tag} without reporting an image id")
        return image_id

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

    def _checked(
        self, stream: Iterable[dict], to_error: Callable[[str], ImageBuilderError], tail=None
    ) -> Iterator[dict]:
        """Yield each chunk after logging it; docker-py never raises for these, so `error` is checked here."""
        for chunk in stream:
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


def _build_failure(message: str, tail: collections.deque[str]) -> BuildStepFailed:
    lines = "\n".join(tail)
    return BuildStepFailed(f"build step failed: {message}\nlast log lines:\n{lines}")


_CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@contextlib.contextmanager
def _daemon_errors(action: str) -> Iterator[None]:
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
    with _daemon_errors(action):
        try:
            yield
        except APIError as e:
            raise error_for_message(e.explanation or str(e), registry, action) from None
