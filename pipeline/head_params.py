"""Head entries of params.yaml (``heads:`` and ``block_heads:``), checked with their grids.

A built-in head's options are its params dataclass; an sklearn head's are its estimator's
own ``get_params()``, and every grid candidate is checked the way the estimator checks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from classifiers.heads import (
    HEADS,
    EstimatorError,
    HeadParams,
    LinearParams,
    SklearnParams,
    make_estimator,
)
from pipeline.schema import parse

__all__ = ["HeadEntry", "parse_head"]


@dataclass(frozen=True)
class HeadEntry:
    """One configured head: its name, the factory it uses and its validated params."""

    name: str
    kind: str
    params: HeadParams


_CandidateCheck = Callable[[str, Any], None]


def _builtin_grid(
    cls: type[HeadParams], raw: dict, where: str, problems: list[str]
) -> tuple[set[str], _CandidateCheck]:
    """A built-in head's grid names its own params dataclass fields, checked by the schema."""
    tunable = {f.name for f in dataclasses.fields(cls)} - {
        f.name for f in dataclasses.fields(HeadParams)
    }
    base = {k: v for k, v in raw.items() if k != "grid"}
    return tunable, lambda key, candidate: parse(
        cls, {**base, key: candidate}, f"{where}.grid", problems
    )


def _sklearn_grid(
    params: SklearnParams, where: str, problems: list[str]
) -> tuple[set[str], _CandidateCheck] | None:
    """An sklearn head's grid names the estimator's params, each candidate checked by it;
    None (after reporting why) when the estimator or its params are unusable."""
    try:
        tunable = set(make_estimator(params).get_params())
    except EstimatorError as error:
        problems.append(f"{where}.{error.key}: {error}")
        return None

    def check(key: str, candidate: Any) -> None:
        try:
            make_estimator(dataclasses.replace(params, grid=None, **{key: candidate}))
        except EstimatorError as error:
            problems.append(f"{where}.grid.{key}: {error}")

    return tunable, check


def _check_grid(
    where: str,
    owner: str,
    grid: dict,
    tunable: set[str],
    check: _CandidateCheck,
    problems: list[str],
) -> None:
    for key, candidates in grid.items():
        if key not in tunable:
            problems.append(
                f"{where}.grid.{key}: not a {owner} option; allowed: {', '.join(sorted(tunable))}"
            )
        elif not isinstance(candidates, list) or not candidates:
            problems.append(
                f"{where}.grid.{key}: got {candidates!r}; allowed: a "
                f"non-empty list of candidate values"
            )
        else:
            for candidate in candidates:
                check(key, candidate)


def _check_sweep(params: LinearParams, where: str, grid: Any, problems: list[str]) -> None:
    """A swept C needs a range to sweep, and a grid that leaves C out needs a C by hand."""
    if params.C != "sweep":
        return
    if params.sweep_low >= params.sweep_high:
        problems.append(
            f"{where}.sweep_low: got {params.sweep_low} with sweep_high {params.sweep_high}; "
            f"allowed: sweep_low < sweep_high"
        )
    if isinstance(grid, dict) and "C" not in grid:
        problems.append(
            f"{where}.grid: C is 'sweep' (the default) and the grid leaves it out; add C to "
            f"the grid, or give C a value"
        )


def parse_head(
    name: str, raw: Any, problems: list[str], section: str = "heads"
) -> HeadEntry | None:
    where = f"{section}.{name}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: got {raw!r}; allowed: a mapping of head options")
        return None
    on_maps = section == "block_heads"
    kind = raw.get("kind") or ("classifier_block" if on_maps else name)
    if kind in HEADS and HEADS[kind].on_maps != on_maps:
        home = "block_heads: (trained on maps:)" if HEADS[kind].on_maps else "heads:"
        problems.append(f"{where}.kind: {kind} heads belong under {home}")
        return None
    if kind not in HEADS:
        problems.append(
            f"{where}.kind: got {kind!r}; allowed: one of {', '.join(sorted(HEADS))} "
            f"(kind: sklearn takes any scikit-learn classifier; or add a factory to "
            f"classifiers/heads.py)"
        )
        return None
    cls = HEADS[kind].params
    params = parse(cls, raw, where, problems)
    if isinstance(params, SklearnParams):
        grid_checks = _sklearn_grid(params, where, problems)
    elif issubclass(cls, SklearnParams):  # unparsed: no estimator to check a grid against
        grid_checks = None
    else:
        grid_checks = _builtin_grid(cls, raw, where, problems)
    grid = raw.get("grid")
    if isinstance(params, LinearParams):
        _check_sweep(params, where, grid, problems)
    if isinstance(grid, dict) and grid_checks is not None:
        owner = params.estimator if isinstance(params, SklearnParams) else kind
        _check_grid(where, owner, grid, *grid_checks, problems)
    return HeadEntry(name, kind, params) if params is not None else None
