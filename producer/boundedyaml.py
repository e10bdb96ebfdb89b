"""The one way user YAML is read: size, nesting and alias expansion bounded, so no document exhausts memory or time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from core.errors import InvalidSpec

# Every legitimate input fits these with room to spare. A spec at every bound (3 lists of 1,000 items, each list's
# install arguments within 128 KiB) is about 3,010 nodes and under 1 MiB; inside a List of custom resources it is
# 7 levels deep (kubectl's managedFields about 10). An ImageSpec as kubectl prints it is about 70 nodes and
# 800 characters, so a List of 1,400 of them (or of 33 specs at every bound) fits; reading that many takes PyYAML
# a few seconds and tens of MiB. The 666-byte "billion laughs" would expand to 10^9 nodes.
MAX_YAML_CHARS = 4 * 1024 * 1024
MAX_YAML_DEPTH_LEVELS = 64
MAX_YAML_NODES = 100_000


class YamlBoundExceeded(Exception):
    """A YAML stream broke one of the bounds; the message names the rule and the bound."""


class _Measure(NamedTuple):
    nodes: int  # the node and everything under it, each alias counted as the whole node it repeats
    depth_levels: int


class BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's pure-Python SafeLoader, refusing while it composes: nesting deeper than MAX_YAML_DEPTH_LEVELS, and
    a stream whose nodes, aliases expanded, would pass MAX_YAML_NODES. PyYAML composes recursively, so the depth
    is checked on the way down, before Python's own recursion limit is near; sizes are memoised per node, so
    measuring is linear in the text however often an alias is used."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth_levels = 0
        self._nodes_before = 0  # in the stream's earlier documents
        self._measures: dict[Node, _Measure] = {}

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        # Refused as it is scanned, not once composed: the scanner reads ahead while a key may start, and each step
        # of that visits every open bracket (100,000 `[` would take seconds before the composer saw level 65).
        if self.flow_level >= MAX_YAML_DEPTH_LEVELS:
            raise _too_deep()
        super().fetch_flow_collection_start(TokenClass)

    def compose_document(self) -> Node:
        root = super().compose_document()
        self._nodes_before += self._measures[root].nodes
        self._measures.clear()  # an alias names an anchor of its own document only
        return root

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        is_alias = self.check_event(AliasEvent)
        if self._depth_levels >= MAX_YAML_DEPTH_LEVELS:
            raise _too_deep()
        self._depth_levels += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth_levels -= 1
        self._check(self._measure(node, is_alias))
        return node

    def _measure(self, node: Node, is_alias: bool) -> _Measure:
        if is_alias and node not in self._measures:  # its anchor's node is still being composed: it holds itself
            raise YamlBoundExceeded("a YAML alias refers to a node that contains it, which would expand without end")
        if not is_alias:
            children = [self._measures[child] for child in _children(node)]
            self._measures[node] = _Measure(1 + sum(c.nodes for c in children),
                                            1 + max((c.depth_levels for c in children), default=0))
        return self._measures[node]

    def _check(self, measure: _Measure) -> None:
        if self._depth_levels + measure.depth_levels > MAX_YAML_DEPTH_LEVELS:  # an alias nests what it repeats
            raise _too_deep()
        if self._nodes_before + measure.nodes > MAX_YAML_NODES:
            raise YamlBoundExceeded(f"YAML would expand to more than {MAX_YAML_NODES:,} nodes, aliases included "
                                    f"(at most {MAX_YAML_NODES:,} nodes)")


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, SequenceNode) else []


def _too_deep() -> YamlBoundExceeded:
    return YamlBoundExceeded(f"YAML is nested too deeply: more than {MAX_YAML_DEPTH_LEVELS} levels "
                             f"(at most {MAX_YAML_DEPTH_LEVELS} levels)")


def load_all(text: str, source: str) -> list[Any]:
    """The documents in `text` (YAML or JSON), empty ones left out; InvalidSpec naming `source` and the rule when
    it is not YAML or breaks a bound."""
    return _loaded(text, source, _documents)


def load_one(text: str, source: str) -> Any:
    """The one document in `text` (None if empty); InvalidSpec as load_all, and for more than one document."""
    return _loaded(text, source, lambda loader: loader.get_single_data())


def _documents(loader: BoundedSafeLoader) -> list[Any]:
    documents = []
    while loader.check_data():
        documents.append(loader.get_data())
    return [document for document in documents if document is not None]


def _loaded(text: str, source: str, read: Callable[[BoundedSafeLoader], Any]) -> Any:
    if len(text) > MAX_YAML_CHARS:
        raise InvalidSpec(f"{source}: YAML is longer than {MAX_YAML_CHARS:,} characters "
                          f"(at most {MAX_YAML_CHARS:,} characters)")
    loader = BoundedSafeLoader(text)
    try:
        return read(loader)
    except YamlBoundExceeded as e:
        raise InvalidSpec(f"{source}: {e}") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a date or integer PyYAML cannot construct
        raise InvalidSpec(f"{source}: not YAML or JSON: {e}") from None
    finally:
        loader.dispose()
