"""A billion laughs through the real entry points: `imagebuilder submit` and `spec apply` (a file, and stdin), and the
console's import and ad-hoc boxes on a running `imagebuilder api`. Each refuses it at once naming the rule, and the
process that read it does not grow."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.services import Process
from tests.integration.conftest import API_TOKEN, IMAGEBUILDER, Stack, start_api
from tests.integration.test_failures import IDLE_DB, queued_and_recorded
from tests.unit.test_boundedyaml import BILLION_LAUGHS, NODES_RULE

pytestmark = pytest.mark.integration
NOT_YAML = "name: [unclosed"  # refused as plainly as can be: what any refusal costs
MAX_CLI_S = 10.0  # an interpreter starting and importing the CLI; refusing the document itself takes milliseconds
MAX_ANSWER_S = 2.0
MAX_GROWTH_KIB = 5 * 1024
CLI_WAIT_S = 60.0


# Runs a command and writes its peak resident memory (KiB) to a file. Linux hands a forked child its parent's
# high-water mark, so the CLI is forked from this small interpreter, not from pytest's large one.
MEASURED_RUN = """
import os, sys
report, command = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execv(command[0], command)
_, status, usage = os.wait4(pid, 0)
open(report, "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(stack: Stack, args: list[str], stdin: Path, report: Path) -> tuple[int, str, float, int]:
    """Run the CLI on `stdin`: its exit status, stderr, wall time, and its peak resident memory in KiB."""
    started = time.monotonic()
    with open(stdin) as given:
        done = subprocess.run([sys.executable, "-I", "-c", MEASURED_RUN, str(report), str(IMAGEBUILDER), *args],
                              stdin=given, capture_output=True, text=True, timeout=CLI_WAIT_S,
                              env=stack.process_env(IDLE_DB))
    return done.returncode, done.stderr, time.monotonic() - started, int(report.read_text())


@pytest.mark.parametrize("args", [["submit", "{file}"], ["submit", "-"], ["spec", "apply", "{file}"]],
                         ids=["submit-file", "submit-stdin", "spec-apply"])
def test_the_cli_refuses_a_billion_laughs_with_exit_2_quickly_and_without_growing(stack, tmp_path, args):
    # Given the classic nested-alias document in a file, and a file that is plainly not YAML
    bomb, plain = tmp_path / "bomb.yaml", tmp_path / "plain.yaml"
    bomb.write_text(BILLION_LAUGHS)
    plain.write_text(NOT_YAML)
    # When each is given to the CLI (as the file, or on stdin)
    report = tmp_path / "peak-kib"
    code, stderr, elapsed_s, peak_kib = run_measured(stack, [a.format(file=bomb) for a in args], bomb, report)
    plain_code, _, _, plain_peak_kib = run_measured(stack, [a.format(file=plain) for a in args], plain, report)
    # Then the bomb is refused like bad input (exit 2) naming the rule, within the time an interpreter needs to
    # start, its peak memory within a few MiB of the plain refusal's, and nothing is queued
    print(f"{' '.join(args)}: {elapsed_s:.2f} s, peak {peak_kib} KiB (plain refusal {plain_peak_kib} KiB)")
    source = "-" if "-" in args else str(bomb)
    assert (code, plain_code) == (2, 2), stderr
    assert f"{source}: {NODES_RULE}" in stderr
    assert elapsed_s < MAX_CLI_S and peak_kib - plain_peak_kib < MAX_GROWTH_KIB
    assert queued_and_recorded(stack, IDLE_DB) == (0, 0)


@pytest.fixture(scope="module")
def own_api(stack) -> Iterator[tuple[Process, str]]:
    """An `imagebuilder api` of this module's own, so that its process's memory can be read."""
    process, url = start_api(stack, "yaml-bounds")
    yield process, url
    process.stop()


@pytest.fixture
def console_session(own_api) -> Iterator[httpx.Client]:
    """A client signed in to the console through its form, as a browser does (cookies and the forms' tokens)."""
    with httpx.Client(base_url=own_api[1], timeout=30) as http:
        answer = http.post("/ui/login", data={"token": API_TOKEN, "csrftoken": form_token(http, "/ui/login")})
        assert answer.status_code == 303
        yield http


def form_token(http: httpx.Client, path: str) -> str:
    """The CSRF token the page at `path` puts in its forms."""
    return re.search(r'name="csrftoken" value="([^"]+)"', http.get(path).text)[1]


def peak_resident_kib(process: Process) -> int:
    """The process's high-water mark of resident memory (VmHWM), in KiB."""
    status = Path(f"/proc/{process.popen.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def pasted(http: httpx.Client, text: str) -> tuple[httpx.Response, httpx.Response]:
    """`text` in the import box of the new spec form, then in the builds page's ad-hoc box."""
    imported = http.post("/ui/specs/new", data={"paste": text, "action": "import",
                                                "csrftoken": form_token(http, "/ui/specs/new")})
    submitted = http.post("/ui/builds", data={"text": text, "csrftoken": form_token(http, "/ui/builds")})
    return imported, submitted


def test_the_consoles_boxes_refuse_a_billion_laughs_quickly_naming_the_rule_and_the_api_does_not_grow(
        own_api, console_session):
    # Given a signed-in console whose pages have each shown a refusal once (templates compiled, caches warm)
    assert [answer.status_code for answer in pasted(console_session, NOT_YAML)] == [422, 422]
    peak_before_kib = peak_resident_kib(own_api[0])
    # When the classic nested-alias document is pasted in the import box and in the ad-hoc box
    imported, submitted = pasted(console_session, BILLION_LAUGHS)
    # Then each answers 422 at once, naming the rule, and the API's peak memory has not grown past a few MiB
    growth_kib = peak_resident_kib(own_api[0]) - peak_before_kib
    print(f"import {imported.elapsed.total_seconds():.3f} s, ad hoc {submitted.elapsed.total_seconds():.3f} s, "
          f"API peak grew {growth_kib} KiB")
    assert (imported.status_code, submitted.status_code) == (422, 422)
    assert f"the pasted spec: {NODES_RULE}" in imported.text and f"the spec: {NODES_RULE}" in submitted.text
    assert max(imported.elapsed.total_seconds(), submitted.elapsed.total_seconds()) < MAX_ANSWER_S
    assert growth_kib < MAX_GROWTH_KIB
