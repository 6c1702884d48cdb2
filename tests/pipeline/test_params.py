"""params.yaml validation: one message that names the key, the value given and what is allowed."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.params import ParamsError, load_params, validate
from pipeline.schema import SchemaError, parse
from tests.conftest import TEST_PARAMS, TEST_PARAMS_FILE

BASE = TEST_PARAMS


def _with(**changes: Any) -> dict[str, Any]:
    """The project's params with ``section__key=value`` changes (``__`` descends)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = raw
        for parent in parents:
            node = node[parent]
        node[key] = value
    return raw


def _problem(raw: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as error:
        validate(raw, "params.yaml")
    return str(error.value)


def test_the_project_params_are_valid():
    params = validate(copy.deepcopy(BASE))
    assert params.data.limits.min_side == 16
    assert set(params.heads) == {"logreg", "svm", "mlp"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"data__limits__min_sid": 8},
            "data.limits.min_sid: unknown key; allowed keys: max_pixels, min_side",
        ),
        ({"extract__batch_size": "64"}, "extract.batch_size: got '64'; allowed: an integer"),
        ({"extract__batch_size": True}, "extract.batch_size: got True; allowed: an integer"),
        ({"data__limits__min_side": 0}, "data.limits.min_side: got 0; allowed: a value >= 1"),
        (
            {"data__limits__max_pixels": 10**12},
            "data.limits.max_pixels: got 1000000000000; allowed: a value <= 178956970",
        ),
        ({"split__test_fraction": 0}, "split.test_fraction: got 0.0; allowed: a value > 0"),
        ({"split__test_fraction": 1.5}, "split.test_fraction: got 1.5; allowed: a value <= 0.9"),
        (
            {"extract__precision": "fp8"},
            "extract.precision: got 'fp8'; allowed: one of auto, fp32, fp16, bf16",
        ),
        (
            {"extract__device": "gpu"},
            "extract.device: got 'gpu'; allowed: auto, cpu, cuda or cuda:N",
        ),
        (
            {"extract__weights_sha256": "abc123"},
            "extract.weights_sha256: got 'abc123'; allowed: 64 hexadecimal digits",
        ),
        (
            {"downloads__flower_photos__sha256": "not-a-hash"},
            "downloads.flower_photos.sha256: got 'not-a-hash'; allowed: 64 hexadecimal digits",
        ),
        ({"data__limits": None}, "data.limits: got None; allowed: a mapping"),
        ({"extract__preprocessing__crop": 300}, "extract.preprocessing.crop: got 300; allowed:"),
        ({"heads__logreg__C": "high"}, "heads.logreg.C: got 'high'"),
        ({"heads__svm__kind": "forest"}, "heads.svm.kind: got 'forest'; allowed: one of"),
        ({"heads__logreg__C": math.nan}, "heads.logreg.C: got nan; allowed: a finite number"),
        ({"heads__logreg__C": math.inf}, "heads.logreg.C: got inf; allowed: a finite number"),
        ({"heads__logreg__C": 0}, "heads.logreg.C: got 0.0; allowed: a value > 0"),
        ({"heads__logreg__C": -1}, "heads.logreg.C: got -1.0; allowed: a value > 0"),
        (
            {"heads__logreg__grid": {"C": [0.1, math.nan]}},
            "heads.logreg.grid.C: got nan; allowed: a finite number",
        ),
        (
            {"heads__logreg__grid": {"C": [0.1, 0]}},
            "heads.logreg.grid.C: got 0.0; allowed: a value > 0",
        ),
        (
            {"split__test_fraction": math.nan},
            "split.test_fraction: got nan; allowed: a finite number",
        ),
        (
            {"extract__commit_seconds": -math.inf},
            "extract.commit_seconds: got -inf; allowed: a finite number",
        ),
        (
            {"extract__preprocessing__mean": [0.5, math.nan, 0.5]},
            "extract.preprocessing.mean[1]: got nan; allowed: a finite number",
        ),
        (
            {"extract__preprocessing__std": [0.2, 0.2, -0.1]},
            "extract.preprocessing.std[2]: got -0.1; allowed: a value > 0",
        ),
        (
            {"heads__svm__gamma": math.nan},
            "heads.svm.gamma: got nan; allowed: a string or a finite number",
        ),
        ({"heads__svm__gamma": -1}, "heads.svm.gamma: got -1.0; allowed: a value > 0"),
        (
            {"heads__svm__gamma": "large"},
            "heads.svm.gamma: got 'large'; allowed: one of scale, auto or a value > 0",
        ),
        ({"heads__mlp__hidden": [256, 0]}, "heads.mlp.hidden[1]: got 0; allowed: a value >= 1"),
    ],
    ids=[
        "unknown-key",
        "string-for-int",
        "bool-for-int",
        "below-min",
        "above-max",
        "not-above-exclusive-min",
        "above-max-fraction",
        "not-a-choice",
        "not-a-device",
        "bad-pin",
        "bad-archive-pin",
        "null-section",
        "crop-above-resize",
        "head-option-type",
        "head-kind",
        "nan-C",
        "inf-C",
        "zero-C",
        "negative-C",
        "nan-in-grid",
        "zero-in-grid",
        "nan-fraction",
        "minus-inf-seconds",
        "nan-in-mean",
        "negative-std",
        "nan-gamma",
        "negative-gamma",
        "unknown-gamma",
        "zero-hidden-layer",
    ],
)
def test_each_problem_is_one_line_naming_key_value_and_what_is_allowed(changes, expected):
    message = _problem(_with(**changes))
    assert message.startswith("params.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_unknown_top_level_section_is_named():
    assert "verbose: unknown key; allowed keys: audit, block_heads, data, downloads" in _problem(
        {**copy.deepcopy(BASE), "verbose": True}
    )


def test_missing_required_key_is_named():
    raw = copy.deepcopy(BASE)
    del raw["data"]["root"]
    assert "data.root: missing; expected a string" in _problem(raw)


def test_every_problem_is_reported_at_once():
    message = _problem(_with(extract__batch_size=0, split__salt=7, data__limits__colour="rgb"))
    assert message.startswith("params.yaml: 3 problems:")
    for key in ("extract.batch_size: got 0", "split.salt: got 7", "data.limits.colour: unknown"):
        assert key in message


def test_load_params_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ParamsError, match="expected a mapping at the top level"):
        load_params(scalar)


