"""User YAML is read within bounds: a billion laughs, deep nesting or a huge text is refused quickly, naming the rule;
every legitimate spec, List of specs and sensible use of anchors still reads."""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest
import yaml

from core.errors import InvalidSpec
from producer.boundedyaml import (
    MAX_YAML_CHARS,
    MAX_YAML_DEPTH_LEVELS,
    MAX_YAML_NODES,
    load_all,
    load_one,
)
from producer.specfile import load_spec_file, load_spec_files, load_spec_text

# The classic: nine levels of ten aliases, 10^9 "lol"s once expanded, in 666 bytes.
BILLION_LAUGHS = "lol1: &lol1 [" + ",".join(['"lol"'] * 10) + "]\n" + "".join(
    f"lol{level}: &lol{level} [" + ",".join([f"*lol{level - 1}"] * 10) + "]\n" for level in range(2, 10))
NODES_RULE = f"YAML would expand to more than {MAX_YAML_NODES:,} nodes, aliases included (at most {MAX_YAML_NODES:,}"
DEPTH_RULE = f"YAML is nested too deeply: more than {MAX_YAML_DEPTH_LEVELS} levels (at most {MAX_YAML_DEPTH_LEVELS}"
MAX_REFUSAL_S = 0.1
TIMED_READINGS = 3
MAX_PEAK_BYTES = 2 * 1024 * 1024


def refused_with_peak(text: str) -> tuple[InvalidSpec, float, int]:
    """The refusal of `text`, how long it took (the quickest of TIMED_READINGS, as a busy machine may stall any
    one of them), and the peak of memory allocated while reading it (measured on a reading of its own:
    tracemalloc slows every allocation down)."""
    elapsed_s = min(timed(text) for _ in range(TIMED_READINGS))
    refusal = refused(text)
    tracemalloc.start()
    try:
        refused(text)
        return refusal, elapsed_s, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def timed(text: str) -> float:
    started = time.perf_counter()
    refused(text)
    return time.perf_counter() - started


def refused(text: str) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as refusal:
        load_all(text, "the spec")
    return refusal.value


def test_a_billion_laughs_is_refused_at_once_naming_the_rule_and_allocating_almost_nothing():
    # Given the classic nested-alias document of about 600 bytes
    assert len(BILLION_LAUGHS.encode()) < 700
    # When it is read
    refusal, elapsed_s, peak_bytes = refused_with_peak(BILLION_LAUGHS)
    # Then it is refused within 100 ms, naming the source, the rule and the bound, with a peak of a few KiB
    print(f"billion laughs refused in {elapsed_s * 1000:.1f} ms, tracemalloc peak {peak_bytes / 1024:.0f} KiB")
    assert str(refusal).startswith(f"the spec: {NODES_RULE}")
    assert elapsed_s < MAX_REFUSAL_S and peak_bytes < MAX_PEAK_BYTES


@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, "{a: " * 100_000 + "}" * 100_000,
                                  "- " * 100_000 + "x", "".join(f"{' ' * i}a:\n" for i in range(200))],
                         ids=["flow-sequences", "flow-mappings", "block-sequences", "block-mappings"])
def test_deep_nesting_is_refused_quickly_naming_the_bound_never_by_recursion_error(deep):
    # Given a document nested far deeper than any spec (100,000 levels, or 200 by indentation)
    # When it is read
    refusal, elapsed_s, peak_bytes = refused_with_peak(deep)
    # Then the depth rule refuses it, quickly and without growing
    assert str(refusal).startswith(f"the spec: {DEPTH_RULE}")
    assert elapsed_s < MAX_REFUSAL_S and peak_bytes < MAX_PEAK_BYTES


def alias_chain(items: int) -> str:
    """A list of `items` anchored lists, each holding an alias of the one before: no line nests more than three
    levels, but the last expands `items` + 2 levels deep."""
    return "- &l0 [x]\n" + "".join(f"- &l{i} [*l{i - 1}]\n" for i in range(1, items))


@pytest.mark.parametrize("text", ["[" * MAX_YAML_DEPTH_LEVELS + "]" * MAX_YAML_DEPTH_LEVELS,
                                  alias_chain(MAX_YAML_DEPTH_LEVELS - 2)], ids=["brackets", "aliases"])
def test_nesting_up_to_the_bound_reads(text):
    assert load_all(text, "the spec")


@pytest.mark.parametrize("text", ["[" * (MAX_YAML_DEPTH_LEVELS + 1) + "]" * (MAX_YAML_DEPTH_LEVELS + 1),
                                  alias_chain(MAX_YAML_DEPTH_LEVELS - 1)], ids=["brackets", "aliases"])
def test_nesting_one_level_past_the_bound_is_refused_also_through_aliases(text):
    with pytest.raises(InvalidSpec, match=re.escape(DEPTH_RULE)):
        load_all(text, "the spec")


def test_an_alias_inside_its_own_anchor_is_refused_not_expanded_forever():
    with pytest.raises(InvalidSpec, match="a YAML alias refers to a node that contains it"):
        load_one("packages: &p {apt: *p}", "the spec")


