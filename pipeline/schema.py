"""Validate plain YAML data against typed dataclasses, reporting every problem at once.

A field's type hint says what is accepted; ``field(metadata=...)`` adds ``choices``,
``min``, ``min_exclusive`` and ``max``, checked item by item for a list or tuple. With both
choices and numeric bounds, a number need only fit the bounds (``gamma``: ``scale`` or a
value > 0). A float must be finite: YAML's ``.nan`` or ``.inf`` turns every stored code
into NaN or kills training with a traceback. Errors name the key, the value given and what
is allowed, so one run of the validator is enough to fix a params file.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from typing import Any, Union

__all__ = ["SchemaError", "parse"]

_MISSING = dataclasses.MISSING
_BOUNDS = (
    ("min", ">=", operator.ge),
    ("min_exclusive", ">", operator.gt),
    ("max", "<=", operator.le),
)


class SchemaError(Exception):
    """One or more values do not fit the schema; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is tuple:
        args = typing.get_args(hint)
        return f"a list of {len(args)} {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of names to {_describe(typing.get_args(hint)[1])}"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            attempt: list[str] = []
            converted = _convert(value, arg, key, attempt)
            if not attempt:
                return converted
        problems.append(f"{key}: got {value!r}; allowed: {_describe(hint)}")
        return None
    if hint is type(None):
        if value is not None:
            problems.append(f"{key}: got {value!r}; allowed: null")
        return None
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            problems.append(f"{key}: got {value!r}; allowed: a mapping")
            return None
        return parse(hint, value, key, problems)
    if origin is list or origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list) or (origin is tuple and len(value) != len(args)):
            problems.append(f"{key}: got {value!r}; allowed: {_describe(hint)}")
            return None
        items = [_convert(item, args[0], f"{key}[{i}]", problems) for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: got {value!r}; allowed: {_describe(hint)}")
            return None
        value_hint = typing.get_args(hint)[1]
        return {
            str(name): _convert(item, value_hint, f"{key}.{name}", problems)
            for name, item in value.items()
        }
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        (hint in (int, float) and isinstance(value, bool))
        or not isinstance(value, hint)
        or (hint is float and not math.isfinite(value))
    ):
        problems.append(f"{key}: got {value!r}; allowed: {_describe(hint)}")
        return None
    return value


def _check_bounds(
    value: Any, meta: typing.Mapping[str, Any], key: str, problems: list[str]
) -> None:
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_bounds(item, meta, f"{key}[{i}]", problems)
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    limits = [f"{op} {meta[name]}" for name, op, _ in _BOUNDS if name in meta]
    if "choices" in meta and not (number and limits) and value not in meta["choices"]:
        allowed = ", ".join("null" if c is None else str(c) for c in meta["choices"])
        if limits:
            allowed += " or a value " + " and ".join(limits)
        problems.append(f"{key}: got {value!r}; allowed: one of {allowed}")
    if number:
        for name, op, holds in _BOUNDS:
            if name in meta and not holds(value, meta[name]):
                problems.append(f"{key}: got {value!r}; allowed: a value {op} {meta[name]}")


def parse(cls: type, raw: dict[str, Any], where: str, problems: list[str] | None = None):
    """Build ``cls`` from ``raw``; raise :class:`SchemaError` (or append to ``problems``)."""
    collect = problems if problems is not None else []
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for unknown in sorted(set(raw) - set(fields)):
        collect.append(f"{where}.{unknown}: unknown key; allowed keys: {', '.join(sorted(fields))}")
    values = {}
    for name, spec in fields.items():
        key = f"{where}.{name}"
        if name not in raw:
            if spec.default is _MISSING and spec.default_factory is _MISSING:
                collect.append(f"{key}: missing; expected {_describe(hints[name])}")
            continue
        before = len(collect)
        value = _convert(raw[name], hints[name], key, collect)
        if len(collect) == before:
            _check_bounds(value, spec.metadata, key, collect)
        values[name] = value
    if problems is None and collect:
        raise SchemaError(collect)
    if len(collect) and problems is not None:
        return None
    return cls(**values)
