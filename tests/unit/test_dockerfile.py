"""Dockerfile rendering: install order, user restore, labels, and RUN lines that split into the intended argv."""

import shlex
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import BuildStepFailed, InvalidSpec
from core.packages import conda_install_args
from core.spec import parse_spec
from worker.dockerfile import (
    CA_CONTEXT_NAME,
    CA_IMAGE_PATH,
    BuildInputs,
    build_context,
    render_dockerfile,
)

CREATED = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
INPUTS = BuildInputs(tag="caa3311e", created=CREATED, base_user="jovyan", base_digest="sha256:" + "ab" * 32)


def render(packages, inputs=INPUTS):
    return render_dockerfile(parse_spec({"name": "x", "baseImage": "quay.io/org/base:1", "packages": packages}), inputs)


def run_lines(dockerfile):
    return [line.removeprefix("RUN ") for line in dockerfile.splitlines() if line.startswith("RUN ")]


def test_order_is_from_root_apt_conda_pip_then_the_base_user_and_labels():
    lines = render({"apt": ["jq"], "pip": ["requests"], "conda": ["numpy"]}).splitlines()
    assert lines[:2] == ["FROM quay.io/org/base:1", "USER root"]
    installers = [line.split()[1] for line in lines if line.startswith("RUN ")]
    assert installers == ["apt-get", "conda", "PIP_BREAK_SYSTEM_PACKAGES=1"]
    assert lines.index("USER jovyan") > max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    assert lines[-1].strip().startswith("io.imagebuilder.tag=")


def test_apt_step_updates_installs_without_recommends_and_cleans():
    argv = shlex.split(run_lines(render({"apt": ["jq", "python3=3.11.2-6"]}))[0])
    assert argv[:2] == ["apt-get", "update"]
    assert argv[argv.index("install"):][:5] == ["install", "-y", "--no-install-recommends", "jq", "python3=3.11.2-6"]
    assert argv[-4:] == ["&&", "rm", "-rf", "/var/lib/apt/lists/*"] and "clean" in argv


def test_pip_step_uses_no_cache_and_survives_pep_668():
    argv = shlex.split(run_lines(render({"pip": ['tomli; python_version < "3.11"', "pandas[parquet]==2.2.3"]}))[0])
    assert argv[:3] == ["PIP_BREAK_SYSTEM_PACKAGES=1", "PIP_ROOT_USER_ACTION=ignore", "PIP_DISABLE_PIP_VERSION_CHECK=1"]
    assert argv[3:8] == ["python3", "-m", "pip", "install", "--no-cache-dir"]
    assert argv[-2:] == ['tomli; python_version < "3.11"', "pandas[parquet]==2.2.3"]


def test_ca_bundle_and_index_reach_every_installer():
    inputs = BuildInputs(tag="t", created=CREATED, ca_bundle=True, pip_index_url="https://mirror.example/simple")
    dockerfile = render({"apt": ["jq"], "pip": ["requests"], "conda": ["numpy"]}, inputs)
    assert f"COPY {CA_CONTEXT_NAME} {CA_IMAGE_PATH}" in dockerfile
    apt, conda, pip = (shlex.split(line) for line in run_lines(dockerfile))
    assert f"Acquire::https::CAInfo={CA_IMAGE_PATH}" in apt
    assert conda[0] == f"CONDA_SSL_VERIFY={CA_IMAGE_PATH}"
    assert pip[pip.index("--cert") + 1] == CA_IMAGE_PATH
    assert pip[pip.index("--index-url") + 1] == "https://mirror.example/simple"


def test_an_index_over_plain_http_is_named_trusted_as_pip_requires_and_an_https_one_is_not():
    # Given an index over plain http (a company's devpi, say) and one over https
    plain = BuildInputs(tag="t", created=CREATED, pip_index_url="http://devpi.internal:3141/root/pypi/+simple/")
    secure = BuildInputs(tag="t", created=CREATED, pip_index_url="https://mirror.example/simple")
    # When pip's step is rendered for each
    plain_pip, secure_pip = (shlex.split(run_lines(render({"pip": ["six"]}, i))[0]) for i in (plain, secure))
    # Then only the plain one marks its host:port trusted (pip would ignore it otherwise)
    assert plain_pip[plain_pip.index("--trusted-host") + 1] == "devpi.internal:3141"
    assert "--trusted-host" not in secure_pip


def test_conda_channel_lines_become_channels_of_the_one_install():
    argv = shlex.split(run_lines(render({"conda": ["-c pytorch -c fastai fastai", "cartopy >= 0.20.0"]}))[0])
    assert argv[:7] == ["conda", "install", "--yes", "-c", "pytorch", "-c", "fastai"]
    assert argv[7:9] == ["fastai", "cartopy >= 0.20.0"]


