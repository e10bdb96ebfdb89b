"""Each ecosystem's grammar: legitimate items (PrimeHub dropped many) are accepted and read with the package
manager's own semantics; injections, URLs and options are refused; the install arguments stay bounded."""

import time

import pytest

from core.packages import (
    MAX_INSTALL_ARGS_BYTES,
    check_apt,
    check_conda,
    check_fits_run_line,
    check_pip,
    conda_install_args,
    conda_line,
)

HOSTILE = ["jq; touch /x", "$(id)", "`id`", "jq\ncurl", "jq\n", "--allow-unauthenticated", "a && b", "a|b", "", " jq"]


@pytest.mark.parametrize("item", ["jq", "curl", "g++", "libc6:amd64", "python3=3.11.2-6", "vim=2:9.0.1378-2",
                                  "vim/bookworm-backports", "r-base-core", "mesos=1.2*", "libc6:amd64=2.36*"])
def test_apt_accepts_debian_names_versions_globs_arch_and_release(item):
    assert check_apt(item) == item


@pytest.mark.parametrize("item", HOSTILE + ["Jq", "j", "jq=", "jq=abc", "../x", "jq=1.2 *"])
def test_apt_refuses(item):
    with pytest.raises(ValueError, match="Debian package"):
        check_apt(item)


@pytest.mark.parametrize("item", ["numpy>=1.26", "pandas[parquet]==2.2.3", "requests", "Django~=4.2",
                                  'tomli; python_version < "3.11"', "torch==2.1.0+cpu", "a.b-c_d>=1,<2"])
def test_pip_accepts_pep_508_requirements(item):
    assert check_pip(item) == item


@pytest.mark.parametrize("item", HOSTILE + ["-e .", "--index-url=https://evil", "./local", "/abs/path",
                                            "pkg @ https://example.com/p.whl", "git+https://x/y.git",
                                            "-r requirements.txt"])
def test_pip_refuses(item):
    with pytest.raises(ValueError, match="PEP 508"):
        check_pip(item)


@pytest.mark.parametrize("item", [
    "numpy", "numpy=1.26", "numpy>=1.26", "numpy>=1.26,<2", "numpy==1.26*", "conda-forge::numpy==1.26*",
    "numpy=1.26=py311_0", "python-dateutil", "r-base",
    # real items from public environment files and PrimeHub forms, refused before
    "SQLAlchemy>=0.8.3", "BeautifulSoup=4.5.1*", "types-PyMySQL", "cartopy >= 0.20.0", "r-base=3.3.1 1",
    "numpy 1.17.3 py38*", "python >=3.8", "numpy >=1.20, <2", "libgdal=3.6.2=*_0",
])
def test_conda_accepts_match_specs_as_conda_reads_them(item):
    assert check_conda(item) == item
    assert conda_line(item) == ([], [item])  # one match spec, spaces and all


@pytest.mark.parametrize(("item", "channels", "specs"), [
    ("-c pytorch -c fastai fastai", ["pytorch", "fastai"], ["fastai"]),
    ("--channel=conda-forge numpy scipy", ["conda-forge"], ["numpy", "scipy"]),
    ("numpy -c conda-forge", ["conda-forge"], ["numpy"]),
    ("-c nvidia/label/cuda-11.8.0 cuda-toolkit", ["nvidia/label/cuda-11.8.0"], ["cuda-toolkit"]),
    ("-c conda-forge 'cartopy >= 0.20'", ["conda-forge"], ["cartopy >= 0.20"]),
])
def test_primehubs_channel_lines_are_read_as_channels_and_packages(item, channels, specs):
    assert conda_line(item) == (channels, specs)


@pytest.mark.parametrize("item", HOSTILE + ["numpy[version='>=1.2']", "::numpy", "numpy>=", "https://x/y.tar.bz2",
                                            "-c https://evil.example/chan fastai", "-c 'a b' x", "-c x",
                                            "-c conda-forge --override-channels numpy", "-c x 'y; rm -rf /'", "-c"])
def test_conda_refuses(item):
    with pytest.raises(ValueError, match="a conda item is a match spec"):
        check_conda(item)


def test_channels_of_every_line_go_first_once_then_every_spec():
    items = ["-c pytorch -c fastai fastai", "numpy", "-c pytorch torchvision", "cartopy >= 0.20.0"]
    assert conda_install_args(items) == ["-c", "pytorch", "-c", "fastai", "fastai", "numpy", "torchvision",
                                         "cartopy >= 0.20.0"]


@pytest.mark.parametrize("check", [check_apt, check_conda, check_pip])
def test_no_item_makes_a_grammar_backtrack(check):
    # Given items of the bound's length built to make a regular expression try many splits
    for item in ("a=1" + ",  " * 170 + "!", "a " + "1 " * 250 + "!", "a" + " >= 1" * 100 + "!", "a" * 511 + "!"):
        # When each is checked, Then the answer comes at once
        started = time.perf_counter()
        with pytest.raises(ValueError):
            check(item)
        assert time.perf_counter() - started < 0.05


def test_install_arguments_are_bounded_below_the_kernels_argument_limit():
    fits = ["p" * 500] * (MAX_INSTALL_ARGS_BYTES // 501)
    assert check_fits_run_line(fits) == fits
    with pytest.raises(ValueError, match=f"more than the {MAX_INSTALL_ARGS_BYTES} that fit one RUN line"):
        check_fits_run_line(fits + ["p" * 500])
