"""Each ecosystem's grammar: legitimate items PrimeHub dropped are accepted, injections are refused."""

import pytest

from worker.packages import check_apt, check_conda, check_pip

HOSTILE = ["jq; touch /x", "$(id)", "`id`", "jq\ncurl", "jq\n", "--allow-unauthenticated", "a && b", "a|b", "", " jq"]


@pytest.mark.parametrize("item", ["jq", "curl", "g++", "libc6:amd64", "python3=3.11.2-6", "vim=2:9.0.1378-2",
                                  "vim/bookworm-backports", "r-base-core"])
def test_apt_accepts_debian_names_versions_arch_and_release(item):
    assert check_apt(item) == item


@pytest.mark.parametrize("item", HOSTILE + ["Jq", "j", "jq=", "jq=abc", "../x"])
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


@pytest.mark.parametrize("item", ["numpy", "numpy=1.26", "numpy>=1.26", "numpy>=1.26,<2", "numpy==1.26*",
                                  "conda-forge::numpy==1.26*", "numpy=1.26=py311_0", "python-dateutil", "r-base"])
def test_conda_accepts_match_specs(item):
    assert check_conda(item) == item


@pytest.mark.parametrize("item", HOSTILE + ["numpy 1.26", "numpy[version='>=1.2']", "::numpy", "numpy>="])
def test_conda_refuses(item):
    with pytest.raises(ValueError, match="conda match spec"):
        check_conda(item)
