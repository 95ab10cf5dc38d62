"""The one YAML reader of the project's files (configs, search spaces, claims).

yaml.safe_load, plus two fixes users would otherwise trip on: `1e-3` is a float (YAML 1.1 reads it as a
string; YAML 1.2 and every user's intuition say float), and a key repeated in one mapping is an error
instead of silently keeping the last one.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["load_yaml", "YAMLError"]

YAMLError = yaml.YAMLError

# YAML 1.2's exponent floats without a dot (1e-3); added after int's resolver, so `10` stays an int.
_FLOAT_RE = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _StrictLoader(yaml.SafeLoader):
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


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no object construction); raises yaml.YAMLError on bad input."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
