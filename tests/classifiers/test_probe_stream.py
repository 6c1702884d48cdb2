"""The streaming probe's chunk plumbing: what the train-stage tests cannot reach."""

from __future__ import annotations

import torch

from classifiers.probe_stream import _float_chunks, _joined


def test_joined_splits_cast_every_chunk_even_when_a_later_one_is_larger() -> None:
    train = [torch.full((2, 3), 1.0, dtype=torch.float16)]  # a split smaller than a chunk
    val = [torch.full((4, 3), 2.0, dtype=torch.float16), torch.full((1, 3), 3.0)]
    source, targets = _joined(
        (lambda: iter(train), torch.arange(2)), (lambda: iter(val), torch.arange(5))
    )
    chunks = [chunk.clone() for chunk in _float_chunks(source, torch.device("cpu"))]
    assert [tuple(chunk.shape) for chunk in chunks] == [(2, 3), (4, 3), (1, 3)]
    assert [chunk.dtype for chunk in chunks] == [torch.float32] * 3
    assert [chunk[0, 0].item() for chunk in chunks] == [1.0, 2.0, 3.0]
    assert targets.tolist() == [0, 1, 0, 1, 2, 3, 4]
