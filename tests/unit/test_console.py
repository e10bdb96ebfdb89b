"""The console's pure parts: the spec form, and how things are shown (sessions, in Redis, are tested in
tests/integration/test_sessions.py)."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from core.schedule import Schedule
from producer.console.forms import GENERAL, SpecForm, field_of, imported
from producer.console.present import (
    age,
    chart_bars,
    in_zone,
    package_table,
    reached,
    span,
    timing,
    without_ansi,
)
from producer.overview import HourOfBuilds, SpecPage, percentile

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def test_the_form_makes_a_spec_of_its_lines_and_places_each_problem_beside_its_field():
    # Given a form with comments, blank lines and one bad item in each list
    form = SpecForm(name="tools", base_image="debian:bookworm", apt="# base tools\ncurl\n\nb@d\n", pip="ok==1\n!!")
    # When it is checked
    assert form.parsed() is None
    # Then the comment and blank lines are not items, and each problem sits with its own field, naming the item
    assert form.document()["packages"]["apt"] == ["curl", "b@d"]
    assert set(form.problems) == {"apt", "pip"}
    assert form.problems["apt"] == ['packages.apt[1]: "b@d" is not allowed: ' + form.problems["apt"][0].split(": ", 2)[2]]


@pytest.mark.parametrize("location, field", [(("name",), "name"), (("baseImage",), "base_image"),
                                             (("packages", "conda", 3), "conda"), ((), GENERAL),
                                             (("packages",), GENERAL), (("pullSecret",), "pull_secret"),
                                             (("platforms", 1), "platforms")])
def test_a_problem_location_maps_to_its_form_field(location, field):
    assert field_of(location) == field


def test_a_primehub_resource_pasted_fills_the_form():
    form = imported("""
apiVersion: primehub.io/v1alpha1
kind: ImageSpec
metadata: {name: ml-tools, namespace: hub}
spec:
  baseImage: jupyter/base-notebook
  pullSecret: hub-secret
  packages: {apt: [vim], pip: [numpy==1.26.4, pandas], conda: [scipy]}
  updateTime: "2021-01-01T00:00:00Z"
