"""SBOMs on real builds: every Debian package and Python distribution in the image is in its CycloneDX SBOM with the
version the image's own tools report, the SBOM is attached in the registry and found again with plain HTTP (the
referrers tag schema, as docker-registry 2.8 has no referrers API); with IMAGEBUILDER_SBOM=required an image the step
cannot read fails the build and tags nothing, while best-effort succeeds and says why."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import docker
import pytest
import requests
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from core.phases import BuildPhase, BuildStep
from core.sbom import REQUESTED_PROPERTY, SBOM_MEDIA_TYPE
from core.spec import parse_spec
from devstack.baseimage import push
from devstack.stack import PULL_PASSWORD, PULL_USER, PUSH_PASSWORD, PUSH_USER
from producer.client import BuildClient
from tests.integration.conftest import start_worker
from tests.integration.test_builds import WAIT_S, pull_back, run_in
from tests.integration.test_failures import cli

pytestmark = pytest.mark.integration
SBOM_DB = 25
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sbom_in_registry(stack, image: str, digest: str) -> tuple[dict, dict]:
    """The artifact manifest referring to `digest` and its SBOM, found as any OCI 1.1 client would without the
    referrers API: the `sha256-<hex>` tag's index, then the manifest, then its layer (checked against its digest)."""
    repository = image.split("/", 1)[1].rsplit(":", 1)[0]
    url, auth = f"http://{stack.push_registry.host}/v2/{repository}", (PUSH_USER, PUSH_PASSWORD)
    index = requests.get(f"{url}/manifests/{digest.replace(':', '-')}", auth=auth, headers={"Accept": OCI_INDEX},
                         timeout=10).json()
    [entry] = [e for e in index["manifests"] if e.get("artifactType") == SBOM_MEDIA_TYPE]
    manifest = requests.get(f"{url}/manifests/{entry['digest']}", auth=auth, headers={"Accept": OCI_MANIFEST},
                            timeout=10).json()
    [layer] = manifest["layers"]
    body = requests.get(f"{url}/blobs/{layer['digest']}", auth=auth, timeout=10).content
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == layer["digest"]
    return manifest, json.loads(body)


def versions(bom: dict, purl_type: str) -> dict[str, str]:
    return {c["name"]: c["version"] for c in bom["components"] if c.get("purl", "").startswith(f"pkg:{purl_type}/")}


def test_every_package_the_image_reports_is_in_its_sbom_attached_in_the_registry(stack, client, unique):
    # Given a spec on the Debian base that installs jq with apt and six with pip
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "pullSecret": "private",
                       "packages": {"apt": ["jq"], "pip": ["six==1.17.0"]}})
    # When it is built (SBOMs best-effort, the default)
    result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert result.sbom is not None and result.sbom.digest, result.sbom
    # Then an SBOM refers to the pushed image in its repository, as a CycloneDX artifact, and is valid 1.6
    manifest, bom = sbom_in_registry(stack, result.image, result.digest)
    assert manifest["artifactType"] == SBOM_MEDIA_TYPE and manifest["subject"]["digest"] == result.digest
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is None
    assert bom["metadata"]["component"]["version"] == result.digest
    # And every package dpkg-query and pip list report in the image is in it, with the same version
    pull_back(stack, result.image)
    dpkg = dict(line.split(" ", 1) for line in run_in(
        result.image, "dpkg-query -W -f '${db:Status-Status} ${Package} ${Version}\\n' | "
                      "sed -n 's/^installed //p'").splitlines())
    pip = {p["name"].lower(): p["version"] for p in json.loads(run_in(
        result.image, "python3 -m pip list --format=json --disable-pip-version-check 2>/dev/null"))}
    assert dpkg and versions(bom, "deb") == dpkg
    assert pip and versions(bom, "pypi") == pip
    assert result.sbom.packages == len(dpkg) + len(pip)
    # And what the spec asked for is marked requested
    requested = {c["name"] for c in bom["components"] if {"name": REQUESTED_PROPERTY, "value": "true"}
                 in c.get("properties", [])}
    assert requested == {"jq", "six"}


