"""Reading image specs from YAML or JSON files (or stdin), in any shape the spec model accepts."""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import InvalidSpec
from core.spec import ImageSpec, parse_spec
from producer.boundedyaml import MAX_YAML_CHARS, load_all


def load_spec_file(path: str) -> ImageSpec:
    """One spec from `path` ('-' for stdin); InvalidSpec naming the file when it cannot be read."""
    documents = _documents(path)
    if len(documents) != 1:
        raise InvalidSpec(f"{path}: expected exactly one spec, found {len(documents)}")
    return parse_spec(documents[0])


def load_spec_text(text: str, source: str = "the text") -> ImageSpec:
    """The one spec in `text` (YAML or JSON, any accepted shape); InvalidSpec naming `source` otherwise."""
    documents = load_all(text, source)
    if len(documents) != 1:
        raise InvalidSpec(f"{source}: expected exactly one spec, found {len(documents)}")
    return parse_spec(documents[0])


def load_spec_files(path: str) -> list[ImageSpec]:
    """Every spec in `path`: several YAML documents, and PrimeHub `List`s of ImageSpec objects
    (as `kubectl get imagespec -o yaml` prints them); an error names the document it is in."""
    items = []
    for document in _documents(path):
        is_list = isinstance(document, dict) and document.get("kind") == "List"
        items.extend(document.get("items") or [] if is_list else [document])
    specs = []
    for index, item in enumerate(items):
        try:
            specs.append(parse_spec(item))
        except InvalidSpec as e:
            raise InvalidSpec(f"{path}: spec {index + 1}: {e}") from None
    return specs


def _documents(path: str) -> list:
    return load_all(_text(path), path)


def _text(path: str) -> str:
    """The file's text, read no further than one character past the YAML bound (which then refuses it)."""
    try:
        if path == "-":
            return sys.stdin.read(MAX_YAML_CHARS + 1)
        with Path(path).open(encoding="utf-8") as file:
            return file.read(MAX_YAML_CHARS + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidSpec(f"{path}: cannot read: {e.strerror if isinstance(e, OSError) else e}") from None
