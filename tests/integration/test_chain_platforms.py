"""Platforms inherited down image chains, in the spec store on real Redis: a spec naming none that is built on a
multi-platform spec's current image takes its platforms (and a tag covering them), follows it when it changes,
and keeps them on the image it was applied on; a spec naming its own keeps those."""

from __future__ import annotations

import pytest
import redis

from config.settings import Settings
from core.imagechain import ImageChains
from core.platforms import Platform
from core.spec import parse_spec
from core.stores.specs import SpecStore
from core.tagging import compute_tag, target_for

pytestmark = pytest.mark.integration
CHAINS_DB = 24
PREFIX = "registry.example/team"
BOTH = ["linux/amd64", "linux/arm64"]


@pytest.fixture
def chains(stack):
    conn = redis.Redis(port=stack.redis.port, db=CHAINS_DB, decode_responses=True)
    specs = SpecStore(conn, None, None)
    yield specs, ImageChains(specs, Settings(_env_file=None, PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX=PREFIX))
    conn.close()


def apply(chains, spec: dict):
    specs, rules = chains
    return specs.apply(parse_spec(spec), rules)


def image_of(stored) -> str:
    return str(target_for(stored.spec, repo_prefix=PREFIX))


def test_a_child_on_a_two_platform_specs_image_is_stored_for_its_platforms(chains, unique):
    # Given a stored spec naming two platforms
    upstream, _ = apply(chains, {"name": f"{unique}-up", "baseImage": "debian:12", "platforms": BOTH})
    # When a spec naming none is applied on its current image, and another naming its own
    child, _ = apply(chains, {"name": f"{unique}-child", "baseImage": image_of(upstream)})
    own, _ = apply(chains, {"name": f"{unique}-own", "baseImage": image_of(upstream), "platforms": ["linux/amd64"]})
    # Then the first takes the upstream's platforms, and its tag covers them; the second keeps its own
    assert child.spec.platforms == (Platform.LINUX_AMD64, Platform.LINUX_ARM64)
    assert child.platforms_from == f"{unique}-up" and child.tag == compute_tag(child.spec)
    assert child.written.platforms is None and child.tag != compute_tag(child.written)
    assert own.spec.platforms == (Platform.LINUX_AMD64,) and own.platforms_from is None
    # And applied again as written, the child is unchanged (nothing to build)
    again, changed = apply(chains, {"name": f"{unique}-child", "baseImage": image_of(upstream)})
    assert not changed and again == child


def test_children_applied_before_their_upstream_follow_it_down_the_chain(chains, unique):
    # Given a child and a grandchild applied first, on the images their upstreams will have
    up = parse_spec({"name": f"{unique}-up", "baseImage": "debian:12", "platforms": BOTH})
    child = parse_spec({"name": f"{unique}-child", "baseImage": str(target_for(up, repo_prefix=PREFIX))})
    apply(chains, child.to_wire())
    grandchild_base = str(target_for(child.model_copy(update={"platforms": up.platforms}), repo_prefix=PREFIX))
    apply(chains, {"name": f"{unique}-grandchild", "baseImage": grandchild_base})
    specs, _ = chains
    assert specs.get(f"{unique}-child").spec.platforms is None
    # When the upstream is applied
    apply(chains, up.to_wire())
    # Then both follow it in the same write: each takes the platforms, and the grandchild names where from
    stored_child, stored_grandchild = specs.get(f"{unique}-child"), specs.get(f"{unique}-grandchild")
    assert stored_child.spec.platforms == stored_grandchild.spec.platforms == up.platforms
    assert stored_child.platforms_from == f"{unique}-up" and stored_grandchild.platforms_from == f"{unique}-child"
    assert stored_grandchild.tag == compute_tag(stored_grandchild.spec)


def test_a_child_keeps_the_platforms_of_the_image_it_is_built_on_when_its_upstream_changes(chains, unique):
    # Given a child on a two-platform spec's image
    upstream, _ = apply(chains, {"name": f"{unique}-up", "baseImage": "debian:12", "platforms": BOTH})
    child, _ = apply(chains, {"name": f"{unique}-child", "baseImage": image_of(upstream)})
    # When the upstream is edited to one platform (a new tag: the child's base is its older image), and the child
    # is applied again unchanged
    apply(chains, {"name": f"{unique}-up", "baseImage": "debian:12", "platforms": ["linux/arm64"]})
    again, changed = apply(chains, {"name": f"{unique}-child", "baseImage": image_of(upstream)})
    # Then the child is unchanged: the image it is built on still has both platforms
    assert not changed and again.spec.platforms == child.spec.platforms and again.tag == child.tag
    # And moved to the upstream's new image, it takes that image's platforms
    moved, changed = apply(chains, {"name": f"{unique}-child",
                                    "baseImage": image_of(chains[0].get(f"{unique}-up"))})
    assert changed and moved.spec.platforms == (Platform.LINUX_ARM64,)
