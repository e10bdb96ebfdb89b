"""SBOM contents from real package databases (Debian 12's dpkg status and os-release, pip's METADATA, setuptools'
PKG-INFO, conda-meta records as conda writes them): versions and package URLs per ecosystem, unreadable records
counted, and the CycloneDX 1.6 document valid against the schema."""

from __future__ import annotations

import json
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from core.reference import parse_reference
from core.sbom import REQUESTED_PROPERTY, SKIPPED_PROPERTY
from worker.sbom.changes import changes_between, package_versions
from worker.sbom.cyclonedx import ImageSubject, sbom_json
from worker.sbom.packages import (
    Ecosystem,
    Inventory,
    conda_channel,
    conda_package,
    installed_debs,
    normalise_pypi_name,
    parse_os_release,
    python_distribution,
    requested_names,
)

SAMPLES = Path(__file__).parent / "samples" / "sbom"
BOOKWORM = parse_os_release((SAMPLES / "os-release").read_text())


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_os_release_gives_the_distribution_and_its_codename():
    assert (BOOKWORM.id, BOOKWORM.version_id, BOOKWORM.codename) == ("debian", "12", "bookworm")
    assert BOOKWORM.pretty_name == "Debian GNU/Linux 12 (bookworm)"


def test_installed_debian_packages_have_their_version_and_purl_and_the_rest_is_counted():
    # Given Debian 12's status, with a removed package's config files left and a paragraph cut short
    packages, unreadable = installed_debs(sample("status"), BOOKWORM)
    # Then the installed ones are listed with their versions (epochs and tildes kept, `+` escaped in the purl)
    by_name = {p.name: p for p in packages}
    assert sorted(by_name) == ["adduser", "base-files", "libc6", "libssl3", "python3-pip"]
    assert by_name["libssl3"].version == "3.0.20-1~deb12u2"
    assert by_name["libssl3"].purl == "pkg:deb/debian/libssl3@3.0.20-1~deb12u2?arch=amd64&distro=bookworm"
    assert by_name["python3-pip"].purl == "pkg:deb/debian/python3-pip@23.0.1%2Bdfsg-1?arch=all&distro=bookworm"
    # And the removed package is not one, while the cut paragraph is counted as unreadable
    assert "libgdbm6" not in by_name and unreadable == 1


def test_python_distributions_from_metadata_and_pkg_info_have_normalised_names():
    pip = python_distribution(sample("pip.METADATA"))
    setuptools = python_distribution(sample("setuptools.PKG-INFO"))
    assert (pip.ecosystem, pip.name, pip.version, pip.purl) == (Ecosystem.PYPI, "pip", "23.0.1", "pkg:pypi/pip@23.0.1")
    assert setuptools.purl == "pkg:pypi/setuptools@66.1.1"
    assert normalise_pypi_name("Zope.Interface__x") == "zope-interface-x"


def test_unreadable_python_metadata_is_none_not_an_error():
    assert python_distribution("Name: half-written\n") is None
    assert python_distribution("\udcff\x00garbage") is None
    assert python_distribution("Name: a b\nVersion: 1\n") is None


def test_conda_records_have_build_channel_and_subdir_in_their_purl():
    numpy = conda_package(sample("numpy-1.26.4-py311h64a7726_0.json"))
    tzdata = conda_package(sample("tzdata-2024a-h0c530f3_0.json"))
    assert numpy.purl == "pkg:conda/numpy@1.26.4?build=py311h64a7726_0&channel=conda-forge&subdir=linux-64"
    assert tzdata.purl == "pkg:conda/tzdata@2024a?build=h0c530f3_0&channel=conda-forge&subdir=noarch"
    assert conda_package("{not json") is None and conda_package('{"name": "x"}') is None
    assert conda_channel("https://mirror.example/conda/main/linux-64", "linux-64") == "https://mirror.example/conda/main"


def test_requested_names_are_read_from_each_grammar():
    names = requested_names(["jq", "curl=7.88.1-10", "libssl3:amd64"], ["Requests[socks]>=2", "zope.interface"],
                            ["conda-forge::NumPy=1.26", "tzdata 2024a"])
    assert names == {(Ecosystem.DEB, "jq"), (Ecosystem.DEB, "curl"), (Ecosystem.DEB, "libssl3"),
                     (Ecosystem.PYPI, "requests"), (Ecosystem.PYPI, "zope-interface"),
                     (Ecosystem.CONDA, "numpy"), (Ecosystem.CONDA, "tzdata")}


