"""Fine-tuning stopped at any moment, then rerun: the weights it ends with are bit-identical
to an uninterrupted run's (CPU, fixed seed).

Each SIGKILL scenario trains the tiny network of finetune_setup.py in a child process
(``python -m tests.killpoints finetune``) that dies at one named call, so nothing gets to
clean up; the rerun, here, resumes from what the child left on disk. The clean run
checkpoints after every batch (12 train images, batches of 4, 3 epochs)::

    save 1: epoch 1 batch 1 | save 2: batch 2 | save 3: end of epoch 1 (kept as best-0001)
    save 4: epoch 2 batch 1 | ...

Ctrl-C is sent for real (SIGINT to this process) in the middle of a batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import classifiers.finetune.train as train_module
from classifiers.finetune.checkpoint import CHECKPOINT
from classifiers.finetune.train import finetune
from features.files import TMP_PREFIX
from pipeline.cli import EXIT_INTERRUPTED, run
from tests.classifiers.finetune_setup import make_images, tiny_job, tiny_net, weights_digest
from tests.killpoints import KillPoint, child_command

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Clean:
    images: Path
    digest: str  # of the final (best-epoch) network
    checkpoint: dict[str, Any]  # the last checkpoint: last epoch's weights, optimizer...


@dataclass(frozen=True)
class Scenario:
    name: str
    kill: KillPoint
    checkpoint_seconds: float  # of the killed run; the rerun's are 1e-9, as the clean run's
    resumes_at: tuple[int, int]  # (epochs finished, batches of the next) in the checkpoint
    leftovers: int  # files besides state.pt the kill leaves: temporaries, an unnamed best


SCENARIOS = (
    Scenario(
        "after_a_mid_epoch_checkpoint",
        KillPoint("classifiers.finetune.train.save_checkpoint", "after", 4),
        1e-9,
        (1, 1),
        1,  # best-0001.pt, which the checkpoint names
    ),
    Scenario(
        "mid_epoch_between_epoch_checkpoints",
        KillPoint("classifiers.finetune.train._step", "before", 5),
        3600.0,  # checkpoints at epoch ends only: the rerun redoes epoch 2's first batch
        (1, 0),
        1,
    ),
    Scenario(
        "checkpoint_written_not_yet_renamed",
        KillPoint("classifiers.finetune.checkpoint._keep", "after", 1),
        1e-9,
        (0, 2),
        2,  # the new checkpoint's temporary, and best-0001.pt no checkpoint names yet
    ),
)


def _load(folder: Path) -> dict[str, Any]:
    return torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Clean:
    root = tmp_path_factory.mktemp("finetune_resume")
    make_images(root / "images")
    net = tiny_net()
    finetune(net, tiny_job(root / "images", root / "clean"), progress=False)
    return Clean(root / "images", weights_digest(net), _load(root / "clean"))


def _same(actual: Any, expected: Any) -> bool:
    """Equal down to every bit of every tensor, through dicts, lists and tuples."""
    if isinstance(expected, torch.Tensor):
        return (
            isinstance(actual, torch.Tensor)
            and actual.dtype == expected.dtype
            and torch.equal(actual, expected)
        )
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            _same(actual[key], expected[key]) for key in expected
        )
    if isinstance(expected, list | tuple):
        return len(actual) == len(expected) and all(map(_same, actual, expected))
    return actual == expected


def _assert_as_clean(net: torch.nn.Module, folder: Path, clean: Clean) -> None:
    assert weights_digest(net) == clean.digest
    final = _load(folder)
    for key in ("model", "optimizer", "scheduler", "rng"):
        assert _same(final[key], clean.checkpoint[key]), key
    assert final["state"]["curves"] == clean.checkpoint["state"]["curves"]
    assert sorted(path.name for path in folder.iterdir()) == [
        clean.checkpoint["state"]["best_file"],
        CHECKPOINT,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.name)
def test_sigkill_then_rerun_ends_with_the_uninterrupted_weights(
    scenario: Scenario, clean: Clean, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "checkpoints"
    options = (
        "--images",
        str(clean.images),
        "--checkpoint-seconds",
        str(scenario.checkpoint_seconds),
    )
    child = subprocess.run(
        child_command("finetune", folder, *options, kill=scenario.kill),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, (
        f"{scenario.kill.spec()} was never reached (exit {child.returncode}):\n{child.stderr}"
    )
    state = _load(folder)["state"]
    assert (state["epoch"], state["batch"]) == scenario.resumes_at
    assert len([path for path in folder.iterdir() if path.name != CHECKPOINT]) == scenario.leftovers

    net = tiny_net()
    finetune(net, tiny_job(clean.images, folder), progress=False)

    epoch, batch = scenario.resumes_at
    assert f"at epoch {epoch + 1}, batch {batch}" in capsys.readouterr().out
    _assert_as_clean(net, folder, clean)
    assert not list(folder.glob(f"{TMP_PREFIX}*"))


def _interrupt_at_step(call: int) -> Callable[..., float]:
    """``_step`` that sends this process SIGINT during its ``call``-th call."""
    step, seen = train_module._step, 0

    def interrupting(*args: Any) -> float:
        nonlocal seen
        seen += 1
        if seen == call:
            os.kill(os.getpid(), signal.SIGINT)
        return step(*args)

    return interrupting


def test_ctrl_c_saves_at_the_batch_boundary_exits_130_and_the_rerun_resumes(
    clean: Clean,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    folder = tmp_path / "checkpoints"
    job = tiny_job(clean.images, folder, checkpoint_seconds=3600.0)  # none but Ctrl-C's
    monkeypatch.setattr(train_module, "_step", _interrupt_at_step(5))

    with pytest.raises(SystemExit) as exit_:
        run(lambda argv: finetune(tiny_net(), job, progress=False), [])

    assert exit_.value.code == EXIT_INTERRUPTED
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler put back"
    state = _load(folder)["state"]
    assert (state["epoch"], state["batch"]) == (1, 2), "saved after the interrupted batch"
    output = capsys.readouterr()
    assert "saving a checkpoint after this batch" in output.out
    assert "interrupted: finished work is committed; rerun to resume" in output.err

    monkeypatch.undo()
    net = tiny_net()
    finetune(net, tiny_job(clean.images, folder), progress=False)
    _assert_as_clean(net, folder, clean)
