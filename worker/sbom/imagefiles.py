"""Files read out of a built image through the engine's archive API: a container is created from the image and
never started, and only the package databases' paths are asked for, never a whole export of the image."""

from __future__ import annotations

import contextlib
import io
import posixpath
import queue
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
from docker.errors import DockerException, NotFound

from worker.engine import daemon_errors

MAX_DATABASE_BYTES = 64 * 1024 * 1024  # a dpkg status of thousands of packages is a few MB
MAX_RECORD_BYTES = 1024 * 1024  # one METADATA, PKG-INFO or conda-meta record
READ_BUFFER_BYTES = 1024 * 1024
LANE_WAIT_S = 0.05
NEVER_RUN = ["/imagebuilder-sbom-never-runs"]  # a command, for images without one: the container never starts


class ChunkStream(io.RawIOBase):
    """The archive's chunks as a file, for tarfile to read as a stream (nothing kept but the current chunk)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._chunk, self._at = iter(chunks), memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at >= len(self._chunk):  # a view and an offset: a chunk is never copied but into `buffer`
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._chunk, self._at = memoryview(chunk), 0
        taken = min(len(buffer), len(self._chunk) - self._at)
        buffer[:taken] = self._chunk[self._at:self._at + taken]
        self._at += taken
        return taken


class ForwardOnly(io.RawIOBase):
    """A stream that tarfile may read as a file: `tell`, and `seek` forward only (skipping a body is one big read,
    where tarfile's own stream mode copies its buffer for every header)."""

    def __init__(self, stream: io.BufferedReader):
        self._stream, self._at = stream, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._at + offset
        if whence == io.SEEK_END or target < self._at:
            raise io.UnsupportedOperation("the archive is read once, forward")
        while self._at < target and (skipped := len(self._stream.read(min(target - self._at, READ_BUFFER_BYTES)))):
            self._at += skipped
        return self._at

    def readinto(self, buffer) -> int:
        read = self._stream.readinto(buffer)
        self._at += read
        return read


class ImageFiles:
    """The files of one image, through containers created from it. The engine serves one archive read of a
    container at a time (it holds the container until the read ends), so up to `lanes` containers are made, as
    reads running at once need them."""

    def __init__(self, api: docker.APIClient, image: str, lanes: int):
        self._api, self._image, self._lanes = api, image, lanes
        self._free: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._made: list[str] = []
        self._lock = threading.Lock()

    @classmethod
    @contextlib.contextmanager
    def of(cls, api: docker.APIClient, image: str, lanes: int = 1) -> Iterator[ImageFiles]:
        files = cls(api, image, lanes)
        try:
            yield files
        finally:
            files._remove_all()

    def exists(self, path: str) -> bool:
        """Whether `path` is in the image (the archive API's HEAD: its stat, nothing of its content)."""
        with self._container() as container, daemon_errors(f"look for {path} in the image"):
            answer = self._api.head(self._api._url("/containers/{0}/archive", container), params={"path": path})
        return answer.status_code == 200

    def files(self, path: str, wanted: Callable[[str], bool] = lambda name: True,
              max_bytes: int = MAX_RECORD_BYTES) -> list[tuple[str, bytes]]:
        """The regular files at or under `path` whose names (relative, as the archive has them) `wanted` takes,
        with their content; those larger than `max_bytes` are passed over. Nothing if `path` is not there. The
        archive is read to its end, which lets the engine go of the container."""
        with self._container() as container, daemon_errors(f"read {path} from the image"):
            try:
                chunks, _ = self._api.get_archive(container, path)
            except NotFound:
                return []
            stream = ForwardOnly(io.BufferedReader(ChunkStream(chunks), READ_BUFFER_BYTES))
            with tarfile.open(fileobj=stream, mode="r:") as archive:
                return [(member.name, archive.extractfile(member).read()) for member in archive
                        if member.isfile() and member.size <= max_bytes and wanted(member.name)]

    def file(self, path: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes | None:
        """One regular file's content; None if it is not there, is not a regular file, or is too large."""
        itself = posixpath.basename(path.rstrip("/"))  # the archive names it so; under a directory, not so
        return next((content for _, content in self.files(path, lambda name: name == itself, max_bytes)), None)

    @contextlib.contextmanager
    def _container(self) -> Iterator[str]:
        container = self._borrow()
        try:
            yield container
        finally:
            self._free.put(container)

    def _borrow(self) -> str:
        """A free container; one more made while fewer than `lanes` are (else wait, and look again: a making
        that failed leaves its place free)."""
        while True:
            with self._lock:
                make = self._free.empty() and len(self._made) < self._lanes
                if make:
                    self._made.append("")  # its place, so that no other thread makes one more than `lanes`
            if make:
                return self._make()
            with contextlib.suppress(queue.Empty):
                return self._free.get(timeout=LANE_WAIT_S)

    def _make(self) -> str:
        try:
            with daemon_errors("create a container to read the image's packages"):
                container = self._api.create_container(self._image, command=NEVER_RUN, entrypoint=[],
                                                       network_disabled=True)["Id"]
        except BaseException:
            with self._lock:
                self._made.remove("")
            raise
        with self._lock:
            self._made[self._made.index("")] = container
        return container

    def _remove_all(self) -> None:
        made = [container for container in self._made if container]
        if made:
            with ThreadPoolExecutor(len(made)) as pool:
                pool.map(self._remove, made)

    def _remove(self, container: str) -> None:
        with contextlib.suppress(DockerException):
            self._api.remove_container(container, force=True)
