"""The one YAML reader of the project's files (configs, search spaces, claims).

yaml.safe_load, plus two fixes users would otherwise trip on: `1e-3` is a float (YAML 1.1 reads it as a
string; YAML 1.2 and every user's intuition say float), and a key repeated in one mapping is an error
instead of silently keeping the last one. And a guard: a document whose aliases expand it past
MAX_NODES (the "billion laughs": nine lines that mean 10**9 strings), or that nests too deeply, is a
YAMLError before anything is built, not a MemoryError or a RecursionError later.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["load_yaml", "YAMLError"]

YAMLError = yaml.YAMLError
MAX_NODES = 100_000  # after aliases are expanded; the project's files have hundreds

# YAML 1.2's exponent floats without a dot (1e-3); added after int's resolver, so `10` stays an int.
_FLOAT_RE = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _StrictLoader(yaml.SafeLoader):
    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader rejects it itself
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789"))


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes in `node` with every alias expanded, counted once per distinct node (aliases share
    nodes): YAMLError past MAX_NODES or for an alias inside its own anchor."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.YAMLError(f"an alias refers to the node that contains it (line {node.start_mark.line + 1})")
    open_.add(key)
    children: list = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    total = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    open_.discard(key)
    if total > MAX_NODES:
        raise yaml.YAMLError(f"the document expands to over {MAX_NODES:,} values once its aliases (*name) are "
                             "repeated out; refusing to build it")
    sizes[key] = total
    return total


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no object construction); raises yaml.YAMLError on bad input."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("the document nests too deeply") from None
