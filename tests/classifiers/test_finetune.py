"""Fine-tuning: freezing by graph node, seeded data, the checkpoint round trip, the stage end
to end, and saved networks that ``predict`` can trust (tampered files refused unread).

Kill and Ctrl-C resumption are in test_finetune_resume.py.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision import models

from classifiers.data import SplitPlan
from classifiers.finetune import load_finetuned, predict_images
from classifiers.finetune.checkpoint import (
    CHECKPOINT,
    Trainer,
    TrainState,
    isolated_rng,
    load_checkpoint,
    save_checkpoint,
)
from classifiers.finetune.data import EpochBatches, augment, choose_splits
from classifiers.finetune.job import NonFiniteLoss
from classifiers.finetune.model import FinetuneNet, unfrozen_modules
from classifiers.finetune.train import finetune
from classifiers.persist import HeadError, sidecar_path
from features.compute.loader import ImageRef
from features.data.images import decode_rgb
from features.data.manifest import ManifestRow, build_manifest, read_manifest, write_manifest
from features.data.preprocess import Preprocessing
from features.data.scan import scan_dataset
from features.data.synthetic import make_dataset
from features.errors import UserError
from features.files import TMP_PREFIX, file_sha256
from pipeline import finetune as stage
from pipeline import predict as predict_cli
from tests.classifiers.finetune_setup import make_images, tiny_job, tiny_net
from tests.conftest import LIMITS, SMALL_CONFIG, SMALL_EXTRACT, TEST_PARAMS

CPU = torch.device("cpu")


def _meta(constructor) -> torch.nn.Module:
    """The architecture alone (no weights, no init cost): enough for names and flags."""
    with torch.device("meta"):
        return constructor(weights=None)


def test_unfreeze_from_a_graph_node_trains_it_and_everything_after_it():
    net = _meta(models.vgg16)
    unfrozen = unfrozen_modules(net, "classifier.3", "vgg16")
    assert unfrozen == {f"classifier.{i}" for i in (3, 4, 5, 6)}
    assert {name for name, _ in net.named_modules() if name.startswith("features.")} <= (
        unfrozen_modules(net, "features.0", "vgg16")
    )

    wrapped = FinetuneNet(net, "classifier.6", unfrozen, Preprocessing()).train()
    trainable = {name for name, p in wrapped.net.named_parameters() if p.requires_grad}
    assert trainable == {f"classifier.{i}.{kind}" for i in (3, 6) for kind in ("weight", "bias")}
    assert set(wrapped.trainable_state()) == trainable
    assert wrapped.net.classifier[5].training, "the dropout after fc7 trains"
    assert not wrapped.net.classifier[2].training, "the frozen one stays in eval mode"
    assert not wrapped.net.features[0].training


def test_a_module_name_starts_at_its_first_node_and_an_unknown_name_lists_them():
    net = _meta(models.resnet50)
    unfrozen = unfrozen_modules(net, "layer4", "resnet50")
    assert {"layer4.0.conv1", "layer4.0.downsample.0", "layer4.2.bn3", "fc"} <= unfrozen
    assert "layer3.5.conv3" not in unfrozen
    with pytest.raises(UserError, match=r"'layer9' is not a graph node of resnet50; .* conv1, bn1"):
        unfrozen_modules(net, "layer9", "resnet50")


def test_a_resumed_epoch_draws_the_batches_of_the_uninterrupted_one():
    full = list(EpochBatches(10, 4, seed=3, epoch=2))
    assert list(EpochBatches(10, 4, seed=3, epoch=2, start=1)) == full[1:]
    assert len(EpochBatches(10, 4, seed=3, epoch=2, start=1)) == 2
    assert sorted(index for batch in full for index, _ in batch) == list(range(10))
    assert full != list(EpochBatches(10, 4, seed=3, epoch=3)), "a new order every epoch"


def test_augmentation_depends_on_its_seed_alone(tmp_path: Path):
    image = decode_rgb(make_dataset(tmp_path, per_class=1)[0], LIMITS)
    before = torch.get_rng_state()
    first = augment(image, 32, seed=7)
    assert first.shape == (3, 32, 32) and first.dtype == torch.uint8
    assert torch.equal(first, augment(image, 32, seed=7))
    assert not torch.equal(first, augment(image, 32, seed=8))
    assert torch.equal(torch.get_rng_state(), before), "the global generator is not drawn from"


def _rows(n: int, split: str) -> list[ManifestRow]:
    return [
        ManifestRow(f"{split}/{i}.jpg", f"{split}{i:060d}", "ab"[i % 2], split) for i in range(n)
    ]


def test_val_is_the_datasets_own_or_carved_from_train_by_content_hash():
    train, test, val = _rows(200, "train"), _rows(20, "test"), _rows(10, "val")
    carved = choose_splits(train + test, SplitPlan("test", None, None), 0.1, None)
    assert 5 < len(carved.val) < 40 and "by content hash" in carved.val_source
    assert {r.sha256 for r in carved.train} | {r.sha256 for r in carved.val} == {
        r.sha256 for r in train
    }
    assert not {r.sha256 for r in carved.train} & {r.sha256 for r in carved.val}
    assert (
        choose_splits(train[::-1] + test, SplitPlan("test", None, None), 0.1, None).val
        == (carved.val[::-1])
    ), "the same images whatever the manifest order"
    subset = choose_splits(train + test, SplitPlan("test", None, None), 0.1, 50)
    assert len(subset.train) == 50 and subset.val == carved.val

    own = choose_splits(train + val + test, SplitPlan("test", "val", None), 0.1, None)
    assert own.val == val and own.train == train and own.val_source == "val"


def test_checkpoint_round_trip_restores_weights_optimizer_schedule_and_rng(tmp_path: Path):
    def trainer() -> Trainer:
        net = tiny_net().train()
        optimizer = torch.optim.SGD(
            [p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
        return Trainer(net, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False))

    saved, folder = trainer(), tmp_path / "checkpoints"
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with isolated_rng(CPU, seed=5):
        saved.net(pixels).sum().backward()
        saved.optimizer.step()
        saved.scheduler.step()
        state = TrainState("run", epoch=1, batch=2, loss_sum=1.5, loss_images=8)
        state.best_file, state.curves = "best-0001.pt", [{"epoch": 1, "val_accuracy": 0.5}]
        save_checkpoint(folder, state, saved, best=True)
        expected = (torch.rand(3), np.random.rand(3), random.random())

    assert (folder / "best-0001.pt").samefile(folder / CHECKPOINT), "kept by a link, not a copy"
    restored, messages = trainer(), []
    with isolated_rng(CPU, seed=99):
        assert load_checkpoint(folder, "run", restored, messages.append) == state
        assert torch.equal(torch.rand(3), expected[0])
        assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    for key, tensor in saved.net.trainable_state().items():
        assert torch.equal(restored.net.trainable_state()[key], tensor), key
    momentum = [s["momentum_buffer"] for s in saved.optimizer.state_dict()["state"].values()]
    again = [s["momentum_buffer"] for s in restored.optimizer.state_dict()["state"].values()]
    assert len(momentum) == 6 and all(map(torch.equal, momentum, again))
    assert restored.scheduler.last_epoch == 1 and not messages

    assert load_checkpoint(folder, "other settings", trainer(), messages.append) is None
    assert "starting over" in messages[0] and not list(folder.iterdir())


def test_a_nan_loss_stops_with_a_clear_error_before_anything_is_saved(tmp_path: Path):
    make_images(tmp_path / "images")
    net = tiny_net()
    torch.nn.init.constant_(net.net[9].bias, float("nan"))
    with pytest.raises(NonFiniteLoss, match=r"train loss is nan in epoch 1; lower finetune.lr"):
        finetune(net, tiny_job(tmp_path / "images", tmp_path / "checkpoints"), progress=False)
    assert not (tmp_path / "checkpoints" / CHECKPOINT).exists()


@dataclass(frozen=True)
class StageRun:
    root: Path
    argv: list[str]
    output: str
    model: Path


def _params(root: Path) -> dict:
    params = {**TEST_PARAMS, "downloads": {}, "data": {"root": str(root / "images")}}
    params["extract"] = {**TEST_PARAMS["extract"], **SMALL_EXTRACT}
    params["finetune"] = {
        "tiny": {
            "backbone": "resnet50",  # a tenth of VGG16's bytes to save and hash
            "unfreeze_from": "fc",
            "epochs": 2,
            "batch_size": 8,
            "val_fraction": 0.3,
        }
    }
    return params


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory) -> StageRun:
    """The stage as dvc.yaml runs it, on 24 generated images at 32 px, random weights."""
    root = tmp_path_factory.mktemp("finetune_stage")
    make_dataset(root / "images", per_class=6)
    outcomes, predefined = scan_dataset(root / "images", LIMITS, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, root / "images", predefined, "salt", 0.25)
    write_manifest(root / "manifest.csv", rows)
    (root / "params.yaml").write_text(yaml.safe_dump(_params(root)))
    argv = ["tiny", "--data", str(root / "images"), "--manifest", str(root / "manifest.csv")]
    argv += ["--checkpoint", str(root / "checkpoints" / "tiny")]
    argv += ["--model", str(root / "models" / "tiny.pt"), "--metrics", str(root / "m.json")]
    argv += ["--predictions", str(root / "p.csv"), "--curves", str(root / "c.csv")]
    argv += ["--params", str(root / "params.yaml"), "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()) as output:
        stage.main(argv)
    return StageRun(root, argv, output.getvalue(), root / "models" / "tiny.pt")


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_stage_trains_evaluates_and_writes_what_a_head_writes(stage_run: StageRun):
    root, output = stage_run.root, stage_run.output
    assert "RANDOM weights" in output and "images/s on cpu" in output
    assert "epoch 2/2: train loss" in output and "val accuracy" in output
    metrics = json.loads((root / "m.json").read_text())
    assert {"accuracy", "accuracy_ci", "balanced_accuracy", "macro_f1", "confusion_matrix"} <= (
        metrics.keys()
    )
    assert metrics["features"] == metrics["kind"] == "finetune" and metrics["head"] == "tiny"
    assert metrics["random_weights"] and metrics["weights"] == "random:0"
    assert metrics["evaluated_on"] == "test" and metrics["backbone"] == "resnet50"
    assert metrics["model_bytes"] == stage_run.model.stat().st_size
    assert metrics["fit_seconds"] > 0 and metrics["predict_ms_per_1000"] > 0
    test = [row for row in read_manifest(root / "manifest.csv") if row.split == "test"]
    predictions = _csv(root / "p.csv")
    assert [row["sha256"] for row in predictions] == [row.sha256 for row in test]
    assert metrics["n_test"] == len(test) and metrics["n_train"] + metrics["n_val"] == 24 - len(
        test
    )
    curves = _csv(root / "c.csv")
    assert [row["epoch"] for row in curves] == ["1", "2"]
    assert list(curves[0]) == ["epoch", "train_loss", "val_loss", "val_accuracy"]
    sidecar = json.loads(sidecar_path(stage_run.model).read_text())
    assert sidecar["sha256"] == file_sha256(stage_run.model) == metrics["model_sha256"]
    assert (sidecar["output_layer"], sidecar["unfreeze_from"]) == ("fc", "fc")
    assert not list(root.rglob(f"{TMP_PREFIX}*"))


def test_a_rerun_of_a_finished_run_only_evaluates_its_best_epoch(stage_run: StageRun, capsys):
    before = load_finetuned(stage_run.model)[0].net.state_dict()
    stage.main(stage_run.argv)
    assert "training finished" in capsys.readouterr().out
    after = load_finetuned(stage_run.model)[0].net.state_dict()  # torch.save ids each file
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_predict_images_runs_the_saved_network_as_the_stage_did(
    stage_run: StageRun, tmp_path: Path
):
    net, sidecar = load_finetuned(stage_run.model)
    predictions = _csv(stage_run.root / "p.csv")
    rows = {row.sha256: row for row in read_manifest(stage_run.root / "manifest.csv")}
    refs = [
        ImageRef(p["sha256"], stage_run.root / "images" / rows[p["sha256"]].path)
        for p in predictions
    ]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(refs[0].path.read_bytes()[:200])
    refs.append(ImageRef(file_sha256(broken), broken))

    batches = list(predict_images(net, sidecar, refs, SMALL_CONFIG, LIMITS))
    hashes = [sha for batch in batches for sha in batch.hashes]
    probabilities = np.concatenate([batch.probabilities for batch in batches])
    assert hashes == [p["sha256"] for p in predictions]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    labels = [sidecar.classes[i] for i in probabilities.argmax(axis=1)]
    assert labels == [p["predicted"] for p in predictions]
    assert [f.sha256 for batch in batches for f in batch.failures] == [refs[-1].sha256]


def _copy_model(stage_run: StageRun, folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(stage_run.model, folder / "tiny.pt")
    shutil.copy(sidecar_path(stage_run.model), folder / "tiny.json")
    return folder / "tiny.pt"


def test_a_tampered_model_is_refused_before_it_is_read(
    stage_run: StageRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    model = _copy_model(stage_run, tmp_path / "models")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    with pytest.raises(HeadError, match=r"refused to load .*does not match the sidecar"):
        load_finetuned(model)


class _Payload:
    """Anything but tensors: what a pickle that runs code would carry."""


def test_a_model_holding_pickled_objects_is_refused_even_with_a_matching_sidecar(
    stage_run: StageRun, tmp_path: Path
):
    model = _copy_model(stage_run, tmp_path / "models")
    torch.save({"fc.weight": _Payload()}, model)
    sidecar = json.loads(sidecar_path(model).read_text())
    sidecar["sha256"] = file_sha256(model)
    sidecar_path(model).write_text(json.dumps(sidecar))
    with pytest.raises(HeadError, match="holds more than tensors"):
        load_finetuned(model)


def test_an_unknown_finetune_name_is_one_user_error(stage_run: StageRun):
    with pytest.raises(UserError, match=r"finetune 'nope' is not configured; .*finetune: tiny"):
        stage.main(["nope", *stage_run.argv[1:]])


def test_the_predict_cli_runs_the_fine_tuned_network_and_says_so(
    stage_run: StageRun, tmp_path: Path, capsys
):
    params = yaml.safe_load((stage_run.root / "params.yaml").read_text())
    (tmp_path / "models").mkdir()
    _copy_model(stage_run, tmp_path / "models" / "finetune")  # where dvc.yaml puts it
    params["paths"]["models"] = str(tmp_path / "models")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    image = next((stage_run.root / "images").rglob("*.jpg"))
    missing = tmp_path / "missing.jpg"
    argv = ["--head", "tiny", str(image), str(missing), "--params", str(tmp_path / "params.yaml")]
    assert predict_cli.main(argv) == 1
    out = capsys.readouterr()
    assert "RANDOM weights" in out.out
    assert f"{image}: " in out.out and "fine-tuned network run on the image" in out.out
    assert f"{missing}: skipped (missing" in out.out and "1 of 2 files" in out.err
    rows, head = predict_cli.predict("tiny", [str(image)], tmp_path / "params.yaml")
    classes = sorted({row.label for row in read_manifest(stage_run.root / "manifest.csv")})
    assert rows[0].codes == "network" and head.classes == classes
    assert abs(sum(rows[0].values.values()) - 1) < 1e-5
