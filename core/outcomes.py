"""How the entry points answer the domain's errors: one table of HTTP statuses and CLI exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import (
    AlreadyFinished,
    AuthFailed,
    BaseImageNotFound,
    ConcurrentChange,
    ConfigurationError,
    FeatureDisabled,
    ImageBuilderError,
    InvalidRequest,
    InvalidSpec,
    NoSbom,
    RegistryUnavailable,
    SettingsError,
    StoreUnavailable,
    UnknownBuild,
    UnknownSpec,
    UnreadableImage,
)

EXIT_SUCCEEDED = 0
EXIT_NOT_SUCCEEDED = 1  # the build ended otherwise, or the service could not be reached
EXIT_INVALID = 2  # invalid input, settings or an unknown id: nothing was queued
STORE_RETRY_AFTER_S = 5  # a failover's election takes a few seconds: asking again sooner finds no master


@dataclass(frozen=True)
class Outcome:
    status: int
    exit_code: int
    what: str  # for the OpenAPI description of the status
    retry_after_s: int | None = None  # for a Retry-After header: the same request may succeed then


# The first row whose error class matches wins: subclasses come before their parents.
OUTCOMES: tuple[tuple[type[Exception], Outcome], ...] = (
    (UnknownBuild, Outcome(404, EXIT_INVALID, "no build with this id")),
    (UnknownSpec, Outcome(404, EXIT_INVALID, "no stored spec (or schedule) with this name")),
    (NoSbom, Outcome(404, EXIT_NOT_SUCCEEDED, "the build has no image, or its image no SBOM")),
    (AlreadyFinished, Outcome(409, EXIT_NOT_SUCCEEDED, "the build already ended")),
    (ConcurrentChange, Outcome(409, EXIT_NOT_SUCCEEDED, "changed by others meanwhile; try again")),
    (FeatureDisabled, Outcome(403, EXIT_INVALID, "building is disabled")),
    (InvalidSpec, Outcome(422, EXIT_INVALID, "invalid input: the field and the rule")),
    (InvalidRequest, Outcome(400, EXIT_INVALID, "the body is not what the route takes")),
    (SettingsError, Outcome(503, EXIT_INVALID, "the service's settings are invalid")),
    (ConfigurationError, Outcome(503, EXIT_INVALID, "the service is not configured to build")),
    (StoreUnavailable, Outcome(503, EXIT_NOT_SUCCEEDED, "Redis cannot be reached, or no replica confirmed the write",
                                         STORE_RETRY_AFTER_S)),
    (RegistryUnavailable, Outcome(502, EXIT_NOT_SUCCEEDED, "the image's registry cannot be reached")),
    (AuthFailed, Outcome(502, EXIT_NOT_SUCCEEDED, "the image's registry refused the service's credentials")),
    (UnreadableImage, Outcome(502, EXIT_NOT_SUCCEEDED, "the image's registry answered what is not an image")),
    (BaseImageNotFound, Outcome(502, EXIT_NOT_SUCCEEDED, "the image is no longer in its registry")),
    (ImageBuilderError, Outcome(500, EXIT_NOT_SUCCEEDED, "the service failed")),
)
UNEXPECTED = Outcome(500, EXIT_NOT_SUCCEEDED, "internal error")


def outcome_of(error: BaseException) -> Outcome:
    return next((outcome for kind, outcome in OUTCOMES if isinstance(error, kind)), UNEXPECTED)


@contextmanager
def exiting_on_errors() -> Iterator[None]:
    """For a command: the service's errors end it with the message on stderr and the exit code of the table (2 for
    bad input, settings or an unknown id, when nothing was queued)."""
    try:
        yield
    except ImageBuilderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(outcome_of(e).exit_code)
