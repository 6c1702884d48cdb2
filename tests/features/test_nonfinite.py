"""NaN and inf never reach the store: retried in fp32, skipped, or the run stops.

A wrapped backbone poisons the codes of chosen rows, so the check sees exactly what a
network overflowing on one image would give. The dataset has one flat-colour PNG among
the generated JPEGs: the wrapper recognises it from its input, whatever batch it is in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import features.compute.backend
import features.compute.distributed
from features.compute.backend import resolve_backend
from features.compute.config import ExtractConfig, ExtractReport
from features.compute.distributed import extract_partition
from features.compute.encode import encode_images
from features.compute.extract import extract_codes
from features.compute.finite import NON_FINITE
from features.compute.loader import ImageRef
from features.data.manifest import build_manifest, write_manifest
from features.data.preprocess import Preprocessing
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from features.errors import UserError
from features.store import FeatureStore
from features.store.index import read_index
from features.store.maintenance import verify
from features.store.shards import SHARD_DIR
from pipeline import extract as extract_stage
from pipeline.cli import EXIT_USER_ERROR, run
from pipeline.workspace import merge
from tests.conftest import LIMITS, SMALL_CONFIG, SMALL_EXTRACT, TEST_PARAMS

Rows = Callable[[torch.Tensor], torch.Tensor]  # normalised input batch -> rows to poison


class _Poisoned(nn.Module):
    """The real network, with NaN codes for the rows ``rows`` picks."""

    def __init__(self, inner: nn.Module, rows: Rows) -> None:
        super().__init__()
        self.inner = inner
        self.rows = rows

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        poisoned = self.rows(batch)[:, None]
        return {
            name: codes.masked_fill(poisoned, float("nan"))
            for name, codes in self.inner(batch).items()
        }


def _flat(batch: torch.Tensor) -> torch.Tensor:
    """Rows whose image is one colour: each channel's maximum equals its minimum."""
    return (batch.amax(dim=(2, 3)) == batch.amin(dim=(2, 3))).all(dim=1)


def _flat_in_bf16(batch: torch.Tensor) -> torch.Tensor:
    return _flat(batch) & (batch.dtype == torch.bfloat16)


