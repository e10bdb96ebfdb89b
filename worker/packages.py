"""Package grammars: each item is checked by its own ecosystem's rules, never silently dropped."""

from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement

# Debian policy 5.6.1 (name), 5.6.12 (version), plus the `:arch` qualifier and `/release` target apt accepts.
_DEBIAN_NAME = r"[a-z0-9][a-z0-9+.-]+"
_DEBIAN_VERSION = r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*(?::[A-Za-z0-9.+~-]+)*"
_APT_RE = re.compile(
    rf"{_DEBIAN_NAME}(?::[a-z0-9-]+)?(?:={_DEBIAN_VERSION}|/[a-z0-9][a-z0-9.-]*)?"
)
APT_RULE = (
    "a Debian package is name[:arch][=version] or name/release, the name starting with a "
    "lowercase letter or digit and using only a-z 0-9 + . -"
)

# conda MatchSpec, written without spaces: [channel::]name[op version[,|op version...]][=build].
_CONDA_CHANNEL = r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)*::)?"
_CONDA_NAME = r"[a-z0-9_][a-z0-9_.-]*"
_CONDA_OP = r"(?:==|!=|>=|<=|~=|=|>|<)"
_CONDA_VERSION = r"[A-Za-z0-9_.*+!]+"
_CONDA_RE = re.compile(
    rf"{_CONDA_CHANNEL}{_CONDA_NAME}"
    rf"(?:{_CONDA_OP}{_CONDA_VERSION}(?:[,|]{_CONDA_OP}?{_CONDA_VERSION})*(?:={_CONDA_VERSION})?)?"
)
CONDA_RULE = (
    "a conda match spec is [channel::]name[op version][=build] with no spaces, e.g. numpy, "
    "numpy=1.26, numpy>=1.26,<2, conda-forge::numpy==1.26*"
)

PIP_RULE = (
    "a pip item is a PEP 508 requirement from the index (name[extras][version][; marker]); "
    "URLs, paths and pip options are not allowed"
)


def check_apt(item: str) -> str:
    """Return `item` if it is an apt package argument, else raise ValueError naming the rule."""
    if not _APT_RE.fullmatch(item):
        raise ValueError(APT_RULE)
    return item


def check_conda(item: str) -> str:
    """Return `item` if it is a conda match spec, else raise ValueError naming the rule."""
    if not _CONDA_RE.fullmatch(item):
        raise ValueError(CONDA_RULE)
    return item


def check_pip(item: str) -> str:
    """Return `item` if it is a PEP 508 requirement naming an index package, else raise ValueError."""
    if item != item.strip() or "\n" in item or "\r" in item or item.startswith("-"):
        raise ValueError(PIP_RULE)
    try:
        requirement = Requirement(item)
    except InvalidRequirement as e:
        raise ValueError(f"{PIP_RULE} ({_first_line(str(e))})") from None
    if requirement.url:
        raise ValueError(PIP_RULE)
    return item


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