def test_the_longest_allowed_lists_render_run_lines_under_the_kernels_argument_limit():
    # Given the largest lists the spec allows, and every setting that lengthens a RUN line at its longest
    from config.settings import MAX_PIP_INDEX_URL_CHARS
    from core.packages import MAX_ARG_STRLEN, MAX_INSTALL_ARGS_BYTES

    items = [f"{'p' * 490}{i:04d}" for i in range(MAX_INSTALL_ARGS_BYTES // 496)]
    inputs = BuildInputs(tag="t", created=CREATED, ca_bundle=True,  # plain http: its host is repeated, trusted
                         pip_index_url="http://" + "m" * (MAX_PIP_INDEX_URL_CHARS - 15) + ".example")
    # When they are rendered
    dockerfile = render({"apt": items, "pip": items, "conda": items}, inputs)
    # Then every RUN line, as the argument `/bin/sh -c` gets, stays under the limit
    assert [len(line.encode()) < MAX_ARG_STRLEN for line in run_lines(dockerfile)] == [True] * 3


def test_no_packages_still_restores_user_and_labels():
    dockerfile = render({}, BuildInputs(tag="t", created=CREATED))
    assert run_lines(dockerfile) == [] and "USER root" in dockerfile.splitlines()[-6:]
    assert 'org.opencontainers.image.base.name="quay.io/org/base:1"' in dockerfile
    assert 'org.opencontainers.image.created="2026-11-28T12:00:00+00:00"' in dockerfile


def test_an_unrestorable_base_user_fails_the_build():
    with pytest.raises(BuildStepFailed, match="USER"):
        render({}, BuildInputs(tag="t", created=CREATED, base_user="bad user\nRUN id"))


def test_build_context_holds_the_dockerfile_and_the_ca_bundle(tmp_path: Path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    with tarfile.open(fileobj=build_context("FROM x\n", bundle)) as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", CA_CONTEXT_NAME]
        assert tar.extractfile("Dockerfile").read() == b"FROM x\n"


# Properties: what each grammar accepts renders into RUN lines whose argv is exactly the items;
# arbitrary text is either refused with an error naming the field, or renders just as safely.
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_APT = st.from_regex(r"[a-z0-9][a-z0-9+.-]{1,20}(=[0-9][a-z0-9.+~-]{0,8})?", fullmatch=True)
_PIP = st.from_regex(
    r"[A-Za-z]([A-Za-z0-9._-]{0,14}[A-Za-z0-9])?(\[[a-z]{1,5}\])?((==|>=|<=|!=)[0-9]{1,3}(\.[0-9]{1,3})?)?",
    fullmatch=True,
)
_CONDA = st.from_regex(r"([a-z][a-z-]{0,7}::)?[a-z0-9_][a-z0-9_.-]{0,12}((=|==|>=|<)[0-9.*]{1,6})?", fullmatch=True)


def assert_runs_split_into(dockerfile, apt, pip, conda):
    runs = iter(run_lines(dockerfile))
    conda = conda_install_args(conda) if conda else conda
    for items, cut in ((apt, "--no-install-recommends"), (conda, "--yes"), (pip, "--no-cache-dir")):
        if items:
            argv = shlex.split(next(runs))
            start = argv.index(cut) + 1
            assert argv[start:start + len(items)] == items
    assert next(runs, None) is None


@settings(max_examples=200, deadline=None)
@given(apt=st.lists(_APT, max_size=4), pip=st.lists(_PIP, max_size=4), conda=st.lists(_CONDA, max_size=4))
def test_grammatical_items_are_accepted_and_split_into_the_intended_argv(apt, pip, conda):
    assert_runs_split_into(render({"apt": apt, "pip": pip, "conda": conda}), apt, pip, conda)


@settings(max_examples=300, deadline=None)
@given(manager=st.sampled_from(["apt", "pip", "conda"]), items=st.lists(_TEXT, min_size=1, max_size=3))
def test_arbitrary_text_is_refused_naming_the_field_or_renders_safely(manager, items):
    try:
        dockerfile = render({manager: items})
    except InvalidSpec as e:
        assert f"packages.{manager}[" in str(e)
        return
    assert_runs_split_into(dockerfile, *(items if m == manager else [] for m in ("apt", "pip", "conda")))


BUILDKIT = BuildInputs(tag="caa3311e", created=CREATED, base_user="jovyan", buildkit=True)


def test_buildkit_keeps_order_and_installs_but_fetches_through_cache_mounts():
    # Given the same spec rendered for both builders
    packages = {"apt": ["jq"], "pip": ["requests"], "conda": ["numpy"]}
    classic, buildkit = render(packages, BuildInputs(tag="caa3311e", created=CREATED, base_user="jovyan")), render(
        packages, BUILDKIT)
    # Then BuildKit's has the rebuild argument first, the same steps in the same order, each with its cache mount
    assert buildkit.splitlines()[:3] == ["FROM quay.io/org/base:1", "ARG IMAGEBUILDER_REBUILD", "USER root"]
    kinds = [line.split("--mount=type=cache,id=")[1].split(",")[0] for line in run_lines(buildkit)]
    assert kinds == ["imagebuilder-apt-archives", "imagebuilder-conda", "imagebuilder-pip"]
    assert [line for line in classic.splitlines() if not line.startswith("RUN ")] == [
        line for line in buildkit.splitlines() if not line.startswith(("RUN ", "ARG "))]
    # And apt fetches into the mounts, then cleans the image's own folders as the classic build does
    apt = run_lines(buildkit)[0]
    assert "-o Dir::Cache::Archives=/var/cache/imagebuilder/apt-archives" in apt and "sharing=locked" in apt
    assert apt.endswith("apt-get clean && rm -rf /var/lib/apt/lists/*")
    # And pip keeps its cache in the mount instead of running without one
    pip = run_lines(buildkit)[2]
    assert "--cache-dir /root/.cache/pip" in pip and "--no-cache-dir" not in pip
    assert "--no-cache-dir" in run_lines(classic)[2]
