"""The package caches: the BuildKit RUN lines run for real in /bin/sh with stand-in installers (which record how they
were called), the configurations a build is given, the settings' checks, and when a cache is asked and said."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from config.settings import load_settings
from core.errors import SettingsError
from core.spec import parse_spec
from tests.unit.test_dockerfile import CREATED, run_lines
from worker.dockerfile import (
    APT_PROXY_FILE,
    FALLBACK_NOTICE,
    PIP_MIRROR_FILE,
    BuildInputs,
    render_dockerfile,
)
from worker.packagecache import RECHECK_S, PackageCache, PackageCaches

BUILDKIT = BuildInputs(tag="t", created=CREATED, buildkit=True, pip_index_url="http://origin.example:8080/simple")
# A stand-in installer: records its arguments and the pip configuration it was given, fails when told to
STAND_IN = """#!/bin/sh
echo "$(basename "$0") $* config=${PIP_CONFIG_FILE:-} index=${PIP_INDEX_URL:-}" >> "$CALLS"
case " $* ${PIP_CONFIG_FILE:-} " in *"$FAIL_WITH"*) exit 1 ;; esac
exit 0
"""


def run_step(tmp_path: Path, manager: str, *, given: bool, fail_with: str = "never") -> tuple[list[str], str]:
    """Run the spec's BuildKit RUN line for `manager` in /bin/sh, with the cache's configuration given or not;
    the installers' calls and the output."""
    spec = parse_spec({"name": "x", "baseImage": "debian", "packages": {manager: ["jq"]}})
    (line,) = run_lines(render_dockerfile(spec, BUILDKIT))
    command = " ".join(word for word in shlex.split(line, posix=False) if not word.startswith("--mount="))
    config = tmp_path / "cache.conf"
    if given:
        config.write_text("configured\n")
    command = command.replace(APT_PROXY_FILE, str(config)).replace(PIP_MIRROR_FILE, str(config))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("apt-get", "python3", "mkdir", "rm"):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "FAIL_WITH": fail_with}
    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return [call for call in calls if call.startswith(("apt-get", "python3"))], done.stdout + f"rc={done.returncode}"


def steps(calls: list[str], tmp_path: Path) -> list[tuple[bool, str]]:
    """Each apt-get call: whether it went through the cache's configuration, and its verb."""
    through = f"-c {tmp_path / 'cache.conf'}"
    return [(through in call, next(word for word in call.split() if word in ("update", "install", "clean")))
            for call in calls]


def test_apt_goes_through_the_cache_when_given_its_configuration(tmp_path):
    calls, output = run_step(tmp_path, "apt", given=True)
    assert steps(calls, tmp_path) == [(True, "update"), (True, "install"), (False, "clean")]
    assert FALLBACK_NOTICE.format(tool="apt") not in output and output.endswith("rc=0")


def test_apt_through_a_failing_cache_says_so_and_installs_from_the_origin(tmp_path):
    calls, output = run_step(tmp_path, "apt", given=True, fail_with="cache.conf update")
    assert steps(calls, tmp_path) == [(True, "update"), (False, "update"), (False, "install"), (False, "clean")]
    assert FALLBACK_NOTICE.format(tool="apt") in output and output.endswith("rc=0"), output


def test_apt_without_the_configuration_installs_from_the_origin_once(tmp_path):
    calls, output = run_step(tmp_path, "apt", given=False)
    assert steps(calls, tmp_path) == [(False, "update"), (False, "install"), (False, "clean")]
    assert FALLBACK_NOTICE.format(tool="apt") not in output and output.endswith("rc=0")


def test_a_package_missing_everywhere_fails_the_step_after_the_origin_was_asked(tmp_path):
    calls, output = run_step(tmp_path, "apt", given=True, fail_with="install")
    assert steps(calls, tmp_path) == [(True, "update"), (True, "install"), (False, "update"), (False, "install")]
    assert FALLBACK_NOTICE.format(tool="apt") in output and output.endswith("rc=1")