# One document of 56,790 nodes once its aliases are expanded, in 193 characters.
TENS_OF_THOUSANDS = """\
- &a [x, x, x, x, x, x, x, x, x, x]
- &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
- &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
- &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
- [*d, *d, *d, *d]
"""


def test_nodes_are_counted_across_documents():
    # Given a document whose aliases expand to 56,790 nodes, alone and twice in one stream
    # Then it reads alone, and the stream of two passes the bound and is refused naming it
    assert len(load_one(TENS_OF_THOUSANDS, "specs.yaml")) == 5
    with pytest.raises(InvalidSpec, match=f"^specs.yaml: {re.escape(NODES_RULE)}"):
        load_all(f"{TENS_OF_THOUSANDS}---\n{TENS_OF_THOUSANDS}", "specs.yaml")


def test_a_text_past_the_character_bound_is_refused_naming_it():
    with pytest.raises(InvalidSpec, match=rf"^the spec: YAML is longer than {MAX_YAML_CHARS:,} characters \(at most"):
        load_all("#" * (MAX_YAML_CHARS + 1), "the spec")
    assert load_all("#" * MAX_YAML_CHARS, "the spec") == []


@pytest.mark.parametrize("text", ["a: 2021-13-45", "a: " + "9" * 5_000, "a: !!python/object:os.system {}", "a: ["])
def test_what_pyyaml_cannot_construct_is_refused_as_not_yaml(text):
    with pytest.raises(InvalidSpec, match="^the spec: not YAML or JSON: "):
        load_one(text, "the spec")


def test_a_spec_at_every_bound_and_a_list_of_a_thousand_kubectl_printed_specs_are_accepted(tmp_path):
    # Given a spec with 3 lists of 1,000 items, and a List of 1,000 ImageSpecs as kubectl prints them
    big = {"name": "big", "baseImage": "debian:bookworm",
           "packages": {"apt": [f"a{i}" for i in range(1000)], "pip": [f"p{i}" for i in range(1000)],
                        "conda": [f"c{i}" for i in range(1000)]}}
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.dump({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                                 "items": [kubectl_printed(f"spec-{i}") for i in range(1000)]},
                                Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))  # libyaml's: faster
    # When they are read
    spec = load_spec_text(yaml.safe_dump(big), "the spec")
    specs = load_spec_files(str(listed))
    # Then every item is there
    assert len(spec.packages.apt) == len(spec.packages.conda) == 1000
    assert [s.name for s in specs] == [f"spec-{i}" for i in range(1000)]


def kubectl_printed(name: str) -> dict:
    """An ImageSpec as `kubectl get imagespec -o yaml` prints it, metadata and managedFields included."""
    return {
        "apiVersion": "primehub.io/v1alpha1", "kind": "ImageSpec",
        "metadata": {"name": name, "namespace": "hub", "uid": "0f0e0d0c-0b0a-0908-0706-050403020100",
                     "resourceVersion": "123456", "generation": 2, "creationTimestamp": "2021-01-01T00:00:00Z",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                     "managedFields": [{"apiVersion": "primehub.io/v1alpha1", "fieldsType": "FieldsV1",
                                        "manager": "kubectl", "operation": "Update",
                                        "fieldsV1": {"f:spec": {".": {}, "f:baseImage": {}, "f:packages": {
                                            ".": {}, "f:apt": {}, "f:pip": {}}}}}]},
        "spec": {"baseImage": "jupyter/base-notebook", "pullSecret": "hub-secret",
                 "packages": {"apt": ["vim", "curl"], "pip": ["numpy==1.26.4"], "conda": []},
                 "updateTime": "2021-01-01T00:00:00Z"},
    }


def test_anchors_used_sensibly_still_read(tmp_path):
    # Given a List whose specs share packages through an anchor, a merge key and aliases used a few times
    shared = tmp_path / "shared.yaml"
    shared.write_text("""
kind: List
items:
- name: tools
  baseImage: &base debian:bookworm
  packages: &common {apt: &tools [jq, curl], pip: [requests]}
- name: more-tools
  baseImage: *base
  packages: {<<: *common, conda: *tools}
- {name: same-tools, baseImage: *base, packages: *common}
""")
    # When they are read
    tools, more, same = load_spec_files(str(shared))
    # Then the aliases gave their values
    assert tools.packages.apt == more.packages.apt == more.packages.conda == same.packages.apt == ["jq", "curl"]
    assert (more.base_image, more.packages.pip) == ("debian:bookworm", ["requests"])


def test_a_file_past_the_character_bound_is_refused_having_read_no_further(tmp_path):
    # Given a spec file far past the bound (a comment, so a reader that read it all would still find a spec)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\nbaseImage: debian\n# " + "x" * (4 * MAX_YAML_CHARS))
    tracemalloc.start()
    try:
        # When it is submitted
        with pytest.raises(InvalidSpec, match=f"YAML is longer than {MAX_YAML_CHARS:,} characters"):
            load_spec_file(str(huge))
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Then it was refused having read about the bound (a str of it, and the bytes it was decoded from), not the file
    assert peak_bytes < 3 * MAX_YAML_CHARS, peak_bytes
