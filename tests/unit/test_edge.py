"""The API's pure edges: bearer tokens, server-sent event framing, and the one table of outcomes."""

import re

import pytest

from core.errors import (
    AlreadyFinished,
    AuthFailed,
    BuildStepFailed,
    ConfigurationError,
    FeatureDisabled,
    InvalidSpec,
    NoSbom,
    RegistryUnavailable,
    SettingsError,
    StoreUnavailable,
    UnknownBuild,
)
from core.outcomes import OUTCOMES, outcome_of
from producer.edge import BearerTokens
from producer.livelog import sse_event


def test_a_token_matches_only_as_a_bearer_token():
    tokens = BearerTokens(["one", "two"])
    assert tokens.match(b"Bearer two") and tokens.match(b"bearer one")
    assert not any(tokens.match(h) for h in (b"", b"Bearer", b"Bearer three", b"Basic two", b"two", b"Bearer twox"))


@pytest.mark.parametrize("text", ["event: end", "a\nevent: end", "a\r\nid: 9", "a\rdata: Succeeded\n", "\n\n", ""])
def test_no_text_becomes_a_field_of_its_own_or_ends_an_event_early(text):
    event = sse_event(text)
    lines = event.removesuffix("\n\n").split("\n")
    assert event.endswith("\n\n") and "\r" not in event
    assert all(line.startswith("data: ") for line in lines)
    assert [line.removeprefix("data: ") for line in lines] == re.split(r"\r\n|\r|\n", text)


def test_the_end_event_names_its_type_then_its_data():
    assert sse_event("Succeeded", event="end") == "event: end\ndata: Succeeded\n\n"


@pytest.mark.parametrize(("error", "status", "exit_code"), [
    (UnknownBuild("x"), 404, 2), (AlreadyFinished("x"), 409, 1), (FeatureDisabled("x"), 403, 2),
    (ConfigurationError("x"), 503, 2), (InvalidSpec("x"), 422, 2), (SettingsError("x"), 503, 2),
    (StoreUnavailable("x"), 503, 1), (AuthFailed("x"), 502, 1), (RegistryUnavailable("x"), 502, 1),
    (NoSbom("x"), 404, 1), (BuildStepFailed("x"), 500, 1), (KeyError("x"), 500, 1),
])
def test_each_error_has_one_status_and_one_exit_code(error, status, exit_code):
    assert (outcome_of(error).status, outcome_of(error).exit_code) == (status, exit_code)


def test_no_row_of_the_outcome_table_is_hidden_behind_an_earlier_parent():
    kinds = [kind for kind, _ in OUTCOMES]
    assert not any(issubclass(later, earlier) for i, earlier in enumerate(kinds) for later in kinds[i + 1:])
