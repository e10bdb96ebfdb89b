"""Settings: one object built at each entry point from the environment and `.env`, then passed in."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.redis_target import RedisTarget, parse_sentinels
from core.errors import SettingsError
from core.platforms import Platform

DAY_S = 24 * 3600
DEFAULT_BUILD_TIMEOUT_S = 3600
DEFAULT_RESULT_EXPIRES_S = 7 * DAY_S
DEFAULT_LOG_RETENTION_S = 7 * DAY_S
DEFAULT_LOG_MAX_LINES = 20_000
DEFAULT_DOCKER_TIMEOUT_S = 300
DEFAULT_REGISTRY_TIMEOUT_S = 30
MAX_REDIS_WAIT_REPLICAS = 16
DEFAULT_LIVE_LOG_PATIENCE_S = 60.0  # a failover with Sentinel's default down-after (30 s) and its election
MAX_REDIS_MASTER_NAME_CHARS = 100
MAX_REDIS_WAIT_TIMEOUT_MS = 10_000  # under the clients' socket timeout (config/redis_target.py)
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_BACKOFF_S = 5.0
DEFAULT_RETRY_BACKOFF_MAX_S = 300.0
DEFAULT_MAX_DELIVERIES = 3
DEFAULT_API_MAX_BODY_BYTES = 1 << 20
DEFAULT_WEBHOOK_MAX_BODY_BYTES = 256 << 10  # a registry's envelope of push events is a few KiB
# Per API process. A live log holds no thread, only its socket and a place in its build's shared feed; the
# process's open-file limit (ulimit -n) must leave room for the sockets.
DEFAULT_API_MAX_LOG_STREAMS = 1000
MAX_API_MAX_LOG_STREAMS = 10_000
DEFAULT_AUTH_MAX_FAILURES = 10
DEFAULT_AUTH_FAILURE_WINDOW_S = 60
MAX_PIP_INDEX_URL_CHARS = 2048  # counted in the margin a RUN line keeps below the kernel's argument limit
MAX_PACKAGE_CACHE_URL_CHARS = 2048
# A package cache's URL goes into an apt or pip configuration line: nothing that could end the value or the line
_CACHE_URL_RE = re.compile(r"https?://[^\s\"'\\;#]+")
HARD_LIMIT_GRACE_S = 60  # the hard limit leaves the soft one time to stop the build and record why


class WebhookToken(BaseModel):
    """One of IMAGEBUILDER_WEBHOOK_TOKENS, and the registry hosts it may speak for (none named: any)."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr
    hosts: tuple[str, ...] = ()


def _scoped_token(entry: str) -> dict[str, object]:
    token, _, hosts = entry.rpartition("@") if "@" in entry else (entry, "", "")
    if "," in token:
        raise ValueError("with scoped entries (token@host[,host]), separate entries with spaces or ';'")
    names = [host.strip().lower() for host in hosts.split(",") if host.strip()]
    if not token or ("@" in entry and not names) or any(re.search(r"[/\s@]", host) for host in names):
        raise ValueError("an entry is a token, or token@host[,host] with registry hosts (host or host:port)")
    return {"token": token, "hosts": tuple(names)}


