"""Feature sets: one forward pass fills a store per layer, each as if it ran alone.

Random weights, fp32, CPU, 32 px images: a layer's codes from a multi-layer pass must be
bit-identical to a run for that layer alone, and a store must never take another layer's
codes or be written to when it already holds everything.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import features.compute.backend
from features.compute.config import DaskConfig
from features.compute.distributed import extract_with_dask
from features.compute.extract import extract_codes
from features.compute.extract_sets import extract_feature_sets
from features.compute.feature_sets import FeatureSet
from features.errors import UserError
from features.store import FeatureStore
from features.store.checkpoint import INDEX_NAME
from features.store.maintenance import verify
from tests.conftest import LIMITS, refs_for

FC6, FC7 = FeatureSet("vgg16", "fc6"), FeatureSet("vgg16", "fc7")


def _codes(store: Path, hashes: list[str]) -> bytes:
    with FeatureStore(store) as reader:
        return reader.get(hashes).tobytes()


def _quiet(message: str) -> None:
    del message


def test_one_pass_gives_each_layer_the_codes_of_a_run_for_it_alone(
    tmp_path, shapes_root, small_config
):
    refs = refs_for(shapes_root)
    hashes = [ref.sha256 for ref in refs]
    layers = ("fc6", "fc7", "pool5")
    together = {layer: tmp_path / "together" / layer for layer in layers}
    report = extract_codes(refs, together, small_config, LIMITS, progress=False, log=_quiet)
    assert report.layers_computed == {"fc6+fc7+pool5": len(refs)}
    for layer in layers:
        alone = tmp_path / "alone" / layer
        extract_codes(refs, {layer: alone}, small_config, LIMITS, progress=False, log=_quiet)
        assert _codes(together[layer], hashes) == _codes(alone, hashes), layer
        assert verify(together[layer]).ok
    with FeatureStore(together["pool5"]) as pool5, FeatureStore(together["fc6"]) as fc6:
        assert (pool5.fingerprint.layer, pool5.fingerprint.dim) == (
            "features.30:global_mean_hw",
            512,
        )
        assert (fc6.fingerprint.layer, fc6.fingerprint.dim) == ("classifier.1", 4096)
        assert pool5.fingerprint.weights == fc6.fingerprint.weights


def test_a_new_layer_is_computed_alone_and_the_full_store_is_not_written(
    tmp_path, shapes_root, small_config, monkeypatch
):
    refs = refs_for(shapes_root)
    stores = {"fc6": tmp_path / "fc6", "fc7": tmp_path / "fc7"}
    extract_codes(refs, {"fc6": stores["fc6"]}, small_config, LIMITS, progress=False, log=_quiet)
    index = stores["fc6"] / INDEX_NAME
    before = (index.stat().st_mtime_ns, index.read_bytes())
    built: list[tuple[str, ...]] = []
    real = features.compute.backend.build_layers_extractor

    def recording(spec, layer_names, *args):
        built.append(tuple(layer_names))
        return real(spec, layer_names, *args)

    monkeypatch.setattr(features.compute.backend, "build_layers_extractor", recording)
    report = extract_codes(refs, stores, small_config, LIMITS, progress=False, log=_quiet)
    assert built == [("fc7",)]
    assert (report.computed, report.reused, report.layers_computed) == (
        len(refs),
        0,
        {"fc7": len(refs)},
    )
    assert (index.stat().st_mtime_ns, index.read_bytes()) == before
    again = extract_codes(refs, stores, small_config, LIMITS, progress=False, log=_quiet)
    assert (again.computed, again.reused) == (0, len(refs))


def test_images_lacking_different_layers_are_computed_in_groups(
    tmp_path, shapes_root, small_config
):
    refs = refs_for(shapes_root)
    hashes = [ref.sha256 for ref in refs]
    stores = {"fc6": tmp_path / "fc6", "fc7": tmp_path / "fc7"}
    extract_codes(refs[:8], {"fc6": stores["fc6"]}, small_config, LIMITS, progress=False)
    report = extract_codes(refs, stores, small_config, LIMITS, progress=False, log=_quiet)
    assert report.layers_computed == {"fc7": 8, "fc6+fc7": len(refs) - 8}
    clean = {"fc6": tmp_path / "clean6", "fc7": tmp_path / "clean7"}
    extract_codes(refs, clean, small_config, LIMITS, progress=False, log=_quiet)
    for layer in stores:
        assert _codes(stores[layer], hashes) == _codes(clean[layer], hashes), layer


def test_a_single_layout_store_is_adopted_as_its_feature_set(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)
    root = tmp_path / "store"
    extract_codes(refs, root, small_config, LIMITS, progress=False, log=_quiet)  # old layout
    hashes = [ref.sha256 for ref in refs]
    codes = _codes(root, hashes)
    logs: list[str] = []
    sets = {"vgg16_fc6": FC6, "vgg16_fc7": FC7}
    reports = extract_feature_sets(refs, root, sets, small_config, LIMITS, False, logs.append)
    assert reports["vgg16"].layers_computed == {"fc7": len(refs)}
    assert any("adopted the single store" in line for line in logs)
    assert not (root / INDEX_NAME).exists()
    assert _codes(root / "vgg16_fc6", hashes) == codes


def test_an_adoption_cut_between_its_two_renames_is_finished_next_run(
    tmp_path, shapes_root, small_config
):
    refs = refs_for(shapes_root)
    root = tmp_path / "store"
    extract_codes(refs, root, small_config, LIMITS, progress=False, log=_quiet)
    os.replace(root, tmp_path / "store.migrating")  # killed right after the first rename
    reports = extract_feature_sets(
        refs, root, {"vgg16_fc6": FC6}, small_config, LIMITS, False, _quiet
    )
    assert (reports["vgg16"].computed, reports["vgg16"].reused) == (0, len(refs))
    assert not (tmp_path / "store.migrating").exists() and verify(root / "vgg16_fc6").ok


def test_a_single_layout_store_of_no_configured_layer_is_refused_with_what_to_do(
    tmp_path, shapes_root, small_config
):
    refs = refs_for(shapes_root)[:4]
    root = tmp_path / "store"
    extract_codes(refs, root, small_config, LIMITS, progress=False, log=_quiet)
    with pytest.raises(UserError, match=r"classifier\.1 .*add it under features:"):
        extract_feature_sets(refs, root, {"vgg16_fc7": FC7}, small_config, LIMITS, False, _quiet)
    assert (root / INDEX_NAME).is_file(), "the refused store was moved"


@pytest.mark.slow
def test_a_local_cluster_writes_each_layer_to_its_store(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)
    hashes = [ref.sha256 for ref in refs]
    config = replace(small_config, scheduler="dask", dask=DaskConfig(workers=2, partition_rows=7))
    stores = {"fc6": tmp_path / "fc6", "fc7": tmp_path / "fc7"}
    extract_codes(refs[:8], {"fc6": stores["fc6"]}, small_config, LIMITS, progress=False)
    report = extract_with_dask(refs, stores, config, LIMITS, progress=False, log=_quiet)
    assert report.layers_computed == {"fc7": 8, "fc6+fc7": len(refs) - 8}
    clean = {"fc6": tmp_path / "clean6", "fc7": tmp_path / "clean7"}
    extract_codes(refs, clean, small_config, LIMITS, progress=False, log=_quiet)
    for layer, store in stores.items():
        assert verify(store).ok
        with FeatureStore(store) as dask, FeatureStore(clean[layer]) as local:
            np.testing.assert_allclose(
                dask.get(hashes).astype(np.float32),
                local.get(hashes).astype(np.float32),
                rtol=1e-2,
                atol=1e-3,
            )
