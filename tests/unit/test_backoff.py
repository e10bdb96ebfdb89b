"""Retry delays: exponential with equal jitter, capped, and never shorter than a registry's Retry-After."""

import pytest

from worker.watch import backoff_s


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 2.5, 5), (2, 5, 10), (3, 10, 20), (10, 150, 300)])
def test_delay_grows_then_caps_within_its_jitter_band(attempt, low, high):
    assert backoff_s(attempt, base_s=5, cap_s=300, rng=lambda: 0.0) == low
    assert backoff_s(attempt, base_s=5, cap_s=300, rng=lambda: 1.0) == high


def test_retry_after_wins_when_longer():
    assert backoff_s(1, base_s=5, cap_s=300, retry_after_s=42, rng=lambda: 0.5) == 42
    assert backoff_s(3, base_s=5, cap_s=300, retry_after_s=1, rng=lambda: 0.5) == 15


def test_jitter_spreads_retries():
    delays = {backoff_s(4, base_s=5, cap_s=300) for _ in range(50)}
    assert len(delays) > 40 and all(20 <= d <= 40 for d in delays)
