"""Files read out of a built image through the engine's archive API: a container is created from the image and
never started, and only the package databases' paths are asked for, never a whole export of the image."""

from __future__ import annotations

import contextlib
import io
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator

import docker
from docker.errors import DockerException, NotFound

from worker.engine import daemon_errors

MAX_DATABASE_BYTES = 64 * 1024 * 1024  # a dpkg status of thousands of packages is a few MB
MAX_RECORD_BYTES = 1024 * 1024  # one METADATA, PKG-INFO or conda-meta record
NEVER_RUN = ["/imagebuilder-sbom-never-runs"]  # a command, for images without one: the container never starts


class ChunkStream(io.RawIOBase):
    """The archive's chunks as a file, for tarfile to read as a stream (nothing kept but the current chunk)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._rest = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            self._rest = next(self._chunks, None)
            if self._rest is None:
                return 0
        taken, self._rest = self._rest[:len(buffer)], self._rest[len(buffer):]
        buffer[:len(taken)] = taken
        return len(taken)


class ImageFiles:
    """The files of one image, through a container created from it."""

    def __init__(self, api: docker.APIClient, container_id: str):
        self._api = api
        self._id = container_id

    @classmethod
    @contextlib.contextmanager
    def of(cls, api: docker.APIClient, image: str) -> Iterator[ImageFiles]:
        with daemon_errors("create a container to read the image's packages"):
            container = api.create_container(image, command=NEVER_RUN, entrypoint=[], network_disabled=True)
        try:
            yield cls(api, container["Id"])
        finally:
            with contextlib.suppress(DockerException):
                api.remove_container(container["Id"], force=True)

    def exists(self, path: str) -> bool:
        """Whether `path` is in the image (the archive API's HEAD: its stat, nothing of its content)."""
        with daemon_errors(f"look for {path} in the image"):
            answer = self._api.head(self._api._url("/containers/{0}/archive", self._id), params={"path": path})
        return answer.status_code == 200

    def files(self, path: str, wanted: Callable[[str], bool] = lambda name: True,
              max_bytes: int = MAX_RECORD_BYTES) -> Iterator[tuple[str, bytes]]:
        """The regular files at or under `path` whose names (relative, as the archive has them) `wanted` takes,
        with their content; those larger than `max_bytes` are passed over. Nothing if `path` is not there."""
        with daemon_errors(f"read {path} from the image"):
            try:
                chunks, _ = self._api.get_archive(self._id, path)
            except NotFound:
                return
            with tarfile.open(fileobj=io.BufferedReader(ChunkStream(chunks)), mode="r|") as archive:
                for member in archive:
                    if member.isfile() and member.size <= max_bytes and wanted(member.name):
                        yield member.name, archive.extractfile(member).read()

    def file(self, path: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes | None:
        """One regular file's content; None if it is not there, is not a regular file, or is too large."""
        itself = posixpath.basename(path.rstrip("/"))  # the archive names it so; under a directory, not so
        return next((content for _, content in self.files(path, lambda name: name == itself, max_bytes)), None)
