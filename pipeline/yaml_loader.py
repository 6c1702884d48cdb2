"""YAML loading that refuses what PyYAML would silently accept: a key given twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "read_yaml"]


class DuplicateKeyError(yaml.YAMLError):
    """A mapping repeats a key; PyYAML would silently keep the last one."""


def _refuse_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias met again, or a recursive one
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                _refuse_duplicate_keys(value, path, seen)
                continue
            dotted = f"{path}.{key.value}" if path else key.value
            line = key.start_mark.line + 1
            if key.value in lines:
                raise DuplicateKeyError(
                    f"duplicate key {dotted!r} (lines {lines[key.value]} and {line}); keep one"
                )
            lines[key.value] = line
            _refuse_duplicate_keys(value, dotted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{i}]", seen)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice at any depth: with two
    ``extract:`` sections, safe_load would quietly drop the first."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, "", set())
        return self.construct_document(node)


def read_yaml(path: Path) -> Any:
    """The document at ``path``; :class:`DuplicateKeyError` names a repeated key's lines."""
    return yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
