"""Smoke test of bench/block_bench.py: both epochs on a few images, the same step."""

from __future__ import annotations

import json

from bench.block_bench import main
from features.data.synthetic import make_dataset


def test_bench_times_an_epoch_on_cached_maps_and_from_images(tmp_path, capsys):
    make_dataset(tmp_path / "data", per_class=2)
    output = tmp_path / "result.json"
    argv = ["--data", str(tmp_path / "data"), "--images", "8", "--rounds", "1"]
    argv += ["--px", "32", "--batch-size", "4", "--out", str(output)]
    main(argv)
    saved = json.loads(output.read_text())
    assert set(saved["epochs"]) == {"cached maps", "from images"}
    assert all(e["images_per_s"] > 0 for e in saved["epochs"].values())
    assert saved["speedup"] == saved["speedup_per_round"][0] > 0
    assert saved["store_bytes"] > 8 * 25088 * 2  # eight float16 maps, and the index
    assert "random" in saved["weights"] and saved["load_average"]["after"]
    assert "| cached maps | 8 |" in capsys.readouterr().out
