"""The coarse-to-fine C search: few fits, the peak found, each fit warm from a neighbour."""

from __future__ import annotations

import numpy as np

from classifiers.probe_search import coarse_to_fine

GRID = [float(c) for c in np.logspace(-6, 5, 45)]


def _peaked_at(peak: int, fitted: list[tuple[int, int | None]]):
    def fit(index: int, warm: int | None) -> tuple[float, float, int]:
        fitted.append((index, warm))
        return 1.0 - abs(index - peak) / 100, abs(index - peak) / 10, 7

    return fit


def test_it_finds_the_peak_of_a_45_point_grid_in_a_quarter_of_the_fits():
    fitted: list[tuple[int, int | None]] = []
    visits = coarse_to_fine(GRID, _peaked_at(17, fitted), step=4, patience=2)
    chosen = min(visits, key=lambda v: (-v.val_accuracy, v.val_log_loss, v.C))
    assert chosen.index == 17 and chosen.C == GRID[17]
    # coarse 0..24 (two past the best at 16), then 14 and 18, then 15 and 17
    assert [index for index, _ in fitted] == [0, 4, 8, 12, 16, 20, 24, 14, 18, 15, 17]
    assert [v.index for v in visits] == sorted(index for index, _ in fitted)
    assert all(v.iterations == 7 for v in visits)


def test_each_fit_starts_from_the_nearest_point_already_fitted():
    fitted: list[tuple[int, int | None]] = []
    coarse_to_fine(GRID, _peaked_at(17, fitted), step=4, patience=2)
    warm = dict(fitted)
    assert warm[0] is None and warm[4] == 0 and warm[24] == 20
    assert warm[14] in (12, 16) and warm[18] in (16, 20)
    assert warm[15] in (14, 16) and warm[17] in (16, 18)


def test_step_one_without_patience_fits_every_point_in_order():
    fitted: list[tuple[int, int | None]] = []
    visits = coarse_to_fine(GRID[:6], _peaked_at(2, fitted), step=1, patience=None)
    assert fitted == [(0, None), (1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]
    assert [v.C for v in visits] == GRID[:6]


def test_a_peak_at_the_last_point_is_reached():
    fitted: list[tuple[int, int | None]] = []
    visits = coarse_to_fine(GRID, _peaked_at(44, fitted), step=4, patience=2)
    assert max(visits, key=lambda v: v.val_accuracy).index == 44
    assert 44 in [index for index, _ in fitted] and len(fitted) <= 15
