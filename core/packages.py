"""Package grammars: each item is checked by its own ecosystem's rules, never silently dropped, and bounded so
that the install command it becomes always fits the kernel's limit on one argument."""

from __future__ import annotations

import re
import shlex

from packaging.requirements import InvalidRequirement, Requirement

MAX_ITEMS = 1000  # per package list; real ones have tens
MAX_ITEM_CHARS = 512
# A RUN line reaches the kernel as one argument of `/bin/sh -c`, which Linux caps at 32 pages (MAX_ARG_STRLEN,
# 131072 bytes): past it the build dies with E2BIG. The rendered command around the items (options, the CA
# bundle, a pip index URL of up to 2048 characters) stays within the margin.
MAX_ARG_STRLEN = 131_072
RUN_LINE_MARGIN_BYTES = 8_192
MAX_INSTALL_ARGS_BYTES = MAX_ARG_STRLEN - RUN_LINE_MARGIN_BYTES

# Debian policy 5.6.1 (name), 5.6.12 (version), plus the `:arch` qualifier and `/release` target apt accepts,
# and the `*` apt matches versions with (`mesos=1.2*`).
_DEBIAN_NAME = r"[a-z0-9][a-z0-9+.-]+"
_DEBIAN_VERSION = r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~*-]*(?::[A-Za-z0-9.+~*-]+)*"
_APT_RE = re.compile(
    rf"{_DEBIAN_NAME}(?::[a-z0-9-]+)?(?:={_DEBIAN_VERSION}|/[a-z0-9][a-z0-9.-]*)?"
)
APT_RULE = (
    "a Debian package is name[:arch][=version] or name/release, the name starting with a "
    "lowercase letter or digit and using only a-z 0-9 + . -; a version may end in apt's * glob"
)

# conda MatchSpec, as conda reads it: [channel::]name, then optionally a version (after an operator or a space,
# spaces around operators allowed) and a build (after '=' or a space). conda compares names case-blind.
_CONDA_CHANNEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)*"
_CONDA_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_CONDA_OP = r"(?:==|!=|>=|<=|~=|=|>|<)"
_CONDA_VERSION = r"[A-Za-z0-9_.*+!]+"
_CONDA_BUILD = r"[A-Za-z0-9_.*+]+"
# Possessive quantifiers: no run of spaces or characters is ever split two ways, so no input backtracks.
_CONDA_RE = re.compile(
    rf"(?:{_CONDA_CHANNEL_NAME}::)?{_CONDA_NAME}"
    rf"(?:(?: *+{_CONDA_OP} *+| ++){_CONDA_VERSION}(?: *+[,|] *+{_CONDA_OP}? *+{_CONDA_VERSION})*+"
    rf"(?:(?:=| ++){_CONDA_BUILD})?)?"
)
_CONDA_CHANNEL_RE = re.compile(_CONDA_CHANNEL_NAME)
_CHANNEL_FLAGS = ("-c", "--channel")
CONDA_RULE = (
    "a conda item is a match spec ([channel::]name[ version][ build], e.g. numpy, numpy>=1.26,<2, "
    "cartopy >= 0.20.0, r-base=3.3.1 1, conda-forge::numpy==1.26*), or match specs after -c/--channel CHANNEL "
    "flags (-c pytorch -c fastai fastai); URLs and other options are not allowed"
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
    """Return `item` if conda would read it as match specs (with channel flags, if any), else raise ValueError."""
    conda_line(item)
    return item


def conda_line(item: str) -> tuple[list[str], list[str]]:
    """A conda item as (channels, match specs). An item with a `-` option reads like a `conda install` command
    line (PrimeHub's documented `-c pytorch -c fastai fastai`): flags, then one match spec per word. Any other
    item is one match spec, spaces and all, as an environment file's dependency is."""
    if "\n" in item or "\r" in item or not any(word.startswith("-") for word in item.split()):
        if not _CONDA_RE.fullmatch(item):
            raise ValueError(CONDA_RULE)
        return [], [item]
    return _conda_command_line(item)


def _conda_command_line(item: str) -> tuple[list[str], list[str]]:
    try:
        words = shlex.split(item)
    except ValueError:
        raise ValueError(CONDA_RULE) from None
    channels, specs = [], []
    while words:
        word = words.pop(0)
        flag, _, attached = word.partition("=")
        if flag in _CHANNEL_FLAGS and (attached or words):
            channels.append(_channel(attached or words.pop(0)))
        elif word.startswith("-") or not _CONDA_RE.fullmatch(word):
            raise ValueError(CONDA_RULE)
        else:
            specs.append(word)
    if not specs:
        raise ValueError(CONDA_RULE)
    return channels, specs


def _channel(name: str) -> str:
    if not _CONDA_CHANNEL_RE.fullmatch(name):
        raise ValueError(f"{CONDA_RULE} (a channel is a name such as conda-forge or nvidia/label/cuda-11.8.0)")
    return name


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


def conda_install_args(items: list[str]) -> list[str]:
    """`conda install`'s arguments for the whole list: every channel flag (once, in order), then every spec.
    Channels apply to the whole install, as they do when the lines are joined on one command line."""
    channels, specs = [], []
    for item in items:
        item_channels, item_specs = conda_line(item)
        channels += [channel for channel in item_channels if channel not in channels]
        specs += item_specs
    return [arg for channel in channels for arg in ("-c", channel)] + specs


def quoted_args(items: list[str]) -> str:
    """The items as they reach the install command: shell-quoted, space-separated."""
    return " ".join(shlex.quote(item) for item in items)


def check_fits_run_line(items: list[str]) -> list[str]:
    """Raise ValueError unless the items' install arguments fit one RUN line with the margin to spare."""
    size = len(quoted_args(items).encode())
    if size > MAX_INSTALL_ARGS_BYTES:
        raise ValueError(
            f"together these items make {size} bytes of install arguments, more than the {MAX_INSTALL_ARGS_BYTES} "
            f"that fit one RUN line (the kernel allows {MAX_ARG_STRLEN} bytes per argument): split the image"
        )
    return items


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
