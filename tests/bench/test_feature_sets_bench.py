"""Smoke test of bench/feature_sets_bench.py: every layer set end to end on a few images."""

from __future__ import annotations

import json

from bench.feature_sets_bench import main
from features.data.synthetic import make_dataset


def test_bench_extracts_each_layer_set_in_one_pass_and_writes_the_table(tmp_path, capsys):
    make_dataset(tmp_path / "data", per_class=1)
    output = tmp_path / "result.json"
    argv = ["--data", str(tmp_path / "data"), "--images", "4", "--rounds", "1"]
    argv += ["--px", "32", "--batch-size", "4", "--forward-repeats", "0", "--out", str(output)]
    main(argv)
    saved = json.loads(output.read_text())
    assert set(saved["end_to_end"]) == {"fc6", "fc6+fc7", "fc6+fc7+pool5"}
    assert saved["end_to_end"]["fc6"]["ratio_to_fc6"] == 1.0
    assert all(r["images"] == 4 and r["wall_s"] for r in saved["end_to_end"].values())
    assert saved["fc6_fc7_ratio"] == saved["end_to_end"]["fc6+fc7"]["ratio_to_fc6"]
    assert saved["config"]["preprocessing"] == {"resize": 37, "crop": 32}
    assert "random" in saved["weights"] and saved["load_average"]["after"]
    assert saved["forward_pass"] == {}
    assert "| fc6+fc7 | 4 |" in capsys.readouterr().out