def test_the_cyclonedx_document_is_valid_1_6_and_says_what_the_image_is_and_holds():
    # Given an inventory of every sample, one Debian record unreadable
    debs, unreadable = installed_debs(sample("status"), BOOKWORM)
    inventory = Inventory(distro=BOOKWORM, packages=[*debs, python_distribution(sample("pip.METADATA")),
                                                      conda_package(sample("tzdata-2024a-h0c530f3_0.json"))],
                          skipped={"deb": unreadable})
    subject = ImageSubject(parse_reference("registry.example/team/notebook:0123abcd"), "sha256:" + "a" * 64,
                           parse_reference("debian:12"), "sha256:" + "b" * 64)
    # When it is made into a CycloneDX document, with libssl3 requested
    document = sbom_json(inventory, subject, {(Ecosystem.DEB, "libssl3")})
    # Then the schema takes it, and it names the image by digest, its base as ancestor, and every package
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    bom = json.loads(document)
    assert bom["specVersion"] == "1.6"
    image = bom["metadata"]["component"]
    assert image["type"] == "container" and image["version"] == subject.digest
    assert image["pedigree"]["ancestors"][0]["version"] == subject.base_digest
    libraries = {c["purl"]: c for c in bom["components"] if c["type"] == "library"}
    assert set(libraries) == {p.purl for p in inventory.packages}
    requested = [c["name"] for c in libraries.values() if {"name": REQUESTED_PROPERTY, "value": "true"}
                 in c.get("properties", [])]
    assert requested == ["libssl3"]
    properties = {p["name"]: p["value"] for p in bom["metadata"]["properties"]}
    assert properties[SKIPPED_PROPERTY.format(source="deb")] == "1"
    assert any(c["type"] == "operating-system" and c["version"] == "12" for c in bom["components"])


def bom_of(*purls: str) -> bytes:
    return json.dumps({"components": [{"type": "library", "name": purl.split("/")[-1].split("@")[0],
                                       "version": purl.split("@")[1].split("?")[0], "purl": purl}
                                      for purl in purls]}).encode()


def test_what_changed_is_added_removed_and_changed_by_ecosystem_and_name():
    # Given a rebuild whose base upgraded openssl, gained two packages and kept the rest
    before = bom_of("pkg:deb/debian/openssl@3.0.11-1?arch=amd64", "pkg:deb/debian/jq@1.6-2.1?arch=amd64",
                    "pkg:pypi/six@1.16.0")
    after = bom_of("pkg:deb/debian/openssl@3.0.13-1?arch=amd64", "pkg:deb/debian/jq@1.6-2.1?arch=amd64",
                   "pkg:pypi/six@1.16.0", "pkg:deb/debian/curl@7.88.1-10?arch=amd64", "pkg:pypi/requests@2.32.3")
    # When they are compared
    changes = changes_between(before, after, since="b1")
    # Then exactly those changes are listed, and summed up as the history shows them
    assert [(c.name, c.old, c.new) for c in changes.changed] == [("openssl", "3.0.11-1", "3.0.13-1")]
    assert [(a.ecosystem, a.name, a.version) for a in changes.added] == [("deb", "curl", "7.88.1-10"),
                                                                         ("pypi", "requests", "2.32.3")]
    assert changes.removed == [] and changes.since == "b1"
    assert changes.summary() == "openssl 3.0.11-1 → 3.0.13-1, +2, −0"


def test_the_same_name_in_two_ecosystems_is_two_packages():
    changes = changes_between(bom_of("pkg:pypi/six@1.16.0"), bom_of("pkg:deb/debian/six@1.16.0-4"), since="b")
    assert [a.ecosystem for a in changes.added] == ["deb"] and [r.ecosystem for r in changes.removed] == ["pypi"]


def test_a_long_list_of_changes_is_summed_up_after_the_first_three():
    before = bom_of(*(f"pkg:pypi/p{i}@1" for i in range(5)))
    after = bom_of(*(f"pkg:pypi/p{i}@2" for i in range(5)))
    assert changes_between(before, after, "b").summary() == "p0 1 → 2, p1 1 → 2, p2 1 → 2, 2 more changed, +0, −0"


def test_an_sbom_that_is_not_one_has_no_packages_rather_than_failing_the_comparison():
    assert package_versions(b"[1, 2]") == {} and package_versions(b'{"components": {"x": 1}}') == {}
    assert package_versions(b'{"components": [7, {"purl": "not a purl", "version": "1"}]}') == {}
