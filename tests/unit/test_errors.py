"""Error mapping: registry statuses and engine-relayed messages become retryable or fatal domain errors."""

import pytest

from core.errors import (
    AuthFailed,
    BaseImageNotFound,
    FatalError,
    ImageBuilderError,
    PushFailed,
    RegistryUnavailable,
    RetryableError,
)
from core.registry.client import error_for_message, error_for_status


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, AuthFailed), (403, AuthFailed), (404, BaseImageNotFound), (429, RegistryUnavailable),
     (500, RegistryUnavailable), (502, RegistryUnavailable), (503, RegistryUnavailable), (400, PushFailed)],
)
def test_http_status_mapping(status, kind):
    error = error_for_status(status, "reg.example:5000", "push of x")
    assert type(error) is kind
    assert "reg.example:5000" in str(error) and "push of x" in str(error)


def test_retry_after_is_kept_for_rate_limits():
    assert error_for_status(429, "docker.io", "pull of x", "17").retry_after_s == 17.0
    assert error_for_status(503, "docker.io", "pull of x", "soon").retry_after_s is None


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("unauthorized: authentication required", AuthFailed),
        ("denied: requested access to the resource is denied", AuthFailed),
        ("pull access denied for x, repository does not exist or may require 'docker login'", AuthFailed),
        ('Get "http://127.0.0.1:5001/v2/": dial tcp 127.0.0.1:5001: connect: connection refused', RegistryUnavailable),
        ("toomanyrequests: You have reached your pull rate limit", RegistryUnavailable),
        ("received unexpected HTTP status: 503 Service Unavailable", RegistryUnavailable),
        ("manifest for x:1 not found: manifest unknown", BaseImageNotFound),
        ("blob upload invalid", PushFailed),
        # the registry's port holds "403" or "401": still a refused connection, not an auth failure
        ('Get "http://127.0.0.1:40361/v2/": dial tcp 127.0.0.1:40361: connect: connection refused',
         RegistryUnavailable),
        ('Head "http://127.0.0.1:40155/v2/x/manifests/1": EOF', RegistryUnavailable),
        ("received unexpected HTTP status: 401 Unauthorized", AuthFailed),
        ("error parsing HTTP 403 response body", AuthFailed),
    ],
)
def test_engine_message_mapping(message, kind):
    error = error_for_message(message, "r:1", "pull of x")
    assert type(error) is kind and message in str(error) and "r:1" in str(error)


def test_hierarchy_splits_retryable_from_fatal():
    assert issubclass(RegistryUnavailable, RetryableError) and issubclass(AuthFailed, FatalError)
    assert not issubclass(RetryableError, FatalError)
    assert all(issubclass(k, ImageBuilderError) for k in (RetryableError, FatalError))
