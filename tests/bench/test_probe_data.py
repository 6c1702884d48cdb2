"""The probe benchmark's generated codes: threads change the speed, never the rows."""

from __future__ import annotations

import numpy as np

from bench.probe_data import BLOCK, PlantedCodes


def test_threaded_generation_yields_the_same_blocks_in_the_same_order() -> None:
    codes = PlantedCodes(classes=3, dim=16, latent=8)
    n = 3 * BLOCK + 5
    serial = list(codes.blocks(n, offset=7))
    threaded = list(codes.blocks(n, offset=7, workers=2))
    assert [len(y) for _, y in threaded] == [BLOCK, BLOCK, BLOCK, 5]
    for (X, y), (X2, y2) in zip(serial, threaded, strict=True):
        assert np.array_equal(X, X2) and np.array_equal(y, y2)
