"""Shared fixtures: tiny real JPEG datasets and a CPU extraction config that runs in seconds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from features.compute.config import ExtractConfig
from features.compute.extract import extract_codes
from features.compute.loader import ImageRef
from features.data.images import ImageLimits
from features.data.manifest import build_manifest, write_manifest
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from pipeline.schema import parse
from pipeline.workspace import create_workspace, run_in

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flower_photos"
# Tests build on their own params, never on the working params.yaml a user edits.
TEST_PARAMS_FILE = Path(__file__).with_name("params.yaml")
TEST_PARAMS = yaml.safe_load(TEST_PARAMS_FILE.read_text())

# Random weights, CPU, 32 px input: VGG16 end to end in a few ms per image. As params
# (for workspaces and CLI runs) and as the config the library takes, from the same values.
SMALL_EXTRACT = {
    "weights": "random",
    "device": "cpu",
    "precision": "fp32",
    "batch_size": 4,
    "num_workers": 0,
    "commit_rows": 8,
    "commit_seconds": 3600.0,
    "preprocessing": {"resize": 32, "crop": 32},
}
SMALL_CONFIG = parse(ExtractConfig, SMALL_EXTRACT, "extract")
# A workspace over generated shapes under data/shapes, for the tests that run dvc.
SHAPES = "data/shapes"
SHAPES_OVERRIDES = {
    "downloads": {},
    "data": {"root": SHAPES},
    "split": {"test_fraction": 0.25},
    "extract": SMALL_EXTRACT,
}
LIMITS = ImageLimits()


@pytest.fixture
def small_config() -> ExtractConfig:
    return replace(SMALL_CONFIG)


@pytest.fixture
def shapes_root(tmp_path: Path) -> Path:
    """24 generated JPEGs: 4 classes x 6, under tmp_path/images/<class>/."""
    root = tmp_path / "images"
    make_dataset(root, per_class=6)
    return root


SMALL_STORE = Path("store") / "vgg16_fc6"  # where small_store() puts it, as extract does


def shapes_manifest(root: Path, per_class: int, test_fraction: float = 0.25) -> list[ImageRef]:
    """Generated ``root/images/`` and ``root/manifest.csv`` as ``prepare`` makes them; the
    manifest rows as extraction inputs."""
    images = root / "images"
    make_dataset(images, per_class=per_class)
    outcomes, predefined = scan_dataset(images, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, images, predefined, "salt", test_fraction)
    write_manifest(root / "manifest.csv", rows)
    return [ImageRef(row.sha256, images / row.path) for row in rows]


def small_store(root: Path, per_class: int, test_fraction: float = 0.25) -> Path:
    """``root`` with :func:`shapes_manifest` and the ``vgg16_fc6`` feature set's store
    (:data:`SMALL_STORE`), made as the stages make them; extraction is the slow part, so
    module fixtures build it once."""
    refs = shapes_manifest(root, per_class, test_fraction)
    extract_codes(
        refs, root / SMALL_STORE, SMALL_CONFIG, LIMITS, progress=False, log=lambda _: None
    )
    return root


def refs_for(root: Path) -> list[ImageRef]:
    """Manifest rows of a generated dataset as extraction inputs."""
    outcomes, predefined = scan_dataset(root, LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, root, predefined, "salt", 0.25)
    return [ImageRef(row.sha256, root / row.path) for row in rows]


@pytest.fixture
def flowers() -> Path:
    if not FLOWERS.is_dir():
        pytest.skip(f"real dataset not found at {FLOWERS} (it lives in ../shared/datasets)")
    return FLOWERS


def shapes_workspace(folder: Path, overrides: dict, per_class: int) -> Path:
    """A git + DVC project on tests/params.yaml plus ``overrides``, with generated shapes
    under SHAPES tracked by DVC and committed: what the ``dvc repro`` tests start from."""
    root = create_workspace(folder / "project", overrides, base=TEST_PARAMS_FILE)
    make_dataset(root / SHAPES, per_class=per_class)
    run_in(root, "dvc", "add", "-q", SHAPES)
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-q", "-m", "dataset v1")
    return root