""")
    assert (form.name, form.base_image, form.pull_secret) == ("ml-tools", "jupyter/base-notebook", "hub-secret")
    assert (form.apt, form.pip, form.conda, form.problems) == ("vim", "numpy==1.26.4\npandas", "scipy", {})


def test_ticked_platforms_make_the_specs_platforms_and_a_bad_one_shows_beside_them():
    # Given a form with two platforms ticked, one form with none, and a pasted resource naming a made-up one
    ticked = SpecForm(name="tools", base_image="debian:bookworm", platforms=["linux/arm64", "linux/amd64"])
    plain = SpecForm(name="tools", base_image="debian:bookworm")
    pasted = imported("kind: ImageSpec\napiVersion: primehub.io/v1alpha1\nmetadata: {name: x}\n"
                      "spec: {baseImage: debian, platforms: [linux/mips]}")
    # Then the ticked ones are the spec's (in canonical order), none ticked names none, and the bad one is placed
    assert [p.value for p in ticked.parsed().platforms] == ["linux/amd64", "linux/arm64"]
    assert plain.parsed().platforms is None and "platforms" not in plain.document()
    assert pasted.parsed() is None and list(pasted.problems) == ["platforms"]
    assert SpecForm.of(ticked.parsed()).platforms == ["linux/amd64", "linux/arm64"]


@pytest.mark.parametrize("text", ["a: [", "- just\n- a list", "x: &a [*a]", "packages: {apt: [{nested: 1}]}"])
def test_a_paste_that_is_not_one_spec_says_so_or_leaves_fields_blank(text):
    form = imported(text)
    assert form.problems.get("import") or form.apt == ""


def test_ansi_codes_are_stripped_from_log_lines():
    assert without_ansi("\x1b[1;31mError\x1b[0m: \x1b]0;title\x07done\x1b[K") == "Error: done"


def test_durations_and_ages_read_as_a_person_would_say_them():
    assert [span(s) for s in (0, 59, 192, 7500, 90061)] == ["0 s", "59 s", "3 min 12 s", "2 h 5 min", "1 d 1 h"]
    assert age(NOW - timedelta(minutes=5), NOW) == "5 min ago" and age(NOW + timedelta(hours=3), NOW) == "in 3 h"
    assert in_zone(NOW, "Europe/Berlin") == "2026-11-28 13:00 CET"


def test_a_schedule_reads_as_its_timing_and_policy_and_lists_its_next_runs():
    cron = Schedule(name="x", cron="0 3 * * *", tz="Europe/Berlin", next_due=NOW + timedelta(hours=2))
    assert timing(cron) == "cron 0 3 * * * (Europe/Berlin), on base change"
    assert timing(Schedule(name="x", every_s=3600, policy="always")) == "every 1 h, always"
    runs = cron.upcoming(3, NOW)
    assert runs[0] == NOW + timedelta(hours=2)  # the stored next due time comes first, then the cron's
    assert [in_zone(r, "Europe/Berlin") for r in runs[1:]] == ["2026-11-29 03:00 CET", "2026-11-30 03:00 CET"]
    assert Schedule(name="x", every_s=60, enabled=False).upcoming(3, NOW) == []


@pytest.mark.parametrize("phase, step, expected", [
    ("Pending", None, ["current", "todo", "todo", "todo"]),
    ("Running", "building", ["done", "done", "current", "todo"]),
    ("Failed", "pushing", ["done", "done", "done", "failed"]),
    ("Cancelled", None, ["cancelled", "todo", "todo", "todo"]),
    ("Succeeded", "pushing", ["done", "done", "done", "done"]),
])
def test_progress_shows_where_a_build_is_or_where_it_ended(phase, step, expected):
    assert [reached(phase, step, stage) for stage in ("Pending", "pulling", "building", "pushing")] == expected


def test_the_chart_stacks_each_hours_phases_scaled_to_the_busiest_hour():
    hours = [HourOfBuilds(start=NOW, phases={"Succeeded": 3, "Failed": 1}), HourOfBuilds(start=NOW, phases={}),
             HourOfBuilds(start=NOW, phases={"Succeeded": 2})]
    bars = chart_bars(hours, width=300, height=100)
    assert [(b.phase, round(b.height), round(b.y)) for b in bars] == [
        ("succeeded", 75, 25), ("failed", 25, 0), ("succeeded", 50, 50)]
    assert bars[2].x == 201 and bars[2].width == 98


def test_percentiles_and_paging():
    assert percentile([], 95) is None and percentile([4.0], 50) == 4.0
    assert percentile([float(v) for v in range(1, 101)], 95) == pytest.approx(95.05)
    page = SpecPage(items=[], total=120, offset=50, limit=50)
    assert (page.previous_offset, page.next_offset) == (0, 100)
    assert SpecPage(items=[], total=120, offset=100, limit=50).next_offset is None


def test_the_package_table_lists_libraries_by_name_and_says_when_the_sbom_is_not_one():
    document = json.dumps({"components": [
        {"type": "library", "name": "zlib1g", "version": "1:1.2.13", "purl": "pkg:deb/debian/zlib1g@1:1.2.13"},
        {"type": "library", "name": "jq", "version": "1.6", "purl": "pkg:deb/debian/jq@1.6",
         "properties": [{"name": "imagebuilder:requested", "value": "true"}]},
        {"type": "operating-system", "name": "debian", "version": "12"}]}).encode()
    table = package_table(document, "")
    assert [(r.name, r.ecosystem, r.requested) for r in table.rows] == [("jq", "deb", True), ("zlib1g", "deb", False)]
    assert [r.name for r in package_table(document, "ZL").rows] == ["zlib1g"] and table.total == 2
    assert package_table(b"not json", "").problem and package_table(b"[]", "").rows == []