def test_valid_file_loads(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with(data__limits__min_side=32)))
    assert load_params(Path(path)).data.limits.min_side == 32


def test_a_zero_std_is_refused_before_any_work(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with(extract__preprocessing__std=[0, 0.2, 0.2])))
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert "extract.preprocessing.std[0]: got 0.0; allowed: a value > 0" in str(error.value)


@dataclass(frozen=True)
class _Floats:
    by_name: dict[str, float]
    pairs: list[tuple[float, float]]


def test_non_finite_floats_are_refused_at_any_depth():
    with pytest.raises(SchemaError) as error:
        parse(_Floats, {"by_name": {"a": 1, "b": math.nan}, "pairs": [[1, 2], [3, -math.inf]]}, "t")
    assert error.value.problems == [
        "t.by_name.b: got nan; allowed: a finite number",
        "t.pairs[1][1]: got -inf; allowed: a finite number",
    ]


@pytest.mark.parametrize("text", [".nan", ".NaN", ".inf", "-.Inf"])
def test_yaml_non_finite_spellings_are_refused(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(TEST_PARAMS_FILE.read_text().replace("    C: 1.0", f"    C: {text}", 1))
    with pytest.raises(ParamsError, match=r"heads\.svm\.C: got -?(nan|inf); allowed: a finite"):
        load_params(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "paths: {}\ndata: {root: a}\nextract: {batch_size: 8}\nheads: {}\nextract: {}\n",
            "params.yaml: duplicate key 'extract' (lines 3 and 5); keep one",
        ),
        (
            "heads:\n  logreg:\n    C: 1.0\n    max_iter: 10\n    C: 2.0\n",
            "params.yaml: duplicate key 'heads.logreg.C' (lines 3 and 5); keep one",
        ),
    ],
    ids=["top-level", "nested"],
)
def test_duplicate_keys_are_refused_naming_both_lines(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == expected.replace("params.yaml", str(path))


def test_feature_sets_default_to_vgg16_fc6_and_name_their_paths():
    raw = copy.deepcopy(BASE)
    raw.pop("features")
    params = validate(raw)
    assert list(params.features) == ["vgg16_fc6"] and params.feature_set(None) == "vgg16_fc6"
    assert params.paths.store_for("vgg16_fc6") == Path("store/vgg16_fc6")
    assert params.paths.model_for("svm", "vgg16_fc7") == Path("models/vgg16_fc7/svm.joblib")


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (
            {"v": {"backbone": "vgg16", "layer": "fc8"}},
            "features.v.layer: got 'fc8'; allowed for vgg16: fc6, fc7, pool5",
        ),
        ({"r": {"backbone": "resnet", "layer": "pool"}}, "features.r.backbone: got 'resnet'"),
        (
            {"a": {"layer": "fc7"}, "b": {"layer": "fc7"}},
            "features.b: the same layer as features.a",
        ),
        ({"vgg16-fc6": {"layer": "fc6"}}, "features.vgg16-fc6: not a usable name"),
        ({}, "features: empty"),
    ],
)
def test_bad_feature_sets_are_named(features, expected):
    assert expected in _problem(_with(features=features))


def test_extract_backbone_says_where_it_moved():
    assert "extract.backbone: moved to features:" in _problem(_with(extract__backbone="resnet50"))


def test_several_feature_sets_need_one_named():
    params = validate(_with(features={"a": {"layer": "fc6"}, "b": {"layer": "fc7"}}))
    with pytest.raises(ParamsError, match="pick one with --features: a, b"):
        params.feature_set(None)
    with pytest.raises(ParamsError, match=r"unknown feature set 'c'; params\.yaml features"):
        params.feature_set("c")
    assert params.feature_set("b") == "b"


def test_a_block_head_defaults_to_the_only_map_set_and_a_frozen_head_refuses_it():
    params = validate(
        _with(
            maps={"m": {"layer": "pool5_map"}},
            block_heads={"block": {"epochs": 1}},
        )
    )
    assert params.feature_set(None, "block") == "m"
    assert params.feature_set(None, "logreg") == "vgg16_fc6"
    with pytest.raises(ParamsError, match=r"unknown feature set 'm'; params\.yaml features:"):
        params.feature_set("m", "logreg")
    with pytest.raises(ParamsError, match="pick one with --features: vgg16_fc6, m"):
        params.feature_set(None)
