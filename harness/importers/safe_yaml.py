"""A YAML loader for other projects' files that builds plain data and executes nothing.

promptsource's templates carry ``!Template`` / ``!TemplateMetadata`` tags and lm-eval's task
files ``!function``. PyYAML's SafeLoader refuses all of them; the loader here turns the
known tags into plain dicts and every other tag (``!!python/object/apply:...`` included) into
an :class:`UnsupportedTag` marker. Nothing named by a tag is ever imported or called.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnsupportedTag(NamedTuple):
    """Stands where the file had a tag we do not construct; ``value`` is the raw scalar, if any."""

    tag: str
    value: str


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _unsupported(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> UnsupportedTag:
    value = node.value if isinstance(node, yaml.ScalarNode) else ""
    return UnsupportedTag(node.tag, str(value))


class PlainLoader(_Base):  # type: ignore[misc,valid-type]
    """SafeLoader that maps ``!Template``-style tags to dicts and any other tag to a marker."""


for _tag in ("!Template", "!TemplateMetadata"):
    PlainLoader.add_constructor(_tag, _plain)
# The empty prefix matches every tag that has no exact constructor: python/*, !function, ...
PlainLoader.add_multi_constructor("", _unsupported)


def load_plain_yaml(text: str) -> Any:
    """Parse YAML text into plain Python data (dicts, lists, scalars, UnsupportedTag markers)."""
    return yaml.load(text, Loader=PlainLoader)  # PlainLoader is a SafeLoader subclass


def find_unsupported(value: Any) -> list[UnsupportedTag]:
    """Every UnsupportedTag marker inside ``value``."""
    if isinstance(value, UnsupportedTag):
        return [value]
    if isinstance(value, dict):
        return [u for v in value.values() for u in find_unsupported(v)]
    if isinstance(value, list):
        return [u for v in value for u in find_unsupported(v)]
    return []
