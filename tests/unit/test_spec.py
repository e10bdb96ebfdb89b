"""The spec contract: three input shapes, and bad input rejected naming field, item and rule."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidSpec
from core.spec import ImageSpec, parse_spec

PLAIN = {
    "name": "test-build",
    "baseImage": "registry.gitlab.com/infuseai/docker-stacks/scipy-notebook",
    "pullSecret": "gitlab",
    "packages": {"apt": ["jq", "curl"], "pip": ["requests>=2.31", "pandas[parquet]==2.2.3"], "conda": []},
}


def test_camel_snake_and_primehub_crd_shapes_give_the_same_spec():
    snake = {"name": PLAIN["name"], "base_image": PLAIN["baseImage"], "pull_secret": "gitlab",
             "packages": PLAIN["packages"]}
    crd = {
        "apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec",
        "metadata": {"name": "test-build", "namespace": "hub", "uid": "x"},
        "spec": {"baseImage": PLAIN["baseImage"], "pullSecret": "gitlab", "packages": PLAIN["packages"],
                 "updateTime": "2021-01-01T00:00:00Z"},
        "status": {"phase": "Succeeded"},
    }
    assert parse_spec(PLAIN) == parse_spec(snake) == parse_spec(crd)


def test_wire_form_round_trips_in_camel_case():
    spec = parse_spec(PLAIN)
    assert spec.to_wire()["baseImage"] == PLAIN["baseImage"]
    assert ImageSpec.model_validate(spec.to_wire()) == spec


def test_packages_and_pull_secret_are_optional():
    spec = parse_spec({"name": "x", "baseImage": "ubuntu:22.04"})
    assert spec.pull_secret is None and spec.packages.apt == [] == spec.packages.pip


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"name": "Test"}, "name", "lowercase"),
        ({"name": "a" * 129}, "name", "at most 128"),
        ({"name": "-x"}, "name", "repository component"),
        ({"name": "a/b"}, "name", "one Docker repository component"),
        ({"baseImage": "Ubuntu:22.04"}, "baseImage", "Docker image reference"),
        ({"baseImage": "ubuntu:tag with space"}, "baseImage", "Docker image reference"),
        ({"baseImage": "ubuntu@sha256:short"}, "baseImage", "Docker image reference"),
        ({"pullSecret": "../etc"}, "pullSecret", "Kubernetes secret"),
        ({"packages": {"apt": ["ok", "jq; touch /x"]}}, "packages.apt[1]", "Debian package"),
        ({"packages": {"pip": ["-e ."]}}, "packages.pip[0]", "PEP 508"),
        ({"packages": {"pip": ["pkg @ https://example.com/pkg.whl"]}}, "packages.pip[0]", "URLs"),
        ({"packages": {"conda": ["numpy; id"]}}, "packages.conda[0]", "conda item is a match spec"),
        ({"packages": {"apt": ["jq"] * 1001}}, "packages.apt", "at most 1000 items"),
        ({"packages": {"pip": ["a" * 513]}}, "packages.pip[0]", "at most 512 characters"),
        ({"packages": {"pip": [f"{'a' * 500}{i}" for i in range(250)]}}, "packages.pip", "fit one RUN line"),
        ({"baseImage": "a" * 1025}, "baseImage", "at most 1024 characters"),
        ({"packages": {"yum": ["x"]}}, "packages.yum", "Extra inputs"),
        ({"extra": 1}, "extra", "Extra inputs"),
        ({"platforms": ["linux/mips64"]}, "platforms[0]", "a platform is one of linux/386, linux/amd64"),
        ({"platforms": ["linux/arm64/v8"]}, "platforms[0]", "a platform is one of"),
        ({"platforms": []}, "platforms", "names 1 to 7 platforms"),
        ({"platforms": "linux/amd64"}, "platforms", "must be a list of platforms"),
        ({"platforms": ["linux/arm64", "linux/amd64", "linux/arm64"]}, "platforms", "linux/arm64 more than once"),
        ({"platforms": ["linux/" + "a" * 40]}, "platforms[0]", "at most 32 characters"),
    ],
)
def test_bad_input_names_the_field_and_the_rule(change, field, words):
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({**PLAIN, **change})
    message = str(caught.value)
    assert f"{field}:" in message and words in message


def test_bad_item_is_quoted_so_newlines_show():
    with pytest.raises(InvalidSpec, match=r'"jq\\ncurl" is not allowed'):
        parse_spec({**PLAIN, "packages": {"apt": ["jq\ncurl"]}})


def test_every_bad_item_is_reported_not_just_the_first():
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({**PLAIN, "packages": {"apt": ["$(id)"], "pip": ["`id`"]}})
    assert "packages.apt[0]" in str(caught.value) and "packages.pip[0]" in str(caught.value)


def test_null_package_lists_mean_empty_and_give_the_same_tag():
    from core.tagging import compute_tag

    plain = parse_spec({"name": "x", "baseImage": "debian"})
    for packages in (None, {"apt": None}, {"apt": None, "pip": None, "conda": None}):
        assert parse_spec({"name": "x", "baseImage": "debian", "packages": packages}) == plain
    assert compute_tag(parse_spec({"name": "x", "baseImage": "debian", "packages": None})) == compute_tag(plain)


@pytest.mark.parametrize("field", ["metadata", "spec"])
@pytest.mark.parametrize("value", [[1], "m", 3])
def test_a_resource_whose_metadata_or_spec_is_not_an_object_is_refused_naming_it(field, value):
    resource = {"apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec", "metadata": {"name": "x"},
                "spec": {"baseImage": "debian"}, field: value}
    with pytest.raises(InvalidSpec, match=f"{field}: must be an object"):
        parse_spec(resource)


def test_the_path_names_a_spec_whose_body_does_not():
    from core.spec import spec_named

    resource = {"apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec", "spec": {"baseImage": "debian"}}
    assert parse_spec(spec_named(resource, "x")).name == "x"
    assert parse_spec(spec_named({"baseImage": "debian"}, "x")).name == "x"
    with pytest.raises(InvalidSpec, match="the body names 'y' but the path names 'x'"):
        spec_named({"name": "y", "baseImage": "debian"}, "x")
    with pytest.raises(InvalidSpec, match="metadata: must be an object"):
        parse_spec(spec_named({**resource, "metadata": [1]}, "x"))


def test_a_crd_of_another_kind_is_refused():
    with pytest.raises(InvalidSpec, match="kind ImageSpec"):
        parse_spec({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "spec": {}})


def test_spec_is_immutable():
    with pytest.raises(Exception):
        parse_spec(PLAIN).name = "other"


# Property: whatever arrives (a raw Celery message from any language), parsing gives a spec or InvalidSpec
# naming a field, and nothing else escapes.
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_SHAPED = st.fixed_dictionaries(
    {"name": _JSON | st.text(max_size=20), "baseImage": _JSON | st.text(max_size=30)},
    optional={"pullSecret": _JSON, "packages": st.dictionaries(st.sampled_from(["apt", "pip", "conda", "x"]),
                                                                st.lists(st.text(max_size=15), max_size=3) | _JSON)},
)


@settings(max_examples=300, deadline=None)
@given(data=_JSON | _SHAPED)
def test_any_input_parses_or_raises_only_invalid_spec_naming_a_field(data):
    try:
        spec = parse_spec(data)
    except InvalidSpec as e:
        assert str(e).startswith("invalid image spec: ") and ":" in str(e).removeprefix("invalid image spec: ")
        return
    assert ImageSpec.model_validate(spec.to_wire()) == spec


def test_a_spec_file_nested_too_deeply_is_refused_not_a_crash(tmp_path):
    from producer.specfile import load_spec_file

    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidSpec, match="nested too deeply"):
        load_spec_file(str(deep))


def test_platforms_are_kept_in_canonical_order_and_only_on_the_wire_when_named():
    # Given the same platforms in two orders, and a spec naming none
    one = parse_spec({**PLAIN, "platforms": ["linux/arm64", "linux/amd64"]})
    other = parse_spec({**PLAIN, "platforms": ["linux/amd64", "linux/arm64"]})
    plain = parse_spec(PLAIN)
    # Then both name them in one order, and the wire form of a spec without them has no platforms key
    assert one == other and [p.value for p in one.platforms] == ["linux/amd64", "linux/arm64"]
    assert one.to_wire()["platforms"] == ["linux/amd64", "linux/arm64"] and parse_spec(one.to_wire()) == one
    assert plain.platforms is None and "platforms" not in plain.to_wire()


def test_a_primehub_resource_may_name_platforms():
    resource = {"apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec", "metadata": {"name": "x"},
                "spec": {"baseImage": "ubuntu:22.04", "platforms": ["linux/arm/v7"]}}
    assert [p.value for p in parse_spec(resource).platforms] == ["linux/arm/v7"]
