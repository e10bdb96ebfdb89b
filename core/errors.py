"""The one exception hierarchy: retryable errors are retried with backoff, fatal ones end the build as Failed."""


class ImageBuilderError(Exception):
    """Root of every error this service raises on purpose."""

    @property
    def message(self) -> str:
        return str(self)


class RetryableError(ImageBuilderError):
    """A transient failure: the same build may succeed when tried again later."""


class RegistryUnavailable(RetryableError):
    """A registry refused the connection, timed out, answered 5xx or rate-limited us."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(RetryableError):
    """Redis (the broker and the store of every build, spec and schedule) cannot be reached or refused a write."""


class NotReplicated(StoreUnavailable):
    """Fewer replicas than IMAGEBUILDER_REDIS_WAIT_REPLICAS confirmed a write in time: it may not survive a failover."""


class DaemonUnavailable(RetryableError):
    """The Docker engine could not be reached or stopped answering."""


class FatalError(ImageBuilderError):
    """A failure that trying again cannot fix; the build ends Failed at once."""


class InvalidSpec(FatalError):
    """The image spec breaks a rule; the message names the field, the item and the rule."""


class NeverMatches(InvalidSpec, ValueError):
    """A cron expression with no minute in the next years that fits all its fields (a ValueError too, so that
    pydantic's validators report it as the field's problem)."""


class InvalidRequest(FatalError):
    """A request's body is not what its route takes (a webhook's payload); the message says which part and why."""


class ConfigurationError(FatalError):
    """The service is not configured to build (feature flag off, registry unset, inconsistent settings)."""


class SettingsError(ConfigurationError):
    """The environment or `.env` holds an invalid setting; the message names the variable, never its value."""


class BuilderUnavailable(ConfigurationError):
    """The builder the settings ask for cannot run on this worker (no Docker client here runs BuildKit)."""


class FeatureDisabled(ConfigurationError):
    """PRIMEHUB_FEATURE_CUSTOM_IMAGE is not `true`: every submission is refused."""


class AuthFailed(FatalError):
    """A registry rejected our credentials (401/403) for a pull, a push or a manifest check."""


class UnsafeTokenRealm(FatalError):
    """A registry named a token realm this service will not send credentials to: not http(s), plain http to a
    host not allowed it, or a link-local or cloud metadata address."""


class PullSecretError(FatalError):
    """A named pull secret is missing, unreadable, or has no entry for the base image's registry."""


class BaseImageNotFound(FatalError):
    """The base image (repository or tag) does not exist in its registry."""


class BaseLacksPlatform(BaseImageNotFound):
    """The base image has no image for a platform the spec names."""


class PlatformUnavailable(ConfigurationError):
    """The spec names a platform that the worker which took its build cannot build."""


class UnreadableImage(FatalError):
    """A registry's answer about an image (its manifest or config) could not be read: not a JSON object, no config,
    or a redirect to an address no request may go to."""


class BuildStepFailed(FatalError):
    """A Dockerfile step failed (for a RUN step, the command and the last log lines are in the message)."""


class PartFailed(FatalError):
    """One platform's part of a multi-platform build failed (the message names the platform, its step and why)."""


class SbomFailed(FatalError):
    """With IMAGEBUILDER_SBOM=required: the image's SBOM could not be made or attached, so nothing is tagged."""


class NoSbom(FatalError):
    """A build has no image, or its image no SBOM attached in the registry."""


class PushFailed(FatalError):
    """The registry rejected the pushed image for a reason other than auth or availability."""


class BuildTimedOut(FatalError):
    """The build ran longer than IMAGEBUILDER_BUILD_TIMEOUT_S; it was stopped and pushed nothing."""


class WorkerLost(FatalError):
    """Every delivery of the build died with its worker, more times than IMAGEBUILDER_MAX_DELIVERIES allows."""


class BuildCancelled(ImageBuilderError):
    """Someone cancelled the build; it stopped (or never started) and pushed nothing."""


class BuildFailed(FatalError):
    """The build ended Failed; the task raises it so Celery's own result is FAILURE with the same message."""


class AlreadyFinished(ImageBuilderError):
    """The build had already ended (when a cancel asked for it, or a delivery came to start it); nothing changed."""


class ConcurrentChange(ImageBuilderError):
    """What a request would change was changed by others too often meanwhile; asking again will do."""


class UnknownSpec(ImageBuilderError):
    """No stored spec has this name."""


class UnknownBuild(ImageBuilderError):
    """No build with this id was ever submitted (or its record has expired)."""