@pytest.mark.parametrize(("given", "fail_with", "expected"), [
    (True, "never", ["config=CONF index="]),
    (True, "cache.conf", ["config=CONF index=", "config= index=http://origin.example:8080/simple"]),
    (False, "never", ["config= index=http://origin.example:8080/simple"]),
])
def test_pip_takes_the_mirror_from_its_configuration_and_the_origin_from_the_setting(tmp_path, given, fail_with,
                                                                                     expected):
    calls, output = run_step(tmp_path, "pip", given=given, fail_with=fail_with)
    assert [call.split(" config=")[1].replace(str(tmp_path / "cache.conf"), "CONF") for call in calls] == [
        f"{entry.removeprefix('config=')}" for entry in expected]
    assert output.endswith("rc=0") and (FALLBACK_NOTICE.format(tool="pip") in output) == (len(expected) == 2)


def test_the_notice_is_in_no_rendered_line_so_only_a_fallback_prints_it():
    spec = parse_spec({"name": "x", "baseImage": "debian", "packages": {"apt": ["jq"], "pip": ["six"]}})
    dockerfile = render_dockerfile(spec, BUILDKIT)
    assert not [tool for tool in ("apt", "pip") if FALLBACK_NOTICE.format(tool=tool) in dockerfile]


def test_configurations_name_the_cache_and_bound_the_wait_and_a_plain_mirror_is_trusted():
    settings = load_settings(IMAGEBUILDER_APT_PROXY="http://acng.internal:3142",
                             IMAGEBUILDER_PIP_MIRROR="http://user:pw@proxpi.internal:5000/index/")
    apt, pip = PackageCaches.of(settings)._caches
    assert 'Acquire::http::Proxy "http://acng.internal:3142";' in apt.config()
    assert 'APT::Update::Error-Mode "any";' in apt.config() and "Acquire::http::Timeout" in apt.config()
    assert pip.config().splitlines()[:3] == ["[global]", "index-url = http://user:pw@proxpi.internal:5000/index/",
                                             "trusted-host = proxpi.internal"]
    assert pip.shown == "http://proxpi.internal:5000" and "pw" not in repr(pip) and "pw" not in PackageCaches.of(
        settings).describe()


@pytest.mark.parametrize("url", ["ftp://acng:3142", "http://", 'http://acng:3142/";x', "http://a b", "acng:3142",
                                 "http://acng:3142/\nAcquire::x", "http://acng#frag"])
def test_a_cache_url_that_could_break_out_of_its_line_is_refused_naming_the_variable(url):
    with pytest.raises(SettingsError, match="IMAGEBUILDER_APT_PROXY: must be an http"):
        load_settings(IMAGEBUILDER_APT_PROXY=url)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def caches_with(answers: dict[int, str | None]) -> tuple[PackageCaches, list[int], Clock]:
    asked, clock = [], Clock()

    def probe(host: str, port: int) -> str | None:
        asked.append(port)
        return answers[port]

    caches = PackageCaches([PackageCache("apt", load_settings(IMAGEBUILDER_APT_PROXY="http://a:1").apt_proxy,
                                         "imagebuilder-apt-proxy")], probe, clock)
    return caches, asked, clock


def test_a_cache_is_asked_once_per_recheck_and_a_change_is_said_once(caplog):
    caplog.set_level(logging.WARNING)
    answers = {1: None}
    caches, asked, clock = caches_with(answers)
    # Given a cache that answers: it is given to builds, asked once in the recheck interval, and nothing is said
    assert [c.tool for c in caches.answering()] == ["apt"] and caches.answering() and asked == [1]
    assert caplog.text == ""
    # When it stops answering: after the interval it is passed by, said once however many builds follow
    answers[1] = "Connection refused"
    clock.now += RECHECK_S + 1
    for _ in range(3):
        assert caches.answering() == []
        clock.now += RECHECK_S + 1
    assert caplog.text.count("does not answer (Connection refused)") == 1
    # And when it answers again, that is said once too
    answers[1] = None
    clock.now += RECHECK_S + 1
    assert caches.answering() and caches.answering()
    assert caplog.text.count("answers again") == 1


def test_a_build_the_cache_failed_has_the_next_one_ask_again(tmp_path):
    caches, asked, _ = caches_with({1: None})
    caches.answering()
    caches.notice("#7 1.2 " + FALLBACK_NOTICE.format(tool="apt"))
    written = caches.write_secrets(tmp_path)
    assert asked == [1, 1] and list(written) == ["imagebuilder-apt-proxy"]
    assert os.stat(written["imagebuilder-apt-proxy"]).st_mode & 0o777 == 0o600