def _every_row_from_call(first: int) -> Rows:
    calls = 0

    def rows(batch: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return torch.full((len(batch),), calls >= first)

    return rows


def _poison(monkeypatch: pytest.MonkeyPatch, rows: Rows) -> None:
    real = features.compute.backend.build_layers_extractor
    monkeypatch.setattr(
        features.compute.backend,
        "build_layers_extractor",
        lambda *args: _Poisoned(real(*args), rows),
    )


def _quiet(message: str) -> None:
    del message


@dataclass(frozen=True)
class Data:
    images: Path
    refs: list[ImageRef]
    flat: str  # the flat image's hash
    hashes: list[str]  # every other image's
    codes: np.ndarray  # a clean fp32 run's codes for ``hashes``


def _extract(data: Data, store: Path, config: ExtractConfig = SMALL_CONFIG) -> ExtractReport:
    return extract_codes(data.refs, store, config, LIMITS, progress=False, log=_quiet)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    """24 generated JPEGs plus one flat grey PNG (25: the last batch of 4 holds one image)."""
    root = tmp_path_factory.mktemp("nonfinite")
    make_dataset(root / "images", per_class=6)
    Image.new("RGB", (64, 48), (120, 120, 120)).save(root / "images" / "circles" / "flat.png")
    outcomes, predefined = scan_dataset(root / "images", LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, root / "images", predefined, "salt", 0.25)
    write_manifest(root / "manifest.csv", rows)
    refs = [ImageRef(row.sha256, root / "images" / row.path) for row in rows]
    (flat,) = [ref.sha256 for ref in refs if ref.path.name == "flat.png"]
    hashes = [ref.sha256 for ref in refs if ref.sha256 != flat]
    extract_codes(refs, root / "clean", SMALL_CONFIG, LIMITS, progress=False, log=_quiet)
    with FeatureStore(root / "clean") as reader:
        return Data(root / "images", refs, flat, hashes, reader.get(hashes))


def test_an_image_with_nan_codes_is_skipped_and_the_rest_is_bit_identical(
    tmp_path, monkeypatch, data
):
    _poison(monkeypatch, _flat)
    store = tmp_path / "store"
    report = _extract(data, store)
    assert (report.computed, report.skipped, report.non_finite) == (24, 1, 1)
    assert report.recomputed_fp32 == 0, "fp32 has nothing to retry in"
    assert "skipped 1 (1 with NaN or inf codes)" in report.summary()
    with FeatureStore(store) as reader:
        assert reader.get(data.hashes).tobytes() == data.codes.tobytes()
        assert reader.skipped[data.flat].reason == NON_FINITE
        assert not reader.contains([data.flat])[0]
    again = _extract(data, store)
    assert (again.reused, again.computed, again.skipped) == (24, 0, 1), "a permanent skip"
    assert verify(store).ok


def test_nan_only_in_bf16_is_recomputed_in_fp32_and_kept(tmp_path, monkeypatch, data):
    bf16 = replace(SMALL_CONFIG, precision="bf16")
    _extract(data, tmp_path / "clean", bf16)
    _poison(monkeypatch, _flat_in_bf16)
    report = _extract(data, tmp_path / "store", bf16)
    assert (report.computed, report.skipped, report.recomputed_fp32) == (25, 0, 1)
    assert "computed 25 (1 in fp32)" in report.summary()
    with FeatureStore(tmp_path / "clean") as clean, FeatureStore(tmp_path / "store") as store:
        assert store.get(data.hashes).tobytes() == clean.get(data.hashes).tobytes()
        flat = store.get([data.flat]).astype(np.float32)
    with FeatureStore(data.images.parent / "clean") as fp32:
        expected = fp32.get([data.flat]).astype(np.float32)
    np.testing.assert_allclose(flat, expected, rtol=1e-3, atol=1e-3)


def test_zero_std_stops_at_the_first_batch_naming_preprocessing(tmp_path, data):
    zero_std = Preprocessing(resize=32, crop=32, std=(0.0, 0.2, 0.2))  # params would refuse it
    config = replace(SMALL_CONFIG, preprocessing=zero_std)
    with pytest.raises(UserError, match=r"NaN or inf codes: check extract\.preprocessing"):
        _extract(data, tmp_path / "store", config)
    assert read_index(tmp_path / "store").rows == 0
    assert verify(tmp_path / "store").ok
    assert not (tmp_path / "store" / "LOCK").exists()


def test_committed_batches_stay_when_a_later_batch_has_no_finite_codes(tmp_path, monkeypatch, data):
    _poison(monkeypatch, _every_row_from_call(3))  # batches 1 and 2 fill one commit of 8
    with pytest.raises(UserError, match="every image of a batch"):
        _extract(data, tmp_path / "store")
    report = verify(tmp_path / "store")
    assert report.ok and report.rows == 8
    monkeypatch.undo()
    rerun = _extract(data, tmp_path / "store")
    assert (rerun.reused, rerun.computed) == (8, 17)
    with FeatureStore(tmp_path / "store") as reader:
        assert reader.get(data.hashes).tobytes() == data.codes.tobytes()


def _params(folder: Path) -> Path:
    path = folder / "params.yaml"
    params = merge(TEST_PARAMS, {"extract": SMALL_EXTRACT})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _stage_args(folder: Path, data: Data) -> list[str]:
    return [
        *("--data", str(data.images), "--manifest", str(data.images.parent / "manifest.csv")),
        *("--store", str(folder / "store"), "--report", str(folder / "extract.json")),
        *("--params", str(_params(folder)), "--no-progress"),
    ]


def test_the_stage_report_counts_non_finite_skips(tmp_path, monkeypatch, capsys, data):
    _poison(monkeypatch, _flat)
    extract_stage.main(_stage_args(tmp_path, data))
    summary = json.loads((tmp_path / "extract.json").read_text())
    assert (summary["computed"], summary["skipped"], summary["non_finite"]) == (24, 1, 1)
    assert summary["recomputed_fp32"] == 0
    assert "skipped 1 (1 with NaN or inf codes)" in capsys.readouterr().out


def test_the_stage_stops_with_one_error_line(tmp_path, monkeypatch, capsys, data):
    _poison(monkeypatch, _every_row_from_call(1))
    with pytest.raises(SystemExit) as exit_info:
        run(extract_stage.main, _stage_args(tmp_path, data))
    assert exit_info.value.code == EXIT_USER_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: every image of a batch gave NaN or inf codes")
    assert "std must be > 0" in line
    assert not (tmp_path / "extract.json").exists()


def test_a_dask_partition_skips_non_finite_images(tmp_path, monkeypatch, data):
    _poison(monkeypatch, _flat)
    monkeypatch.setattr(features.compute.distributed, "_WORKER_STATE", {})
    expected = resolve_backend(SMALL_CONFIG).fingerprints
    (tmp_path / SHARD_DIR).mkdir()
    stores = {"fc6": str(tmp_path)}
    result = extract_partition(data.refs[:8], stores, SMALL_CONFIG, LIMITS, expected)
    assert [(skip.sha256, skip.reason) for skip in result.skips] == [(data.flat, NON_FINITE)]
    assert result.records["fc6"].rows == 7
    assert result.finite.skipped == 1


def test_encode_images_reports_non_finite_images_as_failures(monkeypatch, data):
    _poison(monkeypatch, _flat)
    blobs = [(ref.sha256, ref.path.read_bytes()) for ref in data.refs[4:8]]
    codes, failures = encode_images(blobs, SMALL_CONFIG, LIMITS)
    assert [(f.sha256, f.reason) for f in failures] == [(data.flat, NON_FINITE)]
    assert sorted(codes) == sorted(sha for sha, _ in blobs if sha != data.flat)
    assert all(np.isfinite(row).all() for row in codes.values())


def test_a_lone_non_finite_image_in_a_batch_of_one_is_skipped_not_a_stop(
    tmp_path, monkeypatch, data
):
    """Batch 7 of 4-image batches holds one image: it says nothing about the settings."""
    _poison(monkeypatch, _every_row_from_call(7))
    report = _extract(data, tmp_path / "store")
    assert (report.computed, report.skipped, report.non_finite) == (24, 1, 1)
    assert verify(tmp_path / "store").ok