def base_with(stack, name: str, files: dict[str, bytes], tag: str = "1") -> str:
    """A BusyBox base with `files` added, pushed to the private registry."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM {stack.busybox_base}\nCOPY . /\n".encode()
        for path, content in {"Dockerfile": dockerfile, **files}.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    engine = docker.from_env()
    engine.login(PULL_USER, PULL_PASSWORD, registry=stack.private_registry.host)
    reference = f"{stack.private_registry.host}/base/{name}:{tag}"
    engine.images.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, tag=reference, rm=True)
    push(engine, reference, PULL_USER, PULL_PASSWORD)
    return reference


@pytest.fixture(scope="module")
def unreadable_base(stack) -> str:
    """A base whose dpkg status is a directory: no tool can read it as the file it should be."""
    return base_with(stack, "sbom-unreadable", {"var/lib/dpkg/status/README": b"a directory where dpkg keeps a file"})


@pytest.fixture(scope="module")
def corrupt_records_base(stack) -> str:
    """A base whose dpkg status has one whole paragraph and one cut short, and with one Python distribution whose
    METADATA is readable and one whose METADATA is not metadata at all."""
    status = (b"Package: good-deb\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n"
              b"Package: cut-short\nStatus: install ok installed\n")
    return base_with(stack, "sbom-corrupt", {
        "var/lib/dpkg/status": status,
        "usr/lib/python3/dist-packages/good-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: good\n"
                                                                      b"Version: 1.0\n",
        "usr/lib/python3/dist-packages/broken-1.0.dist-info/METADATA": b"\x00\xff not metadata"})


@pytest.fixture(scope="module")
def required_client(stack):
    worker = start_worker(stack, "sbom-required", SBOM_DB, IMAGEBUILDER_SBOM="required")
    try:
        with BuildClient(stack.settings(SBOM_DB)) as build_client:
            yield build_client
    finally:
        worker.process.stop()


def test_required_fails_a_build_whose_image_cannot_be_read_and_tags_nothing(stack, required_client,
                                                                             unreadable_base, unique):
    # Given a spec on a base whose dpkg status cannot be read, and SBOMs required
    spec = parse_spec({"name": unique, "baseImage": unreadable_base, "pullSecret": "private"})
    # When it is built
    result = required_client.wait(required_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it failed at the SBOM step, naming the path, and its target tag was never pushed
    assert result.phase is BuildPhase.FAILED and result.step is BuildStep.SBOM
    assert "/var/lib/dpkg/status is in the image but is not a file" in result.error
    repository, tag = result.image.split("/", 1)[1].rsplit(":", 1)
    tags = requests.get(f"http://{stack.push_registry.host}/v2/{repository}/tags/list",
                        auth=(PUSH_USER, PUSH_PASSWORD), timeout=10).json()["tags"]
    assert tag not in tags and f"{tag}-staged" in tags


def test_best_effort_succeeds_and_says_why_there_is_no_sbom(stack, client, unreadable_base, unique):
    # Given the same unreadable base, and SBOMs best-effort
    spec = parse_spec({"name": unique, "baseImage": unreadable_base, "pullSecret": "private"})
    # When it is built
    result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    # Then it succeeded, and its record says why it has no SBOM
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert result.sbom.digest is None and "/var/lib/dpkg/status is in the image" in result.sbom.error


def test_required_attaches_the_sbom_before_the_target_is_tagged(stack, required_client, unique):
    # Given SBOMs required
    spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
    # When a spec is built
    result = required_client.wait(required_client.submit(spec).id, timeout_s=WAIT_S)
    # Then it succeeded, and the SBOM refers to the very manifest the target is tagged with
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    manifest, _ = sbom_in_registry(stack, result.image, result.digest)
    repository, tag = result.image.split("/", 1)[1].rsplit(":", 1)
    head = requests.head(f"http://{stack.push_registry.host}/v2/{repository}/manifests/{tag}",
                         auth=(PUSH_USER, PUSH_PASSWORD), timeout=10,
                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert head.headers["Docker-Content-Digest"] == result.digest == manifest["subject"]["digest"]


def test_corrupt_package_records_are_left_out_and_counted(stack, client, corrupt_records_base, unique):
    # Given a base with a dpkg paragraph cut short and a METADATA that is not metadata
    spec = parse_spec({"name": unique, "baseImage": corrupt_records_base, "pullSecret": "private"})
    # When it is built
    result = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    # Then the build and its SBOM are whole but for those two, which are counted in its properties
    assert result.phase is BuildPhase.SUCCEEDED, result.error
    assert (result.sbom.packages, result.sbom.unreadable) == (2, 2), result.sbom
    _, bom = sbom_in_registry(stack, result.image, result.digest)
    assert versions(bom, "deb") == {"good-deb": "1.0-1"} and versions(bom, "pypi") == {"good": "1.0"}
    properties = {p["name"]: p["value"] for p in bom["metadata"]["properties"]}
    assert properties["imagebuilder:skipped:deb"] == properties["imagebuilder:skipped:pypi"] == "1"


def test_the_sbom_is_read_back_over_http_and_the_cli_and_a_skip_points_at_its_images(stack, client, api, unique):
    # Given a built image
    spec = parse_spec({"name": unique, "baseImage": stack.busybox_base, "pullSecret": "private"})
    built = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    assert built.succeeded, built.error
    # When its SBOM is asked for over HTTP and with the CLI
    answer = api.get(f"/builds/{built.id}/sbom")
    printed = cli(stack, "sbom", built.id)
    # Then both give the document attached in the registry, describing that image
    _, attached = sbom_in_registry(stack, built.image, built.digest)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(SBOM_MEDIA_TYPE)
    assert answer.json() == attached == json.loads(printed.stdout)
    # And an unchanged resubmission, skipped, points at the existing image's SBOM
    skipped = client.wait(client.submit(spec).id, timeout_s=WAIT_S)
    assert skipped.skipped and api.get(f"/builds/{skipped.id}/sbom").json() == attached
    # And a platform the image lacks, or a build with no image, is a 404 that says why
    wrong = api.get(f"/builds/{built.id}/sbom", params={"platform": "linux/s390x"})
    assert wrong.status_code == 404 and "no linux/s390x image" in wrong.json()["detail"]
    failed = client.wait(client.submit({"name": f"{unique}-x", "baseImage": f"{stack.busybox_base}-missing",
                                        "pullSecret": "private"}).id, timeout_s=WAIT_S)
    assert api.get(f"/builds/{failed.id}/sbom").status_code == 404


def dpkg_status(packages: dict[str, str]) -> bytes:
    return "".join(f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n"
                   for name, version in packages.items()).encode()


def test_a_rebuild_lists_exactly_the_packages_its_base_added_and_upgraded(stack, client, unique):
    # Given a stored spec built on a base with two packages
    base = base_with(stack, f"{unique}-base", {"var/lib/dpkg/status": dpkg_status({"alpha": "1.0-1",
                                                                                     "beta": "1.0-1"})})
    _, first = client.specs.apply({"name": unique, "baseImage": base, "pullSecret": "private"})
    first = client.wait(first.id, timeout_s=WAIT_S)
    assert first.succeeded and first.changes is None  # nothing before it to compare with
    # When the base gains one package and upgrades another, and the spec is rebuilt
    base_with(stack, f"{unique}-base", {"var/lib/dpkg/status": dpkg_status({"alpha": "1.0-1", "beta": "1.1-1",
                                                                              "gamma": "2.0-1"})})
    again = client.wait(client.specs.build(unique, force=True).id, timeout_s=WAIT_S)
    # Then its record lists exactly those changes, since the first build
    assert again.succeeded, again.error
    changes = again.changes
    assert changes.since == first.id
    assert [(c.name, c.old, c.new) for c in changes.changed] == [("beta", "1.0-1", "1.1-1")]
    assert [(a.name, a.version) for a in changes.added] == [("gamma", "2.0-1")] and changes.removed == []
    # And the history, `status` and `history` say it as one line
    assert client.specs.history(unique)[0].changes == changes
    summary = "beta 1.0-1 → 1.1-1, +1, −0"
    assert summary in cli(stack, "history", unique).stdout
    assert f"changes:     {summary} (since build {first.id})" in cli(stack, "status", again.id).stdout
