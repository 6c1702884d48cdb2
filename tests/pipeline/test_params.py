"""params.yaml validation: one message that names the key, the value given and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.params import ParamsError, load_params, validate
from pipeline.workspace import PROJECT_ROOT

BASE = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


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
    ],
)
def test_each_problem_is_one_line_naming_key_value_and_what_is_allowed(changes, expected):
    message = _problem(_with(**changes))
    assert message.startswith("params.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_unknown_top_level_section_is_named():
    assert "verbose: unknown key; allowed keys: data, downloads" in _problem(
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
