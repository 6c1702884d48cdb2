"""Dask scale-out: workers write shards without the lock, the coordinator indexes them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from features.compute.backend import resolve_backend
from features.compute.config import DaskConfig
from features.compute.distributed import extract_partition, extract_with_dask
from features.compute.extract import extract_codes
from features.files import TMP_PREFIX
from features.store import FeatureStore
from features.store.fingerprint import Fingerprint, FingerprintMismatch
from features.store.maintenance import verify
from features.store.shards import SHARD_DIR, write_shard
from features.store.writer import StoreWriter
from tests.conftest import LIMITS, refs_for


@pytest.mark.slow
def test_local_cluster_extracts_the_same_codes_as_one_process(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)
    config = replace(small_config, scheduler="dask", dask=DaskConfig(workers=2, partition_rows=7))
    report = extract_with_dask(refs, tmp_path / "dask", config, LIMITS, progress=False)
    assert (report.computed, report.reused, report.skipped) == (len(refs), 0, 0)
    extract_codes(refs, tmp_path / "local", small_config, LIMITS, progress=False)
    hashes = [ref.sha256 for ref in refs]
    with FeatureStore(tmp_path / "dask") as dask, FeatureStore(tmp_path / "local") as local:
        assert len(dask.state.shards) == 4  # ceil(24 / 7) partitions, one shard each
        np.testing.assert_allclose(
            dask.get(hashes).astype(np.float32),
            local.get(hashes).astype(np.float32),
            rtol=1e-2,
            atol=1e-3,
        )
    assert verify(tmp_path / "dask").ok
    again = extract_with_dask(refs, tmp_path / "dask", config, LIMITS, progress=False)
    assert (again.computed, again.reused) == (0, len(refs))


def test_shards_left_by_workers_of_a_dead_coordinator_are_adopted(
    tmp_path, shapes_root, small_config
):
    refs = refs_for(shapes_root)
    store = tmp_path / "store"
    extract_codes(refs[:4], store, small_config, LIMITS, progress=False)  # the store exists
    expected = resolve_backend(small_config).fingerprints
    result = extract_partition(refs[4:12], {"fc6": str(store)}, small_config, LIMITS, expected)
    assert result.records["fc6"].rows == 8
    report = extract_codes(refs, store, small_config, LIMITS, progress=False)
    assert (report.reused, report.computed) == (12, len(refs) - 12)
    assert verify(store).ok


def test_a_worker_computing_other_codes_refuses_to_write(tmp_path, shapes_root, small_config):
    refs = refs_for(shapes_root)[:4]
    expected = resolve_backend(replace(small_config, seed=1)).fingerprints
    with pytest.raises(FingerprintMismatch, match="Dask worker"):
        extract_partition(refs, {"fc6": str(tmp_path)}, small_config, LIMITS, expected)
    assert not list(tmp_path.rglob("shard-*.h5"))


def test_a_dead_workers_first_attempt_is_cleared_once_the_rerun_is_indexed(tmp_path):
    """Dask reruns a partition whose worker died after renaming its shard into place: the
    rerun's shard is indexed, and settling deletes the first one and any temporaries."""
    fingerprint = Fingerprint(
        "vgg16", "classifier.1", 4, "random:0", "{}", "fp32", "float16", "t", "t"
    )
    hashes = [f"{i:064x}" for i in range(6)]
    codes = np.arange(24, dtype=np.float16).reshape(6, 4)
    store = tmp_path / "store"
    with StoreWriter(store, fingerprint, log=lambda _: None) as writer:
        first_attempt = write_shard(store / SHARD_DIR, hashes, codes, fingerprint)
        (store / SHARD_DIR / f"{TMP_PREFIX}dead-worker").write_bytes(b"half a shard")
        rerun = write_shard(store / SHARD_DIR, hashes, codes, fingerprint)
        assert writer.commit_shards([rerun]) == 6
        assert verify(store).notices  # the orphan and the temporary, until settled
        assert writer.settle_orphans() == 0
    assert not (store / SHARD_DIR / first_attempt.name).exists()
    report = verify(store)
    assert report.ok and not report.notices
    with FeatureStore(store) as reader:
        assert len(reader) == 6 and reader.hashes == hashes


def test_settling_indexes_a_finished_shard_whose_result_never_arrived(tmp_path):
    fingerprint = Fingerprint(
        "vgg16", "classifier.1", 4, "random:0", "{}", "fp32", "float16", "t", "t"
    )
    hashes = [f"{i:064x}" for i in range(3)]
    store = tmp_path / "store"
    with StoreWriter(store, fingerprint, log=lambda _: None) as writer:
        write_shard(store / SHARD_DIR, hashes, np.ones((3, 4), np.float16), fingerprint)
        assert writer.settle_orphans() == 3
    assert verify(store).ok and not verify(store).notices
