"""Schedules: cron read on a time zone's wall clock (DST included), intervals, and clear refusals."""

from datetime import datetime, timezone

import pytest

from core.errors import InvalidSpec
from core.schedule import next_cron_time, parse_schedule


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def test_cron_is_read_on_the_wall_clock_of_its_time_zone_across_dst():
    # 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer (DST began 2026-03-29)
    assert next_cron_time("0 3 * * *", "Europe/Berlin", utc(2026, 3, 27, 12)) == utc(2026, 3, 28, 2)
    assert next_cron_time("0 3 * * *", "Europe/Berlin", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert next_cron_time("0 3 * * *", "UTC", utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 3)


def test_cron_fields_steps_and_weekdays():
    assert next_cron_time("*/15 * * * *", "UTC", utc(2026, 11, 28, 4, 40, 30)) == utc(2026, 11, 28, 4, 45)
    assert next_cron_time("0 9 * * mon", "UTC", utc(2026, 11, 28, 10)) == utc(2026, 11, 30, 9)  # a Saturday
    assert next_cron_time("30 6 1 * *", "UTC", utc(2026, 11, 28)) == utc(2026, 12, 1, 6, 30)


def test_interval_schedules_are_due_every_so_many_seconds():
    schedule = parse_schedule("x", every_s=5)
    assert schedule.due_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 5)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"cron": "61 * * * *"}, "cron: '61 * * * *' is not valid"), ({"cron": "* * *"}, "needs 5 fields"),
     ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "tz: 'Mars/Olympus' is not an IANA time zone"),
     ({}, "either a cron expression or an interval"), ({"cron": "* * * * *", "every_s": 5}, "either"),
     ({"every_s": 0}, "at least 1 second"),
     ({"every_s": 10 ** 15}, "at most 31622400 seconds"), ({"cron": "* * * * *", "policy": "sometimes"}, "policy")],
)
def test_bad_schedules_are_refused_naming_the_field(kwargs, words):
    with pytest.raises(InvalidSpec, match="invalid schedule") as caught:
        parse_schedule("x", **kwargs)
    assert words in str(caught.value)


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4,6 *", "0 0 29 2 1"])
def test_a_cron_that_can_never_fire_is_refused_at_once(cron):
    import time

    started = time.perf_counter()
    with pytest.raises(InvalidSpec, match="cron: .* never matches"):
        parse_schedule("x", cron=cron)
    assert time.perf_counter() - started < 0.5


def test_a_rare_cron_is_found_years_ahead():
    assert next_cron_time("0 0 29 2 *", "UTC", utc(2026, 3, 1)) == utc(2028, 2, 29)
    assert next_cron_time("0 0 29 2 2", "UTC", utc(2026, 3, 1)) == utc(2028, 2, 29)  # a Tuesday


def test_a_wall_clock_time_that_happens_twice_fires_at_both_and_one_that_never_happens_is_skipped():
    # 2026-10-25: Berlin's clocks go back from 03:00 to 02:00, so 02:30 is 00:30 and then 01:30 UTC
    assert next_cron_time("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 0)) == utc(2026, 10, 25, 0, 30)
    assert next_cron_time("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 1, 30)
    # 2026-03-29: they go forward from 02:00 to 03:00, so 02:30 does not happen that day
    assert next_cron_time("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 30, 0, 30)