class Settings(BaseSettings):
    """Every setting of the service; see `.env.example` for each variable and its default."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True, populate_by_name=True, env_ignore_empty=True
    )

    feature_custom_image: str = Field("", validation_alias="PRIMEHUB_FEATURE_CUSTOM_IMAGE")
    registry_endpoint: str = Field("", validation_alias="PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT")
    registry_username: str = Field("", validation_alias="PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME")
    registry_password: SecretStr = Field(
        SecretStr(""), validation_alias="PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD"
    )
    repo_prefix: str = Field("", validation_alias="PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX")

    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"), validation_alias="IMAGEBUILDER_REDIS_URL"
    )
    # With sentinels (host:port,...), they say which server is the master (IMAGEBUILDER_REDIS_URL then gives only
    # the password, the database and TLS): config/redis_target.py.
    redis_sentinels: Annotated[tuple[tuple[str, int], ...], NoDecode] = Field(
        (), validation_alias="IMAGEBUILDER_REDIS_SENTINELS")
    redis_master_name: str = Field("imagebuilder", min_length=1, max_length=MAX_REDIS_MASTER_NAME_CHARS,
                                   pattern=r"^[A-Za-z0-9._-]+$", validation_alias="IMAGEBUILDER_REDIS_MASTER_NAME")
    redis_sentinel_password: SecretStr = Field(SecretStr(""), validation_alias="IMAGEBUILDER_REDIS_SENTINEL_PASSWORD")
    # An accepted build, a build's end and a schedule's claim wait until this many replicas hold them (Redis's
    # WAIT), at most IMAGEBUILDER_REDIS_WAIT_TIMEOUT_MS; fewer answer 503, to be retried.
    redis_wait_replicas: int = Field(0, ge=0, le=MAX_REDIS_WAIT_REPLICAS,
                                     validation_alias="IMAGEBUILDER_REDIS_WAIT_REPLICAS")
    redis_wait_timeout_ms: int = Field(1000, ge=1, le=MAX_REDIS_WAIT_TIMEOUT_MS,
                                       validation_alias="IMAGEBUILDER_REDIS_WAIT_TIMEOUT_MS")
    pull_secrets_dir: Path = Field(
        Path("/etc/imagebuilder/pull-secrets"), validation_alias="IMAGEBUILDER_PULL_SECRETS_DIR"
    )
    build_timeout_s: int = Field(
        DEFAULT_BUILD_TIMEOUT_S, gt=0, validation_alias="IMAGEBUILDER_BUILD_TIMEOUT_S"
    )
    push_repo: str = Field("", validation_alias="IMAGEBUILDER_PUSH_REPO")
    insecure_registries: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="IMAGEBUILDER_INSECURE_REGISTRIES"
    )
    build_ca_bundle: Path | None = Field(None, validation_alias="IMAGEBUILDER_BUILD_CA_BUNDLE")
    pip_index_url: str = Field("", max_length=MAX_PIP_INDEX_URL_CHARS, validation_alias="IMAGEBUILDER_PIP_INDEX_URL")
    # The shared package caches BuildKit builds go through (an apt caching proxy such as apt-cacher-ng, and the
    # index URL of a PyPI caching mirror such as proxpi), as the engine's build containers reach them. They reach
    # a build as build secrets, so neither the image nor its history holds them (a URL may carry credentials);
    # one that does not answer is passed by, to the origin.
    apt_proxy: SecretStr = Field(SecretStr(""), max_length=MAX_PACKAGE_CACHE_URL_CHARS,
                                 validation_alias="IMAGEBUILDER_APT_PROXY")
    pip_mirror: SecretStr = Field(SecretStr(""), max_length=MAX_PACKAGE_CACHE_URL_CHARS,
                                  validation_alias="IMAGEBUILDER_PIP_MIRROR")

    result_expires_s: int = Field(
        DEFAULT_RESULT_EXPIRES_S, ge=DAY_S, validation_alias="IMAGEBUILDER_RESULT_EXPIRES_S"
    )
    log_retention_s: int = Field(
        DEFAULT_LOG_RETENTION_S, gt=0, validation_alias="IMAGEBUILDER_LOG_RETENTION_S"
    )
    log_max_lines: int = Field(DEFAULT_LOG_MAX_LINES, gt=0, validation_alias="IMAGEBUILDER_LOG_MAX_LINES")
    docker_timeout_s: int = Field(
        DEFAULT_DOCKER_TIMEOUT_S, gt=0, validation_alias="IMAGEBUILDER_DOCKER_TIMEOUT_S"
    )
    registry_timeout_s: int = Field(
        DEFAULT_REGISTRY_TIMEOUT_S, gt=0, validation_alias="IMAGEBUILDER_REGISTRY_TIMEOUT_S"
    )

    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, validation_alias="IMAGEBUILDER_MAX_ATTEMPTS")
    retry_backoff_s: float = Field(DEFAULT_RETRY_BACKOFF_S, gt=0, validation_alias="IMAGEBUILDER_RETRY_BACKOFF_S")
    retry_backoff_max_s: float = Field(
        DEFAULT_RETRY_BACKOFF_MAX_S, gt=0, validation_alias="IMAGEBUILDER_RETRY_BACKOFF_MAX_S"
    )
    max_deliveries: int = Field(DEFAULT_MAX_DELIVERIES, ge=1, validation_alias="IMAGEBUILDER_MAX_DELIVERIES")
    visibility_timeout_s: int | None = Field(None, gt=0, validation_alias="IMAGEBUILDER_VISIBILITY_TIMEOUT_S")

    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="IMAGEBUILDER_API_TOKENS"
    )
    api_max_body_bytes: int = Field(DEFAULT_API_MAX_BODY_BYTES, ge=1024,
                                    validation_alias="IMAGEBUILDER_API_MAX_BODY_BYTES")
    api_public_docs: bool = Field(False, validation_alias="IMAGEBUILDER_API_PUBLIC_DOCS")
    # A build Pending this long whose message the broker holds neither queued nor delivered (lost in a failover) is
    # sent again by a worker's reaper, which looks this often.
    requeue_undelivered_after_s: int = Field(60, ge=1, le=DAY_S,
                                             validation_alias="IMAGEBUILDER_REQUEUE_UNDELIVERED_AFTER_S")
    # How long a live log waits for Redis to answer again (a failover) before it ends with an `unavailable` event.
    live_log_patience_s: float = Field(DEFAULT_LIVE_LOG_PATIENCE_S, ge=0, le=3600,
                                       validation_alias="IMAGEBUILDER_LIVE_LOG_PATIENCE_S")
    api_max_log_streams: int = Field(DEFAULT_API_MAX_LOG_STREAMS, ge=1, le=MAX_API_MAX_LOG_STREAMS,
                                     validation_alias="IMAGEBUILDER_API_MAX_LOG_STREAMS")
    webhook_tokens: Annotated[list[WebhookToken], NoDecode] = Field(
        default_factory=list, validation_alias="IMAGEBUILDER_WEBHOOK_TOKENS"
    )
    webhook_max_body_bytes: int = Field(DEFAULT_WEBHOOK_MAX_BODY_BYTES, ge=1024,
                                        validation_alias="IMAGEBUILDER_WEBHOOK_MAX_BODY_BYTES")
    # Failed credentials (API or webhook tokens, console sign-ins) one client address may send per window, after
    # which it is answered 429 until the window ends.
    auth_max_failures: int = Field(DEFAULT_AUTH_MAX_FAILURES, ge=1, validation_alias="IMAGEBUILDER_AUTH_MAX_FAILURES")
    auth_failure_window_s: int = Field(DEFAULT_AUTH_FAILURE_WINDOW_S, ge=1, le=DAY_S,
                                       validation_alias="IMAGEBUILDER_AUTH_FAILURE_WINDOW_S")
    # Proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are believed; none by default.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="IMAGEBUILDER_TRUSTED_PROXIES"
    )
    ui_session_s: int = Field(12 * 3600, ge=60, le=30 * 24 * 3600, validation_alias="IMAGEBUILDER_UI_SESSION_S")
    history_keep_succeeded: int = Field(5, ge=1, validation_alias="IMAGEBUILDER_HISTORY_KEEP_SUCCEEDED")
    history_keep_failed: int = Field(5, ge=1, validation_alias="IMAGEBUILDER_HISTORY_KEEP_FAILED")
    schedule_pass_s: float = Field(30.0, gt=0, validation_alias="IMAGEBUILDER_SCHEDULE_PASS_S")
    schedule_disable_after: int = Field(3, ge=1, validation_alias="IMAGEBUILDER_SCHEDULE_DISABLE_AFTER")
    soft_shutdown_s: float = Field(30.0, ge=0, validation_alias="IMAGEBUILDER_SOFT_SHUTDOWN_S")
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="IMAGEBUILDER_METRICS_PORT")
    # "" (the default): BuildKit wherever it works (checked at worker start), else classic; or one forced.
    builder: Literal["", "buildkit", "classic"] = Field("", validation_alias="IMAGEBUILDER_BUILDER")
    # The Docker client BuildKit builds run; "" finds the first `docker` on PATH that can.
    docker_cli: str = Field("", validation_alias="IMAGEBUILDER_DOCKER_CLI")
    # The platforms a worker takes builds for; empty: all its builder can (its engine's own, and those the host
    # emulates). For a remote engine, whose host's emulators a worker cannot see, this names them.
    platforms: Annotated[list[Platform], NoDecode] = Field([], validation_alias="IMAGEBUILDER_PLATFORMS")
    # Each image's SBOM: `required` fails a build whose SBOM cannot be made or attached (and tags nothing),
    # `best-effort` succeeds and says why it has none, `off` makes none.
    sbom: Literal["required", "best-effort", "off"] = Field("best-effort", validation_alias="IMAGEBUILDER_SBOM")
    # How long a platform's part of a build may wait for a worker that builds that platform to take it.
    part_claim_timeout_s: int = Field(600, ge=1, validation_alias="IMAGEBUILDER_PART_CLAIM_TIMEOUT_S")

    @field_validator("insecure_registries", "api_tokens", "trusted_proxies", "platforms", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_tokens", mode="before")
    @classmethod
    def _webhook_entries(cls, value: object) -> object:
        """`token[,token]`; with scopes, `token@host[,host]` entries separated by spaces or `;`."""
        if not isinstance(value, str):
            return value
        if "@" not in value:
            return [{"token": item} for item in re.split(r"[\s,;]+", value) if item]
        return [_scoped_token(entry) for entry in re.split(r"[\s;]+", value) if entry]

    @field_validator("build_ca_bundle", "metrics_port", "visibility_timeout_s", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`VAR=` (as compose passes an unset `${VAR:-}`) means the default, not an empty path or number."""
        return None if value == "" else value

    @field_validator("build_ca_bundle")
    @classmethod
    def _readable_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("must be the path of a readable PEM file")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(item, strict=False)) for item in value]
        except ValueError:
            raise ValueError("each item must be an IP address or network (10.0.0.0/8, ::1)") from None

    @field_validator("pip_index_url")
    @classmethod
    def _index_without_credentials(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("must not embed credentials: they would be baked into the image history")
        return value

    @field_validator("apt_proxy", "pip_mirror")
    @classmethod
    def _cache_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not (_CACHE_URL_RE.fullmatch(url) and urlsplit(url).hostname):
            raise ValueError("must be an http(s) URL with a host, and no spaces, quotes, backslashes, ';' or '#'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: object) -> object:
        return parse_sentinels(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sentinels_take_a_server_url(self) -> Settings:
        if self.redis_sentinels and urlsplit(self.redis_dsn).scheme not in {"redis", "rediss"}:
            raise ValueError("IMAGEBUILDER_REDIS_URL: with IMAGEBUILDER_REDIS_SENTINELS, must be a redis:// or "
                             "rediss:// URL (its password, database and TLS are the master's)")
        return self

    @property
    def feature_enabled(self) -> bool:
        return self.feature_custom_image.strip().lower() == "true"

    @property
    def hard_time_limit_s(self) -> int:
        return self.build_timeout_s + HARD_LIMIT_GRACE_S

    @property
    def broker_visibility_timeout_s(self) -> int:
        """Redis redelivers an unacknowledged task after this: by default ten minutes past the hard limit."""
        return self.visibility_timeout_s or self.hard_time_limit_s + 600

    @property
    def redis_dsn(self) -> str:
        return self.redis_url.get_secret_value()

    @property
    def redis_target(self) -> RedisTarget:
        return RedisTarget(self.redis_dsn, self.redis_sentinels, self.redis_master_name,
                           self.redis_sentinel_password.get_secret_value(), self.redis_wait_replicas,
                           self.redis_wait_timeout_ms)


def load_settings(**overrides: object) -> Settings:
    """Build Settings; errors name the variable and the rule, never the value that was given."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = [_problem(err) for err in e.errors(include_input=False, include_url=False)]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def _problem(error: ErrorDetails) -> str:
    """`VARIABLE: rule`; a rule across several variables (a model check) names them itself."""
    message = error["msg"].removeprefix("Value error, ")
    return f"{_variable_name(error['loc'])}: {message}" if error["loc"] else message


def _variable_name(loc: tuple[object, ...]) -> str:
    field = Settings.model_fields.get(str(loc[0])) if loc else None
    if field and isinstance(field.validation_alias, str):
        return field.validation_alias
    return ".".join(str(part) for part in loc)
